"""Schema and fake kernel of ``effrank_fast::inertia`` (implemented in csrc/inertia/)."""

from __future__ import annotations

import torch

from effrank_fast._ops import LIB

LIB.define(
    "inertia(Tensor gram, Tensor thresholds, float band_rel, int block_size) -> (Tensor, Tensor, Tensor, Tensor)"
)


@torch.library.register_fake("effrank_fast::inertia")
def _inertia_fake(gram, thresholds, band_rel, block_size):
    torch._check(gram.dim() == 2 and gram.shape[0] == gram.shape[1], lambda: "gram must be [d, d]")
    torch._check(thresholds.dim() == 1, lambda: "thresholds must be [E]")
    e = thresholds.shape[0]
    return (
        thresholds.new_empty((e,), dtype=torch.int64),
        thresholds.new_empty((e,), dtype=torch.float64),
        thresholds.new_empty((e,), dtype=torch.float64),
        thresholds.new_empty((e,), dtype=torch.int64),
    )
