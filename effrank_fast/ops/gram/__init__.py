"""Gram matrix M = Φᵀ diag(w) Φ through the selected backend.

See ``README.md`` in this folder for the error model (tensor-core accumulation bias, promotion).
"""

from __future__ import annotations

import torch

from effrank_fast.ops import backends
from effrank_fast.ops.gram.reference import gram_ref, weighted_mean

__all__ = ["compute_gram", "compute_grams", "default_acc_dtype", "gram_ref", "weighted_mean"]


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


def compute_grams(
    phis: list[torch.Tensor], weights: torch.Tensor | None, acc_dtype: torch.dtype, backend: str = "auto"
) -> tuple[torch.Tensor, str]:
    """The uncentred Grams of L features ``phis`` [N, d] of one shape, dtype and device sharing
    ``weights`` [N], stacked [L, d, d] in ``acc_dtype``, and the backend that formed them: one call
    of ``gram_stack_native`` on the native backend (each slice bitwise ``gram_native``'s), else
    :func:`compute_gram` per layer. Arguments are assumed validated."""
    name = backends.select_gram_backend(backend, phis[0].device, phis[0].dtype)
    if name == "native":
        return torch.ops.effrank_fast.gram_stack_native(phis, weights, acc_dtype), name
    formed = [compute_gram(phi, weights, False, acc_dtype, backend) for phi in phis]
    return torch.stack([m for m, _ in formed]), formed[0][1]
