"""One Rayleigh–Ritz step with its certificate, count bounds and decision flags (device only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effrank_fast.ops.jacobi_eigh import default_tol
from effrank_fast.rank import formulas
from effrank_fast.tracker.certify import Certificate, certify, count_bounds
from effrank_fast.tracker.subspace import Ritz, rayleigh_ritz

__all__ = ["Step", "ritz_step"]


@dataclass
class Step:
    """Device-side products of one Rayleigh–Ritz + certificate."""

    ritz: Ritz
    cert: Certificate
    tau: torch.Tensor  # reported thresholds [E]; for relative None/"trace" the exact counts are taken here
    tau_lo: torch.Tensor  # the certificate covers every τ in [tau_lo, tau_hi]
    tau_hi: torch.Tensor
    lower: torch.Tensor  # [E] int64
    upper: torch.Tensor  # [E] int64
    ritz_count: torch.Tensor  # [E] #{θ_i > τ}, clamped into [lower, upper]
    accepted: torch.Tensor  # 0-d bool
    finite: torch.Tensor  # 0-d bool: M, its norms and the Ritz data are finite (else nothing is certified)
    flags: torch.Tensor  # int64 [3 + E]: accepted, non-finite, grow, open_e


def ritz_step(
    g: torch.Tensor,
    v: torch.Tensor,
    *,
    trace: torch.Tensor,
    fro_sq: torch.Tensor,
    eps: torch.Tensor,
    relative: str | None,
    k: int,
    tol: float,
    grow_count: float | None,
    u: float,
    extra: float,
    max_sweeps: int,
    backend: str,
    gram_error: torch.Tensor | None = None,
) -> Step:
    """Rayleigh–Ritz of M = ``g`` on span(V) and everything derived from it.

    ``grow_count``: raise the grow flag when some certified lower count reaches it (None: never).
    The Jacobi solve stops once its off-diagonal is 10⁻³·``tol`` relative (or at rounding level), or
    at its sweep cap: what it leaves, E = VᵀMV − diag, is re-measured, so it enters the residuals
    (hence the acceptance), the certificate and the reported values (θ_i − ‖E‖_F, see
    :class:`TrackResult`). Stopping at 10⁻³·``tol`` saves about one of four sweeps on a warm basis.

    Thresholds: τ = ε (``relative=None``) is exact, and so is τ = ε·tr M once tr M is computed
    (float64 sum of the diagonal); the exact counts are taken at that τ. For "trace" the interval
    also covers τ ± 4d·u₆₄·τ, the rounding of tr M, so it holds for the exact-arithmetic trace too.
    For "max", τ = ε·λ_max with λ_max only known to lie in [λ_lo, λ_hi]: the interval covers
    ε·[λ_lo, λ_hi] and ``tau`` reports ε·θ_max.

    ``gram_error`` δ_G (0-d, ≥ ‖M̂ − M‖₂ for the exact M that ``g`` approximates): by Weyl every
    eigenvalue of M lies within δ_G of one of M̂, so λ_max's interval widens by δ_G and every count
    interval is taken over [τ_lo − δ_G, τ_hi + δ_G]: the certificate then holds for M itself.
    """
    d = g.shape[0]
    q = v.shape[1]
    jacobi_tol = max(default_tol(q, g.dtype), 1e-3 * tol)
    ritz = rayleigh_ritz(v, g @ v, max_sweeps=max_sweeps, backend=backend, tol=jacobi_tol)
    cert = certify(ritz.theta, ritz.hp, ritz.resid, fro_sq, d, u, extra)
    if gram_error is not None:
        cert.lam_lo, cert.lam_hi = cert.lam_lo - gram_error, cert.lam_hi + gram_error
    if relative == "max":
        tau_lo, tau_hi = eps * cert.lam_lo, eps * cert.lam_hi
        tau = eps * (cert.lam_lo + cert.margin)
    elif relative == "trace":
        tau = formulas.thresholds_for(eps, relative, trace, trace)
        slack = tau.abs() * (4 * d * torch.finfo(torch.float64).eps)  # rounding of tr M in float64
        tau_lo, tau_hi = tau - slack, tau + slack
    else:
        tau = formulas.thresholds_for(eps, relative, trace, trace)
        tau_lo = tau_hi = tau
    if gram_error is not None:
        tau_lo, tau_hi = tau_lo - gram_error, tau_hi + gram_error
    lower, upper = count_bounds(cert, tau_lo, tau_hi)
    ritz_count = torch.minimum(torch.maximum((ritz.theta.unsqueeze(0) > tau.unsqueeze(1)).sum(1), lower), upper)
    k = min(k, ritz.theta.shape[0])
    # ‖M‖_F² is finite iff every entry is (free: it was computed anyway); a NaN Gram is never certified.
    finite = torch.isfinite(fro_sq) & torch.isfinite(ritz.resid).all() & torch.isfinite(ritz.theta).all()
    if gram_error is not None:
        finite = finite & torch.isfinite(gram_error)
    accepted = finite & (ritz.resid[:k].amax() <= tol * cert.lam_lo.clamp_min(0))
    grow = torch.zeros_like(accepted)
    if grow_count is not None and eps.numel():
        grow = lower.amax() >= grow_count
    flags = torch.cat([torch.stack([accepted, ~finite, grow]).long(), (lower < upper).long()])
    return Step(ritz, cert, tau, tau_lo, tau_hi, lower, upper, ritz_count, accepted, finite, flags)
