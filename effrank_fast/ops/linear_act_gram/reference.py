"""Pure-PyTorch ``linear_act_gram``: the unfused definition, fallback and benchmark baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from effrank_fast.ops.gram.reference import gram_ref

ACTIVATIONS = ("identity", "tanh", "relu", "gelu", "sin")


def apply_activation(z: torch.Tensor, act: str) -> torch.Tensor:
    """torch's own activation, in z's dtype (gelu is the exact, erf-based one)."""
    if act == "identity":
        return z
    if act == "tanh":
        return torch.tanh(z)
    if act == "relu":
        return torch.relu(z)
    if act == "gelu":
        return F.gelu(z)
    if act == "sin":
        return torch.sin(z)
    raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")


def linear_act_gram_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    act: str = "tanh",
    gram_out: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    return_activations: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """h = act(x Wᵀ + b) by torch in x's dtype, then M = hᵀ diag(w) h (fp32 unless ``gram_out`` is fp64).

    Args:
        x: layer input [N, k]; weight [d, k]; bias [d] or None.
        act: one of ``ACTIVATIONS``.
        gram_out: accumulator [d, d] (float32/float64), updated in place (gram_out += M) when given.
        weights: sample weights [N] (None = 1).
        return_activations: also return h [N, d].

    Returns:
        M [d, d] (``gram_out`` itself when given), or (M, h).
    """
    h = apply_activation(F.linear(x, weight, bias), act)
    acc = gram_out.dtype if gram_out is not None else torch.float32
    m = gram_ref(h, weights, False, acc)
    if gram_out is not None:
        gram_out += m
        m = gram_out
    return (m, h) if return_activations else m
