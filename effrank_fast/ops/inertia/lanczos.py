"""Bounds on λ_max(M) from a few Lanczos steps, without a host synchronisation.

``lambda_max_bounds`` runs k steps of Lanczos with full reorthogonalisation (float64, random start
vector from a seeded generator), takes the top Ritz pair of the k×k tridiagonal matrix with the
native ``tridiag_top`` op (bisection + inverse iteration on the device; without the native op the
k×k problem goes to ``torch.linalg.eigh``, which synchronises on CUDA), and recomputes the Ritz
value and residual explicitly from M:

    lower = max(ρ − η, max_i M_ii)           ρ = vᵀMv (‖v‖ = 1): a Rayleigh quotient, ≤ λ_max
    upper = min(ρ + ‖Mv − ρv‖ + η, max_i Σ_j |M_ij|·(1 + γ_{2d}) + η)

η = γ_{2d}·‖M‖_F covers the rounding of ρ and the residual. ``lower`` is certified; ``upper`` is
the Ritz value + residual bound: some eigenvalue lies in [ρ − r, ρ + r], and it is λ_max unless the
Krylov space missed the top eigenvector (an event of probability 0 for a random start in exact
arithmetic, but possible for a nearly degenerate top cluster, by at most the cluster's width).
``inertia_count_relative`` certifies it with one extra factorisation (#{λ > upper} = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effrank_fast.ops import native
from effrank_fast.ops.inertia.reference import symmetric_from_lower
from effrank_fast.ops.numerics import gamma as gamma_n

DEFAULT_LANCZOS_STEPS = 24


@dataclass
class LambdaMaxBounds:
    """lower ≤ λ_max(M) ≤ upper (0-d float64 device tensors), with the Ritz value and residual."""

    lower: torch.Tensor
    upper: torch.Tensor
    ritz: torch.Tensor
    residual: torch.Tensor
    steps: int


def _top_ritz(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if native.kernel_missing_reason("tridiag_top", alpha.device) is None:
        theta, y = torch.ops.effrank_fast.tridiag_top(alpha, beta)
        return theta, y
    t = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    lam, vec = torch.linalg.eigh(t)  # synchronises on CUDA (documented fallback)
    return lam[-1], vec[:, -1]


def lambda_max_bounds(
    gram: torch.Tensor, *, steps: int = DEFAULT_LANCZOS_STEPS, seed: int = 0, matrix: torch.Tensor | None = None
) -> LambdaMaxBounds:
    """Certified lower and Ritz+residual upper bound of λ_max(M) for M [d, d] (lower triangle read).

    Args:
        gram: M [d, d].
        steps: Lanczos steps k (capped at d; with k = d the tridiagonal matrix is M itself, up to
            rounding).
        seed: seed of the start vector.
        matrix: the float64 symmetric M if the caller already has it (skips a copy).

    Cost: k + 1 products M·v in float64 plus O(k²d) for the reorthogonalisation; no host sync.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    m = symmetric_from_lower(gram) if matrix is None else matrix
    d = m.shape[0]
    k = min(steps, d)
    gen = torch.Generator(device=m.device)
    gen.manual_seed(seed)
    q = torch.randn(d, generator=gen, device=m.device, dtype=torch.float64)
    q = q / q.norm()
    basis = m.new_zeros(k, d)
    alpha = m.new_zeros(k)
    beta = m.new_zeros(max(k - 1, 0))
    frob = torch.linalg.matrix_norm(m)
    tiny = torch.finfo(torch.float64).tiny
    for j in range(k):
        basis[j] = q
        w = m @ q
        alpha[j] = torch.dot(q, w)
        if j + 1 == k:
            break
        qj = basis[: j + 1]
        w = w - qj.T @ (qj @ w)  # full reorthogonalisation, twice (classical Gram–Schmidt)
        w = w - qj.T @ (qj @ w)
        b = w.norm()
        beta[j] = b
        # On breakdown (b ≈ 0) w is rounding noise orthogonal to the basis: normalising it restarts
        # the recurrence in a fresh direction, and T = QᵀMQ stays exact.
        q = w / torch.clamp(b, min=tiny)
    theta, y = _top_ritz(alpha, beta)
    v = basis.T @ y
    vn = v.norm()
    ok = vn > 0
    v = torch.where(ok, v / torch.where(ok, vn, 1.0), basis[0])
    mv = m @ v
    rho = torch.dot(v, mv)
    res = (mv - rho * v).norm()
    gamma = gamma_n(2 * d)
    eta = gamma * frob
    diag_max = m.diagonal().max()
    # Both upper bounds keep a margin ≥ η above λ_max, so the certifying count at τ = upper never
    # sits on an eigenvalue (the Gershgorin bound is attained by diagonal matrices).
    gersh = m.abs().sum(1).max() * (1 + gamma) + eta
    lower = torch.maximum(rho - eta, diag_max)
    upper = torch.minimum(rho + res + eta, gersh)
    upper = torch.maximum(upper, lower)
    return LambdaMaxBounds(lower, upper, rho, res, k)
