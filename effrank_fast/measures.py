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

import warnings

import torch

from effrank_fast import _backends, _validate, spectral
from effrank_fast._prepare import eigenvalues_desc, features_to_matrix, prepare
from effrank_fast.ops.inertia import InertiaFallbackWarning, inertia_count, inertia_count_relative

# The σ-based and spectrum-summary measures live in spectrum_measures; re-exported here so that
# ``effrank_fast.measures`` stays the one documented home of every measure.
from effrank_fast.spectrum_measures import (
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
    "eps_rank",
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
        check: validate values (NaN/Inf, negative weights); this reads the data (host sync).

    Returns:
        M: [d, d] symmetric, in ``acc_dtype``.

    Example:
        >>> M = effrank_fast.gram(torch.randn(1000, 64))  # [64, 64], ≈ identity
    """
    sp = features_to_matrix(phi, weights, mode, center, backend, acc_dtype, check, allow_kernel=False)
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
) -> torch.Tensor:
    """The ε-rank #{λ(M) > τ}, τ = ε, ε·λ_max (``relative="max"``) or ε·tr M (``"trace"``).

    Args:
        phi: features [N, d], or pass ``gram=`` [d, d].
        eps: ε > 0, a scalar, a list or a 1-D tensor; several ε share one computation.
        method: "auto", "eigh" (float64 eigvalsh) or "inertia" (float64 LDLᵀ of M − τI,
            no eigensolver; exact to M's own rounding, and proven exact for a float64 M by two
            extra counts at τ ± 2δ; an unreliable count falls back to eigvalsh, which reads one
            flag from the device and warns with ``InertiaFallbackWarning``). ``relative="max"``
            with inertia brackets λ_max by Lanczos and counts at both ends. "auto" picks inertia
            where it is measured to be faster (``effrank_fast._backends.INERTIA_BUDGET``).

    Returns:
        int64 tensor on the input's device: 0-d for a scalar ε, else [E].
    """
    eps_vals, scalar = _validate.check_eps(eps)
    relative = _validate.check_relative(relative)
    sp = prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    device = sp.matrix.device
    eps_dev = eps_vals.to(device)
    chosen = _backends.select_count_method(
        method, device, eps_vals.numel(), sp.backend, dim=sp.matrix.shape[0], relative=relative, dtype=sp.matrix.dtype
    )
    if chosen == "eigh":
        lam = eigenvalues_desc(sp)
        tau = spectral.thresholds_for(eps_dev, relative, lam[0], lam.sum())
        counts = spectral.eps_counts(lam, tau)
    else:
        if relative == "max":  # λ_max bracketed by Lanczos, proven, counted at both ends
            res = inertia_count_relative(sp.matrix, eps_dev)
        else:
            trace = sp.matrix.diagonal().double().sum()
            res = inertia_count(sp.matrix, spectral.thresholds_for(eps_dev, relative, trace, trace))
        if res.fallback_method is not None:  # known on the host already: the fallback decision synced
            warnings.warn(
                f"eps_rank: the inertia count was not reliable for some ε (an eigenvalue within its "
                f"error bound of the threshold, or pivot growth); those were recounted by "
                f"{res.fallback_method}. effrank_fast.ops.inertia.inertia_count returns the diagnostics.",
                InertiaFallbackWarning,
                stacklevel=2,
            )
        counts = res.counts
    return counts[0] if scalar else counts
