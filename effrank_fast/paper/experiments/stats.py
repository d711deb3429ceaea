"""Statistics of the rank–loss coupling (docs/staircase.md defines them and says which is primary).

Spearman ρ(rank, loss) over all steps is kept, but two series that both trend over training are
rank-correlated whether or not they move together. The **primary** coupling test is the local
jitter test of :mod:`.coupling` at ε = ``coupling.PRIMARY_EPS`` with symmetric windows; it is the
only one calibrated on independent pairs whose change is front-loaded. The measures below are
kept as exploratory (their p-values are Holm-adjusted as one family per run by :func:`run_statistics`'s
caller, :func:`effrank_fast.paper.experiments.runner.analyse`):

- **jump-window share** S: the share of the total log-loss decrease log ℓ_0 − log ℓ_T that falls
  in windows around the rank's up-jumps (from :func:`effrank_fast.paper.staircase.detect`: each window runs
  from ``h`` samples before a jump's transition starts to ``h`` after it ends), next to the share
  of samples those windows cover. Two baselines move the windows and recompute S:
  *circular*: all windows shifted together by every offset 1..T−2, cyclically (exact p-value, keeps
  the jumps' spacing); *jitter*: each window moved independently by up to ±B samples (B = 10h,
  clipped to the run, 2000 draws from a fixed seed), which keeps each jump in its own phase of
  training and so does not reward a jump for merely lying in the early, fast part.
  p = (1 + #{baseline S ≥ observed S}) / (1 + #baselines).
  A second variant uses *following* windows, from a transition's start to 2h samples after its end
  (same coverage): the bound of :mod:`effrank_fast.paper.lower_bound` says the loss can fall only once the
  rank has risen, so a drop may lag the jump. (It was added after seeing the symmetric windows miss
  lagged drops in E1; docs/staircase.md treats it as exploratory.)
- **raw increment correlation** (formerly "ρ_Δ"; it is *not* detrended): the run is cut into K
  consecutive windows and this is the Spearman correlation of the rank increment with the log-loss
  decrease across windows. Both increments are largest early in training, so it is positive for
  independent series that both change early; it describes, it does not test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from effrank_fast.monitor.engines import eps_label
from effrank_fast.paper import staircase
from effrank_fast.paper.experiments.coupling import local_jump_test

__all__ = ["JumpWindowShare", "increment_correlation", "jump_window_share", "layer_order", "run_statistics"]


@dataclass
class JumpWindowShare:
    share: float  # of the total log-loss decrease, inside the windows
    coverage: float  # share of the samples inside the windows
    p_circular: float
    p_jitter: float
    jumps: int
    half_window: int
    total_log_decrease: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _mask(n: int, windows: Sequence[tuple[int, int]]) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for a, b in windows:
        m[max(a, 0) : min(b, n)] = True
    return m


def jump_window_share(
    loss: Sequence[float] | np.ndarray,
    jumps: Sequence[tuple[int, int]],
    half_window: int,
    *,
    after: int | None = None,
    jitter: int | None = None,
    draws: int = 2000,
    seed: int = 0,
) -> JumpWindowShare:
    """S, its coverage and both baselines' p-values (module docstring).

    Args:
        loss: the loss at consecutive measured steps [T] (> 0).
        jumps: (first, last) sample index of each up-jump's transition.
        half_window: h, samples added before a transition (and after it, unless ``after`` is given).
        after: samples added after a transition (default h). ``half_window=0, after=2h`` makes the
            *following* windows, which ask whether the loss falls right after the rank has risen.
        jitter: B for the jitter baseline (default 10h).
    """
    lo = np.asarray(loss, dtype=np.float64)
    if lo.ndim != 1 or len(lo) < 3 or not np.all(np.isfinite(lo)) or np.any(lo <= 0):
        raise ValueError("loss must be a finite, positive 1-D series of at least 3 samples")
    if half_window < 0:
        raise ValueError(f"half_window must be >= 0, got {half_window}")
    d = -np.diff(np.log(lo))  # d_i = log ℓ_i − log ℓ_{i+1}: the decrease over sample step i → i+1
    n, total = len(d), float(-np.diff(np.log(lo)).sum())
    tail = half_window if after is None else after
    if tail < 0:
        raise ValueError(f"after must be >= 0, got {after}")
    windows = [(max(a - half_window, 0), min(b + 1 + tail, n)) for a, b in jumps]
    nan = math.nan
    if not windows or total <= 0:
        return JumpWindowShare(nan, nan, nan, nan, len(windows), half_window, total)
    m = _mask(n, windows)
    share = float(d[m].sum()) / total
    # Circular: S(s) = Σ_i m_{i−s} d_i / total for every shift s, by FFT (a cyclic cross-correlation).
    shifted = np.fft.irfft(np.fft.rfft(d) * np.conj(np.fft.rfft(m.astype(np.float64))), n) / total
    others = shifted[1:]
    tol = 1e-9 * max(1.0, abs(share))
    p_circ = (1 + int(np.sum(others >= share - tol))) / (1 + len(others))
    b = 10 * max(half_window, tail, 1) if jitter is None else jitter
    rng = np.random.default_rng(seed)
    offsets = rng.integers(-b, b + 1, size=(draws, len(windows)))
    hits = 0
    for row in offsets:
        moved = []
        for (a, e), s in zip(windows, row, strict=True):
            s = int(np.clip(s, -a, n - e))  # keep the window inside the run
            moved.append((a + s, e + s))
        hits += float(d[_mask(n, moved)].sum()) / total >= share - tol
    p_jit = (1 + hits) / (1 + draws)
    return JumpWindowShare(share, float(m.mean()), p_circ, p_jit, len(windows), half_window, total)


def increment_correlation(
    rank: Sequence[float] | np.ndarray, loss: Sequence[float] | np.ndarray, windows: int = 50
) -> float:
    """Spearman of (rank increment, log-loss decrease) over ``windows`` consecutive windows (not detrended)."""
    r, lo = np.asarray(rank, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(lo) & (lo > 0)
    r, lo = r[ok], lo[ok]
    edges = np.unique(np.linspace(0, len(r) - 1, windows + 1).round().astype(int))
    if len(edges) < 3:
        return math.nan
    dr = np.diff(r[edges])
    dl = -np.diff(np.log(lo[edges]))
    return staircase.spearman(dr, dl)


def layer_order(ranks: Sequence[np.ndarray]) -> list[float]:
    """For consecutive layers k, k+1: the fraction of measured steps with rank(k+1) > rank(k)."""
    return [float(np.mean(b > a)) for a, b in zip(ranks, ranks[1:], strict=False)]


def first_step_below(steps: np.ndarray, loss: np.ndarray, level: float) -> int | None:
    hit = np.nonzero(np.isfinite(loss) & (loss <= level))[0]
    return int(steps[hit[0]]) if len(hit) else None


def run_statistics(series: dict[str, dict[str, np.ndarray]], layers: list[str], eps: float) -> dict[str, Any]:
    """The coupling statistics of one run at one ε for its last layer, and the layer order.

    Args:
        series: ``{layer: {"step", "loss", "eps_rank@<ε>", …}}`` arrays in step order (report.Run.series).
        layers: the hidden layers, shallow to deep; the last one is analysed.
        eps: the threshold whose ε-rank is used.
    """

    col = f"eps_rank@{eps_label(eps)}"
    s = series[layers[-1]]
    ok = np.isfinite(s["loss"]) & np.isfinite(s[col]) & (s["loss"] > 0)
    steps, loss, rank = s["step"][ok].astype(np.int64), s["loss"][ok], s[col][ok]
    out: dict[str, Any] = {"layer": layers[-1], "eps": eps, "samples": int(len(steps))}
    if len(steps) < 3:
        return out
    sc = staircase.detect(steps, rank, loss)
    ups = [j for j in sc.jumps if j.up]
    idx = [(int(np.searchsorted(steps, j.start_step)), int(np.searchsorted(steps, j.end_step))) for j in ups]
    half = int(sc.params["window"])
    out["spearman"] = sc.spearman
    out["stairs"] = sc.stairs
    out["jumps_up"] = len(ups)
    out["jump_steps"] = [j.step for j in ups]
    out["jumps_down"] = len(sc.jumps) - len(ups)
    out["local_jump_test"] = local_jump_test(loss, idx, half).to_dict()
    out["local_jump_test_after"] = local_jump_test(loss, idx, 0, after=2 * half).to_dict()
    out["jump_window_share"] = jump_window_share(loss, idx, half).to_dict()
    out["jump_window_share_after"] = jump_window_share(loss, idx, 0, after=2 * half).to_dict()
    out["raw_increment_correlation"] = increment_correlation(rank, loss)
    out["initial_rank"] = int(rank[0])
    out["final_rank"] = int(rank[-1])
    out["steps_to_loss_1e-2"] = first_step_below(steps, loss, 1e-2)
    out["steps_to_final_rank"] = int(steps[np.nonzero(rank >= rank[-1])[0][0]])
    order = [series[name][col] for name in layers]
    n = min(len(r) for r in order)
    out["layer_order"] = layer_order([r[:n] for r in order])
    out["initial_ranks"] = {name: int(series[name][col][0]) for name in layers}
    out["final_ranks"] = {name: int(series[name][col][n - 1]) for name in layers}
    return out
