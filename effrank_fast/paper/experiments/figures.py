"""The experiments' own figures (matplotlib; PNG only, through effrank_fast.plotting.save).

- :func:`scatter_plot`: training loss vs ε-rank of the last hidden layer, one point per measured step, coloured by step;
- :func:`bound_plot`: the observed probe error ‖u − u_θ‖²_w with the lower bound (dist − √ε‖c̃‖)₊² at each ε;
- :func:`seeds_plot`: median and range over seeds of loss and last-layer rank vs step, one colour per variant;
- :func:`sfli_plot`: SFLI against the default init: loss and rank vs step and vs wall time, initial ranks per layer;
- :func:`cost_plot`: loss per arm against iterations, gradient evaluations and wall time (fair optimiser comparisons).

The staircase, per-layer and spectrum figures of every run come from :func:`effrank_fast.report.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effrank_fast import report
from effrank_fast.monitor.engines import eps_label
from effrank_fast.paper.experiments.common import group_label, read_extras
from effrank_fast.plotting import EPS_COLORS, LOSS_COLOR, eps_text, save

PNG = ("png",)  # SVGs of these figures are not needed and double the cost of drawing them
VARIANT_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _col(e: float) -> str:

    return f"eps_rank@{eps_label(e)}"


def _loss_label(meta: dict[str, Any]) -> str:
    return "training " + str((meta.get("run") or {}).get("loss_name", "loss"))


def _step_label(meta: dict[str, Any]) -> str:
    return str((meta.get("run") or {}).get("step_unit", "training step"))


def scatter_plot(run: Any, *, eps: float | None = None, stem: str | Path | None = None) -> Any:
    """Loss (log) against the last hidden layer's ε-rank, coloured by step (a small jitter separates the integers)."""
    e = max(run.eps) if eps is None else eps
    last = run.layers[-1]
    s = run.series(last)
    ok = np.isfinite(s["loss"]) & (s["loss"] > 0) & np.isfinite(s[_col(e)])
    rank = s[_col(e)][ok] + np.random.default_rng(0).uniform(-0.18, 0.18, int(ok.sum()))
    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    sc = ax.scatter(rank, s["loss"][ok], c=s["step"][ok], s=5, cmap="viridis", alpha=0.7, linewidths=0, rasterized=True)
    ax.set_yscale("log")
    ax.set_xlabel(f"ε-rank of {last} (ε = {eps_text(e)}), jittered ±0.18")
    ax.set_ylabel(_loss_label(run.meta) + ", log scale")
    ax.grid(True, color="#dddddd", lw=0.6)
    fig.colorbar(sc, ax=ax, pad=0.01).set_label(_step_label(run.meta))
    fig.suptitle("Loss against ε-rank, one point per measured step", fontsize=12, fontweight="bold")
    if stem is not None:
        save(fig, stem, PNG)
    return fig


def bound_plot(run: Any, extras: list[dict[str, Any]], *, stem: str | Path | None = None) -> Any | None:
    """‖u − u_θ‖²_w and the lower bound at every ε against the step; None when the run has no bound."""
    rows = [r for r in extras if "probe_l2" in r]
    if not rows or not any(k.startswith("bound@") for k in rows[0]):
        return None
    steps = np.array([r["step"] for r in rows])
    fig = _figure(8.5, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    obs = np.array([r["probe_l2"] for r in rows])
    ax.plot(steps, obs, color=LOSS_COLOR, lw=1.6, label="observed ‖u − u_θ‖²_w on the probe")
    for i, e in enumerate(sorted(run.eps, reverse=True)):
        b = np.array([r.get(f"bound@{e:g}", np.nan) for r in rows])
        pos = np.where(b > 0, b, np.nan)
        ax.plot(
            steps, pos, color=EPS_COLORS[i % len(EPS_COLORS)], lw=1.2, ls="--", label=f"lower bound, ε = {eps_text(e)}"
        )
    ax.set_yscale("log")
    ax.set_xlabel(_step_label(run.meta))
    ax.set_ylabel("quadrature-weighted squared L² error")
    ax.grid(True, which="major", color="#dddddd", lw=0.6)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(
        "bound = (dist(u, V_r) − √ε‖c̃‖₂)₊², r = #{λ(M̃) > ε}; not drawn where it is 0", fontsize=8.5, color="#555555"
    )
    fig.suptitle("ε-rank lower bound on the error (our formalisation)", fontsize=12, fontweight="bold")
    if stem is not None:
        save(fig, stem, PNG)
    return fig


def run_figures(run: Any, extras: list[dict[str, Any]]) -> list[Path]:
    out: list[Path] = []
    scatter_plot(run, stem=run.dir / "scatter")
    out.append(run.dir / "scatter.png")
    if bound_plot(run, extras, stem=run.dir / "bound") is not None:
        out.append(run.dir / "bound.png")
    return out


def _groups(run_dirs: Sequence[Path]) -> dict[str, list[Any]]:

    groups: dict[str, list[Any]] = {}
    for d in run_dirs:
        groups.setdefault(group_label(Path(d).name), []).append(report.load_run(d))
    return groups


def _band(
    runs: list[Any], key: str, e: float, x_key: str = "step"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x grid, median, min, max) of a column of the last layer over runs, interpolated on a common grid."""
    curves = []
    for run in runs:
        s = run.series(run.layers[-1])
        y = s[key] if key != "rank" else s[_col(e)]
        curves.append((s[x_key], y))
    hi = min(float(np.nanmax(x)) for x, _ in curves)
    grid = np.linspace(0.0, hi, 400)
    ys = np.array([np.interp(grid, x, np.log(y) if key == "loss" else y) for x, y in curves])
    med, lo, up = np.median(ys, axis=0), ys.min(axis=0), ys.max(axis=0)
    if key == "loss":
        med, lo, up = np.exp(med), np.exp(lo), np.exp(up)
    return grid, med, lo, up


def _draw_bands(axes: Sequence[Any], groups: dict[str, list[Any]], e: float, x_key: str) -> None:
    for i, (name, runs) in enumerate(groups.items()):
        color = VARIANT_COLORS[i % len(VARIANT_COLORS)]
        for ax, key in zip(axes, ("loss", "rank"), strict=True):
            x, med, lo, up = _band(runs, key, e, x_key)
            ax.plot(
                x,
                med,
                color=color,
                lw=1.5,
                label=f"{name} (median of {len(runs)})",
                drawstyle="steps-post" if key == "rank" else None,
            )
            if len(runs) > 1:
                ax.fill_between(x, lo, up, color=color, alpha=0.18, lw=0, step="post" if key == "rank" else None)


def seeds_plot(run_dirs: Sequence[Path], stem: str | Path, *, eps: float | None = None) -> list[Path]:
    """Median (line) and min–max (band) over seeds of loss and last-layer ε-rank vs step, per variant."""
    groups = _groups(run_dirs)
    first = next(iter(groups.values()))[0]
    e = max(first.eps) if eps is None else eps
    units = {_step_label(run.meta) for runs in groups.values() for run in runs}
    x_label = units.pop() if len(units) == 1 else "optimizer steps (Adam, SGD) or iterations (L-BFGS)"
    fig = _figure(12, 4.6)
    ax_loss, ax_rank = fig.subplots(1, 2)
    _draw_bands((ax_loss, ax_rank), groups, e, "step")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel(_loss_label(first.meta) + ", log scale")
    ax_rank.set_ylabel(f"ε-rank of the last hidden layer (ε = {eps_text(e)})")
    for ax in (ax_loss, ax_rank):
        ax.set_xlabel(x_label)
        ax.grid(True, color="#dddddd", lw=0.6)
    ax_loss.legend(fontsize=8)
    fig.suptitle("Over seeds: median (line) and min–max (band)", fontsize=12, fontweight="bold")
    return save(fig, stem, PNG)


def sfli_plot(
    default_dirs: Sequence[Path], sfli_dirs: Sequence[Path], stem: str | Path, *, title: str = ""
) -> list[Path]:
    """2×3 panels: loss and rank vs step and vs wall time (median and range over seeds), initial ranks per layer."""

    groups = {
        "default init": [report.load_run(d) for d in default_dirs],
        "SFLI": [report.load_run(d) for d in sfli_dirs],
    }
    first = groups["default init"][0]
    e = max(first.eps)
    fig = _figure(14, 7.6)
    axes = fig.subplots(2, 3)
    _draw_bands((axes[0, 0], axes[1, 0]), groups, e, "step")
    _draw_bands((axes[0, 1], axes[1, 1]), groups, e, "wall_time")
    for col, xl in ((0, _step_label(first.meta)), (1, "wall time (s, monitor included)")):
        axes[0, col].set_yscale("log")
        axes[0, col].set_ylabel(_loss_label(first.meta))
        axes[1, col].set_ylabel(f"ε-rank, last hidden layer (ε = {eps_text(e)})")
        for row in (0, 1):
            axes[row, col].set_xlabel(xl)
            axes[row, col].grid(True, color="#dddddd", lw=0.6)
    axes[0, 0].legend(fontsize=8)
    for row, eps_row in enumerate((max(first.eps), min(first.eps))):
        ax = axes[row, 2]
        layers = first.layers
        xs = np.arange(len(layers))
        for i, (name, runs) in enumerate(groups.items()):
            vals = np.array([[run.series(l)[_col(eps_row)][0] for l in layers] for run in runs])
            med = np.median(vals, axis=0)
            ax.bar(xs + (i - 0.5) * 0.38, med, width=0.38, color=VARIANT_COLORS[i], label=name)
            ax.errorbar(
                xs + (i - 0.5) * 0.38,
                med,
                yerr=[med - vals.min(0), vals.max(0) - med],
                fmt="none",
                ecolor="#333333",
                lw=1,
            )
            for x, m in zip(xs, med, strict=True):
                ax.annotate(
                    f"{m:.0f}",
                    (x + (i - 0.5) * 0.38, m),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(xs, layers)
        ax.set_ylabel(f"initial ε-rank (ε = {eps_text(eps_row)})")
        ax.set_title("at step 0, median and range over seeds", fontsize=9, color="#555555")
        ax.legend(fontsize=8)
    fig.suptitle(title or "SFLI against the default initialisation", fontsize=12, fontweight="bold")
    return save(fig, stem, PNG)


def _evals(run: Any) -> np.ndarray:
    """Gradient evaluations at each of the last layer's rows: from extras.jsonl where it has the step
    (every L-BFGS iteration), else the step itself (Adam, SGD: one evaluation per step)."""

    steps = run.series(run.layers[-1])["step"]
    known = {int(r["step"]): float(r["func_evals"]) for r in read_extras(run.dir) if "func_evals" in r}
    return np.array([known.get(int(t), float(t)) for t in steps])


def cost_plot(run_dirs: Sequence[Path], stem: str | Path) -> list[Path]:
    """Loss per arm (median and min–max over seeds) against iterations, gradient evaluations and wall time."""
    groups = _groups(run_dirs)
    first = next(iter(groups.values()))[0]
    fig = _figure(15, 4.6)
    axes = fig.subplots(1, 3)
    titles = ("optimizer steps (Adam) / iterations (L-BFGS)", "gradient evaluations", "wall time (s, monitor included)")
    for i, (name, runs) in enumerate(groups.items()):
        color = VARIANT_COLORS[i % len(VARIANT_COLORS)]
        for ax, kind in zip(axes, ("step", "evals", "wall_time"), strict=True):
            curves = []
            for run in runs:
                s = run.series(run.layers[-1])
                x = _evals(run) if kind == "evals" else s[kind]
                curves.append((x, np.log(s["loss"])))
            hi = min(float(np.nanmax(x)) for x, _ in curves)
            grid = np.linspace(0.0, hi, 400)
            ys = np.array([np.interp(grid, x, y) for x, y in curves])
            ax.plot(grid, np.exp(np.median(ys, axis=0)), color=color, lw=1.5, label=f"{name} (median of {len(runs)})")
            if len(runs) > 1:
                ax.fill_between(grid, np.exp(ys.min(axis=0)), np.exp(ys.max(axis=0)), color=color, alpha=0.18, lw=0)
    for ax, title in zip(axes, titles, strict=True):
        ax.set_yscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel(_loss_label(first.meta) + ", log scale")
        ax.grid(True, color="#dddddd", lw=0.6)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "The same runs at equal iterations, gradient evaluations and wall time", fontsize=12, fontweight="bold"
    )
    return save(fig, stem, PNG)
