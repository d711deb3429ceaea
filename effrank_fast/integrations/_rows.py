"""Flushed monitor rows as flat metric dictionaries, the form every training stack logs.

A row ``{"step": 12, "layer": "h0", "eps_rank@0.01": 10, "entropy_rank": 17.3, ...}`` becomes
``{"rank/h0/eps_rank@0.01": 10.0, "rank/h0/entropy_rank": 17.3, ...}`` (the same keys as the
monitor's own TensorBoard scalars). NaN measures are kept: a non-finite layer shows as NaN.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Row columns that are not measures of the layer.
NOT_METRICS = frozenset(("step", "layer", "loss", "wall_time", "nonfinite", "error"))


def metric_items(row: dict[str, Any], prefix: str = "rank") -> dict[str, float]:
    """``{prefix/layer/column: value}`` for the numeric measure columns of one row."""
    head = f"{prefix}/{row['layer']}" if prefix else str(row["layer"])
    return {
        f"{head}/{k}": float(v)
        for k, v in row.items()
        if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def by_step(rows: Iterable[dict[str, Any]], prefix: str = "rank") -> dict[int, dict[str, float]]:
    """The metrics of every measured step, keyed by step (rows of one flush, in order)."""
    out: dict[int, dict[str, float]] = {}
    for r in rows:
        out.setdefault(int(r["step"]), {}).update(metric_items(r, prefix))
    return out


class LatestRows:
    """A monitor row listener keeping the metrics of the latest measured step not yet taken."""

    def __init__(self, prefix: str = "rank") -> None:
        self.prefix = prefix
        self.step: int | None = None
        self.metrics: dict[str, float] = {}

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        steps = by_step(rows, self.prefix)
        if steps:
            self.step = max(steps)
            self.metrics = steps[self.step]

    def take(self) -> tuple[int | None, dict[str, float]]:
        """The latest step's metrics, once (empty until the next flush brings new rows)."""
        step, metrics = self.step, self.metrics
        self.step, self.metrics = None, {}
        return step, metrics
