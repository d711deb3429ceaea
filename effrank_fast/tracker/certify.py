"""Certified ε-count intervals and λ_max bounds from Rayleigh–Ritz data (docs/tracker.md).

Notation: V = [v_1 … v_q] the Ritz vectors, θ_i = v_iᵀMv_i, r_i = Mv_i − θ_i v_i, V_j the first j
columns and V_⊥j an orthonormal complement. In the basis [V_j, V_⊥j],

    M ≅ [[Θ_j + E_j, B_j], [B_jᵀ, C_j]],   E_j = off-diagonal part of V_jᵀMV_j, B_j = V_jᵀ M V_⊥j.

* Lower bound (Cauchy interlacing): the eigenvalues μ of VᵀMV satisfy μ_i ≤ λ_i(M), and
  |μ_(i) − θ_(i)| ≤ ‖E_q‖_F (Weyl), so #{λ > τ} ≥ #{θ_i > τ + ‖E_q‖_F}; value by value,
  θ_(i) − ‖E_q‖_F ≤ λ_i(M) (what the tracker reports as eigenvalues).
* Upper bound (Weyl on the split at every j = 0…q): λ_i(M) ≤ λ_i(Θ_j ⊕ C_j) + η_j with
  η_j = ‖E_j‖_F + ‖B_j‖_F, hence #{λ > τ} ≤ #{i ≤ j : θ_i > τ − η_j} + #{λ(C_j) > τ − η_j}, and the
  last term is ≤ min(d − j, ‖C_j‖_F² / (τ − η_j)²) (or d − j when τ ≤ η_j). The norms are exact
  identities for orthonormal V: ‖E_j‖_F² + ‖B_j‖_F² = Σ_{i≤j} ‖r_i‖² (column i of [E_j; B_jᵀ] is r_i
  expressed in the basis), and ‖C_j‖_F² = ‖M‖_F² − ‖V_jᵀMV_j‖_F² − 2‖B_j‖_F² — the complement
  bound ‖M‖_F² − 2‖MV‖_F² + ‖VᵀMV‖_F² written without its cancellation. The minimum over j is
  taken.
* λ_max ∈ [θ_max, min_j max(θ_max, ‖C_j‖_F) + η_j].

Floating point: every quantity above comes from GEMMs with inner dimension ≤ d, so each carries
an absolute error ≲ d·u·‖M‖₂ (standard dot-product bound), and V is orthonormal to O(q·u). The
margin δ = 2(d + q)·u·‖M‖_F (plus u_w‖M‖_F when M was rounded to the working precision) is
added to every comparison, and 4√q·δ·‖M‖_F to ‖C_j‖_F². In float64 δ ≈ 1e-12·‖M‖_F; in float32
it is ≈ 1e-3·‖M‖_F at d = 4096, which widens the intervals (more escalations), never narrows them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effrank_fast.ops.numerics import matmul_unit_roundoff

__all__ = ["Certificate", "certify", "count_bounds", "unit_roundoff"]


# The tracker's GEMMs run through torch.matmul under the user's float32 matmul precision, so its
# margins use the TF32-aware u (ops/numerics.py); the name is kept for its callers.
unit_roundoff = matmul_unit_roundoff


@dataclass
class Certificate:
    """Per-split data (index j = 0…q) for the count bounds; all float64 on the device."""

    theta: torch.Tensor  # [q]
    eta: torch.Tensor  # [q + 1] ‖E_j‖_F + ‖B_j‖_F + δ
    c_sq: torch.Tensor  # [q + 1] upper bound on ‖C_j‖_F²
    e_full: torch.Tensor  # 0-d ‖E_q‖_F + δ
    off: torch.Tensor  # 0-d ‖E_q‖_F, what the small eigensolve left off the diagonal of VᵀMV
    lam_lo: torch.Tensor  # 0-d
    lam_hi: torch.Tensor  # 0-d
    margin: torch.Tensor  # 0-d δ
    d: int


def _prefix_block_sq(x: torch.Tensor) -> torch.Tensor:
    """[q + 1]: entry j = Σ_{a,b<j} x_ab (x square), 0 for j = 0."""
    p = x.cumsum(0).cumsum(1).diagonal()
    return torch.cat([p.new_zeros(1), p])


def certify(
    theta: torch.Tensor,
    hp: torch.Tensor,
    resid: torch.Tensor,
    fro_sq: torch.Tensor,
    d: int,
    u: float,
    extra: float = 0.0,
) -> Certificate:
    """Certificate from θ [q], VᵀMV [q, q], ‖r_i‖ [q], ‖M‖_F² (0-d); u = unit roundoff of the work.

    ``extra`` adds a further absolute perturbation allowance, in units of ‖M‖_F.
    """
    q = theta.shape[0]
    h = hp.double()
    fro = fro_sq.sqrt()
    delta = (2.0 * (d + q) * u + extra) * fro
    off_sq = (h - torch.diag(torch.diagonal(h))).square()
    e_sq = _prefix_block_sq(off_sq)
    h_sq = _prefix_block_sq(h.square())
    rho_sq = torch.cat([resid.new_zeros(1), resid.square().cumsum(0)])
    b_sq = (rho_sq - e_sq).clamp_min(0)
    eta = e_sq.sqrt() + b_sq.sqrt() + delta
    c_sq = (fro_sq - h_sq - 2 * b_sq).clamp_min(0) + 4.0 * q**0.5 * delta * fro
    theta_max = theta.max()
    lam_lo = theta_max - delta
    lam_hi = (torch.maximum(theta_max, c_sq.sqrt()) + eta).min()
    off = e_sq[-1].sqrt()
    return Certificate(theta, eta, c_sq, off + delta, off, lam_lo, lam_hi, delta, d)


def count_bounds(cert: Certificate, tau_lo: torch.Tensor, tau_hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower [E], upper [E]) int64 with lower ≤ #{λ(M) > τ} ≤ upper for every τ ∈ [τ_lo, τ_hi]."""
    theta = cert.theta
    q = theta.shape[0]
    lower = (theta.unsqueeze(0) > (tau_hi + cert.e_full).unsqueeze(1)).sum(1)
    s = tau_lo.unsqueeze(1) - cert.eta.unsqueeze(0)  # [E, q + 1]
    j = torch.arange(q + 1, device=theta.device)
    above = theta.view(1, 1, q) > s.unsqueeze(2)  # [E, q + 1, q]
    first_j = torch.arange(q, device=theta.device).view(1, 1, q) < j.view(1, q + 1, 1)
    top = (above & first_j).sum(2)  # #{i < j : θ_i > τ − η_j}
    rest = (cert.d - j).double().unsqueeze(0)  # d − j
    s_pos = s.clamp_min(torch.finfo(torch.float64).tiny)
    tail = torch.where(s > 0, torch.minimum(rest, torch.floor(cert.c_sq.unsqueeze(0) / s_pos.square())), rest)
    upper = (top + tail.to(torch.int64)).amin(1)
    # Non-finite Ritz data (a failed solve) prove nothing: the whole range [0, d], never a point
    # made of NaN comparisons (on the device: no host read).
    finite = torch.isfinite(theta).all() & torch.isfinite(cert.eta).all() & torch.isfinite(cert.c_sq).all()
    lower = torch.where(finite, lower, torch.zeros_like(lower))
    upper = torch.where(finite, upper, torch.full_like(upper, cert.d))
    return lower, upper
