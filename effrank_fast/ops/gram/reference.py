"""Pure-PyTorch Gram matrix: the always-available backend and the benchmark baseline."""

from __future__ import annotations

import torch

# Rows per chunk: bounds the upcast copy of low-precision features and the length of each
# accumulation before it is added to the running sum (a two-level summation).
CHUNK_ROWS = 8192


def weighted_mean(phi: torch.Tensor, weights: torch.Tensor | None, acc_dtype: torch.dtype) -> torch.Tensor:
    """μ = Σ_k w_k φ_k / Σ_k w_k, shape [d], in ``acc_dtype`` (w = 1 when ``weights`` is None)."""
    n, d = phi.shape
    total = torch.zeros(d, dtype=acc_dtype, device=phi.device)
    mass = torch.zeros((), dtype=acc_dtype, device=phi.device)
    for start in range(0, n, CHUNK_ROWS):
        chunk = phi[start : start + CHUNK_ROWS].to(acc_dtype)
        if weights is None:
            total += chunk.sum(0)
            mass += chunk.shape[0]
        else:
            w = weights[start : start + CHUNK_ROWS].to(acc_dtype)
            total += w @ chunk
            mass += w.sum()
    return total / mass


def gram_ref(
    phi: torch.Tensor,
    weights: torch.Tensor | None = None,
    center: bool = False,
    acc_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ) in ``acc_dtype``.

    Args:
        phi: features [N, d], any float dtype; upcast chunk by chunk, never as a whole.
        weights: quadrature weights [N] (already resolved: None means w = 1).
        center: subtract the w-weighted mean μ first (two passes over Φ, no cancellation).
        acc_dtype: float32 or float64 accumulation and output dtype.

    Returns:
        M: [d, d] symmetric, in ``acc_dtype``.
    """
    n, d = phi.shape
    mu = weighted_mean(phi, weights, acc_dtype) if center else None
    out = torch.zeros(d, d, dtype=acc_dtype, device=phi.device)
    for start in range(0, n, CHUNK_ROWS):
        chunk = phi[start : start + CHUNK_ROWS].to(acc_dtype)
        if mu is not None:
            chunk = chunk - mu
        if weights is not None:
            chunk = chunk * weights[start : start + CHUNK_ROWS].to(acc_dtype).sqrt().unsqueeze(1)
        out.addmm_(chunk.T, chunk)
    # Mirror the upper triangle so M is exactly symmetric whatever BLAS did.
    return torch.triu(out) + torch.triu(out, 1).T
