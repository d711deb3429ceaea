"""Lightning integration: ``RankMonitorCallback`` (needs ``lightning`` or ``pytorch_lightning``).

    trainer = lightning.Trainer(callbacks=[RankMonitorCallback(layers="all_hidden", eps=[1e-3])])

The callback builds a :class:`~effrank_fast.RankMonitor` on the LightningModule at ``setup("fit")``
(log folder: ``<trainer.log_dir>/rank`` unless ``log_dir=`` is given), calls ``step`` once per
optimizer step (micro-batches of gradient accumulation add up in batch mode), saves and restores
the monitor with the checkpoint, and closes it at the end of fit or on an exception. Under DDP
the monitor all-reduces automatically and only global rank 0 writes files.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from effrank_fast.monitor.monitor import RankMonitor


def _callback_base() -> Any:
    for module in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(module).Callback
        except ImportError:
            continue
    return None


_BASE: Any = _callback_base()
HAS_LIGHTNING = _BASE is not None


class MonitorDriver:
    """What the callback does, independent of Lightning (so it is testable without it)."""

    def __init__(self, **monitor_kwargs: Any) -> None:
        self.kwargs = monitor_kwargs
        self.monitor: RankMonitor | None = None
        self._pending_state: dict[str, Any] | None = None
        self._step_at_batch_start: int | None = None

    def setup(self, module: nn.Module, default_dir: str | Path | None) -> None:
        if self.monitor is not None:
            return
        kwargs = dict(self.kwargs)
        if "log" not in kwargs and "log_dir" not in kwargs and default_dir is not None:
            kwargs["log"] = Path(default_dir) / "rank"
        self.monitor = RankMonitor(module, **kwargs)
        if self._pending_state is not None:
            self.monitor.load_state_dict(self._pending_state)
            self._pending_state = None

    def batch_start(self, global_step: int) -> None:
        self._step_at_batch_start = global_step

    def batch_end(self, outputs: Any, global_step: int) -> None:
        """Called after every training batch; steps the monitor when an optimizer step happened in it."""
        start, self._step_at_batch_start = self._step_at_batch_start, None
        if self.monitor is None or start is None or global_step == start:
            return  # gradient accumulation: no optimizer step in this batch
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        self.monitor.step(loss=loss, step=start)

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


class RankMonitorCallback(_BASE if HAS_LIGHTNING else object):  # type: ignore[misc]
    """A Lightning ``Callback`` around :class:`~effrank_fast.RankMonitor`; takes the same keyword arguments."""

    def __init__(self, **monitor_kwargs: Any) -> None:
        if not HAS_LIGHTNING:
            raise ImportError("RankMonitorCallback needs Lightning: pip install lightning (or pytorch_lightning)")
        super().__init__()
        self.driver = MonitorDriver(**monitor_kwargs)

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if stage == "fit":
            self.driver.setup(pl_module, getattr(trainer, "log_dir", None) or trainer.default_root_dir)

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        self.driver.batch_start(int(trainer.global_step))

    def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.driver.batch_end(outputs, int(trainer.global_step))

    def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self.driver.close()

    def on_exception(self, trainer: Any, pl_module: nn.Module, exception: BaseException) -> None:
        self.driver.close()

    def state_dict(self) -> dict[str, Any]:
        return self.driver.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.driver.load_state_dict(state_dict)
