"""Invariances the definitions imply, checked with hypothesis on float64 features."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import effrank_fast as ef
from effrank_fast.testing import random_orthogonal, unit_roundoff

shapes = st.tuples(st.integers(1, 40), st.integers(1, 24))
seeds = st.integers(0, 2**31 - 1)


def _phi(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -3, d, dtype=torch.float64)
    return torch.randn(n, d, dtype=torch.float64, generator=g) * scales


def _tol(lam: torch.Tensor, d: int) -> float:
    # Two float64 Grams of the same matrix in different bases: eigenvalues agree to a small
    # multiple of d·u·λ_max (backward-stable eigvalsh plus the rounding of the rotation).
    return 50 * d * unit_roundoff(torch.float64) * max(float(lam[0]), 1e-300)


@settings(max_examples=30, deadline=None)
@given(shapes, seeds, st.booleans())
def test_invariant_under_orthogonal_rotation_of_features(shape, seed, center):
    n, d = shape
    phi = _phi(n, d, seed)
    q = random_orthogonal(d, generator=torch.Generator().manual_seed(seed + 1))
    a = ef.eigenvalues(phi, center=center)
    b = ef.eigenvalues(phi @ q, center=center)
    assert (a - b).abs().max() <= _tol(a, d)


@settings(max_examples=30, deadline=None)
@given(shapes, seeds)
def test_invariant_under_row_permutation(shape, seed):
    n, d = shape
    phi = _phi(n, d, seed)
    w = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 0.1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 2))
    a = ef.measures(phi, eps=[1e-4], weights=w, center=True)
    b = ef.measures(phi[perm], eps=[1e-4], weights=w[perm], center=True)
    assert (a.eigenvalues - b.eigenvalues).abs().max() <= _tol(a.eigenvalues, d)
    gap = (a.eigenvalues - 1e-4).abs().min()
    if gap > _tol(a.eigenvalues, d):
        assert torch.equal(a.eps_rank, b.eps_rank)


@settings(max_examples=30, deadline=None)
@given(shapes, seeds, st.floats(1e-3, 1e3))
def test_scaling_weights_scales_eigenvalues(shape, seed, c):
    n, d = shape
    phi = _phi(n, d, seed)
    w = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 0.1
    a = ef.eigenvalues(phi, weights=w)
    b = ef.eigenvalues(phi, weights=c * w)
    assert (b - c * a).abs().max() <= c * _tol(a, d)
    # and the scale-free measures do not move
    sa = float(ef.stable_rank(phi, weights=w))
    sb = float(ef.stable_rank(phi, weights=c * w))
    assert abs(sa - sb) <= 1e-9 * sa
