"""A run folder: the monitor's sinks, opened lazily, with one timeline across restarts."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from effrank_fast.monitor.history import read_jsonl
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

    def _prepare(self, first_step: int, resumed: bool) -> None:
        dropped = self.jsonl.truncate(first_step)
        self.csv.truncate(first_step)
        self.spectrum.truncate(first_step)
        if dropped and not resumed:
            warnings.warn(
                f"RankMonitor: {self.dir} already held {dropped} rows at steps >= {first_step}; they were replaced "
                "(one timeline per run folder; use a new log_dir to keep an earlier run)",
                RuntimeWarning,
                stacklevel=5,  # _prepare ← write ← flush ← step ← the training loop
            )
        if self.use_tb:
            self.tb = TensorBoardSink(self.dir, purge_step=first_step)  # same timeline rule as the files
        self._open = True

    def resume(self, step: int) -> list[dict[str, Any]]:
        """Cut the files back to steps < ``step`` and return those rows (the resumed history)."""
        if self.tb is not None:
            self.tb.close()
        self._prepare(step, resumed=True)
        return read_jsonl(self.jsonl.path, warn=False)

    def write(self, rows: list[dict[str, Any]], spectrum: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if not self._open:
            self._prepare(min(r["step"] for r in rows), resumed=False)
        self.jsonl.write(rows)
        self.csv.write(rows)
        self.spectrum.write([{**r, "eigenvalues": _round7(r["eigenvalues"])} for r in spectrum])
        if self.tb is not None:
            self.tb.write(rows)

    def meta(self, meta: dict[str, Any]) -> None:
        write_meta(self.dir, meta)

    def close(self, meta: dict[str, Any]) -> None:
        self.meta(meta)
        if self.tb is not None:
            self.tb.close()


def monitor_meta(mon: RankMonitor, closed: bool = False) -> dict[str, Any]:
    """meta.json: the monitor's conventions, layers, step count and the user's run metadata."""
    from effrank_fast._version import __version__

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
        "run": mon.run_meta,
    }
