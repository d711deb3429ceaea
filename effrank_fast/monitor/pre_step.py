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

:class:`ProbeRunner` runs the probe forward itself: in eval mode under ``no_grad`` (no dropout
draws, no batch-norm updates), on the original module of a compiled one (eagerly: no recompile for
eval mode), with its floating inputs in the model's current dtype and device (``model.double()``
mid-run is followed), and, under FSDP2 (``fully_shard``), with every FSDP module resharded
afterwards: the root module keeps its parameters unsharded after a forward, and the optimizer step
that follows would otherwise leave them stale for the next training forward.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from effrank_fast.monitor import distributed as dd
from effrank_fast.monitor import layers as L
from effrank_fast.monitor.capture import Capture

FSDP_TYPES: tuple[type, ...]
try:  # FSDP2 (torch >= 2.6 with torch.distributed)
    from torch.distributed.fsdp import FSDPModule

    FSDP_TYPES = (FSDPModule,)
except ImportError:  # pragma: no cover - builds without torch.distributed
    FSDP_TYPES = ()


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


class ProbeRunner:
    """Fixed inputs (and quadrature weights) on which the model is evaluated each measured step.

    Args:
        probe: a tensor [N, ...], a tuple of positional inputs, or a dict of keyword inputs
            (``{"input_ids": ids, "attention_mask": mask}``); every tensor whose first axis has N
            rows is split across data-parallel ranks, floating ones follow the model's dtype.
        weights: quadrature weights [N] of the probe's samples, or None.
    """

    def __init__(self, probe: object, weights: torch.Tensor | None) -> None:
        args: tuple[Any, ...]
        kwargs: dict[str, Any]
        if isinstance(probe, torch.Tensor):
            args, kwargs = (probe,), {}
        elif isinstance(probe, tuple):
            args, kwargs = probe, {}
        elif isinstance(probe, Mapping):
            args, kwargs = (), {str(k): v for k, v in probe.items()}
        else:
            raise TypeError(
                f"probe must be a tensor, a tuple of positional inputs or a dict of keyword inputs, got "
                f"{type(probe).__name__}"
            )
        first = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
        if first is None:
            raise TypeError("probe must contain at least one tensor (the probe's inputs)")
        self.n = first.shape[0] if first.dim() else 0
        if self.n == 0:
            raise ValueError(f"probe must have at least one row (shape [N, ...]), got shape {tuple(first.shape)}")
        self.args, self.kwargs, self.weights = args, kwargs, weights
        self._cache: tuple[object, tuple[Any, ...], dict[str, Any], torch.Tensor | None] | None = None

    def shapes(self) -> str:
        return ", ".join(
            f"{k}={list(t.shape)}" if k else str(list(t.shape))
            for k, t in [*(("", a) for a in self.args), *self.kwargs.items()]
            if isinstance(t, torch.Tensor)
        )

    def _inputs(self, model: nn.Module, shard: tuple[int, int] | None) -> tuple[tuple, dict, torch.Tensor | None]:
        """The probe on the model's device and floating dtype (cached until either changes)."""
        device = fdtype = None
        for i, p in enumerate(L.unwrap(model).parameters()):
            device = p.device if i == 0 else device
            if p.is_floating_point():
                fdtype = p.dtype
                break
        key = (device, fdtype, shard)
        if self._cache is None or self._cache[0] != key:

            def move(t: object) -> object:
                if not isinstance(t, torch.Tensor):
                    return t
                t = t.to(device=device or t.device, dtype=fdtype if t.is_floating_point() and fdtype else t.dtype)
                return dd.shard_rows(t, *shard) if shard is not None and t.dim() and t.shape[0] == self.n else t

            args = tuple(move(a) for a in self.args)
            kwargs = {k: move(v) for k, v in self.kwargs.items()}
            w = self.weights
            if w is not None:
                w = w.to(device or w.device)
                w = dd.shard_rows(w, *shard) if shard is not None else w
            self._cache = (key, args, kwargs, w)
        return self._cache[1], self._cache[2], self._cache[3]

    def check(self, model: nn.Module, capture: Capture, shard: tuple[int, int] | None) -> None:
        """One unmeasured probe forward; a failure is a ValueError naming the probe and the module that raised."""
        inside: list[tuple[str, nn.Module]] = []  # the modules whose forward is running, outermost first
        handles = []
        for name, module in L.unwrap(model).named_modules():
            label = name or f"{type(module).__name__} (the model itself)"

            def pre(m: nn.Module, args: object, label: str = label) -> None:
                inside.append((label, m))

            def post(m: nn.Module, args: object, out: object) -> None:
                if inside:
                    inside.pop()

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        try:
            self.run(model, capture, measure=False, shard=shard)
        except Exception as exc:
            where = f"layer {inside[-1][0]!r} ({_describe(inside[-1][1])})" if inside else "the model"
            raise ValueError(
                f"probe= of shape {self.shapes()} does not fit the model: {where} raised {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            L.remove_hooks(handles)

    def run(self, model: nn.Module, capture: Capture, *, measure: bool, shard: tuple[int, int] | None) -> None:
        """One forward pass on the probe (rank r of w runs its block of rows when ``shard=(r, w)``)."""
        args, kwargs, w = self._inputs(model, shard)
        modules = list(L.unwrap(model).modules())
        training = [m for m in modules if m.training]
        # eval(): no dropout, no batch-norm statistics update; training is untouched. The flag is
        # set as Module.train sets it, without Module.__setattr__'s lookups (≈ 3 µs a module a step)
        for m in training:
            object.__setattr__(m, "training", False)
        capture.in_probe, capture.weights = measure, w
        try:
            with torch.no_grad():
                capture.forward(args, kwargs)
                if measure and not capture.probe_intact():
                    # a later op changed a kept activation in place: this forward again, with copies
                    capture.copy_probe = True
                    capture.reset()
                    capture.in_probe, capture.weights = measure, w
                    capture.forward(args, kwargs)
        finally:
            capture.in_probe, capture.weights = False, None
            for m in training:
                object.__setattr__(m, "training", True)
            reshard(modules)


def reshard(modules: Iterable[nn.Module]) -> None:
    """Reshard every FSDP2 module among ``modules`` (a no-op for sharded ones and without FSDP2)."""
    for m in modules:
        if isinstance(m, FSDP_TYPES):
            m.reshard()  # type: ignore[operator]


def _describe(module: nn.Module) -> str:
    """A leaf module's repr (its shapes), else its class name."""
    return repr(module) if not list(module.children()) else type(module).__name__
