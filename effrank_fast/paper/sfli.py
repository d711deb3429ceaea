"""Structured first-layer initialisation (SFLI): one call after building the model, before the optimiser.

SFLI is proposed in Tang, Yang, Zhao & Zhu, "Structured First-Layer Initialization Pre-Training
Techniques to Accelerate Training Process Based on ε-Rank" (arXiv:2507.11962), by the group of
Yang, Zhao & Zhu, "ε-rank and the Staircase Phenomenon" (arXiv:2412.05144), whose v3 proposes the
same idea as a pre-training of the initial hidden layer. The papers' full text was not available
to us (``docs/paper.md``, "SFLI"); the construction below follows what could be recovered
(the neurons of layer 1 are made ε-linearly independent by spreading their transition regions over
the input box Ω with one shape parameter γ) and states every choice where the recovered text is silent.

For a first layer ``Linear(d, n)`` on Ω = Π_j [lo_j, hi_j], neuron i computes σ(γ(α_i·x − α_i·p_i)):

- ``W_i = γ α_i`` and ``b_i = −γ α_i·p_i``, so its hyperplane {α_i·x + c_i = 0}, c_i = −α_i·p_i,
  passes through the point p_i and therefore always cuts Ω.
- γ = C (n^{1/d} − 1) / |Ω|^{1/d} by default (|Ω|^{1/d} is the characteristic length; the transition
  width 1/γ is then about the spacing of a grid of n points in Ω), or the given ``gamma``.
- ``kind="tanh"``: α_i uniform on the unit sphere (a standard Gaussian, normalised).
- ``kind="cosine"``: α_i ~ N(0, I_d), not normalised (frequencies γ‖α_i‖ vary), for sin/cos activations.
- ``kind="gaussian"``: α_i and p_i as for tanh, for a Gaussian activation exp(−z²): in one dimension the
  neuron is exactly the RBF exp(−γ²(x − p_i)²) centred at p_i; in d > 1 it is a Gaussian ridge across the
  hyperplane through p_i. A Linear layer followed by a pointwise activation cannot represent the radial
  exp(−γ²‖x − p_i‖²) of the paper's Gaussian variant; that needs an RBF layer, which this function does not
  build (the restriction is deliberate, not an approximation we hide).

Choices where the papers are silent (all ours): p_i ~ U(Ω) independently (not a lattice or a
low-discrepancy set); the hyperplane passes through p_i (a third-party implementation draws
c_i ~ U[0, |Ω|^{1/d}], which on Ω = [−1, 1] puts half the hyperplanes outside Ω); only the first layer
is touched (the rest keeps its initialisation); the weights are drawn in float64 on the CPU and
copied to the layer's device and dtype, so a ``generator`` makes the result reproducible anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["KINDS", "characteristic_length", "default_gamma", "sfli_"]

KINDS = ("tanh", "cosine", "gaussian")


def _check_bounds(bounds: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    try:
        out = [(float(lo), float(hi)) for lo, hi in bounds]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"bounds must be a list of (lo, hi) pairs, got {bounds!r}") from exc
    if not out:
        raise ValueError("bounds must name at least one input dimension")
    for j, (lo, hi) in enumerate(out):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds[{j}] = ({lo}, {hi}) must be finite with lo < hi")
    return out


def characteristic_length(bounds: Sequence[tuple[float, float]]) -> float:
    """|Ω|^{1/d} of the box Ω = Π_j [lo_j, hi_j]."""
    b = _check_bounds(bounds)
    return math.exp(sum(math.log(hi - lo) for lo, hi in b) / len(b))


def default_gamma(n: int, bounds: Sequence[tuple[float, float]], C: float = 1.0) -> float:
    """γ = C (n^{1/d} − 1) / |Ω|^{1/d} for n first-layer neurons on the box ``bounds``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (γ = 0 for one neuron), got {n!r}")
    if not (isinstance(C, (int, float)) and C > 0 and math.isfinite(C)):
        raise ValueError(f"C must be finite and > 0, got {C!r}")
    d = len(_check_bounds(bounds))
    return C * (n ** (1.0 / d) - 1.0) / characteristic_length(bounds)


@torch.no_grad()
def sfli_(
    linear: nn.Linear,
    bounds: Sequence[tuple[float, float]],
    *,
    kind: str = "tanh",
    C: float = 1.0,
    gamma: float | None = None,
    generator: torch.Generator | None = None,
) -> nn.Linear:
    """Overwrite ``linear``'s weight [n, d] and bias [n] in place with SFLI (module docstring); returns it.

    Args:
        linear: the first layer, ``nn.Linear(d, n)`` with a bias.
        bounds: the input box, one (lo, hi) per input dimension (d pairs).
        kind: "tanh", "cosine" or "gaussian".
        C: scale of the default γ; ignored when ``gamma`` is given.
        gamma: the shape parameter γ > 0 (default C (n^{1/d} − 1) / |Ω|^{1/d}).
        generator: a CPU ``torch.Generator`` for reproducible draws.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    if linear.bias is None:
        raise ValueError("linear must have a bias: SFLI sets the offsets γ c_i through it")
    box = _check_bounds(bounds)
    d, n = linear.in_features, linear.out_features
    if len(box) != d:
        raise ValueError(f"bounds has {len(box)} (lo, hi) pairs but linear has in_features = {d}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if gamma is None:
        g = default_gamma(n, box, C)
    elif isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be finite and > 0, got {gamma!r}")
    else:
        g = float(gamma)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    alpha = torch.randn(n, d, dtype=torch.float64, generator=generator)
    if kind != "cosine":
        alpha = alpha / alpha.norm(dim=1, keepdim=True)
    lo = torch.tensor([a for a, _ in box], dtype=torch.float64)
    hi = torch.tensor([b for _, b in box], dtype=torch.float64)
    points = lo + (hi - lo) * torch.rand(n, d, dtype=torch.float64, generator=generator)
    offsets = -(alpha * points).sum(dim=1)  # c_i = −α_i·p_i: the hyperplane passes through p_i ∈ Ω
    linear.weight.copy_(g * alpha)
    linear.bias.copy_(g * offsets)
    return linear
