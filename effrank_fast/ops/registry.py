"""Schemas and fake (meta) kernels of the native ops, registered before the extension loads.

Each op package holds its schema in ``effrank_fast/ops/<op>/schema.py`` (defined on
``effrank_fast.ops.library.LIB``);
native code under ``csrc/<op>/`` only *implements* it (``TORCH_LIBRARY_IMPL``). The schema and
the shape logic live in Python, so ``torch.compile`` and ``opcheck`` work whether or not ``_C`` loaded.
The extension is loaded at the end of this module, after the schemas exist. ``OPS`` lists every
op of the library, native and Triton; ``tests/test_layout.py`` checks it against what is registered.

Ops:
    gram_native(phi[N, d], weights[N]?, center, acc_dtype) -> M[d, d]
        M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ), μ the w-weighted mean when ``center``;
        accumulated in ``acc_dtype`` (float32 or float64) over row chunks.
    inertia(gram[d, d], thresholds[E], block_size)
        -> (counts[E] int64, min_pivot_rel[E] f64, growth[E] f64, band_counts[E] int64,
            error_bound[E] f64, scale[E] f64, max_abs_l[E] f64)
        Sylvester inertia of M − τ_e I by a pivot-free blocked LDLᵀ in float64: counts[e] is
        #{λ(M) > τ_e}, exact unless an eigenvalue lies within error_bound[e] of τ_e; the
        diagnostics are defined in effrank_fast/ops/inertia/schema.py.
    tridiag_top(alpha[k], beta[k-1]) -> (theta 0-d, y[k])
        Largest eigenpair of a symmetric tridiagonal matrix (the Lanczos step of the inertia path).
"""

from __future__ import annotations

from effrank_fast.ops import native
from effrank_fast.ops.gram import schema as _gram_schema  # noqa: F401  (defines gram_native, gram_check)
from effrank_fast.ops.inertia import schema as _inertia_schema  # noqa: F401  (inertia, tridiag_top)
from effrank_fast.ops.jacobi_eigh import schema as _jacobi_schema  # noqa: F401  (jacobi_eigh)
from effrank_fast.ops.library import LIB

# Every op of the library. The Triton ops register when their module is imported (only with Triton).
NATIVE_OPS = ("gram_native", "gram_check", "inertia", "tridiag_top", "jacobi_eigh")
TRITON_OPS = ("gram_triton", "gram_triton_accumulate", "kernel_triton", "linear_act_gram", "linear_act_gram_accumulate")
OPS = NATIVE_OPS + TRITON_OPS

__all__ = ["LIB", "NATIVE_OPS", "OPS", "TRITON_OPS"]

native._load()
