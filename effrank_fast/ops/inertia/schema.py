"""Schemas and fake kernels of ``effrank_fast::inertia`` and ``effrank_fast::tridiag_top``.

Implemented in csrc/inertia/ (inertia_cpu.cpp, inertia_cuda.cu).

``inertia(gram[d, d], thresholds[E], block_size)``
    -> (counts[E] int64, min_pivot_rel[E] f64, growth[E] f64, band_counts[E] int64, error_bound[E] f64,
        scale[E] f64, max_abs_l[E] f64)

    Sylvester inertia of A = M − τ_e I by a pivot-free blocked LDLᵀ in float64; counts[e] is the
    number of positive pivots, = #{λ(M) > τ_e} up to the backward error. Only the lower triangle of
    M is read (as by ``torch.linalg.eigvalsh``). ``error_bound`` δ (absolute, in M's units) =
    γ_{3d}·Σ_k |D_k|(1 + Σ_i L_ik²) + u·‖A‖_F: the count is #{λ(M + E) > τ} for some symmetric E
    with ‖E‖₂ ≤ δ, hence exact when no eigenvalue of M lies within δ of τ (δ = inf after a zero or
    non-finite pivot; ``counts`` is then meaningless). ``scale`` = ‖A‖_F = ‖M − τI‖_F (≥ ‖A‖₂);
    relative to it: ``min_pivot_rel`` = min|D_ii| / ‖A‖_F and ``growth`` = max_k |D_k|·max_i L_ik² /
    ‖A‖_F (the entry growth of |L||D||Lᵀ|, which drives δ). ``max_abs_l`` = max_ij |L_ij| (≥ 1, the
    unit diagonal included). ``band_counts`` = #{i: |D_ii| ≤ δ}: the pivots whose sign lies inside
    the uncertainty band (d when δ = inf). ``block_size`` is the panel width of the trailing
    updates; 0 picks the device's default.

``tridiag_top(alpha[k], beta[k-1])`` -> (theta 0-d f64, y[k] f64)
    The largest eigenvalue of the symmetric tridiagonal matrix with diagonal ``alpha`` and
    off-diagonal ``beta`` (bisection) and its unit eigenvector (inverse iteration), computed on the
    tensors' device without a host round trip (the Lanczos step of ``lambda_max_bounds``).
"""

from __future__ import annotations

import torch

from effrank_fast.ops.library import LIB

LIB.define(
    "inertia(Tensor gram, Tensor thresholds, int block_size)"
    " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
LIB.define("tridiag_top(Tensor alpha, Tensor beta) -> (Tensor, Tensor)")


@torch.library.register_fake("effrank_fast::inertia")
def _inertia_fake(gram, thresholds, block_size):
    torch._check(gram.dim() == 2 and gram.shape[0] == gram.shape[1], lambda: "gram must be [d, d]")
    torch._check(thresholds.dim() == 1, lambda: "thresholds must be [E]")
    e = thresholds.shape[0]
    f64 = {"dtype": torch.float64, "device": gram.device}
    i64 = {"dtype": torch.int64, "device": gram.device}
    return (
        gram.new_empty((e,), **i64),
        gram.new_empty((e,), **f64),
        gram.new_empty((e,), **f64),
        gram.new_empty((e,), **i64),
        gram.new_empty((e,), **f64),
        gram.new_empty((e,), **f64),
        gram.new_empty((e,), **f64),
    )


@torch.library.register_fake("effrank_fast::tridiag_top")
def _tridiag_top_fake(alpha, beta):
    torch._check(alpha.dim() == 1, lambda: "alpha must be [k]")
    torch._check(beta.dim() == 1, lambda: "beta must be [k - 1]")
    return alpha.new_empty((), dtype=torch.float64), alpha.new_empty(alpha.shape, dtype=torch.float64)
