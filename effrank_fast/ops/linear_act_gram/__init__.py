"""``linear_act_gram``: a Linear layer's activations h = act(x Wᵀ + b) and their Gram hᵀ diag(w) h.

Contract with the rank monitor ("fused" mode). The monitor captures the *input* x of a monitored
``nn.Linear`` (a forward pre-hook) and calls ``linear_act_gram(x, layer.weight, layer.bias, act,
gram_out=M, backend=...)`` under ``torch.no_grad()``, with the monitor's ``gram_backend`` ("native",
which this op lacks, becomes "auto"). The training forward is not touched: the layer still
runs its own matmul, so its output and gradients stay bit-identical to an unmonitored run. The
monitor's h is a recomputation: with 16-bit x it follows the unfused layer's rounding (linear output
rounded to x's dtype, activation in fp32 rounded to x's dtype), but the GEMM's summation order and
the activation's last fp32 bits differ from cuBLAS/torch, so an element of h can differ from the
layer's output by one unit in the last place. That is far inside the Gram's own error model
(ops/gram/README.md). Pass x and the weight in the dtype the layer computes in (under autocast:
cast both to the autocast dtype first). Math, backends and files: README.md in this folder.
"""

from __future__ import annotations

import torch

from effrank_fast.ops import backends
from effrank_fast.ops.linear_act_gram.reference import ACTIVATIONS, apply_activation, linear_act_gram_ref

__all__ = ["ACTIVATIONS", "apply_activation", "linear_act_gram", "linear_act_gram_ref"]


def _validate(x, weight, bias, act, gram_out, weights) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a [N, k] tensor with N ≥ 1, got {getattr(x, 'shape', type(x))}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must be [d, k] with k = {x.shape[1]}, got {getattr(weight, 'shape', type(weight))}")
    if not x.is_floating_point() or weight.dtype != x.dtype:
        raise TypeError(f"x and weight must share one floating dtype, got {x.dtype} and {weight.dtype}")
    d = weight.shape[0]
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (d,)):
        raise ValueError(f"bias must be None or a [d] = [{d}] tensor, got {getattr(bias, 'shape', type(bias))}")
    if bias is not None and bias.dtype != x.dtype:
        raise TypeError(f"bias must have x's dtype {x.dtype}, got {bias.dtype}")
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    if gram_out is not None:
        if not isinstance(gram_out, torch.Tensor) or gram_out.shape != (d, d):
            raise ValueError(f"gram_out must be a [d, d] = [{d}, {d}] tensor, got {getattr(gram_out, 'shape', None)}")
        if gram_out.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"gram_out must be float32 or float64, got {gram_out.dtype}")
        if gram_out.device != x.device:
            raise ValueError(f"gram_out is on {gram_out.device} but x is on {x.device}")
    if weights is not None:
        if not isinstance(weights, torch.Tensor) or weights.shape != (x.shape[0],):
            raise ValueError(f"weights must be a [N] = [{x.shape[0]}] tensor")
        if not weights.is_floating_point():
            raise TypeError(f"weights must be floating point, got {weights.dtype}")
    for name, t in (("weight", weight), ("bias", bias), ("weights", weights)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def linear_act_gram(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    act: str = "tanh",
    gram_out: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    return_activations: bool = False,
    *,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """h = act(x Wᵀ + b) [N, d] and M = hᵀ diag(w) h [d, d], fused into one launch where that pays.

    Args:
        x: layer input [N, k] (bfloat16/float16 for the fused kernel; float32/float64 run unfused).
        weight: layer weight [d, k], same dtype as x; bias: [d] or None.
        act: "identity", "tanh", "relu", "gelu" (exact, erf) or "sin".
        gram_out: accumulator [d, d] float32 (float64 runs unfused), mutated: gram_out += M.
        weights: sample weights [N] (None = 1). Uniform weights are applied in the epilogue.
        return_activations: also return h [N, d] in x's dtype.
        backend: "auto" (Triton on CUDA, else PyTorch), "triton" or "torch".

    Returns:
        M [d, d] float32 (``gram_out`` itself when given), or (M, h) with ``return_activations``.
        The Triton path adds row blocks with atomics (last bits vary between runs) unless
        ``torch.use_deterministic_algorithms(True)``: then one program per tile, bitwise reproducible.

    Example:
        >>> M = torch.zeros(128, 128, device="cuda")
        >>> linear_act_gram(x, layer.weight, layer.bias, "tanh", gram_out=M)  # M += hᵀh
    """
    _validate(x, weight, bias, act, gram_out, weights)
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    reason = backends.BACKENDS["triton"].why_not(x.device, x.dtype) if backend != "torch" else "backend='torch'"
    if backend == "auto" and x.device.type != "cuda":
        reason = reason or "the Triton interpreter is only used when asked for (backend='triton')"
    if (
        reason is None
        and torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in (x, weight, bias, weights, gram_out))
    ):  # the fused Triton kernels have no backward; the PyTorch path is differentiable
        reason = "the fused Triton kernels have no backward (inputs require grad; use torch.no_grad())"
    if reason is not None:
        if backend == "triton":
            raise backends.BackendUnavailableError(f"backend='triton' cannot run on {x.device.type}: {reason}")
        return linear_act_gram_ref(x, weight, bias, act, gram_out, weights, return_activations)
    from effrank_fast.ops.linear_act_gram.triton import linear_act_gram_triton

    m, h = linear_act_gram_triton(x, weight, bias, act, gram_out, weights, return_activations)
    if return_activations:
        assert h is not None
        return m, h
    return m
