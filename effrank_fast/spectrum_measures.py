"""Measures that summarise the whole spectrum of M: entropy rank, stable rank, participation ratio,
and :func:`measures` (everything from one eigendecomposition). Conventions: :mod:`effrank_fast.measures`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from effrank_fast import _validate, spectral
from effrank_fast._prepare import eigenvalues_desc, prepare

__all__ = ["Measures", "entropy_rank", "measures", "measures_from_eigenvalues", "participation_ratio", "stable_rank"]


def entropy_rank(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Entropy effective rank exp(−Σ p log p), p = σ/Σσ, σ = √λ(M) (Roy–Vetterli; RankMe). 0-d float64."""
    sp = prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    return spectral.entropy_rank_from_eigenvalues(eigenvalues_desc(sp))


def stable_rank(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Stable rank tr M / λ_max (= ‖Φ_w‖_F² / ‖Φ_w‖₂²). 0-d float64."""
    sp = prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    return spectral.stable_rank_from_eigenvalues(eigenvalues_desc(sp))


def participation_ratio(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Participation ratio (tr M)² / ‖M‖_F², from the matrix entries (no eigensolver). 0-d float64."""
    sp = prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    m = sp.matrix.double()
    return spectral.participation_ratio_from_moments(m.diagonal().sum(), m.square().sum())


@dataclass
class Measures:
    """All measures from one spectrum. Tensors stay on the input's device.

    Attributes:
        eps: ε values [E] (float64) as given; ``relative`` says how they were scaled.
        thresholds: the absolute thresholds τ [E] that were applied.
        eps_rank: #{λ > τ_e} [E] int64.
        entropy_rank, stable_rank, participation_ratio, lambda_max, trace: 0-d float64.
        eigenvalues: all d eigenvalues, descending, float64.
        mode, center, n, d: the conventions and sizes used (n is None for gram= input).
    """

    eps: torch.Tensor
    relative: str | None
    thresholds: torch.Tensor
    eps_rank: torch.Tensor
    entropy_rank: torch.Tensor
    stable_rank: torch.Tensor
    participation_ratio: torch.Tensor
    lambda_max: torch.Tensor
    trace: torch.Tensor
    eigenvalues: torch.Tensor
    mode: str
    center: bool
    n: int | None
    d: int
    backend: str = field(default="torch")

    def topk(self, k: int) -> torch.Tensor:
        """The k largest eigenvalues [min(k, d)], descending."""
        return self.eigenvalues[:k]

    def to_dict(self) -> dict[str, object]:
        """Plain Python numbers (this synchronises with the device)."""
        return {
            "eps": self.eps.tolist(),
            "relative": self.relative,
            "thresholds": self.thresholds.tolist(),
            "eps_rank": self.eps_rank.tolist(),
            "entropy_rank": float(self.entropy_rank),
            "stable_rank": float(self.stable_rank),
            "participation_ratio": float(self.participation_ratio),
            "lambda_max": float(self.lambda_max),
            "trace": float(self.trace),
            "mode": self.mode,
            "center": self.center,
            "n": self.n,
            "d": self.d,
            "backend": self.backend,
        }


def measures_from_eigenvalues(
    lam: torch.Tensor,
    eps: torch.Tensor,
    relative: str | None,
    *,
    mode: str,
    center: bool,
    n: int | None,
    backend: str,
) -> Measures:
    """Every measure from one descending float64 spectrum ``lam`` [d] (no host sync)."""
    lam_max, trace = lam[0], lam.sum()
    eps = eps.to(lam.device)
    tau = spectral.thresholds_for(eps, relative, lam_max, trace)
    return Measures(
        eps=eps,
        relative=relative,
        thresholds=tau,
        eps_rank=spectral.eps_counts(lam, tau),
        entropy_rank=spectral.entropy_rank_from_eigenvalues(lam),
        stable_rank=spectral.stable_rank_from_eigenvalues(lam),
        participation_ratio=spectral.participation_ratio_from_eigenvalues(lam),
        lambda_max=lam_max,
        trace=trace,
        eigenvalues=lam,
        mode=mode,
        center=center,
        n=n,
        d=lam.shape[0],
        backend=backend,
    )


def measures(
    phi: torch.Tensor | None = None,
    eps: float | list[float] | torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    relative: str | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> Measures:
    """Every measure from one float64 eigendecomposition; see :class:`Measures`."""
    eps_vals, _ = _validate.check_eps(eps)
    relative = _validate.check_relative(relative)
    sp = prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    return measures_from_eigenvalues(
        eigenvalues_desc(sp), eps_vals, relative, mode=mode, center=center, n=sp.n, backend=sp.backend
    )
