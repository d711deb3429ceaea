"""Control for threshold quantisation: do eigenvalues cross ε in bursts, or at their ordinary pace?

Any spectrum whose eigenvalues rise smoothly makes #{λ > ε} rise one unit at a time, so "the
ε-rank rises in steps" (claim C1a) holds for any smooth training run. What would make it a finding
is that eigenvalues cross ε *faster than they usually move*: growth in bursts.

From the stored spectra (``spectrum.jsonl``, every ``spectrum_every`` steps) of one layer, for the
k-th largest eigenvalue λ_k(t) (k = 1 … K):

- a *crossing* is a sample pair (t_i, t_{i+1}) with λ_k(t_i) ≤ ε < λ_k(t_{i+1}) (upward);
- its *rate* is the growth of log λ_k over that interval, per step;
- the *smooth-trajectory null* is the same eigenvalue's own rates over the intervals where it lies
  within a factor ``band`` of ε (its approach to ε and its departure from it), each weighted by its
  upward increment max(Δ log λ_k, 0). The weights matter: if ε sat at a level of no special
  meaning for the trajectory (uniform in log λ over the band), the interval that crosses it would
  be drawn with probability proportional to its increment, so fast intervals cross more often even
  for a perfectly smooth trajectory. Under that null the weighted percentile q of the crossing's
  rate is ≈ Uniform(0, 1); crossings that happen in bursts, faster than the increment-weighted
  ordinary pace of the same eigenvalue, have q near 1.

The summary gives the median q, the share of crossings with q > 0.9 (≈ 0.1 under the null), and
a one-sided sign test of q > 0.5 (binomial, exact). q asks whether ε is a special level for the
eigenvalues; it cannot see a burst that carries an eigenvalue through the whole band at once (any
level in the band would then be crossed in it). The **speed-up** does: the crossing interval's rate
divided by the same eigenvalue's mean rate over ±``reach`` samples around it (1 for steady motion;
≫ 1 when the crossing happens in a burst much shorter than the window; noise alone makes it > 1,
because an interval that crosses is more often one that moved up fast). Both are descriptive
controls reported beside C1a, not gates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["CrossingControl", "crossing_control", "crossing_control_of_run"]


@dataclass
class CrossingControl:
    crossings: int
    median_percentile: float
    share_above_90: float
    p_sign: float  # one-sided: P(#{q > 0.5} ≥ observed) under Binomial(m, 1/2)
    median_speedup: float  # crossing rate / mean rate over ±reach samples
    percentiles: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sign_test(k: int, m: int) -> float:
    return sum(math.comb(m, j) for j in range(k, m + 1)) / 2.0**m if m else math.nan


def crossing_control(
    steps: Sequence[int] | np.ndarray,
    spectra: np.ndarray,
    eps: float,
    *,
    band: float = 10.0,
    reach: int = 25,
    top: int | None = None,
) -> CrossingControl:
    """The control of the module docstring.

    Args:
        steps: the steps of the stored spectra [S], increasing.
        spectra: eigenvalues [S, K], each row sorted in decreasing order (K may be the count kept).
        eps: the threshold ε > 0.
        band: the null uses the intervals where λ_k lies in [ε/band, ε·band].
        reach: samples on each side of a crossing for the speed-up.
        top: use only the largest ``top`` eigenvalues (default all K).
    """
    st = np.asarray(steps, dtype=np.float64)
    lam = np.asarray(spectra, dtype=np.float64)
    if lam.ndim != 2 or lam.shape[0] != len(st) or len(st) < 3:
        raise ValueError(f"spectra must be [S, K] with S = len(steps) >= 3, got {lam.shape} and {len(st)} steps")
    if not (eps > 0 and band > 1):
        raise ValueError(f"eps must be > 0 and band > 1, got {eps} and {band}")
    if np.any(np.diff(st) <= 0):
        raise ValueError("steps must be strictly increasing")
    k_max = lam.shape[1] if top is None else min(top, lam.shape[1])
    log = np.log(np.maximum(lam[:, :k_max], 1e-300))
    dt = np.diff(st)[:, None]
    rate = np.diff(log, axis=0) / dt  # [S − 1, K]
    lo, hi = log[:-1], log[1:]
    le = math.log(eps)
    cross = (lo <= le) & (hi > le)
    mid = 0.5 * (lo + hi)
    near = (np.abs(mid - le) <= math.log(band)) | cross
    up = np.maximum(hi - lo, 0.0)
    qs: list[float] = []
    speed: list[float] = []
    n = len(st)
    for k in range(k_max):
        null, w = rate[near[:, k], k], up[near[:, k], k]
        if len(null) < 5 or w.sum() <= 0:
            continue  # too short a trajectory near ε to say what is ordinary for it
        for i in np.nonzero(cross[:, k])[0]:
            r = rate[i, k]
            qs.append(float((w[null < r].sum() + 0.5 * w[null == r].sum()) / w.sum()))
            a, b = max(int(i) - reach, 0), min(int(i) + 1 + reach, n - 1)
            mean = (log[b, k] - log[a, k]) / (st[b] - st[a])
            speed.append(float(r / mean) if mean > 0 else math.inf)
    m = len(qs)
    if not m:
        return CrossingControl(0, math.nan, math.nan, math.nan, math.nan, [])
    q = np.array(qs)
    p = _sign_test(int(np.sum(q > 0.5)), m)
    return CrossingControl(m, float(np.median(q)), float(np.mean(q > 0.9)), p, float(np.median(speed)), qs)


def crossing_control_of_run(run: Any, eps: float, layer: str | None = None) -> CrossingControl | None:
    """The control on a run folder's stored spectra (``report.Run``) for ``layer`` (default the last)."""
    name = layer or run.layers[-1]
    rows = sorted((r for r in run.spectrum if r["layer"] == name), key=lambda r: r["step"])
    if len(rows) < 3:
        return None
    k = min(len(r["eigenvalues"]) for r in rows)
    lam = np.array([sorted(r["eigenvalues"], reverse=True)[:k] for r in rows])
    return crossing_control([r["step"] for r in rows], lam, eps)
