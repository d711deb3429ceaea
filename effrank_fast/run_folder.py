"""Reading a run folder back: :class:`Run` and :func:`load_run` (what ``effrank-fast report`` reads).

The files may come from a crashed run, a different version or a hostile hand. Nothing in them
ends in a traceback: a malformed ``meta.json`` or field of it, and every malformed line of
``history.jsonl`` or ``spectrum.jsonl`` (not JSON, not an object, no int ``step``, a non-number
measure), is a warning naming the file and line and is left out; a (step, layer) row that
appears again is reported and counted once (the last one kept: a later write replaces an
earlier one). What cannot be summarised at all raises :class:`ReportError`, one line naming the
file (``effrank-fast report`` prints it and exits with 2).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effrank_fast.monitor.engines import eps_label
from effrank_fast.monitor.history import iter_jsonl
from effrank_fast.monitor.sinks import HISTORY_JSONL, META_JSON, SPECTRUM_JSONL
from effrank_fast.safe_io import warn

__all__ = ["ReportError", "Run", "eps_column", "load_run"]


def eps_column(e: float) -> str:
    return f"eps_rank@{eps_label(e)}"


@dataclass
class Run:
    dir: Path
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    spectrum: list[dict[str, Any]]
    skipped_lines: int = 0  # malformed history lines left out
    duplicate_rows: int = 0  # repeated (step, layer) rows counted once

    @property
    def layers(self) -> list[str]:
        names = list(self.meta.get("layers") or {})
        seen = list(dict.fromkeys(r["layer"] for r in self.rows))
        return [n for n in names if n in seen] + [n for n in seen if n not in names]

    @property
    def eps(self) -> list[float]:
        return [float(e) for e in self.meta.get("eps", [])]

    def series(self, layer: str) -> dict[str, np.ndarray]:
        """Columns of one layer's rows as arrays, in step order."""
        rows = sorted((r for r in self.rows if r["layer"] == layer), key=lambda r: r["step"])
        keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("layer", "error")))
        return {k: np.array([r.get(k, math.nan) for r in rows], dtype=np.float64) for k in keys}


class ReportError(ValueError):
    """A run folder ``report`` cannot summarise; the message names the file (the CLI exits with 2)."""


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_eps(v: object) -> bool:
    return isinstance(v, list) and bool(v) and all(_is_num(e) and 0 < e < math.inf for e in v)


# meta.json keys the report reads, and what each must be; anything else there is ignored
_META_FIELDS: dict[str, Any] = {
    "eps": _is_eps,
    "layers": lambda v: isinstance(v, (dict, list)) and all(isinstance(k, str) for k in v),
    "every": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "steps": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "run": lambda v: isinstance(v, dict),
    "closed": lambda v: isinstance(v, bool),
    "probe_weight_sum": lambda v: v is None or _is_num(v),
    "write_errors": lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v),
    **{k: (lambda v: v is None or isinstance(v, str)) for k in ("relative", "mode", "source")},
}
_RUN_FIELDS: dict[str, Any] = {
    "wall_time_s": _is_num,
    "finished": lambda v: isinstance(v, bool),
    "loss_name": lambda v: isinstance(v, str),
}


class _Warnings:
    """Warnings about one file, naming it and the line: the first few in full, then a count."""

    SHOWN = 5

    def __init__(self, path: Path) -> None:
        self.path, self.count = path, 0

    def __call__(self, msg: str) -> None:
        self.count += 1
        if self.count <= self.SHOWN:
            warn(f"{self.path}: {msg}", UserWarning)

    def done(self) -> None:
        if self.count > self.SHOWN:
            warn(f"{self.path}: {self.count - self.SHOWN} more malformed lines skipped", UserWarning)


def _read_meta(path: Path) -> dict[str, Any]:
    """meta.json's usable fields; a malformed file or field is a warning and is left out."""
    if not path.exists():
        return {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read ({exc})") from None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        line = f"line {exc.lineno}: " if isinstance(exc, json.JSONDecodeError) else ""
        warn(f"{path}: {line}not valid JSON ({getattr(exc, 'msg', exc)}); ignored", UserWarning)
        return {}
    if not isinstance(meta, dict):
        warn(f"{path}: a JSON {type(meta).__name__}, not an object; ignored", UserWarning)
        return {}
    for fields, obj in ((_META_FIELDS, meta), (_RUN_FIELDS, meta.get("run"))):
        for key, ok in fields.items():
            if isinstance(obj, dict) and key in obj and not ok(obj[key]):
                warn(f"{path}: {key!r} = {_short(obj[key])} is not usable; ignored", UserWarning)
                del obj[key]
    return meta


def _short(v: object) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _row_problem(row: dict[str, Any], spectrum: bool) -> str:
    """Why a history (or spectrum) row is malformed, or ""."""
    step = row.get("step")
    if not (isinstance(step, int) and not isinstance(step, bool) and 0 <= step < 2**62):
        return f"'step' = {_short(step)} is not an int in [0, 2**62)"
    if not isinstance(row.get("layer"), str):
        return f"'layer' = {_short(row.get('layer'))} is not a string"
    if spectrum:
        lam = row.get("eigenvalues")
        return (
            "" if isinstance(lam, list) and all(_is_num(x) for x in lam) else "'eigenvalues' is not a list of numbers"
        )
    for k, v in row.items():
        if k == "error" and not isinstance(v, str) or k == "nonfinite" and not isinstance(v, bool):
            return f"{k!r} = {_short(v)} has the wrong type"
        if k not in ("step", "layer", "error", "nonfinite") and not _is_num(v):
            return f"{k!r} = {_short(v)} is not a number"
    return ""


def _read_rows(path: Path, spectrum: bool = False) -> tuple[list[dict[str, Any]], int, int]:
    """(rows, skipped lines, duplicated (step, layer) rows) of a JSONL run file.

    A malformed line is a warning naming the file and line, and is skipped. A (step, layer) that
    appears again is counted once: the last one is kept (a later write replaces an earlier one).
    """
    if not path.exists():
        return [], 0, 0
    bad = _Warnings(path)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    dup = 0
    try:
        for n, row, why in iter_jsonl(path):
            why = why or _row_problem(row or {}, spectrum)
            if row is None or why:
                bad(f"line {n}: {why}; skipped")
                continue
            key = (row["step"], row["layer"])
            if key in rows:
                dup += 1
                if dup == 1:
                    warn(
                        f"{path}: line {n}: step {key[0]} of layer {_short(key[1])} appears again; each (step, "
                        "layer) is counted once (the last one kept)",
                        UserWarning,
                    )
                del rows[key]  # re-inserted below: the file's order of the kept rows
            if not spectrum:
                row.setdefault("loss", math.nan)
                row.setdefault("wall_time", math.nan)
            rows[key] = row
    except OSError as exc:
        raise ReportError(f"{path}: cannot be read ({exc})") from None
    bad.done()
    if dup > 1:
        warn(f"{path}: {dup} duplicated (step, layer) rows in all, each counted once", UserWarning)
    return list(rows.values()), bad.count, dup


def _eps_of(meta: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> list[float]:
    """The ε the rows hold a column for: meta.json's (in its order), else those of the columns."""
    have: dict[str, float] = {}
    for k in dict.fromkeys(k for r in rows for k in r):
        if k.startswith("eps_rank@"):
            try:
                have[k] = float(k.split("@", 1)[1])
            except ValueError:
                continue
    listed = [float(e) for e in meta.get("eps") or []]
    missing = [e for e in listed if eps_column(e) not in have]
    if missing:
        warn(f"{path}: no eps_rank column for ε = {missing} of meta.json; left out", UserWarning)
    eps = [e for e in listed if eps_column(e) in have] or sorted(have.values(), reverse=True)
    if not eps:
        raise ReportError(f"{path}: no eps_rank@<ε> column in any row")
    return eps


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder, skipping malformed lines with a warning (see :class:`ReportError`)."""
    d = Path(run_dir)
    if not (d / HISTORY_JSONL).exists():
        raise FileNotFoundError(f"{d} is not a run folder: no {HISTORY_JSONL}")
    meta = _read_meta(d / META_JSON)
    rows, skipped, dup = _read_rows(d / HISTORY_JSONL)
    if not rows:
        raise ReportError(f"{d / HISTORY_JSONL} holds no complete rows yet (nothing was flushed)")
    meta["eps"] = _eps_of(meta, rows, d / HISTORY_JSONL)
    spectrum, _, _ = _read_rows(d / SPECTRUM_JSONL, spectrum=True)
    return Run(d, meta, rows, spectrum, skipped, dup)
