"""Schema and fake kernel of ``effrank_fast::jacobi_eigh`` (implemented in csrc/jacobi_eigh/)."""

from __future__ import annotations

import torch

from effrank_fast.ops.library import LIB

LIB.define("jacobi_eigh(Tensor a, int max_sweeps, float tol) -> (Tensor, Tensor, Tensor, Tensor)")


@torch.library.register_fake("effrank_fast::jacobi_eigh")
def _jacobi_eigh_fake(a, max_sweeps, tol):
    torch._check(a.dim() >= 2, lambda: f"a must be [..., n, n], got {tuple(a.shape)}")
    torch._check(a.shape[-1] == a.shape[-2], lambda: f"a must be square in its last two dims, got {tuple(a.shape)}")
    torch._check(a.dtype in (torch.float32, torch.float64), lambda: f"a must be float32 or float64, got {a.dtype}")
    batch = a.shape[:-2]
    n = a.shape[-1]
    return (
        a.new_empty((*batch, n)),
        a.new_empty((*batch, n, n)),
        a.new_empty(batch, dtype=torch.float64),
        a.new_empty(batch, dtype=torch.int64),
    )
