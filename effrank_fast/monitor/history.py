"""Device-side records between flushes, and the rows they become.

Between flushes each measured step leaves, per layer, one packed float64 vector on the device
(the engine's columns, then the readout norm and a finiteness flag), the loss as a detached 0-d
tensor, and every ``spectrum_every`` steps the full spectrum. Nothing is read back until
:meth:`Records.drain`, which moves everything to the host in one go (the flush's only sync) and
returns plain rows::

    {"step": 12, "layer": "hidden3", "loss": 0.107, "wall_time": 3.2,
     "eps_rank@0.01": 10, ..., "entropy_rank": 17.3, ..., "lambda_1": 25.1, ...,
     "nonfinite": False, "error": ""}

A row whose activations held NaN/Inf has every measure NaN and ``nonfinite=True``; a row whose
measurement raised (or whose results could not be read back) has every measure NaN and the
exception text in ``error``.

Memory: a flushed row kept in ``RankMonitor.history`` is a dict of 23 entries with the defaults
(3 ε, top 8 eigenvalues), measured at 1.3 KB in CPython 3.11 (tracemalloc), so about +52 MB per
40,000 (step, layer) rows. ``keep_history=False`` keeps none (the files still hold every row) and
``keep_history=K`` the last K rows, at most K × 1.3 KB (:func:`history_cap`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from effrank_fast.safe_io import warn as safe_warn

KEYS = ("step", "layer", "loss", "wall_time")


def is_int_column(name: str) -> bool:
    return name.startswith("eps_rank")


def history_cap(keep_history: object) -> int | None:
    """How many flushed rows ``RankMonitor.history`` keeps: None (all: ``True``), 0 (``False``) or K."""
    if isinstance(keep_history, bool):
        return None if keep_history else 0
    if isinstance(keep_history, int) and keep_history >= 0:
        return keep_history
    return None


@dataclass
class _Step:
    step: int
    wall: float
    loss: torch.Tensor | float
    values: torch.Tensor | None  # [L, width] on the device, or None when every layer failed
    errors: dict[int, str]
    spectra: list[tuple[int, torch.Tensor]] = field(default_factory=list)


class Records:
    """Measured steps not yet flushed."""

    def __init__(self, labels: list[str], columns: list[str]) -> None:
        self.labels, self.columns = labels, columns
        self._steps: list[_Step] = []

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def last_step(self) -> int | None:
        return self._steps[-1].step if self._steps else None

    def append(
        self,
        step: int,
        wall: float,
        loss: torch.Tensor | float,
        values: torch.Tensor | None,
        errors: dict[int, str],
        spectra: list[tuple[int, torch.Tensor]],
    ) -> None:
        """One measured step; ``loss`` as made by :func:`.inputs.loss_value` (0-d tensor or float)."""
        self._steps.append(_Step(step, wall, loss, values, errors, spectra))

    def drain(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(rows, spectrum rows) of every pending step; this is the flush's host sync.

        If reading them back fails, each step is read alone, and a step that still fails keeps
        its row with NaN measures and the error (a row is never dropped).
        """
        steps, self._steps = self._steps, []
        if not steps:
            return [], []
        try:
            return self._rows(steps)
        except Exception:
            pass
        rows: list[dict[str, Any]] = []
        spectrum: list[dict[str, Any]] = []
        for st in steps:
            try:
                r, sp = self._rows([st])
            except Exception as exc:
                msg = f"reading the results back failed: {type(exc).__name__}: {exc}"
                loss = st.loss if isinstance(st.loss, float) else math.nan
                bad = _Step(st.step, st.wall, loss, None, dict.fromkeys(range(len(self.labels)), msg))
                r, sp = self._rows([bad])
            rows += r
            spectrum += sp
        return rows, spectrum

    def _rows(self, steps: list[_Step]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        vals = [s.values for s in steps if s.values is not None]
        host_vals = iter(torch.stack(vals).cpu().tolist()) if vals else iter(())
        losses = [s.loss for s in steps if isinstance(s.loss, torch.Tensor)]
        host_loss = iter(())
        if losses:
            host_loss = iter(torch.stack([x.to(losses[0].device) for x in losses]).double().cpu().tolist())
        spec = [t for s in steps for _, t in s.spectra]
        host_spec = iter([t.cpu().tolist() for t in spec])
        ncol = len(self.columns)
        int_cols = [j for j, col in enumerate(self.columns) if is_int_column(col)]
        nan_values = [math.nan] * ncol
        rows: list[dict[str, Any]] = []
        spectrum_rows: list[dict[str, Any]] = []
        for s in steps:
            loss = next(host_loss) if isinstance(s.loss, torch.Tensor) else float(s.loss)
            block = next(host_vals) if s.values is not None else None
            finite_layers: set[int] = set()
            for li, label in enumerate(self.labels):
                row: dict[str, Any] = {"step": s.step, "layer": label, "loss": loss, "wall_time": round(s.wall, 6)}
                err = s.errors.get(li, "")
                vec = block[li] if block is not None and not err else None
                ok = vec is not None and vec[-1] == 1.0
                if ok:
                    finite_layers.add(li)
                readout = vec[ncol] if vec is not None else math.nan
                values = vec[:ncol] if ok and vec is not None else nan_values
                if ok:
                    for j in int_cols:
                        if math.isfinite(values[j]):
                            values[j] = int(values[j])
                row.update(zip(self.columns, values, strict=True))
                if not math.isnan(readout):
                    row["readout_norm"] = readout
                row["nonfinite"] = vec is not None and not ok
                row["error"] = err
                rows.append(row)
            for li, _ in s.spectra:
                lam = next(host_spec)
                if li not in finite_layers:
                    lam = [math.nan] * len(lam)
                spectrum_rows.append({"step": s.step, "layer": self.labels[li], "eigenvalues": lam})
        return rows, spectrum_rows


# ----------------------------------------------------------------------------------------------
# Reading run files back (the CLI's report, resume, and tests).


def _from_json(v: Any) -> Any:
    return math.nan if v is None else v


def _from_json_value(v: Any) -> Any:
    return [_from_json(x) for x in v] if isinstance(v, list) else _from_json(v)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, row or None, why not) for every non-blank line of a JSONL file.

    A row is a JSON object (JSON null read as NaN); any other line gives None and the reason.
    """
    with Path(path).open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested arrays
                yield n, None, f"not valid JSON ({type(exc).__name__}: {str(exc)[:100]})"
                continue
            if not isinstance(obj, dict):
                yield n, None, f"a JSON {type(obj).__name__}, not an object"
                continue
            yield n, {k: _from_json_value(v) for k, v in obj.items()}, ""


def read_jsonl(path: str | Path, *, warn: bool = True) -> list[dict[str, Any]]:
    """Every valid line of a JSONL file (JSON null read as NaN).

    A process killed in the middle of a write can leave a partial last line; such lines (and any
    line that is not a JSON object) are skipped with a warning, so a crashed run stays readable up
    to its last complete flush.
    """
    p = Path(path)
    if not p.exists():
        return []
    rows: list[dict[str, Any]] = []
    bad = 0
    for _, row, _why in iter_jsonl(p):
        if row is None:
            bad += 1
        else:
            rows.append(row)
    if bad and warn:
        safe_warn(f"{p}: skipped {bad} incomplete or malformed line(s) (an interrupted write)", UserWarning)
    return rows


def parse_csv_value(key: str, text: str) -> Any:
    if key == "layer" or key == "error":
        return text
    if key == "nonfinite":
        return text == "true"
    if key == "step":
        return int(text)
    if text == "":
        return math.nan
    if is_int_column(key) and text not in ("nan", "inf", "-inf"):
        return int(text)
    return float(text)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a history.csv with the same types as :func:`read_jsonl` (empty cells omitted)."""
    p = Path(path)
    if not p.exists():
        return []
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        return [{k: parse_csv_value(k, v) for k, v in row.items() if v != "" or k == "error"} for row in reader]


def to_jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """NaN/Inf → null, so every line is strict JSON."""

    def conv(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in row.items()}


def csv_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def steps_below(rows: Iterable[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    return [r for r in rows if r["step"] < step]
