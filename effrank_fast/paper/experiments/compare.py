"""Aggregate runs over seeds: per variant the median and range of every statistic, a table and figures.

Runs are grouped by their folder label without the trailing ``-s<seed>``. ``compare(root, results)``
writes ``comparison.json`` and (with plots) ``seeds.png`` into ``root``; ``load_results(dirs)``
reads the ``experiment.json`` of finished runs for ``effrank-fast experiment compare``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

COMPARISON_JSON = "comparison.json"
KEYS = (
    ("final_loss", "final loss"),
    ("steps_to_loss_1e-2", "steps to loss 1e-2"),
    ("initial_rank", "initial rank"),
    ("final_rank", "final rank"),
    ("stairs", "stairs"),
    ("spearman", "ρ(rank, loss)"),
    ("share", "jump-window share"),
    ("coverage", "window coverage"),
    ("p_circular", "p circular"),
    ("p_jitter", "p jitter"),
    ("share_after", "following-window share"),
    ("p_circular_after", "p circular (following)"),
    ("increment_correlation", "ρ_Δ increments"),
)


def group_label(label: str) -> str:
    return re.sub(r"-s\d+$", "", label)


def flat_stats(result: dict[str, Any], eps: str | None = None) -> dict[str, Any]:
    """The scalar statistics of one run at ε = ``eps`` (default: the largest ε)."""
    by_eps = result["stats"]
    e = eps if eps is not None else max(by_eps, key=float)
    s = by_eps[e]
    jw = s.get("jump_window_share") or {}
    jf = s.get("jump_window_share_after") or {}
    return {
        "eps": e,
        "final_loss": result.get("final_loss"),
        "steps_to_loss_1e-2": s.get("steps_to_loss_1e-2"),
        "initial_rank": s.get("initial_rank"),
        "final_rank": s.get("final_rank"),
        "stairs": s.get("stairs"),
        "spearman": s.get("spearman"),
        "share": jw.get("share"),
        "coverage": jw.get("coverage"),
        "p_circular": jw.get("p_circular"),
        "p_jitter": jw.get("p_jitter"),
        "share_after": jf.get("share"),
        "p_circular_after": jf.get("p_circular"),
        "increment_correlation": s.get("increment_correlation"),
        "layer_order": s.get("layer_order"),
        "initial_ranks": s.get("initial_ranks"),
        "wall_time_s": result.get("wall_time_s"),
    }


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else math.nan


def aggregate(results: Sequence[dict[str, Any]], eps: str | None = None) -> dict[str, dict[str, Any]]:
    """{group: {"seeds", "runs", key: {"median", "min", "max", "values"}}} over the runs of each group."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(group_label(r["label"]), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for g, runs in groups.items():
        flat = [flat_stats(r, eps) for r in runs]
        entry: dict[str, Any] = {"seeds": [r.get("seed") for r in runs], "runs": [r["run_dir"] for r in runs]}
        for key, _ in (*KEYS, ("wall_time_s", "")):
            vals = np.array([_num(f[key]) for f in flat])
            fin = vals[np.isfinite(vals)]
            entry[key] = {
                "values": [None if not math.isfinite(v) else v for v in vals.tolist()],
                "median": float(np.median(fin)) if len(fin) else None,
                "min": float(fin.min()) if len(fin) else None,
                "max": float(fin.max()) if len(fin) else None,
            }
        out[g] = entry
    return out


def _cell(v: dict[str, Any], key: str) -> str:
    m = v.get("median")
    if m is None:
        return "–"
    fmt = ".3g" if key in ("final_loss", "p_circular", "p_jitter", "p_circular_after") else ".2f"
    if key in ("steps_to_loss_1e-2", "initial_rank", "final_rank", "stairs"):
        fmt = ".0f"
    lo, hi = v["min"], v["max"]
    return f"{m:{fmt}}" + ("" if lo == hi else f" [{lo:{fmt}}, {hi:{fmt}}]")


def format_table(agg: dict[str, dict[str, Any]]) -> str:
    """Rows: statistics; columns: groups; cells: median [min, max] over seeds."""
    names = list(agg)
    width = max(24, *(len(n) + 2 for n in names))
    lines = [f"{'statistic':<22}" + "".join(f"{n:>{width}}" for n in names)]
    lines.append(f"{'seeds':<22}" + "".join(f"{len(agg[n]['seeds']):>{width}}" for n in names))
    for key, title in KEYS:
        lines.append(f"{title:<22}" + "".join(f"{_cell(agg[n][key], key):>{width}}" for n in names))
    return "\n".join(lines)


def format_run(result: dict[str, Any]) -> str:
    f = flat_stats(result)
    parts = [
        f"  final loss {_num(f['final_loss']):.3g}",
        f"rank {f['initial_rank']}→{f['final_rank']} (ε={f['eps']})",
        f"stairs {f['stairs']}",
        f"ρ {_num(f['spearman']):.2f}",
        f"share {_num(f['share']):.2f} of log-loss drop in {_num(f['coverage']):.2f} of steps "
        f"(p circ {_num(f['p_circular']):.3g}, p jitter {_num(f['p_jitter']):.3g})",
        f"following windows {_num(f['share_after']):.2f} (p circ {_num(f['p_circular_after']):.3g})",
        f"ρ_Δ {_num(f['increment_correlation']):.2f}",
        f"{_num(f['wall_time_s']):.0f} s",
    ]
    return ", ".join(parts)


def compare(
    root: str | Path, results: Sequence[dict[str, Any]], *, plots: bool = True, log: Any = print
) -> dict[str, Any]:
    """Aggregate ``results`` (from :func:`effrank_fast.paper.experiments.runner.analyse`) into ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    by_eps = {e: aggregate(results, e) for e in results[0]["stats"]} if results else {}
    out = {"runs": [r["run_dir"] for r in results], "by_eps": by_eps}
    if plots and results:
        from effrank_fast.paper.experiments import figures

        out["figures"] = [p.name for p in figures.seeds_plot([Path(r["run_dir"]) for r in results], root / "seeds")]
    (root / COMPARISON_JSON).write_text(json.dumps(out, indent=2) + "\n")
    if results:
        e0 = max(by_eps, key=float)
        log(f"comparison over seeds (median [min, max]), last hidden layer, ε = {e0}:")
        log(format_table(by_eps[e0]))
    return out


def load_results(dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """experiment.json of every run folder in ``dirs`` (a run folder, or a folder of run folders)."""
    from effrank_fast.paper.experiments.runner import EXPERIMENT_JSON

    found: list[Path] = []
    for d in map(Path, dirs):
        found += [d / EXPERIMENT_JSON] if (d / EXPERIMENT_JSON).exists() else sorted(d.glob(f"*/{EXPERIMENT_JSON}"))
    if not found:
        raise FileNotFoundError(f"no {EXPERIMENT_JSON} under {[str(d) for d in dirs]}")
    return [json.loads(p.read_text()) for p in found]
