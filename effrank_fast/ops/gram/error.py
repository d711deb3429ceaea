"""A bound δ_G on the error ‖M̂ − M‖₂ made forming a Gram matrix in floating point.

Three kinds (``KINDS``; docs/certificate.md says what each one proves):

- ``"rigorous"``: the worst case, γ_{2n}·T (below, 1.) plus 2.–6. A proof.
- ``"probabilistic"``: the matrix-Bernstein bound in the Higham–Mary model (1., probabilistic) plus
  2.–6.: holds with probability ≥ 1 − 1e-16 if rounding errors are independent and mean zero;
  ~10³ above what blocked BLAS makes (it assumes every partial sum is as large as the whole).
- ``"tight"`` (:func:`gram_error_estimate`, the default of ``eps_rank``): the size the library's
  blocked SYRK actually errs by, u·min(C_D·√dim·max D + C_L·λ_max, C_T·T), the constants set
  ≥ 3× above the largest ratio measured over many feature families (their comment); plus the
  same one-signed (tensor-core), rank-one (centring) and underflow terms. An estimate with a
  measured margin, not a proof; within ~9–12× of the true error on power-law features.

M = Σ_k w_k x_k x_kᵀ (x_k = φ_k, or φ_k − μ̂ when centred) summed over n products per entry: n = N
rows for the d×d Gram, n = d features for the N×N kernel (the same non-zero spectrum). With
D = diag(M) and T = tr M, the sources of error and their bounds:

1. *Accumulation* (each product and each addition rounds once; Higham, *Accuracy and Stability of
   Numerical Algorithms*, §3.1): |ΔM_ij| ≤ γ_{2n}·Σ_k w_k|x_ki||x_kj| ≤ γ_{2n}·√(D_i D_j)
   (Cauchy–Schwarz), γ_m = m·u/(1 − m·u), any summation order. Hence, **rigorously**,
   ‖ΔM‖₂ ≤ ‖ΔM‖_F ≤ γ_{2n}·T.
   **Probabilistic** (default): in the model of Higham & Mary ("A new approach to probabilistic
   rounding error analysis", SISC 2019) every rounding error is an independent, mean-zero variable
   of size ≤ u. ΔM is then a sum of 2n·d(d+1)/2 independent symmetric matrices δ·p·(E_ij + E_ji),
   |p| ≤ (|x_i|ᵀ W|x_j|)(1 + γ), and the matrix Bernstein inequality (Tropp, "User-friendly tail
   bounds for sums of random matrices", 2012) with variance proxy v ≤ 2n·u²·max_i D_i·T and
   summand size L ≤ 2u·max_i D_i gives, with probability ≥ 1 − p_fail (p_fail = 1e-16, ℓ =
   ln(2d/p_fail)),  ‖ΔM‖₂ ≤ √(2vℓ) + (2/3)Lℓ  ≈ 9…10·√(2n)·u·√(max D·T).
   That is √(T/max D) (up to √d) tighter than the Frobenius form and still ~10³ above what blocked
   BLAS actually makes (it adds much shorter partial sums), so it is safe to certify with.
2. *Operand roundings* shared by a whole row of M (not independent, so bounded rigorously): √w
   scaling (rounding w, the root, the product: 3 per factor), centring (one subtraction), float64
   features accumulated in float32 (one rounding): x̂ = (1 + Θ)∘x with |Θ| ≤ θ, so
   ‖ΔM‖₂ ≤ (2θ + θ²)·T.
3. *Tensor cores* (``backend="triton"``, float32 accumulation; ops/gram/README.md "Error model"):
   the one-signed bias of promoted fp32 MMAs, ≤ 2.3e-9 per promoted row·MMA with R·n_mma ≤ 8√n,
   doubled for margin: 3.7e-8·√n relative, and u₃₂ for the dropped products of the three-piece
   split; one-signed, so counted as a relative error of every entry: (3.7e-8·√n + u)·T. The
   rigorous variant takes truncating adds (2u) instead of rounding.
4. *Uniform weight after the sum* (1/N for ``mode="mean"``: ``post_scale``): one more rounding per
   entry (in the accumulation term).
5. *Centring by a computed mean* μ̂: the exact identity Σ w(x − μ̂)(x − μ̂)ᵀ = M + W(μ̂ − μ)(μ̂ − μ)ᵀ
   adds a rank-one PSD error W‖μ̂ − μ‖² ≤ γ_n²·(T + W‖μ̂‖²) (|μ̂_i − μ_i| ≤ γ_n·Σ w|φ_i|/W,
   Cauchy–Schwarz). ``mean_sq_norm`` = W‖μ̂‖² supplies the second part. This is what keeps the
   rounding noise of constant centred features from passing for a spectrum.
6. *Underflow*: an operation whose result is subnormal may err by half the smallest subnormal η:
   each entry gains ≤ (n + 4)·η in the units of the sum (× ``post_scale``), so ‖·‖₂ ≤ d·(n + 4)·η.

D and T are those of the exact M, bounded from the computed ones by M_ii ≤ M̂_ii/(1 − γ). The
bound is returned as a 0-d float64 tensor on the device of ``diag_or_trace``: no host sync, so the
tracker and the monitor can carry it through their hot paths. It is inf when M̂'s diagonal is not
finite (overflow, NaN/Inf input): nothing is certified then.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from effrank_fast.ops.numerics import gamma, unit_roundoff

__all__ = [
    "KINDS",
    "P_FAIL",
    "TIGHT_DIAG",
    "TIGHT_LAMBDA",
    "TIGHT_TRACE",
    "TENSOR_CORE_BIAS_PER_SQRT_N",
    "GramErrorModel",
    "bound_from_model",
    "gram_error",
    "gram_error_bound",
    "gram_error_estimate",
    "gram_error_model",
    "unit_roundoff",
]

# Failure probability of the probabilistic bound (per Gram) in the Higham–Mary model.
P_FAIL = 1e-16
# ops/gram/README.md: bias ≤ 2.3e-9·R·n_mma with R·n_mma ≤ 8√n, doubled for margin.
TENSOR_CORE_BIAS_PER_SQRT_N = 2 * 2.3e-9 * 8
BACKENDS = ("torch", "native", "triton")
KINDS = ("tight", "probabilistic", "rigorous")
# The "tight" estimate ‖M̂ − M‖₂ ≤ u·min(C_D·√dim·max D + C_L·λ_max, C_T·T). Entry (i, j) errs by
# about c·u·√(M_ii M_jj) (a few roundings of the partial sums a blocked SYRK keeps): a noise-like part
# of norm ≈ 2√dim·c·u·max D, plus a part along the dominant directions (the relative rounding of the
# sums that make λ_max) of size ≈ c·u·λ_max; and ‖ΔM‖₂ ≤ ‖ΔM‖_F ≈ c·u·T. Measured on CPU Grams
# (native SYRK; fp32, bf16 and fp16 features, centred or not; power-law α = 0.8, 1.2, 2, clustered,
# low-rank + noise, 12-decade, flat and ReLU spectra; N = 512…20000, d = 256…1024;
# tests/test_gram_error.py keeps checking it): ‖ΔM‖₂ / (u·(4√dim·max D + 2λ_max)) ≤ 0.3 and
# ‖ΔM‖₂ / (u·T) ≤ 0.6 (2.35 at N = 512 on 1/i³). One-signed, coherent features (tanh of a shared
# input, shifted or not: λ_max ≈ T) err most along the dominant direction, ≈ 3–4·u·λ_max through
# MKL's SYRK at d = 256…512 and through our kernel with 512-row blocks: the first constants
# (C_L = 2) left them a margin of only 1.5× (0.9× on our AVX-512 kernel before its blocks were cut to
# 128 rows), so C_L = 5: the true error is ≤ 0.30·δ_G on them (d = 8…512, N = 512…20000, every CPU
# path), a margin ≥ 3× everywhere measured, for δ_G 9–12× the true error on the power laws.
TIGHT_DIAG = 4.0
TIGHT_LAMBDA = 5.0
TIGHT_TRACE = 8.0


@dataclass(frozen=True)
class GramErrorModel:
    """The coefficients of :func:`gram_error_bound`: δ_G = acc·√(max D·T) (probabilistic) or acc·T
    (rigorous) + relative·T + rank_one·(T + W‖μ̂‖²) + absolute."""

    acc: float
    relative: float
    rank_one: float
    absolute_per_row: float
    probabilistic: bool
    lin: float = 0.0


@functools.lru_cache(maxsize=256)  # pure in its (hashable) arguments; the monitor asks every step
def gram_error_model(
    n: int,
    acc_dtype: torch.dtype,
    *,
    input_dtype: torch.dtype,
    backend: str,
    dim: int,
    probabilistic: bool = True,
    weighted: bool = False,
    centered: bool = False,
    post_scale: float | None = None,
) -> GramErrorModel:
    """The coefficients of the bound for a Gram of size ``dim`` summed over ``n`` products."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if acc_dtype not in (torch.float32, torch.float64):
        raise TypeError(f"acc_dtype must be torch.float32 or torch.float64, got {acc_dtype}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int (the number of products per entry), got {n!r}")
    u = unit_roundoff(acc_dtype)
    tensor_cores = backend == "triton" and acc_dtype == torch.float32
    adds = 2 * n + (1 if post_scale is not None else 0)
    if probabilistic:
        ell = math.log(2 * max(dim, 1) / P_FAIL)
        # √(2vℓ) with v = adds·u²·maxD·T, plus (2/3)Lℓ with L = 2u·maxD (added below as `lin`)
        acc = math.sqrt(2 * ell * adds) * u
        lin = (2.0 / 3.0) * ell * 2 * u
    else:
        acc = gamma(adds, 2 * u if tensor_cores else u)
        lin = 0.0
    per_factor = (3 if weighted else 0) + (1 if centered else 0)
    if torch.finfo(input_dtype).bits > torch.finfo(acc_dtype).bits:
        per_factor += 1
    theta = gamma(per_factor, u)
    relative = 2 * theta + theta * theta
    if tensor_cores:
        relative += u + (TENSOR_CORE_BIAS_PER_SQRT_N * math.sqrt(n) if probabilistic else 0.0)
    rank_one = gamma(n, u) ** 2 if centered else 0.0
    eta = torch.finfo(acc_dtype).smallest_normal * torch.finfo(acc_dtype).eps  # the smallest subnormal
    absolute_per_row = (n + 4) * eta * (1.0 if post_scale is None else float(post_scale))
    return GramErrorModel(acc, relative, rank_one, absolute_per_row, probabilistic, lin)


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
        diag_or_trace: M̂'s diagonal [d] (or [N] for the N×N kernel), or its trace (0-d: then
            max D ≤ T is used, a looser bound); any float dtype, on M̂'s device. Batched: the
            diagonals [L, d] of L matrices formed alike give δ_G [L].
        n: products per entry: N rows for the d×d Gram, d features for the N×N kernel.
        acc_dtype: torch.float32 or torch.float64, the dtype the products were summed in.
        input_dtype: the features' dtype (float64 features summed in float32 round once per factor).
        backend: "torch" or "native" (round-to-nearest BLAS), "triton" (tensor cores for float32
            accumulation: the README's bias term is added).
        probabilistic: the matrix-Bernstein bound in the Higham–Mary model (default), else the
            worst case γ_{2n}·T.
        weighted: per-row weights were applied as √w on each factor.
        centered: the features were centred by a computed mean.
        post_scale: a uniform weight applied after the sum (1/N for ``mode="mean"``), or None.
        mean_sq_norm: W‖μ̂‖² for ``centered`` (the rank-one term of the mean's error); None: 0.

    Returns:
        δ_G: 0-d float64 tensor on ``diag_or_trace``'s device (inf when the diagonal is not finite;
        [L] for L diagonals).
    """
    if not isinstance(diag_or_trace, torch.Tensor):
        raise TypeError("diag_or_trace must be a 0-d (trace) or [..., d] (diagonals) tensor")
    diag = diag_or_trace.detach().double()
    dim = diag.shape[-1] if diag.dim() else 1
    model = gram_error_model(
        n,
        acc_dtype,
        input_dtype=input_dtype,
        backend=backend,
        dim=dim,
        probabilistic=probabilistic,
        weighted=weighted,
        centered=centered,
        post_scale=post_scale,
    )
    return bound_from_model(model, diag, mean_sq_norm)


def bound_from_model(
    model: GramErrorModel, diag: torch.Tensor, mean_sq_norm: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Evaluate :class:`GramErrorModel` on M̂'s diagonal [d] (or L diagonals [L, d]: δ_G [L]) or
    trace (0-d), float64, on the device."""
    diag = diag.double()
    dim = diag.shape[-1] if diag.dim() else 1
    exact = 1 - model.acc - model.relative
    shrink = 1 / exact if exact > 0 else math.inf
    trace = (diag.abs().sum(-1) if diag.dim() else diag.abs()) * shrink
    top = (diag.abs().amax(-1) if diag.dim() else diag.abs()) * shrink
    if model.probabilistic:
        bound = model.acc * top.sqrt() * trace.sqrt() + model.lin * top  # no overflow of top·trace
    else:
        bound = model.acc * trace
    bound = bound + model.relative * trace
    return _with_fixed_terms(bound, model, trace, dim, mean_sq_norm)


def _with_fixed_terms(
    size: torch.Tensor, model: GramErrorModel, trace: torch.Tensor, dim: int, mean_sq_norm: torch.Tensor | float | None
) -> torch.Tensor:
    """``size`` plus what every kind of δ_G adds: the rank-one centring error and underflow; inf
    where the result is not finite (a NaN or overflowing diagonal: nothing is certified)."""
    if model.rank_one:
        msq = 0.0 if mean_sq_norm is None else torch.as_tensor(mean_sq_norm, dtype=torch.float64, device=trace.device)
        size = size + model.rank_one * (trace + msq)
    size = size + dim * model.absolute_per_row
    return size.nan_to_num(nan=math.inf, posinf=math.inf)  # ≥ 0


def gram_error_estimate(
    diag_or_trace: torch.Tensor,
    n: int,
    acc_dtype: torch.dtype,
    *,
    input_dtype: torch.dtype,
    backend: str,
    weighted: bool = False,
    centered: bool = False,
    post_scale: float | None = None,
    mean_sq_norm: torch.Tensor | float | None = None,
    lambda_max: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """The ``"tight"`` δ_G (module docstring): the measured size of ‖M̂ − M‖₂, with margin.

    ``lambda_max``: an upper estimate of λ_max(M̂) (a few Lanczos steps; None: T, looser).
    u·min(C_D·√dim·max D + C_L·λ_max, C_T·T)·√(1 + 2p), p the operand roundings per factor (√w scaling, centring,
    a float64 input accumulated in float32: independent per element, like the products'), plus
    the terms a blocked-sum model does not cover: the one-signed tensor-core bias
    (``backend="triton"``, float32), the rank-one centring error and underflow, as in
    :func:`gram_error_bound`. Arguments and result as there (0-d float64, inf when not finite).
    """
    if not isinstance(diag_or_trace, torch.Tensor):
        raise TypeError("diag_or_trace must be a 0-d (trace) or [..., d] (diagonals) tensor")
    diag = diag_or_trace.detach().double()
    dim = diag.shape[-1] if diag.dim() else 1
    model = gram_error_model(
        n,
        acc_dtype,
        input_dtype=input_dtype,
        backend=backend,
        dim=dim,
        weighted=weighted,
        centered=centered,
        post_scale=post_scale,
    )
    u = unit_roundoff(acc_dtype)
    per_factor = (3 if weighted else 0) + (1 if centered else 0)
    per_factor += 1 if torch.finfo(input_dtype).bits > torch.finfo(acc_dtype).bits else 0
    mag = diag.abs()
    trace = mag.sum(-1) if diag.dim() else mag
    top = mag.amax(-1) if diag.dim() else mag
    # (lam ≥ 0 when it is the trace of |D|; a given λ_max estimate is taken in absolute value)
    lam = trace if lambda_max is None else torch.as_tensor(lambda_max, dtype=torch.float64, device=diag.device).abs()
    size = torch.minimum(top * (TIGHT_DIAG * math.sqrt(dim)) + lam * TIGHT_LAMBDA, trace * TIGHT_TRACE)
    est = size * (math.sqrt(1 + 2 * per_factor) * u)
    if backend == "triton" and acc_dtype == torch.float32:  # one-signed: not in the blocked-sum size
        est = est + (u + TENSOR_CORE_BIAS_PER_SQRT_N * math.sqrt(n)) * trace
    return _with_fixed_terms(est, model, trace, dim, mean_sq_norm)


def gram_error(
    kind: str,
    diag_or_trace: torch.Tensor,
    n: int,
    acc_dtype: torch.dtype,
    *,
    input_dtype: torch.dtype,
    backend: str,
    weighted: bool = False,
    centered: bool = False,
    post_scale: float | None = None,
    mean_sq_norm: torch.Tensor | float | None = None,
    lambda_max: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """δ_G of the given ``kind`` (one of :data:`KINDS`); the other arguments as in :func:`gram_error_bound`."""
    if kind not in KINDS:
        raise ValueError(f"certificate must be one of {KINDS}, got {kind!r}")
    if kind == "tight":
        return gram_error_estimate(
            diag_or_trace,
            n,
            acc_dtype,
            input_dtype=input_dtype,
            backend=backend,
            weighted=weighted,
            centered=centered,
            post_scale=post_scale,
            mean_sq_norm=mean_sq_norm,
            lambda_max=lambda_max,
        )
    return gram_error_bound(
        diag_or_trace,
        n,
        acc_dtype,
        input_dtype=input_dtype,
        backend=backend,
        probabilistic=kind == "probabilistic",
        weighted=weighted,
        centered=centered,
        post_scale=post_scale,
        mean_sq_norm=mean_sq_norm,
    )
