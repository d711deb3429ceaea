"""ε-counts from all eigenvalues: the oracle and the fallback of the inertia path."""

from __future__ import annotations

import torch


def symmetric_from_lower(gram: torch.Tensor) -> torch.Tensor:
    """The float64 symmetric matrix whose lower triangle is ``gram``'s (what every path reads)."""
    m = gram.double()
    idx = torch.arange(m.shape[0], device=m.device)
    # where() rather than tril(): CPU tril always fans out to the thread pool, which costs
    # milliseconds even for tiny matrices on a busy machine.
    return torch.where(idx.unsqueeze(1) >= idx.unsqueeze(0), m, m.mT)


def inertia_ref(gram: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """#{λ(M) > τ_e} for each threshold, from a float64 ``eigvalsh`` (lower triangle of M).

    Args:
        gram: M [d, d], symmetric.
        thresholds: τ [E].

    Returns:
        counts [E] int64 on ``gram``'s device.
    """
    lam = torch.linalg.eigvalsh(gram.double())
    return (lam.unsqueeze(0) > thresholds.to(lam).unsqueeze(1)).sum(1)
