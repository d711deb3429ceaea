"""Collapse alerts: a label-free gate on a layer's rank (``RankMonitor(alerts=...)`` and the callbacks).

    alert = CollapseAlert(metric="eps_rank@0.001", fraction_of_max=0.5, action="stop")
    mon = RankMonitor(model, layers="all_hidden", alerts=[alert])
    ...
    if mon.alerts.stop_requested: break          # the callbacks stop the Trainer themselves

An alert fires when a layer's ``metric`` (a row column: ``eps_rank@ε``, ``entropy_rank``,
``stable_rank``, ``participation_ratio``, ...) drops below ``below``, or below
``fraction_of_max`` times the largest value that layer has had so far in the run (its running
maximum), for ``patience`` consecutive measured steps. Alerts are checked on the rows of each
flush, which are already on the host: they add no device synchronisation, and they fire at the
flush after the collapse (``flush_every`` steps at most; the callbacks flush at their logging
cadence). Rows with a NaN measure (non-finite activations, a failed measurement) neither fire
nor reset an alert.

Actions: ``"warn"`` (a RuntimeWarning), ``"stop"`` (a warning, and ``stop_requested`` becomes
True: the Lightning callback sets ``trainer.should_stop``, the HF callback
``control.should_training_stop``; a hand-written loop reads ``mon.alerts.stop_requested``), or a
callable ``fn(event: CollapseEvent)``. An alert fires once per layer until the metric recovers
above its threshold. An exception raised by a callable is a warning: the run goes on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("warn", "stop")


@dataclass(frozen=True)
class CollapseEvent:
    """One firing: ``layer``'s ``metric`` was ``value`` at ``step``, below ``threshold``."""

    alert: CollapseAlert
    step: int
    layer: str
    metric: str
    value: float
    threshold: float
    running_max: float
    reason: str

    def message(self) -> str:
        return (
            f"rank collapse: layer {self.layer!r} {self.metric} = {self.value:g} at step {self.step}, "
            f"below {self.threshold:g} ({self.reason}; running max {self.running_max:g})"
        )


@dataclass(frozen=True)
class CollapseAlert:
    """Fire when ``metric`` drops below ``below`` or below ``fraction_of_max`` × its running maximum.

    Args:
        metric: a row column, e.g. ``"eps_rank@0.001"``, ``"entropy_rank"``, ``"stable_rank"``.
        below: an absolute threshold (fires when value < below).
        fraction_of_max: a fraction in (0, 1] of the layer's running maximum of ``metric``.
        action: ``"warn"``, ``"stop"`` or a callable ``fn(event)``.
        layers: the layer labels to watch (None: every layer).
        patience: consecutive measured steps below the threshold before firing (≥ 1).
    At least one of ``below`` and ``fraction_of_max`` is required; with both, the larger threshold wins.
    """

    metric: str
    below: float | None = None
    fraction_of_max: float | None = None
    action: str | Callable[[CollapseEvent], Any] = "warn"
    layers: Sequence[str] | None = None
    patience: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"metric must be a row column name such as 'eps_rank@0.001', got {self.metric!r}")
        if self.below is None and self.fraction_of_max is None:
            raise ValueError("CollapseAlert needs below= or fraction_of_max= (or both)")
        if self.below is not None and not _is_real(self.below):
            raise TypeError(f"below must be a number, got {self.below!r}")
        if self.fraction_of_max is not None and not (
            _is_real(self.fraction_of_max) and 0.0 < float(self.fraction_of_max) <= 1.0
        ):
            raise ValueError(f"fraction_of_max must be in (0, 1], got {self.fraction_of_max!r}")
        if not (callable(self.action) or self.action in ACTIONS):
            raise ValueError(f"action must be 'warn', 'stop' or a callable fn(event), got {self.action!r}")
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))
        elif self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {self.patience!r}")

    def threshold(self, running_max: float) -> tuple[float, str]:
        """The threshold now, and which rule set it."""
        cands: list[tuple[float, str]] = []
        if self.below is not None:
            cands.append((float(self.below), f"below={self.below:g}"))
        if self.fraction_of_max is not None and math.isfinite(running_max):
            cands.append((float(self.fraction_of_max) * running_max, f"fraction_of_max={self.fraction_of_max:g}"))
        return max(cands, default=(-math.inf, ""))


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass
class _LayerState:
    running_max: float = -math.inf
    streak: int = 0
    fired: bool = False


@dataclass
class Alerts:
    """The alerts of one monitor and their state; :meth:`check` reads each flush's rows."""

    alerts: tuple[CollapseAlert, ...] = ()
    events: list[CollapseEvent] = field(default_factory=list)
    stop_requested: bool = False
    _state: dict[tuple[int, str], _LayerState] = field(default_factory=dict)

    @classmethod
    def of(cls, alerts: object) -> Alerts:
        """From ``alerts=``: None, one :class:`CollapseAlert` or a sequence of them."""
        if alerts is None:
            return cls()
        if isinstance(alerts, CollapseAlert):
            return cls((alerts,))
        if isinstance(alerts, Iterable) and not isinstance(alerts, (str, bytes)):
            items = tuple(alerts)
            bad = [a for a in items if not isinstance(a, CollapseAlert)]
            if not bad:
                return cls(items)
        raise TypeError(f"alerts must be a CollapseAlert or a list of them, got {alerts!r}")

    def __bool__(self) -> bool:
        return bool(self.alerts)

    def check(self, rows: Iterable[dict[str, Any]]) -> list[CollapseEvent]:
        """Update the running maxima with ``rows`` (in step order) and act on new firings."""
        fired: list[CollapseEvent] = []
        if not self.alerts:
            return fired
        for row in rows:
            for i, alert in enumerate(self.alerts):
                event = self._check_one(i, alert, row)
                if event is not None:
                    fired.append(event)
        for event in fired:
            self.events.append(event)
            self._act(event)
        return fired

    def _check_one(self, i: int, alert: CollapseAlert, row: dict[str, Any]) -> CollapseEvent | None:
        layer = str(row.get("layer", ""))
        if alert.layers is not None and layer not in alert.layers:
            return None
        value = row.get(alert.metric)
        if not _is_real(value):
            return None  # NaN, a missing column or a failed row: no evidence either way
        v = float(value)  # type: ignore[arg-type]
        st = self._state.setdefault((i, layer), _LayerState())
        threshold, reason = alert.threshold(st.running_max)
        st.running_max = max(st.running_max, v)
        if v >= threshold:
            st.streak, st.fired = 0, False
            return None
        st.streak += 1
        if st.fired or st.streak < alert.patience:
            return None
        st.fired = True
        return CollapseEvent(alert, int(row.get("step", -1)), layer, alert.metric, v, threshold, st.running_max, reason)

    def _act(self, event: CollapseEvent) -> None:
        action = event.alert.action
        if action == "stop":
            self.stop_requested = True
            warnings.warn(event.message() + "; stopping the run", RuntimeWarning, stacklevel=4)
        elif action == "warn":
            warnings.warn(event.message(), RuntimeWarning, stacklevel=4)
        else:
            try:
                action(event)  # type: ignore[operator]
            except Exception as exc:  # the user's callback must not stop training
                warnings.warn(
                    f"CollapseAlert action {action!r} raised {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=4
                )
