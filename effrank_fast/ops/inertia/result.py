"""What an inertia count returns (:class:`InertiaResult`), its constants and the probabilistic bound δ_p."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_BLOCK = 0  # the device's default panel width (CPU 128, CUDA 256)
# The default tolerance of the one-sided verdict, in units of M's unit roundoff: 16u (≈ 1e-6 for an
# fp32 Gram, below its measured accumulation error of 1e-7…2e-6·λ_max, docs/inertia.md).
# Benign factorisations sit at δ_p = 1e-11…3e-9·‖A‖_F up to d = 4096 (growing about like d^1.8);
# tiny pivots push δ_p to 1e-3 and beyond.
BAND_ULPS = 16
FALLBACKS = ("eigh", "ldl")
PROB_LAMBDA = 12.0
_U64 = 2.0**-53


def probabilistic_bound(error_bound: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
    """δ_p: the kernel's bound δ = γ_{3n}·T + u‖A‖_F with γ_{3n} = 3nu/(1 − 3nu) replaced by the
    probabilistic γ̃_{3n} = λ√(3n)·u, λ = 12 (Higham & Mary, "A new approach to probabilistic
    rounding error analysis", SISC 2019): it holds with probability ≥ 1 − 2(3n)³e^{−λ²/2}
    (> 1 − 1e-16 at n = 16384) when rounding errors are independent and mean zero. The worst-case δ
    is typically 10⁴–10⁵ times the actual backward error of these factorisations; δ_p is
    √(3n)/λ times smaller. inf/NaN stay inf.
    """
    gamma = 3 * n * _U64 / (1 - 3 * n * _U64)
    trace_ldl = ((error_bound - _U64 * scale) / gamma).clamp(min=0)
    out = PROB_LAMBDA * math.sqrt(3 * n) * _U64 * trace_ldl + _U64 * scale
    return torch.where(torch.isfinite(out), out, torch.full_like(out, math.inf))


class InertiaFallbackWarning(RuntimeWarning):
    """An inertia count was not reliable and was recounted by the fallback (never silent)."""


def default_band_rel(dtype: torch.dtype) -> float:
    """16·u of ``dtype`` (u = eps/2): the factorisation may perturb M as much as storing it did."""
    return BAND_ULPS * torch.finfo(dtype).eps / 2


@dataclass
class InertiaResult:
    """ε-counts with the evidence behind them; tensors are on the input's device, shape [E].

    Attributes:
        counts: #{λ > τ_e} (int64); from the LDLᵀ, or from the fallback where ``fell_back``.
        reliable: the LDLᵀ count is trusted: δ_p ≤ band_rel·‖M − τI‖_F, or ``certified`` (and,
            for relative thresholds, both ends of the proven λ_max bracket gave the same count).
        certified: the count at τ is proven by equal counts at τ ± 2δ (see the module docstring).
        fell_back: the count was recomputed by ``fallback_method`` because it was not reliable.
        min_pivot_rel, growth, band_counts, max_abs_l: the kernel's diagnostics (see the op's
            schema): min|D|/‖M − τI‖_F, entry growth of |L||D||Lᵀ|, #{|D_ii| ≤ δ}, max|L_ij|.
        error_bound: δ, absolute, worst case: the count is exact if no eigenvalue lies within δ of τ.
        error_estimate: δ_p, the probabilistic bound behind the tolerance (:func:`probabilistic_bound`).
        scale: ‖M − τI‖_F, the reference of the relative diagnostics.
        band_rel: the tolerance that was applied.
        thresholds: the absolute thresholds τ that were counted.
        fallback_method: "eigh" or "ldl" when a fallback ran, else None.
        rbt: whether the random butterfly congruence was applied.
        lambda_max: (lower, upper) bracket of λ_max, upper proven (relative thresholds only).
        count_bounds: (count at ε·upper, count at ε·lower): the true count lies between them when
            both are exact (relative thresholds); with ``gram_error``: (count at τ_hi + a, count at
            τ_lo − a), bounds on the count of the true matrix.
        gram_error: δ_G as given (``gram_error=``), [E]; it is included in ``error_bound`` and
            ``error_estimate``, and ``reliable`` then means proven for the true matrix.
    """

    counts: torch.Tensor
    reliable: torch.Tensor
    fell_back: torch.Tensor
    min_pivot_rel: torch.Tensor
    growth: torch.Tensor
    band_counts: torch.Tensor
    certified: torch.Tensor | None = None
    max_abs_l: torch.Tensor | None = None
    band_rel: float | None = None
    error_bound: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    thresholds: torch.Tensor | None = None
    fallback_method: str | None = None
    rbt: bool = False
    lambda_max: tuple[torch.Tensor, torch.Tensor] | None = None
    count_bounds: tuple[torch.Tensor, torch.Tensor] | None = None
    error_estimate: torch.Tensor | None = None
    gram_error: torch.Tensor | None = None
