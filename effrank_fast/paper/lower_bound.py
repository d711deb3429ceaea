"""A loss lower bound from the ε-rank of the last hidden layer (our formalisation, not the paper's theorem).

The paper (arXiv:2412.05144) proves that a *lower bound of the loss* falls as the ε-rank rises;
its exact statement was not recoverable (``docs/paper.md``). This module
implements the natural formalisation given there ("The loss lower bound"), in the discrete, quadrature-weighted norm
‖f‖²_w = Σ_k w_k f(x_k)² on a probe (x_k, w_k), where it is an exact inequality:

Let the output be linear in the last hidden layer, u_θ = c̃ᵀφ̃ with φ̃ = (φ_1..φ_n, 1) (the bias
b is the coefficient of the constant function) and c̃ = (c, b). Let M̃ = Φ̃ᵀ diag(w) Φ̃ =
Σ_k λ_k v_k v_kᵀ (λ descending), r = #{λ_k > ε}, g_k = Φ̃ v_k (w-orthogonal, ‖g_k‖²_w = λ_k) and
V_r = span{g_1..g_r}. The tail T = Σ_{k>r} (c̃ᵀv_k) g_k has ‖T‖²_w = Σ_{k>r} (c̃ᵀv_k)² λ_k ≤ ε‖c̃‖²,
and u_θ − T lies in V_r, so for any target u

    ‖u − u_θ‖_w ≥ dist_w(u, V_r) − √ε ‖c̃‖₂,   L_w(θ) := ‖u − u_θ‖²_w ≥ (dist_w(u, V_r) − √ε ‖c̃‖₂)₊².

With trapezoid weights summing to |Ω| this approximates L²(Ω); with w = |Ω|/N it is the Monte Carlo
version. For several outputs (c̃ of shape [m, n+1], u of shape [N, m]) the bound is summed over
outputs. r here counts the features *with* the constant column, so it can exceed the monitor's
ε-rank of the hidden features alone by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["LowerBound", "loss_lower_bound", "readout_coefficients", "span_distance", "weighted_l2_error"]


@dataclass
class LowerBound:
    eps: float
    rank: int  # r = #{λ(M̃) > ε}, features with the constant column
    dist: float  # dist_w(u, V_r), summed in quadrature over outputs
    c_norm: float  # ‖c̃‖₂ (Frobenius over outputs): output weights and bias
    slack: float  # √ε ‖c̃‖₂ (Frobenius over outputs)
    bound: float  # Σ over outputs i of (dist_i − √ε ‖c̃_i‖)₊²

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def readout_coefficients(readout: nn.Linear) -> torch.Tensor:
    """c̃ = [W | b] of the output layer, [m, n + 1] float64 (b = 0 without a bias)."""
    if not isinstance(readout, nn.Linear):
        raise TypeError(f"readout must be an nn.Linear, got {type(readout).__name__}")
    w = readout.weight.detach().double()
    b = readout.bias.detach().double() if readout.bias is not None else w.new_zeros(w.shape[0])
    return torch.cat([w, b[:, None]], dim=1)


def _weighted(phi: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if phi.ndim != 2:
        raise ValueError(f"phi must be [N, n], got shape {tuple(phi.shape)}")
    w = weights.detach().double().reshape(-1)
    if w.shape[0] != phi.shape[0]:
        raise ValueError(f"weights has {w.shape[0]} entries but phi has {phi.shape[0]} rows")
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
        raise ValueError("weights must be finite and >= 0")
    ones = phi.new_ones(phi.shape[0], 1)
    a = torch.cat([phi.detach().double(), ones.double()], dim=1) * w.sqrt()[:, None]
    return a, w.sqrt()


def _eps_list(eps: float | Sequence[float]) -> list[float]:
    out = [eps] if isinstance(eps, (int, float)) else list(eps)
    for e in out:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not (e > 0 and math.isfinite(e)):
            raise ValueError(f"eps must be finite and > 0, got {e!r}")
    return [float(e) for e in out]


def _targets(u: torch.Tensor, n: int) -> torch.Tensor:
    u = u.detach().double()
    if u.ndim == 1:
        u = u[:, None]
    if u.ndim != 2 or u.shape[0] != n:
        raise ValueError(f"u must be [N] or [N, m] with N = {n}, got shape {tuple(u.shape)}")
    return u


def span_distance(
    phi: torch.Tensor, u: torch.Tensor, weights: torch.Tensor, eps: float | Sequence[float]
) -> list[tuple[int, torch.Tensor]]:
    """(r, dist_w(u_i, V_r) per output [m]) for each ε; V_r from the features *with* a constant column.

    Args:
        phi: last-hidden-layer features on the probe [N, n]; u: target on the probe [N] or [N, m];
        weights: quadrature weights [N]; eps: one or several absolute thresholds.
    """
    a, sw = _weighted(phi, weights)
    b = _targets(u, a.shape[0]) * sw[:, None]
    lam, vec = torch.linalg.eigh(a.T @ a)
    lam, vec = lam.flip(0), vec.flip(1)
    out = []
    for e in _eps_list(eps):
        r = int((lam > e).sum())
        q = a @ vec[:, :r] / lam[:r].sqrt()  # orthonormal basis of V_r in the weighted norm
        resid = b - q @ (q.T @ b)
        resid = resid - q @ (q.T @ resid)  # second Gram–Schmidt pass: the columns are only as orthogonal as eigh
        out.append((r, resid.norm(dim=0)))
    return out


def weighted_l2_error(pred: torch.Tensor, u: torch.Tensor, weights: torch.Tensor) -> float:
    """‖u − u_θ‖²_w = Σ_k w_k |u(x_k) − u_θ(x_k)|² (summed over outputs), float64."""
    d = _targets(u, pred.shape[0]) - _targets(pred, pred.shape[0])
    return float((weights.detach().double().reshape(-1, 1) * d**2).sum())


def loss_lower_bound(
    phi: torch.Tensor,
    u: torch.Tensor,
    weights: torch.Tensor,
    coefficients: torch.Tensor,
    eps: float | Sequence[float],
) -> list[LowerBound]:
    """The bound (dist_w(u, V_r) − √ε‖c̃‖)₊² on ‖u − u_θ‖²_w for each ε (see the module docstring).

    Args:
        phi: features [N, n] of the layer the readout reads; u: target [N] or [N, m];
        weights: quadrature weights [N]; coefficients: c̃ [m, n + 1] (:func:`readout_coefficients`);
        eps: one or several absolute thresholds.
    """
    c = coefficients.detach().double()
    if c.ndim == 1:
        c = c[None]
    if c.shape[1] != phi.shape[1] + 1:
        raise ValueError(f"coefficients must be [m, n + 1] = [m, {phi.shape[1] + 1}], got {tuple(c.shape)}")
    c_norms = c.norm(dim=1)
    out = []
    eps_list = _eps_list(eps)
    for e, (r, dist) in zip(eps_list, span_distance(phi, u, weights, eps_list), strict=True):
        if dist.shape[0] != c.shape[0]:
            raise ValueError(f"u has {dist.shape[0]} outputs but coefficients has {c.shape[0]}")
        slack = math.sqrt(e) * c_norms
        bound = float((dist - slack).clamp(min=0).pow(2).sum())
        out.append(
            LowerBound(
                eps=float(e),
                rank=r,
                dist=float(dist.norm()),
                c_norm=float(c_norms.norm()),
                slack=float(slack.norm()),
                bound=bound,
            )
        )
    return out
