"""Rank measures as functions of a spectrum λ (eigenvalues of M, any order, float64).

Conventions (shared by every entry point):

- ε-rank: #{λ_i > τ} with τ = ε (absolute), ε·λ_max (``relative="max"``) or ε·tr M
  (``relative="trace"``). Strict inequality: an eigenvalue equal to τ is not counted.
- entropy rank (Roy–Vetterli 2007; RankMe, Garrido et al. 2023): exp(−Σ p_i log p_i) with
  p_i = σ_i / Σσ and σ_i = √max(λ_i, 0), the singular values of diag(√w)Φ. No ε inside the log:
  0·log 0 = 0. A zero spectrum has entropy rank 0.
- stable rank: tr M / λ_max. Participation ratio: (tr M)² / ‖M‖_F² = (Σλ)² / Σλ².
  Both are 0 for a zero matrix.

Tiny negative eigenvalues (rounding of a PSD matrix) count as 0 in σ, and are kept in tr M and
‖M‖_F, which are exact functions of the matrix entries.
"""

from __future__ import annotations

import torch

__all__ = [
    "entropy_rank_from_eigenvalues",
    "eps_counts",
    "participation_ratio_from_eigenvalues",
    "stable_rank_from_eigenvalues",
    "thresholds_for",
]


def thresholds_for(eps: torch.Tensor, relative: str | None, lam_max: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    """Absolute thresholds τ [E] for ε [E] under the ``relative`` convention (device tensors)."""
    if relative is None:
        return eps
    if relative == "max":
        return eps * lam_max
    return eps * trace


def eps_counts(lam: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """#{λ > τ_e} for each τ_e: int64 [E]."""
    return (lam.unsqueeze(0) > thresholds.to(lam).unsqueeze(1)).sum(1)


def entropy_rank_from_eigenvalues(lam: torch.Tensor) -> torch.Tensor:
    sigma = lam.clamp(min=0).sqrt()
    total = sigma.sum()
    p = sigma / torch.where(total > 0, total, torch.ones_like(total))
    h = -torch.special.xlogy(p, p).sum()
    return torch.where(total > 0, h.exp(), torch.zeros_like(h))


def stable_rank_from_eigenvalues(lam: torch.Tensor) -> torch.Tensor:
    lam_max = lam.max()
    tr = lam.sum()
    return torch.where(lam_max > 0, tr / torch.where(lam_max > 0, lam_max, torch.ones_like(lam_max)), 0 * tr)


def participation_ratio_from_eigenvalues(lam: torch.Tensor) -> torch.Tensor:
    return participation_ratio_from_moments(lam.sum(), lam.square().sum())


def participation_ratio_from_moments(trace: torch.Tensor, frob_sq: torch.Tensor) -> torch.Tensor:
    """(tr M)² / ‖M‖_F², 0 when M = 0."""
    safe = torch.where(frob_sq > 0, frob_sq, torch.ones_like(frob_sq))
    return torch.where(frob_sq > 0, trace.square() / safe, torch.zeros_like(trace))
