"""What the training-stack callbacks share: the monitor's typed arguments and the rows they log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effrank_fast.integrations._rows import LatestRows
from effrank_fast.monitor.config import RunLog
from effrank_fast.monitor.monitor import RankMonitor


@dataclass(frozen=True)
class MonitorArgs:
    """:class:`~effrank_fast.RankMonitor`'s own parameters, held by a callback until it sees the model."""

    layers: object = "last_hidden"
    eps: float | tuple[float, ...] | list[float] | torch.Tensor = (1e-2, 1e-3, 1e-4)
    relative: str | None = None
    every: int = 1
    probe: object = None
    features: object = None
    engine: object = "exact"
    log: object = None
    accumulate: object = "step"
    distributed: bool | None = None
    alerts: object = None

    def __post_init__(self) -> None:
        if isinstance(self.eps, list):  # a list from the callback's signature: held as a tuple (hashable state)
            object.__setattr__(self, "eps", tuple(self.eps))

    def build(self, model: nn.Module, default_dir: str | Path | None, *, own_tensorboard: bool) -> RankMonitor:
        """The monitor on ``model``; ``log=None`` writes to ``<default_dir>/rank`` (no files without one).

        ``own_tensorboard=False`` keeps the monitor's own TensorBoard events off in that default
        folder: the callback's keys reach the stack's loggers already.
        """
        log = self.log
        if log is None and default_dir is not None:
            log = RunLog(dir=Path(default_dir) / "rank", tensorboard=None if own_tensorboard else False)
        return RankMonitor(
            model,
            self.layers,
            self.eps,
            relative=self.relative,
            every=self.every,
            probe=self.probe,  # type: ignore[arg-type]
            features=self.features,  # type: ignore[arg-type]
            engine=self.engine,  # type: ignore[arg-type]
            log=log,  # type: ignore[arg-type]
            accumulate=self.accumulate,  # type: ignore[arg-type]
            distributed=self.distributed,
            alerts=self.alerts,  # type: ignore[arg-type]
        )


def check_cadence(name: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")
    return value


def listen(monitor: RankMonitor, prefix: str) -> LatestRows:
    """A :class:`LatestRows` registered on ``monitor``."""
    latest = LatestRows(prefix)
    monitor.row_listeners.append(latest)
    return latest


def take_metrics(monitor: RankMonitor, latest: LatestRows) -> dict[str, float]:
    """Flush (the cadence's one host sync) and return the newest measured step's metrics."""
    monitor.flush()
    return latest.take()[1]


def any_alert_stop(monitor: Any) -> bool:
    return bool(monitor is not None and monitor.alerts.stop_requested)
