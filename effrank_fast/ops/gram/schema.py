"""Schema and fake kernel of ``effrank_fast::gram_native`` (implemented in csrc/gram/)."""

from __future__ import annotations

import torch

from effrank_fast._ops import LIB

LIB.define("gram_native(Tensor phi, Tensor? weights, bool center, ScalarType acc_dtype) -> Tensor")


@torch.library.register_fake("effrank_fast::gram_native")
def _gram_native_fake(phi, weights, center, acc_dtype):
    torch._check(phi.dim() == 2, lambda: f"phi must be [N, d], got {tuple(phi.shape)}")
    if weights is not None:
        torch._check(weights.shape == (phi.shape[0],), lambda: "weights must be [N]")
    d = phi.shape[1]
    return phi.new_empty((d, d), dtype=acc_dtype)


def _register_autograd() -> None:
    from effrank_fast.ops.gram import autograd

    autograd.register("effrank_fast::gram_native", autograd.gram_backward)


_register_autograd()
