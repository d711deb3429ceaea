"""A native Weights & Biases sink: the monitor's rows go to ``wandb.log`` at each flush.

    run = wandb.init(project="x")
    mon = ef.RankMonitor(model, layers="all_hidden", log=RunLog(flush_every=10))
    WandbSink(run).attach(mon)                     # or WandbSink().attach(mon): the current run

Each measured step is one ``run.log`` call holding ``rank/<layer>/<metric>`` (the monitor's
TensorBoard keys) and ``rank/step``, the monitor's step number. The ``rank/*`` keys are plotted
against ``rank/step`` (``run.define_metric``), so they need no ``step=`` of their own and never
clash with the step counter of the rest of your logging. Rows reach W&B at each flush (a host
sync): set the monitor's ``flush_every`` to how fresh the charts should be (1: every measured
step). In tests use ``WANDB_MODE=offline``: nothing touches the network.
"""

from __future__ import annotations

from typing import Any

import wandb

from effrank_fast.integrations._rows import by_step
from effrank_fast.monitor.monitor import RankMonitor


class WandbSink:
    """A row listener logging each measured step to a W&B run.

    Args:
        run: a ``wandb`` run (from ``wandb.init``); None: the run active at each flush
            (``wandb.run``), rows are dropped with one warning from the monitor while none is.
        prefix: the key prefix (``rank``).
        log_loss: also log the monitor's ``loss`` column as ``<prefix>/loss``.
    """

    def __init__(self, run: Any = None, *, prefix: str = "rank", log_loss: bool = False) -> None:
        if not isinstance(prefix, str) or not prefix or "*" in prefix:
            raise ValueError(f"prefix must be a non-empty key prefix without '*', got {prefix!r}")
        self.run, self.prefix, self.log_loss = run, prefix, bool(log_loss)
        self._defined: set[int] = set()

    def attach(self, monitor: RankMonitor) -> WandbSink:
        """Register with ``monitor`` (its flushes call this sink); returns self."""
        if not isinstance(monitor, RankMonitor):
            raise TypeError(f"monitor must be a RankMonitor, got {type(monitor).__name__}")
        monitor.row_listeners.append(self)
        return self

    def _target(self) -> Any:
        run = self.run if self.run is not None else wandb.run
        if run is None:
            raise RuntimeError("no active W&B run: call wandb.init() first or pass WandbSink(run)")
        if id(run) not in self._defined:  # rank/* against rank/step, not W&B's own step counter
            run.define_metric(f"{self.prefix}/step")
            run.define_metric(f"{self.prefix}/*", step_metric=f"{self.prefix}/step")
            self._defined.add(id(run))
        return run

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        run = self._target()
        losses = {int(r["step"]): r.get("loss") for r in rows}
        for step, metrics in by_step(rows, self.prefix).items():
            payload: dict[str, Any] = {f"{self.prefix}/step": step, **metrics}
            loss = losses.get(step)
            if self.log_loss and isinstance(loss, (int, float)):
                payload[f"{self.prefix}/loss"] = float(loss)
            run.log(payload)
