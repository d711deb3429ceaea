"""Figures of a monitored run (matplotlib, written as PNG and SVG).

- :func:`staircase_plot`: training loss (log scale) and the ε-rank step curves of one layer on
  twin axes against the step, with the detected jumps marked (their labels in a band above the
  curves, so they never cover them) and the step where the run diverged, if it did;
- :func:`layers_plot`: the ε-rank of every monitored layer, one panel per ε;
- :func:`spectrum_plot`: a heatmap of log10 λ_k(M) over time with the λ = ε contours, beside
  snapshots of the sorted spectrum.

Uses ``matplotlib.figure.Figure`` directly (no pyplot state, works headless). Needs the ``plot``
extra: ``pip install 'effrank_fast[plot]'``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effrank_fast import safe_io

__all__ = ["layers_plot", "mark_divergence", "save", "spectrum_plot", "staircase_plot"]

# Colour-blind-safe (Okabe–Ito) for the ε curves; loss in near-black.
EPS_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
LOSS_COLOR = "#222222"
DIVERGED_COLOR = "#C00000"


def mark_divergence(ax: Any, step: int | None) -> Any:
    """A red dashed line at the first non-finite step; returns its legend handle (or None)."""
    if step is None:
        return None
    return ax.axvline(step, color=DIVERGED_COLOR, lw=1.4, ls="--", zorder=3, label=f"diverged at step {step}")


def _jump_labels(ax: Any, jumps: Sequence[Any], span: float) -> None:
    """ "a→b" labels of the jumps in a band above the axes, in up to three staggered rows (down-jumps
    in red); a label that would overlap its row's previous one (closer than 5% of the x range) is
    left out."""
    rows: list[float] = [-math.inf] * 3
    for j in jumps:
        up = j.rank_after > j.rank_before
        row = next((i for i, x in enumerate(rows) if j.step - x > 0.05 * span), None)
        if row is None:
            continue
        rows[row] = j.step
        ax.annotate(
            f"{j.rank_before}→{j.rank_after}",
            (j.step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2 + 9 * row),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color="#444444" if up else DIVERGED_COLOR,
            annotation_clip=False,
        )


def _figure(w: float, h: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'effrank_fast[plot]'") from exc
    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def save(fig: Any, stem: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically (a symlink there is replaced, never followed)."""
    out = []
    for fmt in formats:
        p = Path(f"{stem}.{fmt}")
        safe_io.replace_with(p, functools.partial(fig.savefig, format=fmt, dpi=150 if fmt == "png" else None))
        out.append(p)
    return out


def eps_text(e: float) -> str:
    """1e-3 → '10⁻³' style label for legends (mathtext)."""
    exp = math.floor(math.log10(e))
    mant = e / 10**exp
    if abs(mant - 1) < 1e-9:
        return rf"$10^{{{exp}}}$"
    return rf"${mant:g}\times10^{{{exp}}}$"


def _titles(fig: Any, title: str, subtitle: str | None, ax: Any = None) -> None:
    """Bold title; the conventions as a grey line under it (``ax``) or at the bottom of the figure."""
    fig.suptitle(title, fontsize=13, fontweight="bold")
    if subtitle and ax is not None:
        ax.set_title(subtitle, fontsize=8.5, color="#555555")
    elif subtitle:  # constrained layout reserves the room
        fig.supxlabel(subtitle, fontsize=8.5, color="#555555")


def staircase_plot(
    steps: np.ndarray,
    loss: np.ndarray,
    ranks: Mapping[float, np.ndarray],
    *,
    jumps: Sequence[Any] = (),
    jump_eps: float | None = None,
    title: str = "Staircase: ε-rank and training loss",
    subtitle: str | None = None,
    layer: str = "last hidden layer",
    loss_label: str = "loss",
    diverged_at: int | None = None,
    x_label: str = "training step",
    stem: str | Path | None = None,
    uncertified: Mapping[float, np.ndarray] | None = None,
) -> Any:
    """Loss (log, left) and ε-rank step curves (right) vs step; vertical lines at ``jumps``.

    ``loss_label`` names the loss on its axis (the run's ``meta["loss_name"]``, e.g. "MSE");
    ``diverged_at`` draws a red line at the first non-finite step; ``x_label`` names the step unit
    (e.g. "L-BFGS iterations"). ``uncertified``: per ε a bool array over ``steps``, the counts not
    proven (drawn as hollow markers on their curve).
    """
    fig = _figure(10, 5.4)
    ax = fig.add_subplot(1, 1, 1)
    ax2 = ax.twinx()
    ax.set_zorder(ax2.get_zorder() + 1)  # loss on top, rank curves behind
    ax.patch.set_visible(False)
    finite = np.isfinite(loss) & (loss > 0)
    (hl,) = ax.plot(steps[finite], loss[finite], color=LOSS_COLOR, lw=1.3, label=f"training {loss_label} (left, log)")
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"training {loss_label} (log scale)")
    handles = [hl]
    for i, (e, r) in enumerate(sorted(ranks.items(), reverse=True)):
        (h,) = ax2.plot(
            steps,
            r,
            drawstyle="steps-post",
            lw=1.8,
            color=EPS_COLORS[i % len(EPS_COLORS)],
            alpha=0.9,
            label=f"ε-rank, ε = {eps_text(e)} (right)",
        )
        handles.append(h)
        bad = None if uncertified is None else uncertified.get(e)
        if bad is not None and bad.any():
            ax2.plot(steps[bad], r[bad], ls="none", marker="o", ms=4, mfc="white", color=h.get_color())
    if uncertified is not None and any(v.any() for v in uncertified.values()):
        handles.append(
            ax2.plot([], [], ls="none", marker="o", ms=4, mfc="white", color="#555555", label="count not certified")[0]
        )
    span = float(steps[-1] - steps[0]) or 1.0
    for j in jumps:
        ax2.axvline(j.step, color="#888888", lw=0.9, ls=":", zorder=0)
    _jump_labels(ax2, jumps, span)
    if jumps:
        what = "detected jumps" + (f" (ε = {eps_text(jump_eps)})" if jump_eps else "")
        what += "; labels: rank before→after" + (
            ", down-jumps in red" if any(j.rank_after < j.rank_before for j in jumps) else ""
        )
        handles.append(ax2.plot([], [], color="#888888", lw=0.9, ls=":", label=what)[0])
    hd = mark_divergence(ax, diverged_at)
    if hd is not None:
        handles.append(hd)
    ax2.set_ylabel(f"ε-rank of {layer}  (#{{λ(M) > ε}})")
    ax2.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, which="major", color="#dddddd", lw=0.6)
    ax.set_xlim(steps[0], steps[-1])
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 3), fontsize=8.5, frameon=False)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    if subtitle:  # above the band of jump labels
        ax.set_title(subtitle, fontsize=8.5, color="#555555", pad=34 if jumps else 6)
    if stem is not None:
        save(fig, stem)
    return fig


def layers_plot(
    steps: np.ndarray,
    ranks: Mapping[str, Mapping[float, np.ndarray]],
    eps: Sequence[float],
    *,
    title: str = "ε-rank of every hidden layer",
    subtitle: str | None = None,
    diverged_at: int | None = None,
    x_label: str = "training step",
    stem: str | Path | None = None,
) -> Any:
    """One panel per ε with one step curve per layer (shallow → deep: light → dark)."""
    from matplotlib import colormaps

    fig = _figure(4.2 * len(eps) + 0.8, 4.2)
    axes = fig.subplots(1, len(eps), sharex=True, squeeze=False)[0]
    cmap = colormaps["viridis"]
    names = list(ranks)
    for ax, e in zip(axes, sorted(eps, reverse=True), strict=True):
        for i, name in enumerate(names):
            color = cmap(0.85 - 0.75 * i / max(1, len(names) - 1))
            ax.plot(steps, ranks[name][e], drawstyle="steps-post", lw=1.5, color=color, label=name)
        ax.set_title(f"ε = {eps_text(e)}", fontsize=11)
        mark_divergence(ax, diverged_at)
        ax.set_xlabel(x_label)
        ax.grid(True, color="#dddddd", lw=0.6)
        ax.yaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("ε-rank  #{λ(M) > ε}")
    fig.legend(*axes[0].get_legend_handles_labels(), title="layer", fontsize=8.5, loc="outside right center")
    _titles(fig, title, subtitle)
    if stem is not None:
        save(fig, stem)
    return fig


def spectrum_plot(
    steps: np.ndarray,
    spectra: np.ndarray,
    eps: Sequence[float],
    *,
    title: str = "Spectrum of the Gram matrix over training",
    subtitle: str | None = None,
    layer: str = "last hidden layer",
    snapshots: int = 5,
    diverged_at: int | None = None,
    x_label: str = "training step",
    stem: str | Path | None = None,
) -> Any:
    """Heatmap of log10 λ_k (k = 1 largest, bottom) vs step with λ = ε contours, and spectrum snapshots."""
    from matplotlib import colormaps

    lam = np.asarray(spectra, dtype=np.float64)
    floor = min(eps) * 1e-4
    logl = np.log10(np.clip(np.where(np.isfinite(lam), lam, np.nan), floor, None))
    T, d = lam.shape
    fig = _figure(13, 5.0)
    ax, axs = fig.subplots(1, 2, width_ratios=[1.75, 1])
    k = np.arange(1, d + 1)
    above = np.nonzero(np.nanmax(np.where(np.isfinite(logl), logl, -np.inf), axis=0) > math.log10(floor))[0]
    kmax = min(d, int(above[-1]) + 4) if len(above) else d  # hide the rows that stay below the floor
    im = ax.pcolormesh(steps, k, logl.T, cmap="magma", shading="nearest", vmin=math.log10(floor), rasterized=True)
    styles = ["-", "--", ":", "-."]
    if T > 1:
        cs = ax.contour(
            steps,
            k,
            logl.T,
            levels=sorted(math.log10(e) for e in eps),
            colors="#7fffd4",
            linewidths=1.1,
            linestyles=[styles[i % 4] for i in range(len(eps))],
        )
        ax.clabel(cs, fmt={math.log10(e): f"ε={e:g}" for e in eps}, fontsize=7, inline=True)
    ax.set_ylim(0.5, kmax + 0.5)
    ax.set_xlabel(x_label)
    ax.set_ylabel("eigenvalue index k  (1 = largest)")
    ax.set_title(f"log₁₀ λₖ(M), {layer}", fontsize=11)
    cbar = fig.colorbar(im, ax=ax, pad=0.01)
    cbar.set_label("log₁₀ λ")
    for e in eps:
        cbar.ax.axhline(math.log10(e), color="#7fffd4", lw=1.2)
    mark_divergence(ax, diverged_at)
    finite_rows = np.nonzero(np.isfinite(lam).any(axis=1))[0]  # snapshots of a diverged run: finite ones only
    pick = np.linspace(0, len(finite_rows) - 1, min(snapshots, len(finite_rows))).round().astype(int)
    idx = np.unique(finite_rows[pick]) if len(finite_rows) else np.zeros(0, dtype=int)
    cmap = colormaps["viridis"]
    for n, i in enumerate(idx):
        ax_color = cmap(n / max(1, len(idx) - 1))
        axs.semilogy(
            k,
            np.where(lam[i] > floor, lam[i], np.nan),
            marker="o",
            ms=2.5,
            lw=1.1,
            color=ax_color,
            label=f"step {int(steps[i])}",
        )
    for j, e in enumerate(sorted(eps, reverse=True)):
        axs.axhline(e, color=EPS_COLORS[j % len(EPS_COLORS)], lw=1.0, ls="--", label=f"ε = {eps_text(e)}")
    axs.set_ylim(bottom=floor)
    axs.set_xlim(0, kmax + 1)
    axs.set_xlabel("eigenvalue index k")
    axs.set_ylabel("λₖ(M)")
    axs.set_title("sorted spectrum at a few steps", fontsize=11)
    axs.grid(True, which="major", color="#dddddd", lw=0.6)
    axs.legend(fontsize=7.5, ncol=2, loc="upper right")
    _titles(fig, title, subtitle)
    if stem is not None:
        save(fig, stem)
    return fig
