"""Schemas and fake kernels of ``effrank_fast::gram_native``, ``effrank_fast::gram_stack_native`` and
``effrank_fast::gram_check`` (implemented in csrc/gram/)."""

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


# The uncentred Grams of L features of one shape [N, d] sharing weights, stacked [L, d, d]; each
# slice bitwise gram_native's (CPU only; the monitor's measured step: one call for all its layers).
# No autograd: what it serves measures detached features.
LIB.define("gram_stack_native(Tensor[] phis, Tensor? weights, ScalarType acc_dtype) -> Tensor")


@torch.library.register_fake("effrank_fast::gram_stack_native")
def _gram_stack_native_fake(phis, weights, acc_dtype):
    torch._check(len(phis) > 0, lambda: "phis must hold at least one [N, d] tensor")
    first = phis[0]
    torch._check(first.dim() == 2, lambda: f"phis[0] must be [N, d], got {tuple(first.shape)}")
    for phi in phis[1:]:
        torch._check(phi.shape == first.shape, lambda: "phis must share one shape")
    d = first.shape[1]
    return first.new_empty((len(phis), d, d), dtype=acc_dtype)


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
