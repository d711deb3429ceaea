"""Aggregate runs over seeds: per arm the mean of every statistic with a bootstrap interval, a table, figures.

Runs are grouped into arms by their folder label without the trailing ``-s<seed>``. For each
statistic and arm, over the n seeds with a finite value: the mean, a 95 % percentile-bootstrap
interval of the mean (:func:`bootstrap_ci`), the median, min and max. Intervals from fewer than
``MIN_SEEDS`` seeds are flagged. ``compare(root, results)`` writes ``comparison.json`` and (with
plots) ``seeds.png`` into ``root``; ``load_results(dirs)`` reads the ``experiment.json`` of finished
runs for ``effrank-fast experiment compare``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effrank_fast.paper.experiments import figures
from effrank_fast.paper.experiments.common import EXPERIMENT_JSON, group_label

COMPARISON_JSON = "comparison.json"
MIN_SEEDS = 10
RESAMPLES = 4000
KEYS = (
    ("log10_final_loss", "log10 final loss"),
    ("reached_1e-2", "share reaching 1e-2"),
    ("steps_to_loss_1e-2", "steps to 1e-2 (if reached)"),
    ("evals_to_loss_1e-2", "gradient evals to 1e-2"),
    ("wall_to_loss_1e-2", "wall s to 1e-2"),
    ("initial_rank", "initial rank"),
    ("final_rank", "final rank"),
    ("stairs", "stairs"),
    ("jumps_down", "down-jumps"),
    ("crossing_median_q", "crossing-rate percentile"),
    ("crossing_speedup", "crossing speed-up"),
    ("spearman", "ρ(rank, loss)"),
    ("primary_p", "primary p (local)"),
    ("primary_significant", "share p < 0.05"),
    ("primary_excess", "local excess X/null"),
    ("share", "jump-window share"),
    ("coverage", "window coverage"),
    ("p_circular", "p circular (expl.)"),
    ("raw_increment_correlation", "raw increment ρ"),
)


def _primary(result: dict[str, Any]) -> dict[str, Any]:
    return (result.get("coupling") or {}).get("primary") or {}


def flat_stats(result: dict[str, Any], eps: str | None = None) -> dict[str, Any]:
    """The scalar statistics of one run at ε = ``eps`` (default: the largest ε); the primary test is ε-free."""
    by_eps = result["stats"]
    e = eps if eps is not None else max(by_eps, key=float)
    s = by_eps[e]
    jw = s.get("jump_window_share") or {}
    prim = _primary(result)
    final = result.get("final_loss")
    steps = s.get("steps_to_loss_1e-2")
    p = prim.get("p")
    return {
        "eps": e,
        "final_loss": final,
        "log10_final_loss": math.log10(final) if isinstance(final, (int, float)) and final > 0 else None,
        "reached_1e-2": None if final is None else float(steps is not None),
        "steps_to_loss_1e-2": steps,
        "evals_to_loss_1e-2": result.get("evals_to_loss_1e-2", result.get("evals_to_loss_0.01")),
        "wall_to_loss_1e-2": result.get("wall_to_loss_1e-2", result.get("wall_to_loss_0.01")),
        "initial_rank": s.get("initial_rank"),
        "final_rank": s.get("final_rank"),
        "stairs": s.get("stairs"),
        "jumps_down": s.get("jumps_down"),
        "crossing_median_q": (s.get("crossing_control") or {}).get("median_percentile"),
        "crossing_speedup": (s.get("crossing_control") or {}).get("median_speedup"),
        "spearman": s.get("spearman"),
        "primary_p": p,
        "primary_significant": None if p is None else float(p < 0.05),
        "primary_excess": prim.get("excess"),
        "share": jw.get("share"),
        "coverage": jw.get("coverage"),
        "p_circular": jw.get("p_circular"),
        "raw_increment_correlation": s.get("raw_increment_correlation", s.get("increment_correlation")),
        "layer_order": s.get("layer_order"),
        "initial_ranks": s.get("initial_ranks"),
        "wall_time_s": result.get("wall_time_s"),
    }


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else math.nan


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` [n].

    ``resamples`` rows of n indices drawn with replacement from ``np.random.default_rng(seed)``
    (``rng.integers(0, n, (resamples, n))``); the interval is the (1 ∓ level)/2 quantiles (numpy's
    default linear interpolation) of the resampled means. One value gives (v, v); none, (NaN, NaN).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("values must be a 1-D sequence of finite numbers")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(x) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarise(values: Sequence[Any]) -> dict[str, Any]:
    """n, mean, 95 % bootstrap interval of the mean, median, min, max over the finite ``values``."""
    vals = np.array([_num(v) for v in values])
    fin = vals[np.isfinite(vals)]
    out: dict[str, Any] = {"values": [None if not math.isfinite(v) else v for v in vals.tolist()], "n": len(fin)}
    if not len(fin):
        return {**out, "mean": None, "ci_low": None, "ci_high": None, "median": None, "min": None, "max": None}
    lo, hi = bootstrap_ci(fin)
    return {
        **out,
        "mean": float(fin.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "median": float(np.median(fin)),
        "min": float(fin.min()),
        "max": float(fin.max()),
    }


def aggregate(results: Sequence[dict[str, Any]], eps: str | None = None) -> dict[str, dict[str, Any]]:
    """{arm: {"seeds", "runs", key: summarise(values over the arm's seeds)}}."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(group_label(r["label"]), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for g, runs in groups.items():
        flat = [flat_stats(r, eps) for r in runs]
        entry: dict[str, Any] = {"seeds": [r.get("seed") for r in runs], "runs": [r["run_dir"] for r in runs]}
        for key, _ in (*KEYS, ("final_loss", ""), ("wall_time_s", "")):
            entry[key] = summarise([f[key] for f in flat])
        out[g] = entry
    return out


def _cell(v: dict[str, Any], key: str) -> str:
    m = v.get("mean")
    if m is None:
        return "–"
    fmt = ".3g" if key in ("primary_p", "p_circular") else ".2f"
    if key in ("steps_to_loss_1e-2", "evals_to_loss_1e-2", "wall_to_loss_1e-2"):
        fmt = ".0f"
    if key in ("initial_rank", "final_rank", "stairs", "jumps_down"):
        fmt = ".1f"
    return f"{m:{fmt}}" + ("" if v["ci_low"] == v["ci_high"] else f" [{v['ci_low']:{fmt}}, {v['ci_high']:{fmt}}]")


def format_table(agg: dict[str, dict[str, Any]]) -> str:
    """Rows: statistics; columns: arms; cells: mean [95 % bootstrap interval] over seeds."""
    names = list(agg)
    width = max(28, *(len(n) + 2 for n in names))
    lines = [f"{'statistic':<28}" + "".join(f"{n:>{width}}" for n in names)]
    lines.append(f"{'seeds':<28}" + "".join(f"{len(agg[n]['seeds']):>{width}}" for n in names))
    for key, title in KEYS:
        lines.append(f"{title:<28}" + "".join(f"{_cell(agg[n][key], key):>{width}}" for n in names))
    few = [n for n in names if len(agg[n]["seeds"]) < MIN_SEEDS]
    if few:
        lines.append(f"note: fewer than {MIN_SEEDS} seeds in {', '.join(few)}: the intervals are rough")
    return "\n".join(lines)


def format_run(result: dict[str, Any]) -> str:
    f = flat_stats(result)
    prim = _primary(result)
    parts = [
        f"  final loss {_num(f['final_loss']):.3g}",
        f"rank {f['initial_rank']}→{f['final_rank']} (ε={f['eps']})",
        f"stairs {f['stairs']}",
        f"ρ {_num(f['spearman']):.2f}",
        f"primary local test (ε={prim.get('eps')}): excess {_num(f['primary_excess']):.2f}, "
        f"p {_num(f['primary_p']):.3g}",
        f"share {_num(f['share']):.2f} of log-loss drop in {_num(f['coverage']):.2f} of steps "
        f"(exploratory p circ {_num(f['p_circular']):.3g})",
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
        out["figures"] = [p.name for p in figures.seeds_plot([Path(r["run_dir"]) for r in results], root / "seeds")]
    (root / COMPARISON_JSON).write_text(json.dumps(out, indent=2) + "\n")
    if results:
        e0 = max(by_eps, key=float)
        log(f"comparison over seeds (mean [95 % bootstrap interval]), last hidden layer, ε = {e0}:")
        log(format_table(by_eps[e0]))
    return out


def load_results(dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """experiment.json of every run folder in ``dirs`` (a run folder, or a folder of run folders)."""

    found: list[Path] = []
    for d in map(Path, dirs):
        found += [d / EXPERIMENT_JSON] if (d / EXPERIMENT_JSON).exists() else sorted(d.glob(f"*/{EXPERIMENT_JSON}"))
    if not found:
        raise FileNotFoundError(f"no {EXPERIMENT_JSON} under {[str(d) for d in dirs]}")
    return [json.loads(p.read_text()) for p in found]
