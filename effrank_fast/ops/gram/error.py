"""A bound δ_G on the error ‖M̂ − M‖₂ made forming a Gram matrix in floating point.

M = Σ_k w_k x_k x_kᵀ (x_k = φ_k, or φ_k − μ̂ when centred) summed over n products per entry: n = N
rows for the d×d Gram, n = d features for the N×N kernel (the same non-zero spectrum). Every
product and addition of the accumulation rounds; the standard analysis of a sum of n products
(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1) gives, entry by entry,

    |M̂_ij − M_ij| ≤ γ · Σ_k w_k |x_ki| |x_kj| ≤ γ · √(M_ii M_jj)        (Cauchy–Schwarz)

so ‖ΔM‖₂ ≤ ‖ΔM‖_F ≤ γ · Σ_i M_ii = γ · tr M, with M_ii ≤ M̂_ii / (1 − γ). γ collects:

- the accumulation of n terms: γ_n = n·u/(1 − n·u) (rigorous, any summation order), or the
  probabilistic γ̃_n = λ·√n·u, λ = 12 (Higham & Mary, "A new approach to probabilistic rounding
  error analysis", SISC 2019: holds with probability ≥ 1 − 2n·e^{−λ²/2} when the rounding errors
  are independent and mean zero; the measured fp32 Gram error sits at ~1–4·√n·u,
  research/algorithms.md §2.4);
- the operations on each operand before the products: √w scaling (rounding w, the square root, the
  product: 3 per factor, 6 per term), centring (one subtraction per factor), an input that must be
  rounded to ``acc_dtype`` (float64 features accumulated in float32: one rounding per factor), and
  the final scaling by a uniform weight (1/N for ``mode="mean"``: one rounding);
- on the Triton tensor-core path, the one-signed accumulation bias of promoted fp32 MMAs
  (ops/gram/README.md "Error model"): ≤ 2.3e-9 per promoted row·MMA, with the promotion window
  R·n_mma ≤ 8√n, counted twice for margin: 3.7e-8·√n relative; the three-piece split of non-16-bit
  operands drops terms below 2⁻²⁶ of each product (|pieces| ≤ 3): one u₃₂ more. The rigorous
  variant counts truncation instead of rounding on every add (2u).

Two terms are not relative to tr M:

- underflow: every operation whose result is below the normal range of ``acc_dtype`` may err by
  half the smallest subnormal η, so each entry gains ≤ (2n + 8)·η/2 in the units of the sum
  (multiplied by ``post_scale``, the uniform weight applied after the sum): d such entries per row
  give ‖·‖₂ ≤ d·(n + 4)·η·post_scale;
- centring by a computed mean μ̂: the exact identity Σ w (x − μ̂)(x − μ̂)ᵀ = M + W(μ̂ − μ)(μ̂ − μ)ᵀ
  adds a rank-one PSD error of norm W‖μ̂ − μ‖² ≤ γ²·(tr M + W‖μ̂‖²) (|μ̂_i − μ_i| ≤ γ·Σ w|φ_i| / W
  and Cauchy–Schwarz); ``mean_sq_norm`` = W‖μ̂‖² supplies the second part. This is what keeps the
  rounding noise of constant centred features from looking like a spectrum.

The bound is returned as a 0-d float64 tensor on the device of ``diag_or_trace``: no host sync, so
the tracker and the monitor can carry it through their hot paths. It is infinite when M̂'s
diagonal is not finite (overflow, NaN/Inf input): nothing is certified then.
"""

from __future__ import annotations

import math

import torch

__all__ = ["PROB_LAMBDA", "TENSOR_CORE_BIAS_PER_SQRT_N", "gram_error_bound", "gram_error_gamma", "unit_roundoff"]

PROB_LAMBDA = 12.0
# ops/gram/README.md: bias ≤ 2.3e-9·R·n_mma with R·n_mma ≤ 8√n, doubled for margin.
TENSOR_CORE_BIAS_PER_SQRT_N = 2 * 2.3e-9 * 8
BACKENDS = ("torch", "native", "triton")


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p of ``dtype`` (half the machine epsilon)."""
    return torch.finfo(dtype).eps / 2


def _accumulate(terms: float, u: float, probabilistic: bool) -> float:
    if probabilistic:
        return PROB_LAMBDA * math.sqrt(terms) * u
    if terms * u >= 1:
        return math.inf
    return terms * u / (1 - terms * u)


def gram_error_gamma(
    n: int,
    acc_dtype: torch.dtype,
    *,
    input_dtype: torch.dtype,
    backend: str,
    probabilistic: bool = True,
    weighted: bool = False,
    centered: bool = False,
    post_scaled: bool = False,
) -> float:
    """γ with |M̂_ij − M_ij| ≤ γ·Σ_k w_k|x_ki||x_kj| for a Gram summed over ``n`` products (module doc)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if acc_dtype not in (torch.float32, torch.float64):
        raise TypeError(f"acc_dtype must be torch.float32 or torch.float64, got {acc_dtype}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int (the number of products per entry), got {n!r}")
    u = unit_roundoff(acc_dtype)
    # element-wise operations on each term before it enters the sum (counted rigorously: few)
    ops = 0
    if weighted:
        ops += 6
    if centered:
        ops += 2
    if torch.finfo(input_dtype).bits > torch.finfo(acc_dtype).bits:
        ops += 2
    if post_scaled:
        ops += 1
    elementwise = ops * u / (1 - ops * u)
    tensor_cores = backend == "triton" and acc_dtype == torch.float32
    if tensor_cores:
        # truncating adds (rigorous) or the measured one-signed bias (probabilistic), plus the
        # dropped piece products of non-16-bit operands
        sum_err = (
            _accumulate(n, 2 * u, False)
            if not probabilistic
            else _accumulate(n, u, True) + TENSOR_CORE_BIAS_PER_SQRT_N * math.sqrt(n)
        )
        sum_err += u
    else:
        sum_err = _accumulate(n, u, probabilistic)
    return (1 + elementwise) * (1 + sum_err) - 1


def gram_error_bound(
    diag_or_trace: torch.Tensor,
    n: int,
    acc_dtype: torch.dtype,
    *,
    input_dtype: torch.dtype,
    backend: str,
    probabilistic: bool = True,
    weighted: bool = False,
    centered: bool = False,
    post_scale: float | None = None,
    mean_sq_norm: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """δ_G ≥ ‖M̂ − M‖₂ for a Gram M̂ formed in ``acc_dtype`` (see the module docstring).

    Args:
        diag_or_trace: M̂'s diagonal [d] (or [N] for the N×N kernel), or its trace (0-d); any float
            dtype, on M̂'s device.
        n: products per entry: N rows for the d×d Gram, d features for the N×N kernel.
        acc_dtype: torch.float32 or torch.float64, the dtype the products were summed in.
        input_dtype: the features' dtype (float64 features summed in float32 round once per factor).
        backend: "torch" or "native" (round-to-nearest BLAS), "triton" (tensor cores for float32
            accumulation: the README's bias term is added).
        probabilistic: λ√n·u (default) instead of the worst-case γ_n = nu/(1 − nu).
        weighted: per-row weights were applied as √w on each factor (6 more roundings per term).
        centered: the features were centred by a computed mean.
        post_scale: a uniform weight applied after the sum (1/N for ``mode="mean"``), or None; it
            adds one rounding and scales the underflow term.
        mean_sq_norm: W‖μ̂‖² for ``centered`` (the rank-one term of the mean's error); None: 0.

    Returns:
        δ_G: 0-d float64 tensor on ``diag_or_trace``'s device (inf when the diagonal is not finite).
    """
    if not isinstance(diag_or_trace, torch.Tensor) or diag_or_trace.dim() > 1:
        raise TypeError("diag_or_trace must be a 0-d (trace) or 1-d (diagonal) tensor")
    gamma = gram_error_gamma(
        n,
        acc_dtype,
        input_dtype=input_dtype,
        backend=backend,
        probabilistic=probabilistic,
        weighted=weighted,
        centered=centered,
        post_scaled=post_scale is not None,
    )
    diag = diag_or_trace.detach().double()
    dim = diag.numel() if diag.dim() == 1 else 1
    trace = diag.sum() if diag.dim() == 1 else diag
    trace_exact = trace.abs() / (1 - gamma) if gamma < 1 else torch.full_like(trace, math.inf)
    bound = gamma * trace_exact
    if centered and mean_sq_norm is not None:
        msq = torch.as_tensor(mean_sq_norm, dtype=torch.float64, device=diag.device).detach()
        bound = bound + gamma * gamma * (trace_exact + msq.abs())
    tiny = torch.finfo(acc_dtype).smallest_normal * torch.finfo(acc_dtype).eps  # the smallest subnormal
    bound = bound + dim * (n + 4) * tiny * (1.0 if post_scale is None else float(post_scale))
    return torch.where(torch.isfinite(bound), bound, torch.full_like(bound, math.inf))
