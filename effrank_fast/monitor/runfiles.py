"""A run folder: the monitor's sinks, opened lazily, with one timeline across restarts.

A write that fails (an unwritable, vanished or full folder) never loses a row: each sink keeps
what it could not write and writes it first at the next successful flush (in step order, once),
the folder is recreated when it disappeared, and every failure is recorded in ``failures``,
which meta.json carries as ``"write_errors"`` and ``effrank-fast report`` names in its summary::

    {"error": "PermissionError: [Errno 13] ...", "first_step": 4, "last_step": 7, "rows": 8,
     "written_at_step": 11}      # None while the rows are still waiting
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from effrank_fast._version import __version__
from effrank_fast.monitor.history import read_jsonl, steps_below
from effrank_fast.monitor.sinks import (
    HISTORY_CSV,
    HISTORY_JSONL,
    SPECTRUM_JSONL,
    CsvSink,
    JsonlSink,
    TensorBoardSink,
    tensorboard_available,
    write_meta,
)
from effrank_fast.safe_io import warn

MAX_FAILURES = 100  # entries kept in meta.json's "write_errors" (each one a whole outage)

if TYPE_CHECKING:
    from effrank_fast.monitor.monitor import RankMonitor


def _round7(xs: list[float]) -> list[float]:
    return [float(f"{x:.7g}") for x in xs]


class RunFiles:
    """history.jsonl, history.csv, spectrum.jsonl, meta.json and TensorBoard events in ``log_dir``."""

    def __init__(self, log_dir: str | Path, tensorboard: bool | None) -> None:
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if tensorboard and not tensorboard_available():
            raise ImportError("tensorboard=True but the tensorboard package is not installed (pip install tensorboard)")
        self.use_tb = tensorboard_available() if tensorboard is None else bool(tensorboard)
        self.jsonl = JsonlSink(self.dir / HISTORY_JSONL)
        self.csv = CsvSink(self.dir / HISTORY_CSV)
        self.spectrum = JsonlSink(self.dir / SPECTRUM_JSONL)
        self.tb: TensorBoardSink | None = None
        self._open = False
        self._first_step: int | None = None
        self.failures: list[dict[str, Any]] = []
        self._failing: dict[str, Any] | None = None  # the failure whose rows are still waiting

    def _prepare(self, first_step: int, resumed: bool) -> None:
        dropped = self.jsonl.truncate(first_step)
        self.csv.truncate(first_step)
        self.spectrum.truncate(first_step)
        if dropped and not resumed:
            warn(
                f"RankMonitor: {self.dir} already held {dropped} rows at steps >= {first_step}; they were replaced "
                "(one timeline per run folder; use a new log_dir to keep an earlier run)",
                stacklevel=7,  # _prepare ← write ← _flush ← flush ← _end_step ← step ← the training loop
            )
        if self.use_tb:
            self.tb = TensorBoardSink(self.dir, purge_step=first_step)  # same timeline rule as the files
        self._open = True

    def resume(self, step: int) -> list[dict[str, Any]]:
        """Cut the files back to steps < ``step`` and return those rows (the resumed history)."""
        if self.tb is not None:
            self.tb.close()
        for sink in (self.jsonl, self.csv, self.spectrum):  # rows not yet written at or after ``step`` go too
            sink.pending = steps_below(sink.pending, step)
        self._prepare(step, resumed=True)  # the rows still waiting go out at the next write
        return read_jsonl(self.jsonl.path, warn=False)

    def write(
        self,
        rows: list[dict[str, Any]],
        spectrum: list[dict[str, Any]],
        earlier: Callable[[], list[dict[str, Any]] | None] | None = None,
    ) -> str | None:
        """Write ``rows`` and every row still waiting; never raises.

        ``earlier()``: every row so far (the monitor's full history) or None; used to write the
        rows again when the run folder vanished. Returns None, or the failure's message (the rows
        then wait for the next call, and the failure is recorded in ``failures``).
        """
        if rows and self._first_step is None:
            self._first_step = min(r["step"] for r in rows)
        steps = [r["step"] for r in rows]
        errors: list[str] = []
        try:
            if self._ensure_dir():
                errors.append(
                    f"the run folder {self.dir} had vanished and was recreated" + self._restore(rows, earlier)
                )
            if not self._open and self._first_step is not None:
                self._prepare(self._first_step, resumed=False)
        except Exception as exc:  # every sink queues its rows below all the same
            errors.append(f"{type(exc).__name__}: {exc}")
        self.jsonl.queue(rows)
        self.csv.queue(rows)
        self.spectrum.queue([{**r, "eigenvalues": _round7(r["eigenvalues"])} for r in spectrum])
        for sink in (self.jsonl, self.csv, self.spectrum) if self._open else ():
            try:
                sink.flush()
            except Exception as exc:
                errors.append(f"{sink.path.name}: {type(exc).__name__}: {exc}")
        if self.tb is not None and rows and not errors:  # its writer thread would fail on a broken folder
            try:
                self.tb.write(rows)
            except Exception as exc:  # TensorBoard keeps no backlog: the files hold every row
                errors.append(f"TensorBoard: {type(exc).__name__}: {exc}")
        self._record(steps, "; ".join(errors) if errors else None, self.waiting)
        return "; ".join(errors) if errors else None

    @property
    def waiting(self) -> bool:
        """Rows a failed write left queued."""
        return any(s.pending for s in (self.jsonl, self.csv, self.spectrum))

    def _ensure_dir(self) -> bool:
        """Create the run folder again if it vanished; True when it had to be recreated."""
        if self.dir.is_dir():
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.tb is not None:  # its event file went with the folder
            self.tb.close()
            self.tb = TensorBoardSink(self.dir, purge_step=None)
        return self._open

    def _restore(self, rows: list[dict[str, Any]], earlier: Callable[[], list[dict[str, Any]] | None] | None) -> str:
        """Queue again the rows the vanished folder held (those before every waiting row)."""
        old = earlier() if earlier is not None else None
        if old is None:
            return " (the rows written before went with it)"
        waiting = [r["step"] for s in (self.jsonl, self.csv) for r in s.pending] + [r["step"] for r in rows]
        old = steps_below(old, min(waiting)) if waiting else old
        for sink in (self.jsonl, self.csv):
            sink.pending[:0] = old
        return f" ({len(old)} earlier rows written again from memory; the spectrum rows went with it)"

    def _record(self, steps: list[int], error: str | None, waiting: bool) -> None:
        """Keep ``failures`` up to date: one entry per outage (consecutive failed writes)."""
        f = self._failing
        if error is not None:
            if f is None:
                if len(self.failures) >= MAX_FAILURES:
                    self.failures.pop(1)  # keep the first outage and the latest ones
                f = {"error": error, "first_step": None, "last_step": None, "rows": 0, "written_at_step": None}
                self.failures.append(f)
            if steps:
                f["first_step"] = steps[0] if f["first_step"] is None else f["first_step"]
                f["last_step"] = steps[-1]
                f["rows"] += len(steps)
        if f is not None and not waiting:
            f["written_at_step"] = steps[-1] if steps else f["last_step"]
            f = None
        self._failing = f if waiting else None

    def meta(self, meta: dict[str, Any]) -> None:
        write_meta(self.dir, meta)

    def close(self, meta: dict[str, Any]) -> None:
        self.meta(meta)
        if self.tb is not None:
            self.tb.close()


def monitor_meta(mon: RankMonitor, closed: bool = False) -> dict[str, Any]:
    """meta.json: the monitor's conventions, layers, step count and the user's run metadata."""

    n_probe = None if mon.probe is None else mon.probe.n
    return {
        "effrank_fast": __version__,
        "torch": torch.__version__,
        "eps": mon.eps.tolist(),
        "relative": mon.relative,
        "mode": mon.mode,
        "center": mon.center,
        "source": "probe" if mon.probe is not None else "batch",
        "probe_points": n_probe,
        "probe_weight_sum": None if mon.weights is None else float(mon.weights.double().sum()),
        "every": mon.every,
        "steps": mon._step,
        "flush_every": mon.flush_every,
        "spectrum_every": mon.spectrum_every,
        "topk": mon.topk,
        "tracker": mon.engine.name,
        "accumulate": mon.accumulate,
        "ema_decay": mon.ema_decay if mon.accumulate == "ema" else None,
        "gram_backend": mon.gram_backend,
        "acc_dtype": str(mon.acc_dtype) if mon.acc_dtype is not None else None,
        "fused": mon.fused,
        "world_size": mon.world,
        "layers": mon.layer_info(),
        "columns": mon.engine.columns(),
        "closed": closed,
        "write_errors": [] if mon.files is None else mon.files.failures,
        "run": mon.run_meta,
    }
