"""Staircase analysis of an ε-rank time series: plateaus, jumps, and the rank–loss correlation.

``detect(steps, ranks, losses)`` fits a piecewise-constant level to the rank series by binary
segmentation (least squares, a split is kept when it lowers the residual sum of squares by more
than ``penalty · σ² · log T``), then

- labels each segment by the median of its raw values (an integer rank), merges neighbours with
  the same label, and calls segments of at least ``min_plateau`` samples *plateaus*;
- reports a *jump* between consecutive plateaus whose ranks differ, with the step where the
  series first crosses halfway between them, the rank before and after, and the loss just
  before and just after (medians over ``window`` samples).

σ is a robust noise scale (the MAD of first differences), floored at 0.5: rank flicker of ±1
between neighbouring steps is noise, so it never creates a split, while a shift of one unit that
persists for many steps does. ``stairs`` counts the jumps to a new highest plateau.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Jump", "Plateau", "Staircase", "detect", "spearman"]

ArrayLike = Sequence[float] | np.ndarray


@dataclass
class Plateau:
    start_step: int
    end_step: int
    rank: int
    samples: int
    loss_start: float
    loss_end: float


@dataclass
class Jump:
    step: int  # where the series first crosses halfway between the two ranks
    start_step: int  # first step after the previous plateau
    end_step: int  # first step of the next plateau
    rank_before: int
    rank_after: int
    loss_before: float
    loss_after: float

    @property
    def up(self) -> bool:
        return self.rank_after > self.rank_before

    @property
    def loss_drop(self) -> float:
        return self.loss_before - self.loss_after

    @property
    def loss_ratio(self) -> float:
        return self.loss_before / self.loss_after if self.loss_after > 0 else math.nan


@dataclass
class Staircase:
    plateaus: list[Plateau]
    jumps: list[Jump]
    spearman: float  # rank–loss Spearman correlation over all finite samples (NaN without losses)
    noise: float  # the σ used
    params: dict[str, float] = field(default_factory=dict)

    @property
    def stairs(self) -> int:
        """Jumps up to a level above every earlier plateau (returns after a dip do not count)."""
        best, n = -math.inf, 0
        for i, p in enumerate(self.plateaus):
            if i > 0 and p.rank > best:
                n += 1
            best = max(best, p.rank)
        return n

    @property
    def n_up(self) -> int:
        return sum(j.up for j in self.jumps)

    def to_dict(self) -> dict[str, object]:
        return {
            "stairs": self.stairs,
            "jumps_up": self.n_up,
            "jumps_down": len(self.jumps) - self.n_up,
            "spearman": self.spearman,
            "noise_sigma": self.noise,
            "jumps": [{**asdict(j), "loss_drop": j.loss_drop, "loss_ratio": j.loss_ratio} for j in self.jumps],
            "plateaus": [asdict(p) for p in self.plateaus],
            "params": self.params,
        }


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's ρ: the Pearson correlation of average ranks. NaN if either side is constant."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D sequences of equal length, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return math.nan
    rx, ry = _rankdata(x) - (len(x) + 1) / 2, _rankdata(y) - (len(y) + 1) / 2
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / den if den > 0 else math.nan


def _segments(r: np.ndarray, threshold: float, min_size: int) -> list[tuple[int, int]]:
    """Binary segmentation of r into [a, b) pieces under the L2 cost."""
    s1 = np.concatenate([[0.0], np.cumsum(r)])
    s2 = np.concatenate([[0.0], np.cumsum(r * r)])

    def cost(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
        n = np.asarray(b) - np.asarray(a)
        return (s2[b] - s2[a]) - (s1[b] - s1[a]) ** 2 / n

    out, todo = [], [(0, len(r))]
    while todo:
        a, b = todo.pop()
        ks = np.arange(a + min_size, b - min_size + 1)
        if len(ks) == 0:
            out.append((a, b))
            continue
        gain = cost(a, b) - cost(a, ks) - cost(ks, b)
        k = int(ks[int(np.argmax(gain))])
        if gain.max() > threshold:
            todo += [(k, b), (a, k)]
        else:
            out.append((a, b))
    return sorted(out)


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else math.nan


def detect(
    steps: ArrayLike,
    ranks: ArrayLike,
    losses: ArrayLike | None = None,
    *,
    min_plateau: int | None = None,
    penalty: float = 3.0,
    min_sigma: float = 0.5,
    window: int | None = None,
) -> Staircase:
    """Plateaus and jumps of an ε-rank series; see the module docstring.

    Args:
        steps, ranks: the training steps [T] and ε-ranks [T] (non-finite ranks are dropped).
        losses: the loss at the same steps [T] (for the loss around jumps and the Spearman ρ).
        min_plateau: samples a level must last to be a plateau (default max(5, T // 100)).
        penalty: split threshold in units of σ² log T (higher: fewer, larger jumps).
        min_sigma: floor of the noise scale (0.5 treats ±1 flicker as noise).
        window: samples on each side of a jump for the loss before/after (default min_plateau).
    """
    st = np.asarray(steps, dtype=np.int64)
    r = np.asarray(ranks, dtype=np.float64)
    lo = np.full(r.shape, np.nan) if losses is None else np.asarray(losses, dtype=np.float64)
    if not (st.shape == r.shape == lo.shape) or r.ndim != 1:
        raise ValueError(f"steps, ranks and losses must be 1-D of one length, got {st.shape}, {r.shape}, {lo.shape}")
    ok = np.isfinite(r)
    st, r, lo = st[ok], r[ok], lo[ok]
    T = len(r)
    if min_plateau is None:
        min_plateau = max(5, T // 100)
    if min_plateau < 1:
        raise ValueError(f"min_plateau must be >= 1, got {min_plateau}")
    window = min_plateau if window is None else window
    rho = spearman(r, lo) if losses is not None else math.nan
    params = {"min_plateau": min_plateau, "penalty": penalty, "min_sigma": min_sigma, "window": window}
    if T == 0:
        return Staircase([], [], rho, min_sigma, params)
    d = np.diff(r)
    sigma = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2) if T > 2 else 0.0
    sigma = max(sigma, min_sigma)
    segs = _segments(r, penalty * sigma**2 * math.log(max(T, 2)), 1)

    # Label by the (rounded) median and merge equal neighbours.
    merged: list[list[int]] = []
    for a, b in segs:
        level = math.floor(float(np.median(r[a:b])) + 0.5)
        if merged and merged[-1][2] == level:
            merged[-1][1] = b
        else:
            merged.append([a, b, level])
    plateaus_idx = [(a, b, lev) for a, b, lev in merged if b - a >= min_plateau]
    # Neighbouring plateaus with one label (a short excursion between them) are one plateau.
    joined: list[tuple[int, int, int]] = []
    for a, b, lev in plateaus_idx:
        if joined and joined[-1][2] == lev:
            joined[-1] = (joined[-1][0], b, lev)
        else:
            joined.append((a, b, lev))

    plateaus = [
        Plateau(int(st[a]), int(st[b - 1]), int(lev), b - a, _median(lo[a : a + window]), _median(lo[b - window : b]))
        for a, b, lev in joined
    ]
    jumps = []
    for (a0, b0, l0), (a1, _b1, l1) in zip(joined, joined[1:], strict=False):
        half = 0.5 * (l1 - l0)
        seg = r[b0 : a1 + 1] - l0
        crossed = np.nonzero(seg * np.sign(half) >= abs(half))[0]
        at = b0 + int(crossed[0]) if len(crossed) else a1
        w0, w1 = min(window, b0 - a0), min(window, _b1 - a1)
        jumps.append(
            Jump(
                step=int(st[at]),
                start_step=int(st[b0]),
                end_step=int(st[a1]),
                rank_before=int(l0),
                rank_after=int(l1),
                loss_before=_median(lo[b0 - w0 : b0]),
                loss_after=_median(lo[a1 : a1 + w1]),
            )
        )
    return Staircase(plateaus, jumps, rho, sigma, params)
