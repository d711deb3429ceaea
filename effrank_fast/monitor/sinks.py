"""Where flushed rows go: JSONL, CSV and TensorBoard (rank 0 only).

Files are appended once per flush with a single ``os.write`` of whole lines followed by
``os.fsync``, so a crash (even SIGKILL) loses at most the rows after the last flush and leaves
every line complete. Appends never follow a symlink and rewrites are atomic
(:mod:`effrank_fast.safe_io`). Each file sink keeps the rows it could not write (an unwritable or
vanished folder, a full disk) and writes them first at its next successful write, so every row
reaches every file once and in step order.

Files in a run folder:

- ``history.jsonl`` and ``history.csv``: one row per (measured step, layer);
- ``spectrum.jsonl``: ``{"step", "layer", "eigenvalues"}`` every ``spectrum_every`` steps
  (7 significant digits);
- ``meta.json``: the monitor's conventions (ε, relative, mode, layers, ...), replaced atomically.

A run folder that already holds rows keeps one timeline: before the first write, rows at steps
≥ the first new step are dropped (a resumed run overwrites what happened after its checkpoint).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import operator
from pathlib import Path
from typing import Any

from effrank_fast import safe_io
from effrank_fast.monitor.history import csv_text, read_csv, read_jsonl, steps_below, to_jsonable

HISTORY_JSONL = "history.jsonl"
HISTORY_CSV = "history.csv"
SPECTRUM_JSONL = "spectrum.jsonl"
META_JSON = "meta.json"


def _append(path: Path, text: str) -> None:
    safe_io.append_bytes(path, text.encode())


def _replace(path: Path, text: str) -> None:
    safe_io.replace_bytes(path, text.encode())


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    _replace(run_dir / META_JSON, json.dumps(to_jsonable(meta), indent=2, default=str) + "\n")


# What json.dumps writes for non-finite floats; the files hold strict JSON (null) instead.
_NONFINITE = ("NaN", "Infinity")


def _holds_token(v: Any) -> bool:
    """Whether a string in ``v`` could hold a non-finite token (then the slow path converts)."""
    if isinstance(v, str):
        return any(t in v for t in _NONFINITE)
    if isinstance(v, (list, tuple)):
        return any(not isinstance(x, (int, float)) and _holds_token(x) for x in v)
    if isinstance(v, dict):
        return any(_holds_token(k) or _holds_token(x) for k, x in v.items())
    return False


def _json_line(row: dict[str, Any]) -> str:
    """``row`` as one line of strict JSON (NaN/Inf → null). The C encoder writes the row as it is
    and its NaN/Infinity tokens become null, unless a string of the row could hold such a token
    (then :func:`to_jsonable` converts value by value): a flush writes thousands of rows."""
    text = json.dumps(row)
    if ("NaN" in text or "Infinity" in text) and not any(_holds_token(k) or _holds_token(v) for k, v in row.items()):
        return text.replace("-Infinity", "null").replace("Infinity", "null").replace("NaN", "null")
    if "NaN" in text or "Infinity" in text:
        return json.dumps(to_jsonable(row), allow_nan=False)
    return text


def _jsonl_lines(rows: list[dict[str, Any]]) -> str:
    return "".join(_json_line(r) + "\n" for r in rows)


class JsonlSink:
    """Appends rows as JSON lines; rows whose write failed stay in ``pending`` for the next write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: list[dict[str, Any]] = []

    def truncate(self, first_step: int) -> int:
        """Drop rows at steps ≥ ``first_step``; returns how many rows were dropped."""
        rows = read_jsonl(self.path, warn=False)
        keep = steps_below(rows, first_step)
        if len(keep) != len(rows) or (self.path.exists() and self._has_partial_line()):
            _replace(self.path, _jsonl_lines(keep))
        return len(rows) - len(keep)

    def _has_partial_line(self) -> bool:
        with self.path.open("rb") as f:
            data = f.read()
        return bool(data) and not data.endswith(b"\n")

    def queue(self, rows: list[dict[str, Any]]) -> None:
        self.pending.extend(rows)

    def flush(self) -> None:
        """Append every queued row; raises ``OSError`` (the rows stay queued)."""
        if self.pending:
            _append(self.path, _jsonl_lines(self.pending))
            self.pending = []

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.queue(rows)
        self.flush()


class CsvSink:
    """CSV with a header fixed by the first rows (extra keys later are added by a rewrite)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        self.pending: list[dict[str, Any]] = []

    def _render(self, rows: list[dict[str, Any]], header: bool) -> str:
        assert self.columns is not None
        return self._render_with(self.columns, rows, header)

    @staticmethod
    def _render_with(columns: list[str], rows: list[dict[str, Any]], header: bool) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if header:
            w.writerow(columns)
        plain = (int, float, str)  # the csv module writes these as csv_text would (str(float) is its repr)
        take = operator.itemgetter(*columns) if len(columns) > 1 else None
        for r in rows:
            values: Any = None
            if take is not None and len(r) == len(columns):  # every column present: one C call picks them
                try:
                    values = take(r)
                except KeyError:  # as many keys, not the same ones
                    values = None
            if values is None:
                values = (r.get(c, "") for c in columns)
            w.writerow([v if v.__class__ in plain else csv_text(v) for v in values])
        return buf.getvalue()

    def truncate(self, first_step: int) -> int:
        if not self.path.exists():
            return 0
        rows = read_csv(self.path)
        with self.path.open(newline="") as f:
            self.columns = next(csv.reader(f), None)
        keep = steps_below(rows, first_step)
        if not self.columns:
            self.columns = None
        elif len(keep) != len(rows):
            _replace(self.path, self._render(keep, header=True))
        return len(rows) - len(keep)

    def queue(self, rows: list[dict[str, Any]]) -> None:
        self.pending.extend(rows)

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.queue(rows)
        self.flush()

    def flush(self) -> None:
        """Write every queued row; raises ``OSError`` (the rows stay queued)."""
        rows = self.pending
        if not rows:
            return
        keys = list(dict.fromkeys(itertools.chain.from_iterable(rows)))  # every row's keys, in order
        if self.columns is None or not self.path.exists():  # a new file (or the old one vanished)
            self.columns = (self.columns or []) + [k for k in keys if k not in (self.columns or [])]
            _append(self.path, self._render(rows, header=True))
            self.pending = []
            return
        extra = [k for k in keys if k not in self.columns]
        if extra:  # a new column (e.g. a layer with a readout norm appeared): rewrite with the union
            old = read_csv(self.path)
            columns = self.columns + extra
            text = self._render_with(columns, old, header=True)
            _replace(self.path, text)
            self.columns = columns
        _append(self.path, self._render(rows, header=False))
        self.pending = []


class TensorBoardSink:
    """``SummaryWriter`` scalars ``rank/<layer>/<metric>`` and ``rank/loss``.

    A row's scalars go in one event (one ``Summary`` holding every value, as TensorBoard reads
    them): ``add_scalar`` per value queued ~30 events per row through the writer's 10-slot queue,
    and a flush of the staircase demo's 250 steps × 3 layers spent ≈ 0.9 s waiting on it.
    """

    SKIP = ("step", "layer", "loss", "wall_time", "nonfinite", "error")
    QUEUE = 1024  # events the writer's thread may hold before ``write`` waits on it

    def __init__(self, log_dir: Path, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, max_queue=self.QUEUE)
        self._last_loss_step: int | None = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        value = Summary.Value  # what add_scalar writes: a tag and a simple_value
        file_writer = self.writer._get_file_writer()  # the writer add_scalar itself goes through
        for r in rows:
            step = r["step"]
            values = []
            if step != self._last_loss_step:
                values.append(value(tag="rank/loss", simple_value=float(r["loss"])))
                self._last_loss_step = step
            for k, v in r.items():
                if k not in self.SKIP and isinstance(v, (int, float)):
                    values.append(value(tag=f"rank/{r['layer']}/{k}", simple_value=float(v)))
            if values:
                file_writer.add_summary(Summary(value=values), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True
