"""The oracle: every measure from a float64 SVD of diag(√w)(Φ − 1μᵀ).

Deliberately simple and independent of the fast paths (no Gram matrix, no backends, no
inertia); the test-suite checks this module against numpy/scipy and everything else against it.
Signatures match :mod:`effrank_fast.rank`; ``gram=`` input uses a float64 ``eigvalsh``.
"""

from __future__ import annotations

import math

import torch

from effrank_fast.rank.spectrum import Measures

__all__ = ["eigenvalues", "entropy_rank", "eps_rank", "gram", "measures", "participation_ratio", "stable_rank"]


def _weighted_features(phi: torch.Tensor, weights: torch.Tensor | None, mode: str, center: bool) -> torch.Tensor:
    x = phi.detach().to("cpu", torch.float64)
    n = x.shape[0]
    if weights is None:
        if mode == "integral":
            raise ValueError("mode='integral' needs weights=")
        w = torch.full((n,), 1.0 / n if mode == "mean" else 1.0, dtype=torch.float64)
    else:
        w = weights.detach().to("cpu", torch.float64)
    if center:
        # Mean about the first row: a constant column centres to exactly 0 (a zero matrix, every rank 0).
        x = x - (x[:1] + (w @ (x - x[:1])) / w.sum())
    return x * w.sqrt().unsqueeze(1)


def gram(phi, weights=None, *, mode="mean", center=False, **_ignored) -> torch.Tensor:
    """M [d, d] float64 on the CPU."""
    a = _weighted_features(phi, weights, mode, center)
    return a.T @ a


def eigenvalues(phi=None, *, weights=None, gram=None, k=None, mode="mean", center=False, **_ignored):
    """All d eigenvalues of M, descending, float64 on the CPU: σ(diag(√w)Φ)², zero-padded."""
    if gram is not None:
        lam = torch.linalg.eigvalsh(gram.detach().to("cpu", torch.float64)).flip(0)
    else:
        a = _weighted_features(phi, weights, mode, center)
        lam = torch.linalg.svdvals(a).square()
        lam = torch.cat([lam, lam.new_zeros(a.shape[1] - lam.shape[0])])
    return lam if k is None else lam[:k]


def _thresholds(lam: torch.Tensor, eps, relative: str | None) -> torch.Tensor:
    e = torch.as_tensor(eps, dtype=torch.float64).reshape(-1)
    if relative == "max":
        return e * lam[0]
    if relative == "trace":
        return e * lam.sum()
    return e


def eps_rank(phi=None, eps=None, *, weights=None, gram=None, relative=None, mode="mean", center=False, **_ignored):
    lam = eigenvalues(phi, weights=weights, gram=gram, mode=mode, center=center)
    counts = torch.tensor([int((lam > t).sum()) for t in _thresholds(lam, eps, relative)])
    scalar = isinstance(eps, (int, float)) or (isinstance(eps, torch.Tensor) and eps.dim() == 0)
    return counts[0] if scalar else counts


def _erank(lam: torch.Tensor, basis: str = "sigma", fudge: float = 0.0, components: int | None = None) -> float:
    """exp(−Σ q log q), q = x/Σx + fudge over the ``components`` largest, x = σ or λ (plain Python)."""
    values = [max(v, 0.0) for v in lam.tolist()][:components]
    xs = [math.sqrt(v) for v in values] if basis == "sigma" else values
    total = sum(xs)
    if total == 0:
        return 0.0
    qs = [x / total + fudge for x in xs]
    return math.exp(-sum(q * math.log(q) for q in qs if q > 0))


def _components(components, n: int | None, d: int) -> int | None:
    smaller = d if n is None else min(n, d)
    if components == "all":
        return None
    return smaller if components == "min" else min(int(components), smaller)


def entropy_rank(
    phi=None,
    *,
    weights=None,
    gram=None,
    mode="mean",
    center=False,
    basis="sigma",
    fudge=0.0,
    components="all",
    **_ignored,
):
    """Entropy rank from the SVD; ``basis``/``fudge``/``components`` as in :func:`effrank_fast.entropy_rank`
    (no ``convention=`` here: the tests spell each peer's options out)."""
    lam = eigenvalues(phi, weights=weights, gram=gram, mode=mode, center=center)
    k = _components(components, None if phi is None else phi.shape[0], lam.shape[0])
    return torch.tensor(_erank(lam, basis, fudge, k), dtype=torch.float64)


def _stable(lam: torch.Tensor) -> torch.Tensor:
    return lam.sum() / lam[0] if lam[0] > 0 else lam.new_zeros(())


def _participation(lam: torch.Tensor) -> torch.Tensor:
    den = lam.square().sum()
    return lam.sum() ** 2 / den if den > 0 else lam.new_zeros(())


def stable_rank(phi=None, *, weights=None, gram=None, mode="mean", center=False, **_ignored):
    return _stable(eigenvalues(phi, weights=weights, gram=gram, mode=mode, center=center))


def participation_ratio(phi=None, *, weights=None, gram=None, mode="mean", center=False, **_ignored):
    return _participation(eigenvalues(phi, weights=weights, gram=gram, mode=mode, center=center))


def measures(phi=None, eps=None, *, weights=None, gram=None, relative=None, mode="mean", center=False, **_ignored):
    lam = eigenvalues(phi, weights=weights, gram=gram, mode=mode, center=center)
    tau = _thresholds(lam, eps, relative)
    return Measures(
        eps=torch.as_tensor(eps, dtype=torch.float64).reshape(-1),
        relative=relative,
        thresholds=tau,
        eps_rank=torch.tensor([int((lam > t).sum()) for t in tau]),
        entropy_rank=torch.tensor(_erank(lam), dtype=torch.float64),
        stable_rank=_stable(lam),
        participation_ratio=_participation(lam),
        lambda_max=lam[0],
        trace=lam.sum(),
        eigenvalues=lam,
        mode=mode,
        center=center,
        n=None if phi is None else phi.shape[0],
        d=lam.shape[0],
        backend="reference",
    )
