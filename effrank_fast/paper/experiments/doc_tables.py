"""The per-arm tables of docs/staircase.md, from finished run folders.

``python -m effrank_fast.paper.experiments.doc_tables runs/e1-default runs/e1-sfli [--upto 2000]``
prints one markdown table: rows are statistics, columns are arms (folder/label without the seed),
cells are mean [95 % percentile-bootstrap interval] (n seeds) (:func:`.compare.bootstrap_ci`).
Besides what ``experiment.json`` holds, it recounts from each run's history, up to step ``upto``:
the stairs and down-jumps (:func:`effrank_fast.paper.staircase.detect`), the first step at loss
≤ 10⁻², the final loss, and the longest loss plateau above 10⁻² (:func:`longest_plateau`).
"""

from __future__ import annotations

import argparse
import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effrank_fast import report
from effrank_fast.paper import staircase
from effrank_fast.paper.experiments import compare

__all__ = ["longest_plateau", "table"]


def longest_plateau(loss: Sequence[float] | np.ndarray, factor: float = 1.2, floor: float = 1e-2) -> int:
    """Samples in the longest stretch that stays above ``floor`` with max/min loss ≤ ``factor``."""
    lo = np.asarray(loss, dtype=np.float64)
    best, a = 0, 0
    mx: deque[int] = deque()
    mn: deque[int] = deque()
    for b, v in enumerate(lo):
        if not v > floor:
            mx.clear()
            mn.clear()
            a = b + 1
            continue
        while mx and lo[mx[-1]] <= v:
            mx.pop()
        mx.append(b)
        while mn and lo[mn[-1]] >= v:
            mn.pop()
        mn.append(b)
        while lo[mx[0]] / lo[mn[0]] > factor:
            a += 1
            if mx[0] < a:
                mx.popleft()
            if mn[0] < a:
                mn.popleft()
        best = max(best, b - a + 1)
    return best


def _recount(res: dict[str, Any], upto: int | None) -> dict[str, Any]:
    run = report.load_run(res["run_dir"])
    s = run.series(run.layers[-1])
    n = len(s["step"]) if upto is None else int(np.searchsorted(s["step"], upto, side="right"))
    loss = s["loss"][:n]
    hit = np.nonzero(loss <= 1e-2)[0]
    out: dict[str, Any] = {
        "plateau": longest_plateau(loss),
        "log_end": math.log10(float(loss[-1])),
        "steps_to": int(s["step"][hit[0]]) if len(hit) else None,
    }
    for e in ("0.01", "0.0001"):
        if f"eps_rank@{e}" in s:
            sc = staircase.detect(s["step"][:n], s[f"eps_rank@{e}"][:n], loss)
            out[f"stairs@{e}"], out[f"down@{e}"] = sc.stairs, len(sc.jumps) - sc.n_up
    return out


def _cell(values: Sequence[Any], fmt: str = ".2f") -> str:
    x = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if not len(x):
        return "–"
    lo, hi = compare.bootstrap_ci(x)
    return f"{x.mean():{fmt}} [{lo:{fmt}}, {hi:{fmt}}] (n={len(x)})"


def table(dirs: Sequence[str | Path], upto: int | None = None) -> str:
    """The markdown table of the module docstring for the runs under ``dirs``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in compare.load_results(dirs):
        groups.setdefault(f"{Path(r['run_dir']).parent.name}/{compare.group_label(r['label'])}", []).append(r)
    rows: dict[str, dict[str, str]] = {}
    for g, rs in sorted(groups.items()):
        ex = [_recount(r, upto) for r in rs]
        fl = [compare.flat_stats(r, "0.01") for r in rs]
        fl4 = [compare.flat_stats(r, "0.0001") for r in rs]
        holm = [
            float(any(e["p_holm"] is not None and e["p_holm"] < 0.05 for e in r["coupling"]["exploratory"])) for r in rs
        ]
        order = [r["stats"]["0.01"].get("layer_order") or [math.nan, math.nan] for r in rs]
        ps = [f["primary_p"] for f in fl if f["primary_p"] is not None]
        rows[g] = {
            "seeds": str(len(rs)),
            "initial rank (ε=1e-2)": _cell([f["initial_rank"] for f in fl], ".1f"),
            "reached 1e-2": _cell([float(e["steps_to"] is not None) for e in ex]),
            "steps to 1e-2 (reached)": _cell([e["steps_to"] for e in ex], ".0f"),
            "gradient evals to 1e-2": _cell([f["evals_to_loss_1e-2"] for f in fl], ".0f") if upto is None else "",
            "wall s to 1e-2": _cell([f["wall_to_loss_1e-2"] for f in fl], ".0f") if upto is None else "",
            "log10 loss at end": _cell([e["log_end"] for e in ex]),
            "longest plateau above 1e-2 (steps, ×1.2)": _cell([e["plateau"] for e in ex], ".0f"),
            "stairs ε=1e-2": _cell([e.get("stairs@0.01") for e in ex], ".1f"),
            "stairs ε=1e-4": _cell([e.get("stairs@0.0001") for e in ex], ".1f"),
            "down-jumps ε=1e-2": _cell([e.get("down@0.01") for e in ex], ".1f"),
            "ρ(rank, loss)": _cell([f["spearman"] for f in fl]),
            "primary p < 0.05 (share)": _cell([f["primary_significant"] for f in fl]),
            "primary p (median)": f"{np.nanmedian(ps):.3g}" if ps else "–",
            "primary excess X/null": _cell([f["primary_excess"] for f in fl]),
            "exploratory: any Holm p < 0.05": _cell(holm),
            "uncorrected circular p < 0.05 (ε=1e-2)": _cell(
                [None if f["p_circular"] is None else float(f["p_circular"] < 0.05) for f in fl]
            ),
            "raw increment ρ": _cell([f["raw_increment_correlation"] for f in fl]),
            "crossing q ε=1e-2": _cell([f["crossing_median_q"] for f in fl]),
            "crossing speed-up ε=1e-2": _cell([f["crossing_speedup"] for f in fl]),
            "crossing q ε=1e-4": _cell([f["crossing_median_q"] for f in fl4]),
            "crossing speed-up ε=1e-4": _cell([f["crossing_speedup"] for f in fl4]),
            "layer order h2>h1": _cell([o[0] for o in order]),
            "layer order h3>h2": _cell([o[1] for o in order]),
        }
    names = list(rows)
    lines = ["| statistic | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in rows[names[0]]:
        lines.append(f"| {key} | " + " | ".join(rows[n][key] for n in names) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="The per-arm tables of docs/staircase.md.")
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--upto", type=int, default=None, help="recount only up to this step")
    args = ap.parse_args(argv)
    print(table(args.dirs, args.upto))


if __name__ == "__main__":
    main()
