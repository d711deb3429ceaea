"""Every op of the ``effrank_fast`` library: the native schemas registered, the extension loaded.

Each op package holds its schema: ``effrank_fast/ops/<op>/schema.py`` for the native ops (defined
on ``effrank_fast.ops.library.LIB`` with their fake kernels), the ``triton_op`` decorators in
``ops/<op>/triton.py`` for the Triton ones. Native code under ``csrc/<op>/`` only *implements* a
schema (``TORCH_LIBRARY_IMPL``), so ``torch.compile`` and ``opcheck`` work whether or not ``_C``
loaded; this module imports the schemas, then loads the extension. ``OPS`` lists every op;
``tests/test_layout.py`` checks it against what ``torch.ops.effrank_fast`` holds. The math of each
op is in ``ops/<op>/README.md``.

Native ops (schema here at import; kernels in ``effrank_fast._C`` when it is built):
    gram_native(phi[N, d], weights[N]?, center, acc_dtype) -> M[d, d]            CPU
        M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ), μ the w-weighted mean when ``center``;
        accumulated in ``acc_dtype`` (float32 or float64) over row chunks.
    gram_stack_native(phis[L × [N, d]], weights[N]?, acc_dtype) -> M[L, d, d]     CPU
        The uncentred Grams of L features of one shape in one call; each slice is gram_native's.
    gram_check(gram[d, d]) -> (non_finite 0-d int64, max |M − Mᵀ| 0-d f64, max |M| 0-d f64)   CPU
        One pass over a Gram matrix for input validation (ops/validation.py).
    inertia(gram[d, d], thresholds[E], block_size)                               CPU, CUDA
        -> (counts[E] int64, min_pivot_rel[E] f64, growth[E] f64, band_counts[E] int64,
            error_bound[E] f64, scale[E] f64, max_abs_l[E] f64)
        Sylvester inertia of M − τ_e I by a pivot-free blocked LDLᵀ in float64: counts[e] is
        #{λ(M) > τ_e}, exact unless an eigenvalue lies within error_bound[e] of τ_e; the
        diagnostics are defined in effrank_fast/ops/inertia/schema.py (docs/inertia.md).
    tridiag_top(alpha[k], beta[k-1]) -> (theta 0-d, y[k])                         CPU, CUDA
        Largest eigenpair of a symmetric tridiagonal matrix (the Lanczos step of the inertia path).
    jacobi_eigh(a[..., n, n], max_sweeps, tol) -> (w[..., n], V[..., n, n], off[...] f64, sweeps[...] int64)
        Blocked parallel-order Jacobi eigendecomposition of small symmetric matrices   CPU, CUDA
    spectrum_scalars(lam[..., d] f64, floor[...], error_fro[...]) -> out[..., 6] f64            CPU
        Entropy, stable and participation rank, λ_max, trace and the entropy rank's sensitivity
        of each spectrum under the noise floor (ops/spectrum_scalars/README.md).
    spectrum_rows(matrices[L, n, n], lam[L, n] f64, gram_error[L], eps[E], relative, dim, acc_u, topk)
        -> (rows[L, 4E + 7 + topk] f64, lam_desc[L, dim] f64)                                     CPU
        The exact engine's row of each solved spectrum: certified ε-counts with bounds, the
        spectrum_scalars, the top eigenvalues (ops/spectrum_rows/README.md).

Triton ops (registered when ``ops/gram/triton.py`` / ``ops/linear_act_gram/triton.py`` import):
    gram_triton(phi[N, d], weights[N]?, center, acc_dtype) -> M[d, d]
        The Gram matrix by a promoted tensor-core SYRK (ops/gram/README.md).
    gram_triton_accumulate(phi[N, d], weights[N]?, center, out[d, d]!) -> ()
        out += M, in place (micro-batches, EMA).
    kernel_triton(phi[N, d], weights[N]?, center, acc_dtype) -> K[N, N]
        K = diag(√w)(Φ − 1μᵀ)(Φ − 1μᵀ)ᵀdiag(√w): M's non-zero spectrum when N < d.
    linear_act_gram(x[N, k], weight[d, k], bias[d]?, act, weights[N]?, return_activations)
        -> (M[d, d] f32, h[N, d] or [0])
        h = act(x Wᵀ + b) and M = hᵀ diag(w) h in one launch (ops/linear_act_gram/README.md).
    linear_act_gram_accumulate(x, weight, bias?, act, gram_out[d, d]!, weights?, return_activations) -> h
        gram_out += M, in place.
"""

from __future__ import annotations

from effrank_fast.ops import native
from effrank_fast.ops.gram import schema as _gram_schema  # noqa: F401  (gram_native, gram_stack_native, gram_check)
from effrank_fast.ops.inertia import schema as _inertia_schema  # noqa: F401  (inertia, tridiag_top)
from effrank_fast.ops.jacobi_eigh import schema as _jacobi_schema  # noqa: F401  (jacobi_eigh)
from effrank_fast.ops.library import LIB
from effrank_fast.ops.spectrum_rows import schema as _spectrum_rows_schema  # noqa: F401  (spectrum_rows)
from effrank_fast.ops.spectrum_scalars import schema as _spectrum_scalars_schema  # noqa: F401  (spectrum_scalars)

# Every op of the library. The Triton ops register when their module is imported (only with Triton).
NATIVE_OPS = (
    "gram_native",
    "gram_stack_native",
    "gram_check",
    "inertia",
    "tridiag_top",
    "jacobi_eigh",
    "spectrum_scalars",
    "spectrum_rows",
)
TRITON_OPS = ("gram_triton", "gram_triton_accumulate", "kernel_triton", "linear_act_gram", "linear_act_gram_accumulate")
OPS = NATIVE_OPS + TRITON_OPS

__all__ = ["LIB", "NATIVE_OPS", "OPS", "TRITON_OPS"]

native._load()
