"""The public rank measures of a feature matrix Φ [N, d] (or a precomputed Gram M [d, d]).

Every function takes ``phi`` (or ``gram=``), ``weights=None`` [N], ``mode="mean"|"sum"|"integral"``,
``center=False`` and ``backend="auto"``. The Gram matrix is

    M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ),   μ = Σ w_k φ_k / Σ w_k  (only when ``center=True``)

with w the given weights, or 1/N (``mode="mean"``) or 1 (``mode="sum"``) when none are given.
``mode="integral"`` requires weights: quadrature weights summing to |Ω| give the paper's
M_ij = ∫_Ω φ_i φ_j dx. When N < d the N×N matrix diag(√w)ΦΦᵀdiag(√w) is used instead: it has
the same non-zero eigenvalues at a fraction of the cost.

Results stay on the input's device as tensors (counts are int64), so nothing synchronises unless
``check=True`` validation reads the data, or a fallback decision does (documented per function).
"""

from __future__ import annotations

import torch

from effrank_fast.ops import validation
from effrank_fast.rank.certified import EpsRankResult, certified_count
from effrank_fast.rank.prepare import eigenvalues_desc, features_to_matrix, prepare

# The σ-based and spectrum-summary measures live in spectrum_measures; re-exported here so that
# ``effrank_fast.rank`` stays the one documented home of every measure.
from effrank_fast.rank.spectrum import (
    Measures,
    entropy_rank,
    measures,
    measures_from_eigenvalues,
    participation_ratio,
    stable_rank,
)

__all__ = [
    "Measures",
    "eigenvalues",
    "entropy_rank",
    "EpsRankResult",
    "eps_rank",
    "eps_rank_result",
    "gram",
    "measures",
    "measures_from_eigenvalues",
    "participation_ratio",
    "stable_rank",
]


def gram(
    phi: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """The Gram (mass) matrix M = Φᵀ diag(w) Φ.

    Args:
        phi: features [N, d] (fp16, bf16, fp32 or fp64).
        weights: quadrature weights [N], non-negative; None uses ``mode``.
        mode: "mean" (w = 1/N), "sum" (w = 1) or "integral" (weights required).
        center: remove the w-weighted mean of each feature first.
        backend: "auto", "torch", "native" or "triton".
        acc_dtype: accumulation/output dtype; float64 for fp64 input, else float32.
        check: validate values (negative weights; NaN/Inf from M's diagonal, then Φ is counted
            only for the message); one host sync. Features at any finite scale are formed at a
            safe scale and scaled back; a Gram that is not representable in ``acc_dtype``
            (overflow, or a largest entry below its normal range) is a ValueError naming ``phi``.

    Returns:
        M: [d, d] symmetric, in ``acc_dtype``. Only its upper triangle is computed (BLAS SYRK or
        blocked GEMMs) and mirrored, so it is exactly symmetric. Its formation error is bounded
        by ``effrank_fast.ops.gram.error.gram_error_bound``.

    Example:
        >>> M = effrank_fast.gram(torch.randn(1000, 64))  # [64, 64], ≈ identity
    """
    sp = features_to_matrix(
        phi,
        weights,
        mode,
        center,
        backend,
        acc_dtype,
        check,
        allow_kernel=False,
        promote_overflow=False,
        unscale=True,
        certificate="probabilistic",
    )
    return sp.matrix


def eigenvalues(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    k: int | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Eigenvalues of M in descending order, float64: all d, or the top ``k``.

    λ_i(M) = σ_i(diag(√w)Φ)²; for N < d the trailing d − N are exact zeros.
    """
    sp = prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    lam = eigenvalues_desc(sp)
    if sp.scale != 1.0:
        lam = lam / sp.scale
    if k is not None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        lam = lam[: min(k, lam.shape[0])]
    return lam


def eps_rank(
    phi: torch.Tensor | None = None,
    eps: float | list[float] | torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    relative: str | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    method: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
    certificate: str = "tight",
) -> torch.Tensor:
    """The ε-rank #{λ(M) > τ}, τ = ε, ε·λ_max (``relative="max"``) or ε·tr M (``"trace"``).

    Exact with the default arguments: the count is that of the exact Gram of the given values
    (what a float64 SVD gives) whenever no eigenvalue lies within ~1e-9·λ_max of τ. Every count is
    certified with the Gram's own formation error δ_G (``effrank_fast.ops.gram.error``); a float32
    Gram whose count that error could flip is formed again in float64 (**promotion**, ≈ 2–3× the
    Gram's cost on a CPU, only when it fires). :func:`eps_rank_result` returns the certificate
    and says whether it fired.

    Args:
        phi: features [N, d], or pass ``gram=`` [d, d] (taken as exact: no δ_G).
        eps: ε > 0, a scalar, a list or a 1-D tensor; several ε share one computation.
        method: "auto", "eigh" (float64 eigvalsh) or "inertia" (float64 LDLᵀ of M − τI at the two
            ends τ ± (δ_G + m), no eigensolver; ``relative="max"`` brackets λ_max by Lanczos).
            "auto" picks inertia where it is measured to be faster
            (``effrank_fast.ops.inertia.cost.INERTIA_BUDGET``, docs/inertia.md).
        check: validate the values (from the finished Gram's diagonal, one host sync) and promote
            or recount an unproven count (one more). ``check=False`` never promotes and never
            synchronises on the inertia path: its counts are returned proven or not.
        certificate: the Gram error δ_G the counts are certified with (docs/certificate.md):
            "tight" (default: the measured size of the blocked SYRK's error with a ≥ 3× margin,
            within ~9–12× of the true error, so float64 promotion fires only where an eigenvalue is
            that close to τ), "probabilistic" (the Higham–Mary matrix-Bernstein bound, holds with
            probability ≥ 1 − 1e-16 in that model; ~10³× looser) or "rigorous" (worst case).

    Returns:
        int64 tensor on the input's device: 0-d for a scalar ε, else [E].
    """
    res, scalar = _eps_rank(
        phi, eps, weights, gram, relative, mode, center, backend, method, acc_dtype, check, certificate
    )
    return res.counts[0] if scalar else res.counts


def _eps_rank(
    phi: torch.Tensor | None,
    eps: object,
    weights: torch.Tensor | None,
    gram: torch.Tensor | None,
    relative: object,
    mode: str,
    center: bool,
    backend: str,
    method: str,
    acc_dtype: torch.dtype | None,
    check: bool,
    certificate: str = "tight",
) -> tuple[EpsRankResult, bool]:
    eps_vals, scalar = validation.check_eps(eps)
    rel = validation.check_relative(relative)
    sp = prepare(phi, gram, weights, mode, center, backend, acc_dtype, check, certificate)
    return certified_count(sp, eps_vals.to(sp.matrix.device), rel, method, check), scalar


def eps_rank_result(
    phi: torch.Tensor | None = None,
    eps: float | list[float] | torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    relative: str | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    method: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
    certificate: str = "tight",
) -> EpsRankResult:
    """:func:`eps_rank` with its certificate: an :class:`~effrank_fast.rank.certified.EpsRankResult`
    (counts [E], certified, proven lower/upper bounds, δ_G, whether precision was promoted).

    Example:
        >>> r = effrank_fast.rank.eps_rank_result(torch.randn(500, 20), 1e-3)
        >>> bool(r.certified.all()), r.promoted
        (True, False)
    """
    res, _ = _eps_rank(phi, eps, weights, gram, relative, mode, center, backend, method, acc_dtype, check, certificate)
    return res
