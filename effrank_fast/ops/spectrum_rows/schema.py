"""Schema and fake kernel of ``effrank_fast::spectrum_rows`` (implemented in csrc/spectrum_rows/)."""

from __future__ import annotations

import torch

from effrank_fast.ops.library import LIB

LIB.define(
    "spectrum_rows(Tensor matrices, Tensor lam, Tensor gram_error, Tensor eps, int relative, int dim, "
    "float acc_unit_roundoff, int topk) -> (Tensor, Tensor)"
)


@torch.library.register_fake("effrank_fast::spectrum_rows")
def _spectrum_rows_fake(matrices, lam, gram_error, eps, relative, dim, acc_unit_roundoff, topk):
    shape = tuple(matrices.shape)
    torch._check(matrices.dim() == 3 and shape[1] == shape[2], lambda: f"matrices must be [L, n, n], got {shape}")
    torch._check(
        lam.numel() == 0 or tuple(lam.shape) == shape[:2],
        lambda: f"lam must be [L, n] = {shape[:2]} (or empty: solved by the kernel), got {tuple(lam.shape)}",
    )
    torch._check(lam.dtype == torch.float64, lambda: f"lam must be float64, got {lam.dtype}")
    torch._check(dim >= shape[1], lambda: f"dim must be at least n = {shape[1]}")
    width = 4 * eps.shape[0] + 7 + topk
    return lam.new_empty((shape[0], width)), lam.new_empty((shape[0], dim))
