"""Test helpers: features with a prescribed spectrum, gapped spectra, and derived error bounds.

Used by the test-suite and the benchmarks; importable by users who want to check a backend on
their own machine. Nothing here calls the fast paths.
"""

from __future__ import annotations

import math

import torch

from effrank_fast.ops.numerics import gamma, unit_roundoff

__all__ = [
    "FAMILIES",
    "entropy_perturbation_bound",
    "family_features",
    "features_with_spectrum",
    "gapped_spectrum",
    "gram_error_bound",
    "random_orthogonal",
    "rotated_features",
    "unit_roundoff",
]

# Population spectra of the certificate's tests and sweep (:func:`family_features`).
FAMILIES = ("power0.8", "power1.2", "power2", "clustered", "lowrank_noise", "decades12")


def random_orthogonal(n: int, k: int | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Haar-random matrix with k orthonormal columns [n, k] (float64)."""
    k = n if k is None else k
    a = torch.randn(n, k, dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def rotated_features(lam: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, d] float64 Gaussian rows whose population covariance is Q diag(λ) Qᵀ, Q a random rotation
    (drawn first from ``generator``, then the rows)."""
    d = lam.shape[0]
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=generator))
    return torch.randn(n, d, dtype=torch.float64, generator=generator) @ (q * lam.sqrt()).T


def family_features(family: str, n: int, d: int, seed: int) -> torch.Tensor:
    """[n, d] float64 features of a :data:`FAMILIES` population spectrum under a random rotation,
    scaled to max |x| = 4 (inside fp16's range): ``power<α>`` (λ_i = i^-α), ``clustered`` (four
    clusters 2 decades apart, relative width 1e-3), ``lowrank_noise`` (12 directions at 1, the rest
    at 1e-6), ``decades12`` (log-uniform over 12 decades)."""
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(1, d + 1, dtype=torch.float64)
    if family.startswith("power"):
        lam = i ** -float(family[5:])
    elif family == "clustered":
        lam = torch.tensor([1.0, 1e-2, 1e-4, 1e-6], dtype=torch.float64).repeat_interleave(d // 4)
        lam = lam * (1 + 1e-3 * torch.rand(d, dtype=torch.float64, generator=g))
    elif family == "lowrank_noise":
        lam = torch.where(i <= 12, 1.0, 1e-6).to(torch.float64)
    elif family == "decades12":
        lam = torch.logspace(0, -12, d, dtype=torch.float64)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    x = rotated_features(lam, n, g)
    return x / x.abs().max() * 4


def features_with_spectrum(
    lam: torch.Tensor,
    n: int,
    *,
    weights: torch.Tensor | None = None,
    mode: str = "mean",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Φ [n, d] (float64) whose Gram matrix Φᵀ diag(w) Φ has exactly the eigenvalues ``lam`` [d].

    Φ = diag(1/√w) U diag(√λ) Vᵀ with U [n, r] orthonormal columns (r = min(n, d): eigenvalues
    beyond n must be zero), V [d, d] orthogonal; w as resolved by ``mode`` when no weights are given.
    """
    lam = lam.to(torch.float64)
    d = lam.shape[0]
    r = min(n, d)
    if r < d and bool((lam[r:] != 0).any()):
        raise ValueError(f"with n={n} < d={d} only the first {n} eigenvalues can be non-zero")
    if weights is None:
        w = torch.full((n,), 1.0 / n if mode == "mean" else 1.0, dtype=torch.float64)
    else:
        w = weights.to(torch.float64)
    u = random_orthogonal(n, r, generator=generator)
    v = random_orthogonal(d, generator=generator)
    phi = (u * lam[:r].clamp(min=0).sqrt().unsqueeze(0)) @ v[:, :r].T
    return phi / w.sqrt().unsqueeze(1)


def gapped_spectrum(
    kind: str, d: int, eps: float, *, gap: float = 0.2, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, int]:
    """A spectrum [d] (descending, λ_max = 1) with no eigenvalue in [ε/(1+gap), ε(1+gap)].

    kinds: "powerlaw" (λ_i ∝ i^-1.5), "lowrank" (d/4 live, the rest 1e-9), "cluster" (a tight
    cluster just above and one just below ε), "logspace" (8 decades). Returns (λ, #{λ > ε}).
    """
    i = torch.arange(1, d + 1, dtype=torch.float64)
    if kind == "powerlaw":
        lam = i.pow(-1.5)
    elif kind == "lowrank":
        live = max(1, d // 4)
        lam = torch.where(i <= live, torch.logspace(0, -3, d, dtype=torch.float64), torch.full_like(i, 1e-9))
    elif kind == "cluster":
        lam = torch.logspace(0, -6, d, dtype=torch.float64)
        near = (lam > eps / 4) & (lam < eps * 4)
        jitter = torch.rand(d, dtype=torch.float64, generator=generator)
        above = eps * (1 + gap) * (1 + 0.05 * jitter)
        below = eps / (1 + gap) * (1 - 0.05 * jitter)
        lam = torch.where(near & (lam >= eps), above, torch.where(near, below, lam))
    elif kind == "logspace":
        lam = torch.logspace(0, -8, d, dtype=torch.float64)
    else:
        raise ValueError(f"unknown spectrum kind {kind!r}")
    lo, hi = eps / (1 + gap), eps * (1 + gap)
    inside = (lam > lo) & (lam < hi)
    # Push anything inside the forbidden band out to its nearer edge.
    lam = torch.where(
        inside & (lam >= eps), torch.full_like(lam, hi), torch.where(inside, torch.full_like(lam, lo), lam)
    )
    lam = lam.sort(descending=True).values
    return lam, int((lam > eps).sum())


def gram_error_bound(phi: torch.Tensor, w: torch.Tensor | None, acc_dtype: torch.dtype, rows: int) -> torch.Tensor:
    """Elementwise worst-case bound on |M̂ − M| for a Gram accumulated in ``acc_dtype``.

    Each entry is a sum of N products (rounded into acc), computed as chunks of at most ``rows``
    terms whose partial sums are then added: a recursive-summation error γ_K with
    K = rows + ⌈N/rows⌉ + 3 (two products, the √w scalings) per term, times (|Φ|ᵀ W |Φ|)_ij
    (Higham, Accuracy and Stability, §3.1). The inputs are taken exactly as stored.
    """
    n = phi.shape[0]
    u = unit_roundoff(acc_dtype)
    k = min(rows, n) + math.ceil(n / rows) + 3
    g = gamma(k, u)
    a = phi.detach().to("cpu", torch.float64).abs()
    if w is not None:
        a = a * w.detach().to("cpu", torch.float64).sqrt().unsqueeze(1)
    return g * (a.T @ a)


def entropy_perturbation_bound(lam: torch.Tensor, delta: float) -> float:
    """Upper bound on |exp H(p̂) − exp H(p)| when every eigenvalue moves by at most ``delta``.

    σ = √λ moves by at most √δ, so ‖p̂ − p‖₁ ≤ 2 d √δ / Σσ =: 2T, and the Fannes–Audenaert
    inequality gives |ΔH| ≤ T log(d − 1) + h₂(T) for T ≤ 1/2.
    """
    sigma = lam.clamp(min=0).sqrt()
    d = lam.shape[0]
    total = float(sigma.sum())
    if total == 0:
        return float("inf")
    t = d * math.sqrt(max(delta, 0.0)) / total
    if t >= 0.5:
        return float("inf")
    if t == 0:
        return 0.0
    h2 = -t * math.log(t) - (1 - t) * math.log1p(-t)
    dh = t * math.log(max(d - 1, 1)) + h2
    erank = math.exp(-float(torch.special.xlogy(sigma / total, sigma / total).sum()))
    return erank * math.expm1(dh)
