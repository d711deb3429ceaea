"""Schemas and fake kernels of ``effrank_fast::gram_native`` and ``effrank_fast::gram_check``
(implemented in csrc/gram/)."""

from __future__ import annotations

import torch

from effrank_fast.ops.gram import autograd
from effrank_fast.ops.library import LIB

LIB.define("gram_native(Tensor phi, Tensor? weights, bool center, ScalarType acc_dtype) -> Tensor")


@torch.library.register_fake("effrank_fast::gram_native")
def _gram_native_fake(phi, weights, center, acc_dtype):
    torch._check(phi.dim() == 2, lambda: f"phi must be [N, d], got {tuple(phi.shape)}")
    if weights is not None:
        torch._check(weights.shape == (phi.shape[0],), lambda: "weights must be [N]")
    d = phi.shape[1]
    return phi.new_empty((d, d), dtype=acc_dtype)


# (non-finite entries int64, max |M − Mᵀ|, max |M| over the finite pairs) as 0-d tensors: the
# one-pass CPU validation of validation.check_gram.
LIB.define("gram_check(Tensor gram) -> (Tensor, Tensor, Tensor)")


@torch.library.register_fake("effrank_fast::gram_check")
def _gram_check_fake(gram):
    return (
        gram.new_empty((), dtype=torch.int64),
        gram.new_empty((), dtype=torch.float64),
        gram.new_empty((), dtype=torch.float64),
    )


def _register_autograd() -> None:
    autograd.register("effrank_fast::gram_native", autograd.gram_backward)


_register_autograd()
