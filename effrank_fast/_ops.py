"""Schemas and fake (meta) kernels of the native ops, in one place.

Native code under ``csrc/`` only *implements* these ops (``TORCH_LIBRARY_IMPL``); the schema and
the shape logic live here, so ``torch.compile`` and ``opcheck`` work whether or not ``_C`` loaded.
The extension is loaded at the end of this module, after the schemas exist.

Ops:
    gram_native(phi[N, d], weights[N]?, center, acc_dtype) -> M[d, d]
        M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ), μ the w-weighted mean when ``center``;
        accumulated in ``acc_dtype`` (float32 or float64) over row chunks.
    inertia(gram[d, d], thresholds[E], band_rel, block_size)
        -> (counts[E] int64, min_pivot_rel[E] f64, growth[E] f64, band_counts[E] int64)
        Sylvester inertia of M − τ_e I by a pivot-free blocked LDLᵀ in float64: counts[e] is
        #{λ(M) > τ_e}. ``min_pivot_rel`` is min|D_ii| / ‖M‖_max, ``growth`` is
        max_j |D_jj|·max_i |L_ij|² / ‖M − τI‖_max (the backward-error amplifier), and
        ``band_counts`` counts pivots with |D_ii| ≤ band_rel·‖M − τI‖_max.
"""

from __future__ import annotations

import torch

from effrank_fast import _native

_lib = torch.library.Library("effrank_fast", "FRAGMENT")

_lib.define("gram_native(Tensor phi, Tensor? weights, bool center, ScalarType acc_dtype) -> Tensor")
_lib.define(
    "inertia(Tensor gram, Tensor thresholds, float band_rel, int block_size)"
    " -> (Tensor, Tensor, Tensor, Tensor)"
)


@torch.library.register_fake("effrank_fast::gram_native")
def _gram_native_fake(phi, weights, center, acc_dtype):
    torch._check(phi.dim() == 2, lambda: f"phi must be [N, d], got {tuple(phi.shape)}")
    if weights is not None:
        torch._check(weights.shape == (phi.shape[0],), lambda: "weights must be [N]")
    d = phi.shape[1]
    return phi.new_empty((d, d), dtype=acc_dtype)


@torch.library.register_fake("effrank_fast::inertia")
def _inertia_fake(gram, thresholds, band_rel, block_size):
    torch._check(gram.dim() == 2 and gram.shape[0] == gram.shape[1], lambda: "gram must be [d, d]")
    torch._check(thresholds.dim() == 1, lambda: "thresholds must be [E]")
    e = thresholds.shape[0]
    return (
        thresholds.new_empty((e,), dtype=torch.int64),
        thresholds.new_empty((e,), dtype=torch.float64),
        thresholds.new_empty((e,), dtype=torch.float64),
        thresholds.new_empty((e,), dtype=torch.int64),
    )


_native._load()
