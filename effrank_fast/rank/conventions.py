"""The peers' rank conventions as named options, so that their users get the same numbers.

Each preset sets the entropy-rank keywords of :func:`effrank_fast.entropy_rank` /
:func:`effrank_fast.measures` (``entropy_rank(phi, convention="reptrix")``); the functions below
also reproduce each peer's full recipe. Φ [N, d], σ its singular values, λ = σ² up to a scale
(the entropy ranks are scale-free). Sources: each peer's code as read in 2026-12
(docs/measures.md, "The peers' conventions"); tests/test_conventions.py checks every preset side by side with
the installed peer, or with its formula as written where the peer does not import.

=====================  ==========================================================  ======  ================
preset                 entropy rank                                                centred components
=====================  ==========================================================  ======  ================
"roy-vetterli"         exp(−Σ p log p), p = σ/Σσ (the default; RankMe paper)         no      all (d)
"reptrix"              exp(−Σ q log q), q = λ/Σλ + 1e-7 (reptrix 0.1.0 get_rankme,     yes     min(2048, N, d)
                       sklearn PCA explained_variance_ratio_)
"stable-pretraining"   exp(−Σ q log q), q = σ/Σσ + 1e-5 (stable-pretraining 0.1.8     no      min(N, d)
                       callbacks/rankme.py, svdvals)
"monai"                exp(−Σ p log p), p = σ/Σσ of the centred matrix (MONAI 1.6.1    yes     min(N, d)
                       metrics/embedding_collapse.py; see monai_effective_rank_score)
=====================  ==========================================================  ======  ================

Our noise-floor rule (:mod:`effrank_fast.rank.formulas`) still applies: eigenvalues at or below the
Gram's floor count as 0 (then q = fudge for them), where a peer's SVD returns rounding-level
values. The difference is at the peer's own rounding level (its float32 SVD: ~1e-6 relative).
"""

from __future__ import annotations

import math

import torch

from effrank_fast.ops import validation
from effrank_fast.rank.presets import PRESETS, Preset, preset
from effrank_fast.rank.spectrum import entropy_rank

__all__ = [
    "PRESETS",
    "Preset",
    "monai_effective_rank_score",
    "preset",
    "reptrix_rankme",
    "stable_pretraining_rankme",
    "weightwatcher_entropy",
    "weightwatcher_matrix_rank",
]


def reptrix_rankme(phi: torch.Tensor, **kwargs) -> torch.Tensor:
    """reptrix's RankMe: exp(−Σ q log q), q_i = λ_i/Σ_{j≤k} λ_j + 1e-7 over the k = min(2048, N, d)
    largest eigenvalues of the centred covariance (reptrix 0.1.0 ``get_rankme``). 0-d float64."""
    return entropy_rank(phi, convention="reptrix", **kwargs)


def stable_pretraining_rankme(phi: torch.Tensor, **kwargs) -> torch.Tensor:
    """stable-pretraining's RankMe callback: exp(−Σ q log q), q = σ/Σσ + 1e-5 over the min(N, d)
    singular values of the uncentred features. 0-d float64."""
    return entropy_rank(phi, convention="stable-pretraining", **kwargs)


def monai_effective_rank_score(phi: torch.Tensor, **kwargs) -> torch.Tensor:
    """MONAI's dimensional-collapse score clamp(1 − erank / min(N − 1, d), 0, 1), erank the σ-based
    entropy rank of the centred features (1 = collapsed; a constant matrix gives 1). 0-d float64.

    MONAI's docstring says Σσ/max σ; its code computes the entropy rank, which is what this follows.
    Needs N ≥ 2 (MONAI raises too).
    """
    validation.check_features(phi, check_finite=False)
    n, d = phi.shape
    if n < 2:
        raise ValueError(f"phi needs N ≥ 2 samples for MONAI's score (rank ≤ N − 1 after centring), got N = {n}")
    erank = entropy_rank(phi, convention="monai", **kwargs)
    return (1.0 - erank / min(n - 1, d)).clamp(0.0, 1.0)


def _svdvals64(phi: torch.Tensor) -> torch.Tensor:
    validation.check_features(phi)
    return torch.linalg.svdvals(phi.detach().double())


def weightwatcher_matrix_rank(phi: torch.Tensor) -> torch.Tensor:
    """WeightWatcher's numerical rank #{σ > σ_max · max(N, d) · eps₆₄} (numpy ``matrix_rank``'s
    default tolerance, eps₆₄ = 2.2e-16), int64 0-d.

    That tolerance (1e-13 relative in σ, 1e-26 in λ) lies below any Gram's floor, so this takes a
    float64 SVD of Φ as WeightWatcher does; it is not an ε-rank of M. The count is an integer
    (no gradient).
    """
    return _ww_rank(_svdvals64(phi), phi.shape)


def _ww_rank(sigma: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return (sigma > sigma.max() * max(shape) * torch.finfo(torch.float64).eps).sum()


def weightwatcher_entropy(phi: torch.Tensor) -> torch.Tensor:
    """WeightWatcher's normalised matrix entropy H(q) / log R, q = λ/Σλ + 1e-10 over the min(N, d)
    eigenvalues λ = σ² (float64 SVD), R = :func:`weightwatcher_matrix_rank`. 0-d float64; 0 when
    R ≤ 1 (log R = 0; our choice, the formula is undefined there)."""
    sigma = _svdvals64(phi)
    lam = sigma.square()
    total = lam.sum()
    rank = int(_ww_rank(sigma, phi.shape))
    if total == 0 or rank <= 1:
        return torch.zeros((), dtype=torch.float64, device=phi.device)
    q = lam / total + 1e-10
    return (-(q * q.log()).sum() / math.log(rank)).to(phi.device)
