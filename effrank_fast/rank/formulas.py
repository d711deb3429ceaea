"""Rank measures as functions of a spectrum λ (eigenvalues of M, float64, descending where it matters).

Conventions (shared by every entry point):

- ε-rank: #{λ_i > τ} with τ = ε (absolute), ε·λ_max (``relative="max"``) or ε·tr M
  (``relative="trace"``). Strict inequality: an eigenvalue equal to τ is not counted.
- entropy rank (Roy–Vetterli 2007; RankMe, Garrido et al. 2023): exp(−Σ p_i log p_i) with
  p_i = σ_i / Σσ and σ_i = √λ_i, the singular values of diag(√w)Φ. No ε inside the log:
  0·log 0 = 0. Peer variants (:mod:`effrank_fast.rank.conventions`): ``basis="lambda"`` uses p = λ/Σλ,
  ``fudge`` adds a constant to every p inside the log, ``components`` keeps only the largest few.
- stable rank: tr M / λ_max. Participation ratio: (tr M)² / ‖M‖_F² = (Σλ)² / Σλ².

The noise floor δ (:func:`noise_floor`; docs/measures.md, "The noise floor"). A computed matrix M̂
differs from the exact M of the
given values by its formation error δ_G ≥ ‖M̂ − M‖₂ (and the eigensolver adds δ_eig), so by
Weyl every computed eigenvalue lies within δ = δ_G + δ_eig of an exact one, and an exact zero can
come out anywhere in [−δ, δ]. The rule:

- **λ_i ≤ δ counts as 0 in every σ or λ sum** (entropy rank): √δ per noise eigenvalue would
  otherwise leak into Σσ — at d = 2048 and rank 8 an fp32 Gram's noise adds 9% to the entropy
  rank. Eigenvalues above δ are used as they are, so a well-conditioned matrix (λ_min ≫ δ) is
  not changed at all.
- **λ_max ≤ δ means M is numerically zero**: every rank is 0 (e.g. constant features with
  ``center=True``, whose centred Gram is pure rounding).
- tr M and ‖M‖_F stay exact functions of the matrix entries (negative rounding included).

Below δ the matrix holds no information; when eigenvalues that might be real lie there and
could move the entropy rank by more than its tolerance, the entry points re-form the Gram in
float64 (see :func:`entropy_rank_sensitivity` and :mod:`effrank_fast.rank.spectrum`).
"""

from __future__ import annotations

import math

import torch

from effrank_fast.ops.backends import canonical_name
from effrank_fast.ops.numerics import unit_roundoff
from effrank_fast.ops.spectrum_scalars import COLUMNS, spectrum_scalars_native, why_not_native

__all__ = [
    "entropy_rank_from_eigenvalues",
    "entropy_rank_gradient",
    "entropy_rank_sensitivity",
    "gram_error_frobenius_estimate",
    "eps_counts",
    "noise_floor",
    "participation_ratio_from_eigenvalues",
    "participation_ratio_from_moments",
    "spectrum_scalars",
    "stable_rank_from_eigenvalues",
    "thresholds_for",
]

BASES = ("sigma", "lambda")


def thresholds_for(eps: torch.Tensor, relative: str | None, lam_max: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    """Absolute thresholds τ [E] for ε [E] under the ``relative`` convention (device tensors)."""
    if relative is None:
        return eps
    if relative == "max":
        return eps * lam_max
    return eps * trace


def eps_counts(lam: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """#{λ > τ_e} for each τ_e: int64 [E] for λ [n], τ [E]; batched, [..., E] for λ [..., n] and
    τ [..., E] (or [E])."""
    return (lam.unsqueeze(-2) > thresholds.to(lam).unsqueeze(-1)).sum(-1)


def noise_floor(
    lam_max: torch.Tensor,
    dim: int,
    acc_dtype: torch.dtype,
    gram_error: torch.Tensor | float | None = None,
    solve_dtype: torch.dtype = torch.float64,
    diag_max: torch.Tensor | None = None,
) -> torch.Tensor:
    """δ = δ_G + δ_eig (0-d float64): no computed eigenvalue of the [dim, dim] matrix is trusted below it.

    Args:
        lam_max: the computed λ_max (an upper bound on it also works), 0-d.
        dim: the size of the matrix that was decomposed (N for the N×N kernel path).
        acc_dtype: the dtype the matrix was formed (accumulated) in.
        gram_error: an absolute bound on ‖M̂ − M‖₂ from the formation (0 for a matrix given as
            it is, whose entries are the exact input). None: the estimate √dim·u_acc·λ_max, the
            spectral norm of a symmetric perturbation with entries ≈ u_acc·λ_max/2 (measured on fp32
            and bf16 Grams, d = 256…2048, N ≤ 4096: the eigenvalues move 30–60× less than that);
            with ``diag_max`` (max_i M_ii of the formed Gram), the tighter 6·√dim·u_acc·max_i M_ii:
            the rounding of entry (i, j) scales with √(M_ii M_jj), not with λ_max, and a random
            symmetric matrix of such entries has norm ≈ 2√dim·c·u·max M_ii. Measured on CPU fp32
            Grams (MKL; power-law, 1/i³, 12-decade, low-rank + noise, Gaussian, ReLU features;
            N = 512…100000, d = 256…2048): ‖M̂ − M‖₂ ≤ 1.3·√dim·u·max M_ii, so ≥ 4.6× margin.
        solve_dtype: the eigensolver's working dtype. float64: δ_eig = 4·dim·u₆₄·λ_max, a
            Householder tridiagonalisation's worst-case backward error (~1e-12·λ_max at dim = 1024,
            negligible). float32: δ_eig = 4√dim·u₃₂·λ_max, the probabilistic size (LAPACK's
            ssyevd measured ≤ 6·u₃₂·λ_max on low-rank and ≤ 53·u₃₂·λ_max on flat spectra up to
            dim = 2048; the worst-case d·u₃₂ would floor away real eigenvalues).
    """
    lam = lam_max.detach().double().abs()
    if gram_error is None and diag_max is not None:
        delta_g = 6.0 * math.sqrt(dim) * unit_roundoff(acc_dtype) * diag_max.detach().double().abs()
    elif gram_error is None:
        delta_g = math.sqrt(dim) * unit_roundoff(acc_dtype) * lam
    else:
        delta_g = torch.as_tensor(gram_error, dtype=torch.float64, device=lam.device).detach().abs()
    u_solve = unit_roundoff(solve_dtype)
    solve = 4.0 * (dim if solve_dtype == torch.float64 else math.sqrt(dim)) * u_solve
    return delta_g + solve * lam


def _as_floor(floor: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(floor, dtype=like.dtype, device=like.device)


def entropy_rank_from_eigenvalues(
    lam: torch.Tensor,
    floor: torch.Tensor | float = 0.0,
    *,
    basis: str = "sigma",
    fudge: float = 0.0,
    components: int | None = None,
) -> torch.Tensor:
    """exp(−Σ q log q), q_i = x_i / Σx + ``fudge``, x = σ (``basis="sigma"``) or λ, over the
    ``components`` largest eigenvalues (None: all). λ_i ≤ ``floor`` counts as x_i = 0, and a
    spectrum with no x_i > 0 has entropy rank 0 (with or without a fudge). ``lam`` [d] descending
    when ``components`` is given; returns 0-d in ``lam``'s dtype. Differentiable in λ above the floor.
    Batched: ``lam`` [..., d] and ``floor`` of shape [...] (or a scalar) give [...].
    """
    if components is not None and components < lam.shape[-1]:
        lam = lam[..., :components]
    live = lam > _as_floor(floor, lam)[..., None]
    safe = torch.where(live, lam, 1.0)  # keeps √ and its gradient finite at 0
    x = torch.where(live, safe.sqrt() if basis == "sigma" else safe, 0.0)
    return _nan_if(lam.isnan().any(-1), _entropy_terms(x, fudge)[0].squeeze(-1))


def _entropy_terms(
    x: torch.Tensor, fudge: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The entropy rank of x ≥ 0 [..., d] and its parts: (exp(−Σ p log p) [..., 1], 0 where Σx = 0;
    q = x/Σx; p = q + ``fudge``; log p, 0 where p ≤ 0; Σx, 1 where it is 0). p·log p is taken with
    0·log 0 = 0 and a zero gradient there (xlogy's is NaN). The one home of this arithmetic: the
    entropy rank, its gradient and the fused scalars all call it."""
    total = x.sum(-1, keepdim=True)
    positive = total > 0
    s = torch.where(positive, total, 1.0)
    q = x / s
    p = q + fudge if fudge else q
    log_p = torch.where(p > 0, p, 1.0).log()
    h = -(p * log_p).sum(-1, keepdim=True)
    return torch.where(positive, h.exp(), 0.0), q, p, log_p, s


def gram_error_frobenius_estimate(trace: torch.Tensor, acc_dtype: torch.dtype) -> torch.Tensor:
    """Typical ‖M̂ − M‖_F of a Gram formed in ``acc_dtype`` (0-d float64): 8·u_acc·tr M.

    Entry (i, j) rounds by ≈ c·u·√(M_ii M_jj), so ‖ΔM‖_F ≈ c·u·Σ_i M_ii. Measured on the CPU fp32
    Grams of :func:`noise_floor`'s list: c ≤ 2.35 (N = 512, 1/i³ spectrum), ≤ 1.3 elsewhere; 8
    leaves ≥ 3.4×. An estimate, not a bound (that is δ_G of :mod:`effrank_fast.ops.gram.error`).
    """
    return 8.0 * unit_roundoff(acc_dtype) * trace.detach().double().abs()


def entropy_rank_sensitivity(
    lam: torch.Tensor, floor: torch.Tensor | float, error_fro: torch.Tensor | float, **convention
) -> torch.Tensor:
    """How far the entropy rank could plausibly move under the matrix's rounding: 0-d.

    Two parts. (1) First order: the eigenvalues λ̂ of M̂ = M + E move the entropy rank by
    Σ g_i Δλ_i = ⟨E, V diag(g) Vᵀ⟩ + O(E²), at most ‖g‖₂·‖E‖_F (Cauchy–Schwarz), g = ∂ erank/∂λ
    over the eigenvalues above the floor; ``error_fro`` estimates ‖E‖_F. (2) The floor: an
    eigenvalue at or below δ is counted as 0 but may be real anywhere in [0, δ] (16-bit features'
    quantisation spectrum sits there, below what a float32 Gram resolves), hence
    |erank(λ with every floored λ_i raised to δ) − erank(λ)|.
    Unlike shifting every eigenvalue by δ at once (the rule this replaced), this does not promote
    benign spectra whose tail sits far above δ: their rounding is ~100× below δ·Σ|g|.
    ``convention``: the keywords of :func:`entropy_rank_from_eigenvalues`. Batched as there.
    """
    f = _as_floor(floor, lam)
    value, grad = entropy_rank_gradient(lam.detach(), f, **convention)
    first = grad.norm(dim=-1) * torch.as_tensor(error_fro, dtype=lam.dtype, device=lam.device)
    f_col = f[..., None].expand_as(lam)
    raised = torch.where(lam.detach() > f_col, lam.detach(), f_col)
    full = entropy_rank_from_eigenvalues(raised, 0.0, **convention)
    return first + (full - value).abs()


def entropy_rank_gradient(
    lam: torch.Tensor,
    floor: torch.Tensor | float = 0.0,
    *,
    basis: str = "sigma",
    fudge: float = 0.0,
    components: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(erank 0-d, ∂erank/∂λ [d]) of :func:`entropy_rank_from_eigenvalues` in closed form (what
    autograd gives, without building a graph: the monitor takes it every step).

    With x_i the live components (√λ_i or λ_i above the floor), S = Σx, q = x/S, p = q + fudge and
    H = −Σ p log p: ∂H/∂x_j = (a_j − Σ_i a_i q_i)/S, a_i = −(log p_i + 1) (0 where p_i = 0, the
    0·log 0 convention), and ∂erank/∂λ_j = erank·∂H/∂x_j·dx_j/dλ_j; 0 for floored or cut-off λ_j.
    Batched: ``lam`` [..., d], ``floor`` [...] give ([...], [..., d]).
    """
    d = lam.shape[-1]
    top = lam[..., :components] if components is not None and components < d else lam
    live = top > _as_floor(floor, top)[..., None]
    safe = torch.where(live, top, 1.0)
    root = safe.sqrt()
    x = torch.where(live, root if basis == "sigma" else safe, 0.0)
    erank, q, p, log_p, s = _entropy_terms(x, fudge)
    value = _nan_if(top.isnan().any(-1), erank.squeeze(-1))
    a = torch.where(p > 0, -(log_p + 1), torch.zeros_like(p))
    dx = torch.where(live, 0.5 / root if basis == "sigma" else torch.ones_like(top), torch.zeros_like(top))
    grad = erank * (a - (a * q).sum(-1, keepdim=True)) / s * dx
    if grad.shape[-1] < d:
        grad = torch.cat([grad, grad.new_zeros((*grad.shape[:-1], d - grad.shape[-1]))], -1)
    return value, grad


def stable_rank_from_eigenvalues(lam: torch.Tensor, floor: torch.Tensor | float = 0.0) -> torch.Tensor:
    """tr M / λ_max from the spectrum; 0 when λ_max ≤ ``floor`` (numerically zero). Batched over [..., d]."""
    lam_max = lam.amax(-1)
    live = lam_max > _as_floor(floor, lam_max)
    tr = lam.sum(-1)
    value = torch.where(live, tr / torch.where(live, lam_max, torch.ones_like(lam_max)), torch.zeros_like(tr))
    return _nan_if(tr.isnan(), value)


def participation_ratio_from_eigenvalues(lam: torch.Tensor, floor: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(Σλ)² / Σλ²; 0 when λ_max ≤ ``floor``. Batched over [..., d]."""
    return participation_ratio_from_moments(lam.sum(-1), lam.square().sum(-1), lam.amax(-1), floor)


def participation_ratio_from_moments(
    trace: torch.Tensor,
    frob_sq: torch.Tensor,
    lam_max_upper: torch.Tensor | None = None,
    floor: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """(tr M)² / ‖M‖_F², 0 when M = 0, or when ``lam_max_upper`` (a bound ≥ λ_max, e.g. ‖M‖_F or
    the largest absolute row sum) is ≤ ``floor``."""
    live = frob_sq > 0
    if lam_max_upper is not None:
        live = live & (lam_max_upper > _as_floor(floor, lam_max_upper))
    safe = torch.where(live, frob_sq, torch.ones_like(frob_sq))
    return _nan_if(trace.isnan() | frob_sq.isnan(), torch.where(live, trace.square() / safe, torch.zeros_like(trace)))


# The columns of :func:`spectrum_scalars`, in order.
SPECTRUM_SCALARS = COLUMNS


def spectrum_scalars(
    lam: torch.Tensor, floor: torch.Tensor | float, error_fro: torch.Tensor | float, *, backend: str = "auto"
) -> torch.Tensor:
    """Every scalar measure of the spectra ``lam`` [..., d] (float64, descending) in one pass:
    [..., 6] laid out as :data:`SPECTRUM_SCALARS`.

    The values of :func:`entropy_rank_from_eigenvalues`, :func:`stable_rank_from_eigenvalues`,
    :func:`participation_ratio_from_eigenvalues` (each with ``floor`` [...] or a scalar), λ_1, Σλ and
    :func:`entropy_rank_sensitivity` (``error_fro`` [...] or a scalar), with what they share formed
    once. ``backend``: "native" (:mod:`effrank_fast.ops.spectrum_scalars`, one C++ pass on the
    CPU), "torch" (PyTorch, any device, differentiable) or "auto" (native where it runs). NaN in a
    spectrum gives a row of NaN. No host sync.
    """
    name = canonical_name("spectrum_scalars", backend, ("native", "torch"))
    batch = lam.shape[:-1]
    f = torch.as_tensor(floor, dtype=torch.float64, device=lam.device).expand(batch)
    e = torch.as_tensor(error_fro, dtype=torch.float64, device=lam.device).expand(batch)
    if name == "native" or (name == "auto" and why_not_native(lam, f, e) is None):
        return spectrum_scalars_native(lam, f, e)
    return _spectrum_scalars_torch(lam, f.to(lam), e.to(lam))


def _spectrum_scalars_torch(lam: torch.Tensor, floor: torch.Tensor, error_fro: torch.Tensor) -> torch.Tensor:
    """:func:`spectrum_scalars` in PyTorch (σ basis, no fudge): the native kernel's reference."""
    f = floor[..., None]
    live = lam > f
    root = torch.where(live, lam, 1.0).sqrt()
    x = torch.where(live, root, 0.0)
    erank, q, _, log_p, s = _entropy_terms(x)
    # entropy_rank_sensitivity: ‖∂erank/∂λ‖·‖E‖_F, and every floored eigenvalue raised to δ (δ > 0)
    a = torch.where(q > 0, -(log_p + 1), 0.0)
    grad = erank * (a - (a * q).sum(-1, keepdim=True)) / s * torch.where(live, 0.5 / root, 0.0)
    erank_raised = _entropy_terms(torch.where(live, root, torch.where(f > 0, f, 0.0).sqrt()))[0]
    err = grad.norm(dim=-1) * error_fro + (erank_raised - erank).squeeze(-1).abs()
    lam_max = lam.amax(-1)
    trace = lam.sum(-1)
    sq = lam.square().sum(-1)
    nonzero = lam_max > floor
    stable = torch.where(nonzero, trace / torch.where(nonzero, lam_max, 1.0), 0.0)
    pr_live = nonzero & (sq > 0)
    pr = torch.where(pr_live, trace.square() / torch.where(pr_live, sq, 1.0), 0.0)
    out = torch.stack([erank.squeeze(-1), stable, pr, lam[..., 0], trace, err], -1)
    return torch.where(trace.isnan()[..., None], float("nan"), out)


def _nan_if(bad: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """NaN where the input was NaN (a non-finite M under check=False), not a misleading 0."""
    return torch.where(bad, torch.full_like(value, float("nan")), value)
