"""Schemas and fake (meta) kernels of the native ops, registered before the extension loads.

Each op package holds its schema in ``effrank_fast/ops/<op>/schema.py`` (defined on ``LIB``);
native code under ``csrc/<op>/`` only *implements* it (``TORCH_LIBRARY_IMPL``). The schema and
the shape logic live in Python, so ``torch.compile`` and ``opcheck`` work whether or not ``_C`` loaded.
The extension is loaded at the end of this module, after the schemas exist.

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

import importlib
import pkgutil

import torch

from effrank_fast import _native

LIB = torch.library.Library("effrank_fast", "FRAGMENT")


def _define_all() -> None:
    """Import every ``effrank_fast/ops/<op>/schema.py``; each defines its ops on ``LIB``."""
    import effrank_fast.ops as ops_pkg

    for info in sorted(pkgutil.iter_modules(ops_pkg.__path__), key=lambda i: i.name):
        if info.ispkg:
            try:
                importlib.import_module(f"effrank_fast.ops.{info.name}.schema")
            except ModuleNotFoundError as exc:
                if exc.name != f"effrank_fast.ops.{info.name}.schema":
                    raise


_define_all()
_native._load()
