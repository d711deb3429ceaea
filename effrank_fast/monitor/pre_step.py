"""The probe's moment: just before an optimizer changes the monitored model's parameters.

The README's loop calls ``mon.step(loss=loss)`` after ``opt.step()``: the loss belongs to the
parameters θ_t of its forward pass, but a probe run inside ``step()`` would see θ_{t+1}. So the
monitor registers a global optimizer step pre-hook
(``torch.optim.optimizer.register_optimizer_step_pre_hook``): when an optimizer that holds a
parameter of the model is about to step, the probe runs there, on θ_t, and ``step()`` then only
forms the measures. The rule that decides who runs the probe of a measured step:

- the first optimizer step after the previous ``step()`` call runs it, unless the parameters are
  still those the last probe saw (the loop called ``mon.step()`` before ``opt.step()``, so
  ``step()`` has already probed θ_t), which is told by the parameters' in-place version counters
  (host-side integers, no sync);
- ``step()`` runs it when no optimizer step did (loops without ``torch.optim``, or ``step()``
  before ``opt.step()``).

Either way a row's loss and ranks come from the same θ_t, and step 0 holds the initial network.
A closure optimizer (L-BFGS) steps once per ``opt.step(closure)``: the probe sees the parameters
before its first closure evaluation, whose loss ``opt.step`` returns.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook


class PreStepHook:
    """Calls ``callback()`` before every ``step()`` of any optimizer that holds a parameter of ``model``."""

    def __init__(self, model: nn.Module, callback: Callable[[], None]) -> None:
        self._params = list(model.parameters())
        self._ids = {id(p) for p in self._params}
        self._holds: weakref.WeakKeyDictionary[torch.optim.Optimizer, bool] = weakref.WeakKeyDictionary()
        # a weak reference: a monitor that is dropped without close() stops probing and is freed
        self._callback = weakref.WeakMethod(callback)
        self._handle = register_optimizer_step_pre_hook(self._hook)
        # Completed steps of those optimizers: fused optimizers (torch.optim.AdamW(fused=True), the
        # HF Trainer's default) update in place without bumping the version counters.
        self.steps = 0
        self._post_handle = register_optimizer_step_post_hook(self._post)

    def versions(self) -> tuple[int, ...]:
        """The parameters' in-place version counters (every optimizer update bumps them)."""
        return tuple(p._version for p in self._params)

    def _holds_params(self, optimizer: torch.optim.Optimizer) -> bool:
        holds = self._holds.get(optimizer)
        if holds is None:
            holds = any(id(p) in self._ids for g in optimizer.param_groups for p in g["params"])
            self._holds[optimizer] = holds
        return holds

    def _post(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        if self._holds_params(optimizer):
            self.steps += 1

    def _hook(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        if self._holds_params(optimizer):
            callback = self._callback()
            if callback is None:
                self.remove()
            else:
                callback()  # never raises (the monitor catches everything)

    def remove(self) -> None:
        self._handle.remove()
        self._post_handle.remove()


class ProbeSchedule:
    """Runs ``probe()`` once per measured step, at the moment the module docstring describes.

    Args:
        model: the monitored model (its optimizers trigger the pre-hook).
        probe: runs the probe forward into the monitor's accumulators (never raises).
        due: whether the coming step is measured (and the monitor still open).
    """

    def __init__(self, model: nn.Module, probe: Callable[[], None], *, due: Callable[[], bool]) -> None:
        self._probe, self._due = probe, due
        self._done = False  # the coming measured step's probe has run
        self._versions: tuple[int, ...] | None = None  # the parameters that probe saw
        self._steps_seen = -1  # the optimizer steps completed when it ran
        self.hook = PreStepHook(model, self._before_optimizer_step)

    def _run(self) -> None:
        self._done = True
        self._versions, self._steps_seen = self.hook.versions(), self.hook.steps
        self._probe()

    def _before_optimizer_step(self) -> None:
        try:
            if self._done or not self._due():
                return
            if self.hook.versions() == self._versions and self.hook.steps == self._steps_seen:
                return  # step() already probed these parameters (mon.step() came before opt.step())
            self._run()
        except Exception as exc:  # never into the optimizer's step
            warnings.warn(f"RankMonitor: the optimizer pre-step probe failed ({exc!r})", RuntimeWarning, stacklevel=2)

    def ensure(self) -> None:
        """In ``step()``: run the probe unless an optimizer pre-hook already did for this step."""
        if not self._done:
            self._run()

    def step_done(self) -> None:
        self._done = False

    def close(self) -> None:
        self.hook.remove()
