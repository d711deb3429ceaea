"""Gram matrix M = Φᵀ diag(w) Φ through the selected backend.

See ``README.md`` in this folder for the error model (tensor-core accumulation bias, promotion).
"""

from __future__ import annotations

import torch

from effrank_fast.ops import backends
from effrank_fast.ops.gram.reference import gram_ref, weighted_mean

__all__ = ["compute_gram", "default_acc_dtype", "gram_ref", "weighted_mean"]


def default_acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 features keep float64; everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def compute_gram(
    phi: torch.Tensor,
    weights: torch.Tensor | None,
    center: bool,
    acc_dtype: torch.dtype,
    backend: str = "auto",
) -> tuple[torch.Tensor, str]:
    """M [d, d] in ``acc_dtype`` and the name of the backend that formed it.

    ``phi`` [N, d] and ``weights`` [N] (None = unit weights) are assumed validated.
    """
    name = backends.select_gram_backend(backend, phi.device, phi.dtype)
    if name == "native":
        return torch.ops.effrank_fast.gram_native(phi, weights, center, acc_dtype), name
    if name == "triton":
        from effrank_fast.ops.gram.triton import gram_triton

        return gram_triton(phi, weights, center, acc_dtype), name
    return gram_ref(phi, weights, center, acc_dtype), name
