"""Exact ε-counts by Sylvester inertia of M − τI (float64 pivot-free blocked LDLᵀ, CPU and CUDA).

By Sylvester's law of inertia #{λ(M) > τ} is the number of positive pivots of an LDLᵀ of M − τI:
no eigensolver is needed. The native kernel (csrc/inertia/) returns counts with diagnostics and a
rigorous error bound δ (``effrank_fast/ops/inertia/schema.py``): the count is that of some M + E
with ‖E‖₂ ≤ δ, so it is exact whenever no eigenvalue lies within δ of τ.

Robustness ladder (every step is recorded in :class:`InertiaResult`, none is silent):

1. optional random butterfly congruence (``rbt=True``): same inertia, smaller pivot growth;
2. the verdict ``reliable`` = δ_p ≤ ``band_rel``·‖M − τI‖_F (a tiny or zero pivot, or large
   growth, makes it large or infinite), where δ_p is the probabilistic counterpart of the kernel's
   worst-case bound δ (:func:`probabilistic_bound`);
3. ``fallback="eigh"`` (default) recounts the unreliable thresholds with a float64 eigvalsh,
   ``fallback="ldl"`` with Bunch–Kaufman (``torch.linalg.ldl_factor_ex``, 2×2 pivots honoured).
   Deciding whether to fall back reads one flag from the device: **a host sync**. With
   ``fallback=False`` nothing synchronises and ``reliable`` tells the caller which counts to trust.

Relative thresholds τ = ε·λ_max (:func:`inertia_count_relative`) bracket λ_max by Lanczos
(:mod:`.lanczos`), count at both ends of the bracket and fall back when the two counts differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from effrank_fast import _native
from effrank_fast.ops.inertia.lanczos import DEFAULT_LANCZOS_STEPS, LambdaMaxBounds, lambda_max_bounds
from effrank_fast.ops.inertia.reference import inertia_ref, symmetric_from_lower
from effrank_fast.ops.inertia.robust import RBT_DEPTH, bunch_kaufman_counts, butterfly_congruence

__all__ = [
    "DEFAULT_BAND_REL",
    "DEFAULT_BLOCK",
    "DEFAULT_LANCZOS_STEPS",
    "InertiaResult",
    "LambdaMaxBounds",
    "bunch_kaufman_counts",
    "inertia_count",
    "inertia_count_relative",
    "inertia_ref",
    "lambda_max_bounds",
    "probabilistic_bound",
]

DEFAULT_BLOCK = 0  # the device's default panel width (CPU 64, CUDA 256)
# Allowed factorisation error δ_p relative to ‖M − τI‖_F (≥ ‖M − τI‖₂): no more than the rounding
# error of an fp32 Gram matrix (1e-7…2e-6·λ_max measured, research/algorithms.md §2.4), so the LDLᵀ
# adds no uncertainty the Gram did not already carry. Benign factorisations sit at 1e-11…3e-9 up
# to d = 4096 (δ_p grows about like d^1.8); tiny pivots push it to 1e-3 and beyond.
DEFAULT_BAND_REL = 1e-6
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


@dataclass
class InertiaResult:
    """ε-counts with the evidence behind them; tensors are on the input's device, shape [E].

    Attributes:
        counts: #{λ > τ_e} (int64); from the LDLᵀ, or from the fallback where ``fell_back``.
        reliable: the LDLᵀ count is trusted: δ_p ≤ band_rel·‖M − τI‖_F (and, for relative
            thresholds, both ends of the λ_max bracket gave the same count and λ_max ≤ upper).
        fell_back: the count was recomputed by ``fallback_method`` because it was not reliable.
        min_pivot_rel, growth, band_counts: the kernel's diagnostics (see the op's schema).
        error_bound: δ, absolute, worst case: the count is exact if no eigenvalue lies within δ of τ.
        error_estimate: δ_p, the probabilistic bound behind ``reliable`` (:func:`probabilistic_bound`).
        scale: ‖M − τI‖_F, the reference of the relative diagnostics.
        thresholds: the absolute thresholds τ that were counted.
        fallback_method: "eigh" or "ldl" when a fallback ran, else None.
        rbt: whether the random butterfly congruence was applied.
        lambda_max: (lower, upper) bracket of λ_max (relative thresholds only).
        count_bounds: (count at ε·upper, count at ε·lower): the true count lies between them when
            both are exact (relative thresholds only).
    """

    counts: torch.Tensor
    reliable: torch.Tensor
    fell_back: torch.Tensor
    min_pivot_rel: torch.Tensor
    growth: torch.Tensor
    band_counts: torch.Tensor
    error_bound: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    thresholds: torch.Tensor | None = None
    fallback_method: str | None = None
    rbt: bool = False
    lambda_max: tuple[torch.Tensor, torch.Tensor] | None = None
    count_bounds: tuple[torch.Tensor, torch.Tensor] | None = None
    error_estimate: torch.Tensor | None = None


def _check(gram: object, band_rel: object, block_size: object, fallback: object) -> str | None:
    if not isinstance(gram, torch.Tensor):
        raise TypeError(f"gram must be a torch.Tensor of shape [d, d], got {type(gram).__name__}")
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"gram must be square [d, d] with d >= 1, got shape {tuple(gram.shape)}")
    if not gram.is_floating_point():
        raise TypeError(f"gram must be floating point, got {gram.dtype}")
    if isinstance(band_rel, bool) or not isinstance(band_rel, (int, float)) or not band_rel >= 0:
        raise ValueError(f"band_rel must be a non-negative number, got {band_rel!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 0:
        raise ValueError(f"block_size must be an int >= 0 (0 = default), got {block_size!r}")
    if fallback is True:
        return "eigh"
    if fallback is False or fallback is None:
        return None
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be True, False, 'eigh' or 'ldl', got {fallback!r}")
    return str(fallback)


def _thresholds(thresholds: object, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(thresholds, dtype=torch.float64)
    if t.dim() > 1:
        raise ValueError(f"thresholds must be a scalar or 1-D [E], got shape {tuple(t.shape)}")
    return t.reshape(-1).to(device)


def _require_kernel(device: torch.device) -> None:
    reason = _native.kernel_missing_reason("inertia", device.type)
    if reason is not None:
        from effrank_fast._backends import BackendUnavailableError

        raise BackendUnavailableError(f"the inertia count cannot run on {device.type}: {reason}")


def _factor_rbt(gram: torch.Tensor, tau: torch.Tensor, band_rel: float, block_size: int, seed: int):
    """The op's outputs for M − τI after a random butterfly congruence, δ (and δ_p) mapped back to
    M − τI: an error E in Ã = UᵀAU is the error U⁻ᵀEU⁻¹ in A, ‖U⁻¹‖₂ ≤ inv_norm."""
    m = symmetric_from_lower(gram)
    zero = tau.new_zeros(1)
    outs = []
    for t in range(tau.shape[0]):
        a = m - tau[t] * torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
        at, pad, inv_norm, round_err = butterfly_congruence(a, depth=RBT_DEPTH, seed=seed)
        c, mp, g, band, delta, scale_t = torch.ops.effrank_fast.inertia(at, zero, band_rel, block_size)
        delta_p = probabilistic_bound(delta, scale_t, at.shape[0])
        scale = torch.linalg.matrix_norm(a).reshape(1)
        outs.append(
            (c - pad, mp, g, band, inv_norm**2 * (delta + round_err), scale, inv_norm**2 * (delta_p + round_err))
        )
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))


def inertia_count(
    gram: torch.Tensor,
    thresholds: torch.Tensor | float | list[float],
    *,
    band_rel: float = DEFAULT_BAND_REL,
    block_size: int = DEFAULT_BLOCK,
    fallback: bool | str | None = "eigh",
    rbt: bool = False,
    rbt_seed: int = 0,
) -> InertiaResult:
    """Counts #{λ(M) > τ_e} for thresholds τ [E] on M [d, d] (lower triangle read).

    Args:
        gram: M [d, d], any float dtype, CPU or CUDA.
        thresholds: τ, a scalar or [E] (absolute).
        band_rel: the tolerance of the ``reliable`` verdict, relative to ‖M − τI‖_F.
        block_size: panel width of the blocked factorisation; 0 = the device's default.
        fallback: "eigh" (or True), "ldl", or False/None for no fallback and no host sync.
        rbt: apply a random butterfly congruence first (O(d²) per threshold; curbs pivot growth).
        rbt_seed: seed of the butterfly.

    Returns:
        :class:`InertiaResult`. Cost: one d³/3 factorisation per threshold, plus with a fallback
        one eigvalsh (or one sytrf per unreliable threshold) and one host sync.
    """
    method = _check(gram, band_rel, block_size, fallback)
    _require_kernel(gram.device)
    tau = _thresholds(thresholds, gram.device)
    if rbt:
        counts, min_piv, growth, band, delta, scale, delta_p = _factor_rbt(
            gram, tau, float(band_rel), block_size, rbt_seed
        )
    else:
        counts, min_piv, growth, band, delta, scale = torch.ops.effrank_fast.inertia(
            gram, tau, float(band_rel), block_size
        )
        delta_p = probabilistic_bound(delta, scale, gram.shape[0])
    reliable = torch.isfinite(delta) & (delta_p <= band_rel * scale)
    fell_back = torch.zeros_like(reliable)
    used = None
    if method is not None and tau.numel() and not bool(reliable.all()):  # host sync
        fell_back = ~reliable
        redo = inertia_ref(gram, tau) if method == "eigh" else bunch_kaufman_counts(gram, tau)
        counts = torch.where(reliable, counts, redo)
        used = method
    return InertiaResult(
        counts=counts,
        reliable=reliable,
        fell_back=fell_back,
        min_pivot_rel=min_piv,
        growth=growth,
        band_counts=band,
        error_bound=delta,
        scale=scale,
        thresholds=tau,
        fallback_method=used,
        rbt=rbt,
        error_estimate=delta_p,
    )


def inertia_count_relative(
    gram: torch.Tensor,
    eps: torch.Tensor | float | list[float],
    *,
    band_rel: float = DEFAULT_BAND_REL,
    block_size: int = DEFAULT_BLOCK,
    fallback: bool | str | None = "eigh",
    rbt: bool = False,
    lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
    certify: bool = True,
    seed: int = 0,
) -> InertiaResult:
    """#{λ(M) > ε_e·λ_max(M)} without an eigensolver.

    λ_max is bracketed by :func:`lambda_max_bounds`; each ε is counted at both ends of the bracket
    (two factorisations), and with ``certify`` one more factorisation checks #{λ > upper} = 0. The
    count is reliable when both ends agree, both factorisations are reliable and the bracket is
    certified; otherwise (with a fallback) it is recounted from a float64 eigvalsh (λ_max needs the
    spectrum, so the "ldl" fallback also uses eigvalsh here). Cost: 2E (+1) factorisations and
    ``lanczos_steps`` + 1 products M·v; the fallback decision is one host sync.
    """
    method = _check(gram, band_rel, block_size, fallback)
    _require_kernel(gram.device)
    eps_t = _thresholds(eps, gram.device)
    e = eps_t.numel()
    m = symmetric_from_lower(gram)
    bounds = lambda_max_bounds(gram, steps=lanczos_steps, seed=seed, matrix=m)
    parts = [eps_t * bounds.lower, eps_t * bounds.upper]
    if certify:
        parts.append(bounds.upper.reshape(1))
    res = inertia_count(m, torch.cat(parts), band_rel=band_rel, block_size=block_size, fallback=False, rbt=rbt)
    at_lo, at_hi = res.counts[:e], res.counts[e : 2 * e]
    ok = (at_lo == at_hi) & res.reliable[:e] & res.reliable[e : 2 * e]
    if certify:
        ok = ok & (res.counts[2 * e] == 0) & res.reliable[2 * e]
    counts = at_hi
    fell_back = torch.zeros_like(ok)
    used = None
    if method is not None and e and not bool(ok.all()):  # host sync
        lam = torch.linalg.eigvalsh(m)
        redo = (lam.unsqueeze(0) > (eps_t * lam[-1]).unsqueeze(1)).sum(1)
        counts = torch.where(ok, counts, redo)
        fell_back = ~ok
        used = "eigh"

    def worse(x: torch.Tensor, pick=torch.maximum) -> torch.Tensor:
        return pick(x[:e], x[e : 2 * e])

    assert res.error_bound is not None and res.scale is not None and res.error_estimate is not None
    return InertiaResult(
        counts=counts,
        reliable=ok,
        fell_back=fell_back,
        min_pivot_rel=worse(res.min_pivot_rel, torch.minimum),
        growth=worse(res.growth),
        band_counts=worse(res.band_counts),
        error_bound=worse(res.error_bound),
        scale=res.scale[e : 2 * e],
        thresholds=eps_t * bounds.upper,
        fallback_method=used,
        rbt=rbt,
        lambda_max=(bounds.lower, bounds.upper),
        count_bounds=(at_hi, at_lo),
        error_estimate=worse(res.error_estimate),
    )
