"""Lightning: :class:`RankMonitorCallback` (needs ``lightning`` or ``pytorch_lightning``).

    trainer = lightning.Trainer(callbacks=[
        RankMonitorCallback(layers="all_hidden", eps=[1e-3],
                            alerts=CollapseAlert(metric="eps_rank@0.001", fraction_of_max=0.5, action="stop")),
        EarlyStopping(monitor="rank/hidden2/eps_rank@0.001", mode="max", check_on_train_epoch_end=True),
    ])

The callback builds a :class:`~effrank_fast.RankMonitor` on the LightningModule at ``setup("fit")``
and steps it once per optimizer step (the micro-batches of gradient accumulation add up). Every
``log_every_n_steps`` optimizer steps (default: the Trainer's own ``log_every_n_steps``, so the
keys land on the steps Lightning writes) it flushes the monitor and logs the newest measured
step's ``rank/<layer>/<metric>`` through ``pl_module.log_dict``: ``trainer.logged_metrics``,
``trainer.callback_metrics`` and every logger (CSVLogger, TensorBoardLogger, WandbLogger, ...)
see them, so ``EarlyStopping`` and ``ModelCheckpoint`` can monitor a rank. The monitor also
writes its run folder (``<trainer.log_dir>/rank`` unless ``log=`` is given; its own TensorBoard
events only when the Trainer has no logger). It is saved and restored with the checkpoint, and
closed at the end of fit or on an exception. Under DDP the monitor all-reduces automatically, so
every rank logs the same values, and only global rank 0 writes files. A
:class:`~effrank_fast.monitor.alerts.CollapseAlert` with ``action="stop"`` sets ``trainer.should_stop``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effrank_fast.integrations._common import MonitorArgs, any_alert_stop, check_cadence, listen, take_metrics
from effrank_fast.integrations._rows import LatestRows
from effrank_fast.monitor.monitor import RankMonitor

Callback: Any
try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError:
        Callback = None

HAS_LIGHTNING = Callback is not None


class MonitorDriver:
    """What the callback does with the monitor, independent of Lightning's classes."""

    def __init__(self, args: MonitorArgs, prefix: str = "rank") -> None:
        self.args, self.prefix = args, prefix
        self.monitor: RankMonitor | None = None
        self.latest: LatestRows | None = None
        self._pending_state: dict[str, Any] | None = None
        self._step_at_batch_start: int | None = None

    def setup(self, module: nn.Module, default_dir: str | Path | None, *, own_tensorboard: bool = True) -> None:
        if self.monitor is not None:
            return
        self.monitor = self.args.build(module, default_dir, own_tensorboard=own_tensorboard)
        self.latest = listen(self.monitor, self.prefix)
        if self._pending_state is not None:
            self.monitor.load_state_dict(self._pending_state)
            self._pending_state = None

    def batch_start(self, global_step: int) -> None:
        self._step_at_batch_start = global_step

    def batch_end(self, outputs: Any, global_step: int) -> bool:
        """After every training batch: steps the monitor when an optimizer step happened in it."""
        start, self._step_at_batch_start = self._step_at_batch_start, None
        if self.monitor is None or start is None or global_step == start:
            return False  # gradient accumulation: no optimizer step in this batch
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        self.monitor.step(loss=loss, step=start)
        return True

    def metrics(self) -> dict[str, float]:
        """Flush and return the newest measured step's ``rank/<layer>/<metric>`` values (once)."""
        if self.monitor is None or self.latest is None:
            return {}
        return take_metrics(self.monitor, self.latest)

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict() if self.monitor is not None else dict(self._pending_state or {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.monitor is not None:
            self.monitor.load_state_dict(state)
        else:
            self._pending_state = dict(state)


class RankMonitorCallback(Callback if HAS_LIGHTNING else object):  # type: ignore[misc]
    """A Lightning ``Callback`` around :class:`~effrank_fast.RankMonitor`.

    Args:
        layers, eps, relative, every, probe, features, engine, log, accumulate, distributed, alerts:
            as in :class:`~effrank_fast.RankMonitor` (``log=None``: ``<trainer.log_dir>/rank``).
        log_every_n_steps: flush and log every this many optimizer steps (None: the Trainer's).
        prefix: the key prefix (``rank``).
    """

    def __init__(
        self,
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
        log_every_n_steps: int | None = None,
        prefix: str = "rank",
    ) -> None:
        if not HAS_LIGHTNING:
            raise ImportError("RankMonitorCallback needs Lightning: pip install lightning (or pytorch_lightning)")
        super().__init__()
        args = MonitorArgs(
            layers, eps, relative, every, probe, features, engine, log,
            accumulate, distributed, alerts,
        )  # fmt: skip
        self.log_every_n_steps = check_cadence("log_every_n_steps", log_every_n_steps)
        self.driver = MonitorDriver(args, prefix)

    @property
    def monitor(self) -> RankMonitor | None:
        return self.driver.monitor

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if stage == "fit":
            default = getattr(trainer, "log_dir", None) or trainer.default_root_dir
            self.driver.setup(pl_module, default, own_tensorboard=not trainer.loggers)

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        self.driver.batch_start(int(trainer.global_step))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.driver.batch_end(outputs, int(trainer.global_step)):
            return
        cadence = self.log_every_n_steps or max(1, int(trainer.log_every_n_steps or 1))
        if trainer.global_step % cadence == 0:  # the optimizer steps on which Lightning writes its logs
            metrics = self.driver.metrics()
            if metrics:
                pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
        if any_alert_stop(self.driver.monitor):
            trainer.should_stop = True

    def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self.driver.close()

    def on_exception(self, trainer: Any, pl_module: nn.Module, exception: BaseException) -> None:
        self.driver.close()

    def state_dict(self) -> dict[str, Any]:
        return self.driver.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.driver.load_state_dict(state_dict)
