"""Summaries and figures of a run folder written by :class:`effrank_fast.RankMonitor`.

``report(run_dir)`` reads history.jsonl, spectrum.jsonl and meta.json (a run killed mid-way is
read up to its last flush; malformed lines are skipped with a warning, see
:mod:`effrank_fast.run_folder`), finds the staircase of every layer and ε
(:func:`effrank_fast.paper.staircase.detect`), writes ``summary.json`` and the figures
``staircase``, ``layers`` and ``spectrum`` (PNG + SVG), and returns the summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from effrank_fast import plotting  # matplotlib itself loads only when a figure is drawn
from effrank_fast.monitor.history import to_jsonable
from effrank_fast.monitor.sinks import HISTORY_CSV, HISTORY_JSONL, META_JSON, SPECTRUM_JSONL
from effrank_fast.paper import staircase
from effrank_fast.run_folder import ReportError, Run, eps_column, load_run
from effrank_fast.safe_io import replace_bytes

SUMMARY_JSON = "summary.json"
RUN_FILES = (HISTORY_JSONL, HISTORY_CSV, SPECTRUM_JSONL, META_JSON)  # what the monitor writes


def _col(e: float) -> str:
    return eps_column(e)


def uncertified_mask(series: dict[str, np.ndarray], e: float) -> np.ndarray:
    """Per row, the ε-count is not proven: ``eps_rank_certified@ε`` is 0 (the exact engine), or the
    proven bounds differ (a tracker). Runs without either column have none."""
    label = eps_column(e).split("@", 1)[1]
    n = len(series["step"])
    bad = np.zeros(n, dtype=bool)
    cert = series.get(f"eps_rank_certified@{label}")
    if cert is not None:
        bad |= cert == 0
    lo, hi = series.get(f"eps_rank_lower@{label}"), series.get(f"eps_rank_upper@{label}")
    if lo is not None and hi is not None:
        bad |= np.isfinite(lo) & np.isfinite(hi) & (lo != hi)
    return bad


def _rank_or_none(v: float) -> int | None:
    return int(v) if math.isfinite(v) else None


def divergence(run: Run) -> dict[str, Any]:
    """Non-finite measured steps: a non-finite loss (once the run has logged a finite one) or
    non-finite activations in any layer. ``diverged_at`` is the first such step (None if none)."""
    logs_loss = any(math.isfinite(r["loss"]) for r in run.rows)
    bad_rows = [r for r in run.rows if r.get("nonfinite") or (logs_loss and not math.isfinite(r["loss"]))]
    bad_steps = sorted({int(r["step"]) for r in bad_rows})
    return {
        "nonfinite_rows": len(bad_rows),
        "nonfinite_steps": len(bad_steps),
        "diverged_at": bad_steps[0] if bad_steps else None,
    }


def layer_ordering(run: Run) -> dict[str, dict[str, float | None]]:
    """Per ε: the fraction of measured steps where rank(layer k+1) > rank(layer k), for each pair of
    consecutive layers, and ``"all"``: where the ranks increase strictly through every layer."""
    layers = run.layers
    by_step: dict[int, dict[str, dict[str, Any]]] = {}
    for r in run.rows:
        by_step.setdefault(int(r["step"]), {})[r["layer"]] = r
    out: dict[str, dict[str, float | None]] = {}
    for e in run.eps:
        col = _col(e)
        res: dict[str, float | None] = {}
        table = [
            [float(row[l].get(col, math.nan)) for l in layers]
            for row in by_step.values()
            if all(l in row and math.isfinite(row[l].get(col, math.nan)) for l in layers)
        ]
        ranks = np.array(table, dtype=np.float64).reshape(len(table), len(layers))
        up = ranks[:, 1:] > ranks[:, :-1]
        for k in range(len(layers) - 1):
            res[f"{layers[k + 1]}>{layers[k]}"] = float(up[:, k].mean()) if len(ranks) else None
        res["all"] = float(up.all(axis=1).mean()) if len(ranks) and len(layers) > 1 else None
        out[f"{e:g}"] = res
    return out


def summarize(run: Run) -> dict[str, Any]:
    """Jumps, stairs, initial and final ranks per layer and ε, layer ordering, loss, divergence, timing."""
    layers, eps = run.layers, run.eps
    last = layers[-1]
    stairs: dict[str, dict[str, Any]] = {}
    uncertified: dict[str, dict[str, int]] = {}
    initial: dict[str, dict[str, int | None]] = {}
    final: dict[str, dict[str, int | None]] = {}
    for layer in layers:
        s = run.series(layer)
        stairs[layer], initial[layer], final[layer] = {}, {}, {}
        for e in eps:
            r = s[_col(e)]
            stairs[layer][f"{e:g}"] = staircase.detect(s["step"], r, s["loss"]).to_dict()
            initial[layer][f"{e:g}"], final[layer][f"{e:g}"] = _rank_or_none(r[0]), _rank_or_none(r[-1])
            uncertified.setdefault(layer, {})[f"{e:g}"] = int(uncertified_mask(s, e).sum())
    s = run.series(last)
    div = divergence(run)
    loss = s["loss"][np.isfinite(s["loss"])]
    run_info = run.meta.get("run") or {}
    every = int(run.meta.get("every") or 1)
    last_step = int(s["step"][-1])
    return {
        "run_dir": str(run.dir),
        "complete": bool(run.meta.get("closed", False)) and bool(run_info.get("finished", True)),
        "steps": int(run.meta.get("steps") or last_step + 1),  # the monitor's count (last step + 1)
        "every": every,
        "measured_steps": int(len(s["step"])),
        "last_step": last_step,
        **div,
        # a diverged run has no meaningful final loss: see diverged_at
        "final_loss": float(s["loss"][-1]) if div["diverged_at"] is None and len(loss) else None,
        "min_loss": float(loss.min()) if len(loss) else None,
        "loss_name": str(run_info.get("loss_name") or "loss"),
        "wall_time_s": float(run_info.get("wall_time_s", s["wall_time"][-1])),
        "monitor_wall_time_s": float(s["wall_time"][-1]),
        "last_layer": last,
        "eps": eps,
        "relative": run.meta.get("relative"),
        "mode": run.meta.get("mode"),
        "initial_ranks": initial,
        "final_ranks": final,
        # ε-counts the monitor could not prove (rows × ε), in all and per layer and ε
        "uncertified_counts": sum(n for d in uncertified.values() for n in d.values()),
        "uncertified": uncertified,
        "jumps": {layer: {e: len(v["jumps"]) for e, v in d.items()} for layer, d in stairs.items()},
        "stairs": {layer: {e: v["stairs"] for e, v in d.items()} for layer, d in stairs.items()},
        "spearman": {layer: {e: v["spearman"] for e, v in d.items()} for layer, d in stairs.items()},
        "layer_ordering": layer_ordering(run),
        "staircase": stairs,
        "skipped_lines": run.skipped_lines,
        "duplicate_rows": run.duplicate_rows,
        "write_errors": run.meta.get("write_errors", []),
        "config": run_info,
    }


def _subtitle(run: Run) -> str:
    """Two grey lines: what was trained, then how M and the ε-rank are defined."""
    m, cfg = run.meta, run.meta.get("run") or {}
    what = [str(cfg[k]) for k in ("task", "model", "optimizer") if cfg.get(k)]
    if m.get("source") == "probe":
        w = m.get("probe_weight_sum")
        how = f"M = Σ w φφᵀ on {m.get('probe_points')} probe points"
        if w is not None and m.get("mode") == "integral":
            how += f" (weights sum to |Ω| = {w:g}: M ≈ ∫Ω φφᵀ dx)"
    else:
        how = f"M = Σ w φφᵀ over the training batch (mode {m.get('mode')})"
    rel = m.get("relative")
    how += " · ε-rank = #{λ(M) > ε}" + (f", ε relative to λ {rel}" if rel else " (absolute ε)")
    return "\n".join([" · ".join(what), how]) if what else how


def make_plots(run: Run, summary: dict[str, Any]) -> list[Path]:
    out: list[Path] = []
    eps, last = run.eps, summary["last_layer"]
    s = run.series(last)
    jump_eps = max(eps)
    sc = staircase.detect(s["step"], s[_col(jump_eps)], s["loss"])
    rho = summary["spearman"][last].get(f"{jump_eps:g}")
    name = "last hidden layer" if last in ("last_hidden", f"hidden{len(run.layers)}") else f"layer {last}"
    title = f"Staircase: ε-rank of the {name} vs the training {summary['loss_name']}"
    if rho is not None and math.isfinite(rho):
        title += f"  (Spearman ρ = {rho:.2f} at ε = {jump_eps:g})".replace("-", "−")
    sub = _subtitle(run)
    unit = str((run.meta.get("run") or {}).get("step_unit", "training step"))  # L-BFGS runs count iterations
    plotting.staircase_plot(
        s["step"],
        s["loss"],
        {e: s[_col(e)] for e in eps},
        jumps=sc.jumps,
        jump_eps=jump_eps,
        title=title,
        subtitle=sub,
        layer=f"{name} ({last})" if name != f"layer {last}" else last,
        loss_label=summary["loss_name"],
        diverged_at=summary["diverged_at"],
        x_label=unit,
        stem=run.dir / "staircase",
        uncertified={e: uncertified_mask(s, e) for e in eps},
    )
    out += [run.dir / "staircase.png", run.dir / "staircase.svg"]
    ranks = {}
    for layer in run.layers:
        sl = run.series(layer)
        ranks[layer] = {e: np.interp(s["step"], sl["step"], sl[_col(e)]) for e in eps}
    plotting.layers_plot(
        s["step"], ranks, eps, subtitle=sub, diverged_at=summary["diverged_at"], x_label=unit, stem=run.dir / "layers"
    )
    out += [run.dir / "layers.png", run.dir / "layers.svg"]
    spec = sorted((r for r in run.spectrum if r["layer"] == last), key=lambda r: r["step"])
    if spec:
        lam = np.array([r["eigenvalues"] for r in spec], dtype=np.float64)
        steps = np.array([r["step"] for r in spec])
        plotting.spectrum_plot(
            steps,
            lam,
            eps,
            subtitle=sub,
            layer=last,
            diverged_at=summary["diverged_at"],
            x_label=unit,
            stem=run.dir / "spectrum",
        )
        out += [run.dir / "spectrum.png", run.dir / "spectrum.svg"]
    return out


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3g}"


def format_table(summary: dict[str, Any]) -> str:
    eps = [f"{e:g}" for e in summary["eps"]]
    e0 = eps[0]
    head = f"{'layer':<12}" + "".join(f"{'ε=' + e:>11}" for e in eps) + f"{'jumps':>7}{'stairs':>8}{'ρ(rank,loss)':>14}"
    every = summary.get("every", 1)
    steps = f"steps        {summary['steps']}" + (
        f" ({summary['measured_steps']} measured, every {every})" if every > 1 else ""
    )
    if summary["diverged_at"] is not None:
        loss = (
            f"diverged at step {summary['diverged_at']} ({summary['nonfinite_steps']} of {summary['measured_steps']}"
            f" measured steps non-finite)"
        )
    else:
        loss = f"final {summary['loss_name']} {_num(summary['final_loss'])}"
    lines = [
        f"run folder   {summary['run_dir']}" + ("" if summary["complete"] else "   (incomplete run)"),
        f"{steps}   {loss}   min {summary['loss_name']} {_num(summary['min_loss'])}   "
        f"wall time {summary['wall_time_s']:.1f} s",
        f"ε-ranks initial→final; jumps, stairs and Spearman ρ at ε = {e0}:",
        head,
        "-" * len(head),
    ]

    def cell(a: int | None, b: int | None) -> str:
        return f"{'-' if a is None else a}→{'-' if b is None else b}"

    for layer, fr in summary["final_ranks"].items():
        ini = summary["initial_ranks"][layer]
        rho = summary["spearman"][layer][e0]
        cells = "".join(f"{cell(ini[e], fr[e]):>11}" for e in eps)
        rho_s = f"{rho:.2f}" if rho is not None and math.isfinite(rho) else "-"
        lines.append(f"{layer:<12}{cells}{summary['jumps'][layer][e0]:>7}{summary['stairs'][layer][e0]:>8}{rho_s:>14}")
    bad = summary.get("uncertified_counts", 0)
    if bad:
        where = ", ".join(
            f"{layer} ε={e}: {n}" for layer, d in summary["uncertified"].items() for e, n in d.items() if n
        )
        lines.append(f"uncertified ε-counts (not proven for the exact Gram): {bad} ({where})")
    order = {k: v for k, v in summary["layer_ordering"].get(e0, {}).items() if k != "all" and v is not None}
    if order:
        pairs = ", ".join(f"{k.replace('>', ' > ')} at {100 * v:.0f}%" for k, v in order.items())
        lines.append(f"layer ordering at ε = {e0} (share of measured steps): {pairs}")
    return "\n".join(lines + _file_problems(summary))


def _file_problems(summary: dict[str, Any]) -> list[str]:
    """Lines naming what went wrong with the run's files: failed writes, skipped or repeated rows."""
    out = []
    for e in summary.get("write_errors") or []:
        when = f"steps {e.get('first_step')}–{e.get('last_step')}, {e.get('rows')} rows"
        late = e.get("written_at_step")
        fate = f"written late, at step {late}" if late is not None else "never written to the files"
        out.append(f"file write failed ({when}; {fate}): {e.get('error')}")
    if summary.get("skipped_lines"):
        out.append(f"history.jsonl: {summary['skipped_lines']} malformed line(s) skipped")
    if summary.get("duplicate_rows"):
        out.append(f"history.jsonl: {summary['duplicate_rows']} duplicated (step, layer) row(s), each counted once")
    return out


def report(run_dir: str | Path, *, plots: bool = True) -> dict[str, Any]:
    """Summarise (and plot) a run folder; writes summary.json there and returns it.

    Malformed lines are skipped with a warning naming the file and line; a folder that cannot be
    read or written raises :class:`ReportError` naming the file. Every file is written to a
    temporary file in the folder and renamed over its target, so a symlink planted there is
    replaced, never followed.
    """
    run = load_run(run_dir)
    summary = summarize(run)
    try:
        if plots:
            summary["figures"] = [p.name for p in make_plots(run, summary)]
        replace_bytes(run.dir / SUMMARY_JSON, (json.dumps(to_jsonable(summary), indent=2) + "\n").encode())
    except OSError as exc:
        where = exc.filename or run.dir
        raise ReportError(f"{where}: cannot write in the run folder ({exc.strerror or exc})") from None
    return summary


__all__ = [
    "ReportError",
    "Run",
    "divergence",
    "format_table",
    "layer_ordering",
    "load_run",
    "make_plots",
    "report",
    "summarize",
]
