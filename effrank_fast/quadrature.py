"""Quadrature grids on boxes, for the paper's M_ij = ∫_Ω φ_i φ_j dx (``mode="integral"``)."""

from __future__ import annotations

import torch

__all__ = ["trapezoid", "trapezoid_grid"]


def trapezoid(a: float, b: float, n: int, *, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """n equispaced points on [a, b] and trapezoid weights that sum to b − a.

    Returns:
        x: [n, 1] points; w: [n] weights (float64).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 for the trapezoid rule, got {n}")
    if not b > a:
        raise ValueError(f"need a < b, got a={a}, b={b}")
    x = torch.linspace(a, b, n, dtype=torch.float64)
    w = torch.full((n,), (b - a) / (n - 1), dtype=torch.float64)
    w[0] = w[-1] = 0.5 * (b - a) / (n - 1)
    return x.to(dtype).unsqueeze(1), w


def trapezoid_grid(
    bounds: list[tuple[float, float]], n: int | list[int], *, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor-product trapezoid rule on a box: points [Π n_i, dim] and weights summing to |Ω|."""
    ns = [n] * len(bounds) if isinstance(n, int) else list(n)
    if len(ns) != len(bounds):
        raise ValueError(f"n has {len(ns)} entries but bounds has {len(bounds)}")
    axes = [trapezoid(a, b, k, dtype=torch.float64) for (a, b), k in zip(bounds, ns, strict=True)]
    xs = torch.cartesian_prod(*[x.squeeze(1) for x, _ in axes]).reshape(-1, len(bounds))
    ws = axes[0][1]
    for _, w in axes[1:]:
        ws = torch.outer(ws, w).reshape(-1)
    return xs.to(dtype), ws
