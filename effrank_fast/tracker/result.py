"""What one :meth:`SpectrumTracker.update` returns, and the codes that say how each count was made."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum

import torch

__all__ = ["TrackPath", "TrackResult"]


class TrackPath(IntEnum):
    """How an ε-count in :attr:`TrackResult.path` was obtained.

    CERTIFIED (0): the certified interval from the Ritz values is a single point.
    INERTIA (1): the interval was not a point; the exact Sylvester-inertia count (float64 LDLᵀ of
        M − τI) settled it.
    EIGH (2): exact from a float64 ``eigvalsh``: a periodic refresh, the inertia kernel's own
        fallback, or (``relative="max"``) an interval the inertia counts could not close.
    UNRESOLVED (3): no exact count was made this step (``escalate=False``, or ``sync="deferred"``
        and the interval opened only now); the count is the Ritz count #{θ_i > τ}, which lies in
        ``[eps_rank_lower, eps_rank_upper]``.
    """

    CERTIFIED = 0
    INERTIA = 1
    EIGH = 2
    UNRESOLVED = 3


@dataclass
class TrackResult:
    """One step of the warm spectrum tracker. Tensors stay on the Gram's device; nothing syncs.

    Shapes: k = tracked eigenpairs, d = Gram size, E = number of thresholds. M is the symmetric
    part of the Gram passed to ``update``. What is guaranteed, up to the rounding margin
    δ = ``margin`` in each inequality (exact on refresh steps, where everything comes from eigh):

    * ``eigenvalues[i] ≤ λ_i(M)`` for every i, and some eigenvalue of M lies within
      ``residuals[i]`` of ``eigenvalues[i]``;
    * ``lambda_max ≤ λ_max(M) ≤ lambda_max_upper``;
    * ``eps_rank_lower ≤ #{λ(M) > τ} ≤ eps_rank_upper`` for every ε, and ``eps_rank`` lies in it;
      ``eps_rank`` is the exact count unless ``path`` is UNRESOLVED.

    Why the values are θ_i − ‖E‖_F and not θ_i: with θ_i = v_iᵀMv_i (the Rayleigh quotients,
    sorted) and E the off-diagonal part of VᵀMV that the small eigensolve left, the Ritz values
    μ_i (the eigenvalues of VᵀMV) interlace, μ_i ≤ λ_i, and |θ_i − μ_i| ≤ ‖E‖₂ ≤ ‖E‖_F (Weyl). θ_i
    alone can exceed λ_i when the solve stopped early (at ``jacobi_sweeps``); once it converged,
    ‖E‖_F is at rounding level and the values are the Ritz values.

    Attributes:
        eigenvalues: [k] float64, descending: θ_i − ‖E‖_F, certified lower values of λ_1..λ_k.
        eigenvectors: [d, k] the Ritz vectors v_i (working dtype), orthonormal.
        residuals: [k] float64, ‖M v_i − θ_i v_i‖ + ‖E‖_F: an eigenvalue of M lies within it of
            ``eigenvalues[i]`` (the first term bounds the distance from θ_i).
        eps: [E] float64, the ε as given; ``relative`` says how they scale.
        thresholds: [E] float64, τ applied: ε, or ε·tr M with tr M as computed (float64), for
            which the exact counts are #{λ > τ}; ``relative="max"``: ε·θ_max (the certificate
            covers the unknown exact λ_max ∈ [lambda_max, lambda_max_upper]).
        eps_rank: [E] int64, the reported count #{λ(M) > τ}; exact unless path == UNRESOLVED.
        eps_rank_lower, eps_rank_upper: [E] int64, the interval the Ritz data certify
            (lower: Cauchy interlacing; upper: residual + complement bound, docs/tracker.md).
        path: [E] int64, a :class:`TrackPath` code per count.
        lambda_max, lambda_max_upper: 0-d float64, certified bounds on λ_max; lambda_max = θ_max,
            the largest Rayleigh quotient (≤ λ_max without any correction).
        trace, fro_sq: 0-d float64, tr M and ‖M‖_F² (exact functions of the entries).
        stable_rank: tr M / θ_max (≥ the exact value, within the λ_max interval).
        participation_ratio: (tr M)² / ‖M‖_F², exact.
        entropy_rank, entropy_rank_err: 0-d float64, exp H of p = σ/Σσ from the top-k Ritz values
            plus a stochastic Lanczos estimate of the deflated remainder, and an error estimate
            (jackknife over probes ⊕ change from one fewer Lanczos step). NaN when not computed
            this step; exact (error 0) on refresh steps.
        margin: 0-d float64, the rounding margin δ folded into the certificate.
        accepted: 0-d bool, max_{i<k} ‖M v_i − θ_i v_i‖ ≤ tol·θ_max (and everything finite).
        iterations: subspace iterations run this step (0 = one Rayleigh–Ritz on last basis).
        restarted: a cold restart happened this step.
        refreshed: this step was an exact float64 eigh (``refresh_every``).
        k, step: tracked size and the 1-based update counter.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    eps: torch.Tensor
    relative: str | None
    thresholds: torch.Tensor
    eps_rank: torch.Tensor
    eps_rank_lower: torch.Tensor
    eps_rank_upper: torch.Tensor
    path: torch.Tensor
    lambda_max: torch.Tensor
    lambda_max_upper: torch.Tensor
    trace: torch.Tensor
    fro_sq: torch.Tensor
    stable_rank: torch.Tensor
    participation_ratio: torch.Tensor
    entropy_rank: torch.Tensor
    entropy_rank_err: torch.Tensor
    margin: torch.Tensor
    accepted: torch.Tensor
    iterations: int
    restarted: bool
    refreshed: bool
    k: int
    step: int

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor field (for stream bookkeeping)."""
        return [v for f in fields(self) if isinstance(v := getattr(self, f.name), torch.Tensor)]

    def to_dict(self) -> dict[str, object]:
        """Plain Python values, without the eigenvectors (this synchronises with the device)."""
        out: dict[str, object] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "eigenvectors":
                continue
            out[f.name] = v.tolist() if isinstance(v, torch.Tensor) else v
        return out
