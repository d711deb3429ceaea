"""Pure-PyTorch Gram matrix: the always-available backend and the benchmark baseline."""

from __future__ import annotations

import torch

# Rows per chunk: bounds the upcast copy of low-precision features and the length of each
# accumulation before it is added to the running sum (a two-level summation).
CHUNK_ROWS = 8192
# Diagonal blocks up to this many columns are one full GEMM; above, the upper triangle is split.
LEAF_COLS = 256


def add_upper_gram_(out: torch.Tensor, x: torch.Tensor, lo: int = 0, hi: int | None = None) -> None:
    """out[lo:hi, lo:hi]'s upper triangle (and some of the lower) += xᵀx, x [rows, d].

    Recursive blocks: the off-diagonal block is one GEMM, the diagonal blocks recurse down to
    ``LEAF_COLS``: ½ + ½^L/2 of the full product's flops after L levels (⅝ at d = 1024).
    """
    hi = x.shape[1] if hi is None else hi
    size = hi - lo
    if size <= LEAF_COLS:
        xs = x[:, lo:hi]
        out[lo:hi, lo:hi].addmm_(xs.T, xs)
        return
    mid = lo + (size // 2 + 63) // 64 * 64  # blocks stay multiples of 64 columns
    add_upper_gram_(out, x, lo, mid)
    out[lo:mid, mid:hi].addmm_(x[:, lo:mid].T, x[:, mid:hi])
    add_upper_gram_(out, x, mid, hi)


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
        add_upper_gram_(out, chunk)
    # Mirror the upper triangle so M is exactly symmetric whatever BLAS did.
    return torch.triu(out) + torch.triu(out, 1).T
