"""Schema and fake kernel of ``effrank_fast::spectrum_scalars`` (implemented in csrc/spectrum_scalars/)."""

from __future__ import annotations

import torch

from effrank_fast.ops.library import LIB

LIB.define("spectrum_scalars(Tensor lam, Tensor floor, Tensor error_fro) -> Tensor")


@torch.library.register_fake("effrank_fast::spectrum_scalars")
def _spectrum_scalars_fake(lam, floor, error_fro):
    shape = tuple(lam.shape)
    torch._check(lam.dim() >= 1 and lam.shape[-1] >= 1, lambda: f"lam must be [..., d] with d >= 1, got {shape}")
    torch._check(lam.dtype == torch.float64, lambda: f"lam must be float64, got {lam.dtype}")
    torch._check(floor.shape == lam.shape[:-1], lambda: f"floor must have lam's batch shape {shape[:-1]}")
    torch._check(error_fro.shape == lam.shape[:-1], lambda: f"error_fro must have lam's batch shape {shape[:-1]}")
    return lam.new_empty((*lam.shape[:-1], 6))
