"""Hugging Face ``Trainer``: :class:`RankMonitorTrainerCallback`.

    trainer = Trainer(model=model, args=args, train_dataset=ds)
    RankMonitorTrainerCallback(trainer, layers=["transformer.h.0", "transformer.h.1"], eps=[1e-3])
    trainer.train()

The callback adds itself to ``trainer``, builds a :class:`~effrank_fast.RankMonitor` on the
Trainer's model when training begins (run folder ``<args.output_dir>/rank`` unless ``log=`` is
given), and steps it once per optimizer step with that step's loss. Every ``log_every`` steps
(default: the Trainer's ``logging_steps``) it flushes the monitor and passes the newest measured
step's ``rank/<layer>/<metric>`` keys to ``trainer.log``, so they reach every ``report_to``
integration (W&B and TensorBoard show them as ``train/rank/...``: the Trainer's own prefix) and
``trainer.state.log_history``.

**The loss under gradient accumulation.** The Trainer scales each micro-batch's loss before the
backward pass (by 1/accumulation steps, or by the token count of the whole accumulated batch when
the model takes ``num_items_in_batch``) and reports their sum. The callback records the same sum:
it wraps ``trainer.training_step`` (the Trainer's documented override point) and adds up what it
returns over the micro-batches of one optimizer step, on the device, so each row's ``loss`` is
the value the Trainer logs for that step.

A :class:`~effrank_fast.monitor.alerts.CollapseAlert` with ``action="stop"`` sets
``control.should_training_stop``. Only the Trainer's training forwards count (its evaluation runs
under ``no_grad``, which the monitor ignores).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from effrank_fast.integrations._common import MonitorArgs, any_alert_stop, check_cadence, listen, take_metrics
from effrank_fast.integrations._rows import LatestRows
from effrank_fast.monitor.monitor import RankMonitor


class RankMonitorTrainerCallback(TrainerCallback):
    """A ``TrainerCallback`` around :class:`~effrank_fast.RankMonitor`.

    Args:
        trainer: the ``transformers.Trainer`` to monitor; the callback adds itself to it.
        layers, eps, relative, every, probe, features, engine, log, accumulate, distributed, alerts:
            as in :class:`~effrank_fast.RankMonitor` (``log=None``: ``<output_dir>/rank``, without
            the monitor's own TensorBoard events).
        log_every: flush and log every this many optimizer steps (None: ``logging_steps``).
        prefix: the key prefix (``rank``).
    """

    def __init__(
        self,
        trainer: Trainer,
        layers: object = "last_hidden",
        eps: float | tuple[float, ...] | list[float] | torch.Tensor = (1e-2, 1e-3, 1e-4),
        *,
        relative: str | None = None,
        every: int = 1,
        probe: object = None,
        features: object = None,
        engine: object = "exact",
        log: object = None,
        accumulate: object = "step",
        distributed: bool | None = None,
        alerts: object = None,
        log_every: int | None = None,
        prefix: str = "rank",
    ) -> None:
        if not isinstance(trainer, Trainer):
            raise TypeError(f"trainer must be a transformers.Trainer, got {type(trainer).__name__}")
        self.args = MonitorArgs(
            layers, eps, relative, every, probe, features, engine, log,
            accumulate, distributed, alerts,
        )  # fmt: skip
        self.log_every = check_cadence("log_every", log_every)
        self.prefix = prefix
        self.trainer = trainer
        self.monitor: RankMonitor | None = None
        self._latest: LatestRows | None = None
        self._loss: torch.Tensor | None = None
        self._cadence = 1
        inner: Callable[..., torch.Tensor] = trainer.training_step
        self._inner_training_step = inner

        def training_step(*a: Any, **k: Any) -> torch.Tensor:
            loss = inner(*a, **k)
            self._add_loss(loss)
            return loss

        trainer.training_step = training_step  # type: ignore[method-assign]
        trainer.add_callback(self)

    def _add_loss(self, loss: object) -> None:
        if isinstance(loss, torch.Tensor):  # stays on the device: no sync
            loss = loss.detach()
            self._loss = loss if self._loss is None else self._loss + loss

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.monitor is None:
            target = model if isinstance(model, nn.Module) else self.trainer.model
            assert isinstance(target, nn.Module)
            self.monitor = self.args.build(target, Path(args.output_dir), own_tensorboard=False)
            self._latest = listen(self.monitor, self.prefix)
        self._cadence = self.log_every or max(1, int(getattr(state, "logging_steps", 0) or args.logging_steps or 1))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._loss = None  # a new optimizer step: its micro-batches add up from here

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is None or self._latest is None:
            return
        step = int(state.global_step) - 1  # global_step already counts this optimizer step
        self.monitor.step(loss=self._loss, step=step)
        self._loss = None
        if state.global_step % self._cadence == 0:
            metrics = take_metrics(self.monitor, self._latest)
            if metrics:
                # trainer.log clears control.should_log; keep the Trainer's own logging of this step
                keep = control.should_log
                self.trainer.log(dict(metrics))
                control.should_log = keep
        if any_alert_stop(self.monitor):
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is None or self._latest is None:
            return
        metrics = take_metrics(self.monitor, self._latest)  # steps after the last logging step
        if metrics:
            self.trainer.log(dict(metrics))
        self.monitor.close()

    def detach(self) -> None:
        """Undo the ``training_step`` wrapper and remove the monitor's hooks."""
        self.trainer.training_step = self._inner_training_step  # type: ignore[method-assign]
        if self.monitor is not None:
            self.monitor.close()
