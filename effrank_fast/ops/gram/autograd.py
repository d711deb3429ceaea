"""Backward of the Gram ops (native and Triton), in plain PyTorch in the accumulation dtype.

For X = Φ − 1μᵀ (μ = Σ w_k φ_k / Σ w_k when centred, else 0), an upstream gradient G and S = G + Gᵀ:

* Gram M = Xᵀ diag(w) X [d, d]:
    dL/dΦ = diag(w) X S — the μ term vanishes since Σ_k w_k x_k = 0;
    dL/dw_k = x_kᵀ G x_k.
* kernel K = diag(√w) X Xᵀ diag(√w) [N, N], A = diag(√w) X:
    D = dL/dX = diag(√w) S A, dL/dΦ = D − (w/Σw) 1ᵀD (centred; the μ term does not vanish here);
    dL/dw_k = (S A Xᵀ)_kk / (2√w_k) − x_kᵀ Σ_j D_j / Σw (the last term only when centred).
  The gradient in w is infinite at w_k = 0 (√w is not differentiable there), as it is for the
  PyTorch backend.

Registered with ``torch.library.register_autograd`` on ``effrank_fast::gram_native`` (schema.py)
and on ``effrank_fast::gram_triton`` / ``effrank_fast::kernel_triton`` (triton.py). The mutating
``gram_triton_accumulate`` has no backward: :func:`refuse_grad` raises before it runs.
"""

from __future__ import annotations

from typing import Any

import torch

from effrank_fast.ops.gram.reference import weighted_mean

__all__ = ["gram_backward", "kernel_backward", "refuse_grad", "register", "setup_context"]


def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    phi, weights, center, acc_dtype = inputs
    ctx.save_for_backward(phi, weights)
    ctx.center, ctx.acc_dtype = center, acc_dtype


def _centred(phi: torch.Tensor, weights: torch.Tensor | None, center: bool, acc: torch.dtype) -> torch.Tensor:
    x = phi.detach().to(acc)
    if center:
        x = x - weighted_mean(phi.detach(), None if weights is None else weights.detach(), acc)
    return x


def _out(grad: torch.Tensor | None, like: torch.Tensor | None, need: bool) -> torch.Tensor | None:
    return grad.to(like.dtype) if need and grad is not None and like is not None else None


def gram_backward(ctx: Any, grad: torch.Tensor):
    phi, weights = ctx.saved_tensors
    acc = ctx.acc_dtype
    x = _centred(phi, weights, ctx.center, acc)
    g = grad.to(acc)
    s = g + g.mT
    w = None if weights is None else weights.detach().to(acc)
    need_phi, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    d_phi = d_w = None
    if need_phi:
        d_phi = (x if w is None else x * w.unsqueeze(1)) @ s
    if need_w:
        d_w = ((x @ g) * x).sum(1)
    return _out(d_phi, phi, need_phi), _out(d_w, weights, need_w), None, None


def kernel_backward(ctx: Any, grad: torch.Tensor):
    phi, weights = ctx.saved_tensors
    acc = ctx.acc_dtype
    x = _centred(phi, weights, ctx.center, acc)
    g = grad.to(acc)
    s = g + g.mT
    root = None if weights is None else weights.detach().to(acc).sqrt()
    a = x if root is None else x * root.unsqueeze(1)
    sa = s @ a  # [N, d] = dL/dA
    d_x = sa if root is None else sa * root.unsqueeze(1)
    need_phi, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    col = d_x.sum(0)  # Σ_j D_j [d]
    d_phi = d_w = None
    if need_phi:
        d_phi = d_x
        if ctx.center:
            w = torch.ones(x.shape[0], dtype=acc, device=x.device) if weights is None else weights.detach().to(acc)
            d_phi = d_x - (w / w.sum()).unsqueeze(1) * col
    if need_w and weights is not None and root is not None:
        w = weights.detach().to(acc)
        d_w = (sa * x).sum(1) / (2 * root)
        if ctx.center:
            d_w = d_w - (x @ col) / w.sum()
    return _out(d_phi, phi, need_phi), _out(d_w, weights, need_w), None, None


def register(op: str, backward) -> None:
    """``torch.library.register_autograd`` for one (phi, weights, center, acc_dtype) op."""
    torch.library.register_autograd(op, backward, setup_context=setup_context)


def refuse_grad(op: str, *tensors: torch.Tensor | None) -> None:
    """ValueError when autograd would need a backward that ``op`` (a mutating op) cannot have."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise ValueError(
            f"{op} accumulates into out= in place and has no backward; call it under torch.no_grad(), "
            "or use the out-of-place form (effrank_fast.gram or gram_triton without out=), which is differentiable"
        )
