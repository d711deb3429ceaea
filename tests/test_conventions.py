"""The peers' conventions side by side with the peers themselves.

reptrix and MONAI are imported when installed (``pytest.importorskip``) and their functions give
the expected values. stable-pretraining (needs torchvision) and WeightWatcher do not import here:
their tests compute the formula as written in the peer's source (quoted in each docstring and in
docs/measures.md) with numpy/torch SVDs, never with effrank_fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import effrank_fast as ef
from effrank_fast.rank import conventions

SHAPES = [(200, 24), (40, 64), (12, 12)]


def _features(n: int, d: int, seed: int, decay: float = 2.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(0, -decay, d, dtype=torch.float64)
    return (torch.randn(n, d, dtype=torch.float64, generator=g) * scale + 0.3).to(dtype)


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_reptrix_rankme(n, d, dtype):
    rankme = pytest.importorskip("reptrix.rankme")
    phi = _features(n, d, seed=n + d, dtype=dtype)
    want = float(rankme.get_rankme(phi))
    got = float(conventions.reptrix_rankme(phi))
    # reptrix runs sklearn's PCA in the input's precision (float32: ~1e-6 relative).
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    assert got == pytest.approx(want, rel=tol)
    assert float(ef.entropy_rank(phi, convention="reptrix")) == got
    explicit = ef.entropy_rank(phi, basis="lambda", fudge=1e-7, components=2048, center=True)
    assert float(explicit) == got


@pytest.mark.parametrize("k", [1, 5, 30])
def test_reptrix_component_cap(k):
    """reptrix keeps min(max_eigenvals, N, d) components (2048 by default) and renormalises over them;
    its max_eigenvals argument checks the cap at a small size."""
    rankme = pytest.importorskip("reptrix.rankme")
    phi = _features(60, 40, seed=k, decay=1.0)
    want = float(rankme.get_rankme(phi, max_eigenvals=k))
    got = float(ef.entropy_rank(phi, basis="lambda", fudge=1e-7, components=k, center=True))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("n,d", SHAPES + [(2, 5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_monai_effective_rank_score(n, d, dtype):
    collapse = pytest.importorskip("monai.metrics.embedding_collapse")
    phi = _features(n, d, seed=n * d, dtype=dtype)
    scores = collapse.compute_embedding_collapse(phi, include_indicators=["effective_rank"], reduction="none")
    want = float(scores["effective_rank_score"])
    # MONAI computes in float32 whatever the input: agreement to its rounding.
    assert float(conventions.monai_effective_rank_score(phi)) == pytest.approx(want, abs=2e-6)


def test_monai_constant_embeddings_are_fully_collapsed():
    collapse = pytest.importorskip("monai.metrics.embedding_collapse")
    phi = torch.full((32, 8), 0.5)  # MONAI's float32 mean is exact here: its centred matrix is 0
    assert float(collapse._effective_rank_score(phi)) == 1.0
    assert float(conventions.monai_effective_rank_score(phi)) == 1.0
    # With 0.7 MONAI's rounded mean leaves a rank-one residue (it reports 1 − 1/d); the float64
    # reference of the given values is an exact zero matrix, and so is ours.
    inexact = torch.full((30, 8), 0.7)
    assert float(ef.reference.entropy_rank(inexact, center=True)) == 0.0
    assert float(conventions.monai_effective_rank_score(inexact)) == 1.0
    with pytest.raises(ValueError, match="N ≥ 2"):
        conventions.monai_effective_rank_score(phi[:1])


@pytest.mark.parametrize("n,d", SHAPES)
def test_stable_pretraining_rankme_formula(n, d):
    """stable-pretraining 0.1.8 callbacks/rankme.py, as written (it does not import without torchvision):

    s = torch.linalg.svdvals(embeddings); p = (s / torch.sum(s, axis=0)) + 1e-5
    entropy = -torch.sum(p * torch.log(p)); rankme = torch.exp(entropy)
    """
    phi = _features(n, d, seed=7 * n + d)
    s = torch.linalg.svdvals(phi)
    p = (s / torch.sum(s, axis=0)) + 1e-5
    want = float(torch.exp(-torch.sum(p * torch.log(p))))
    assert float(conventions.stable_pretraining_rankme(phi)) == pytest.approx(want, rel=1e-10)
    # min(N, d) components matter once there is a fudge: "all" differs when N < d.
    all_d = float(ef.entropy_rank(phi, basis="sigma", fudge=1e-5, components="all"))
    if n < d:
        assert all_d != pytest.approx(want, rel=1e-10)


def _numpy_matrix_rank_tol(a: np.ndarray) -> float:
    s = np.linalg.svd(a, compute_uv=False)
    return float(s.max() * max(a.shape) * np.finfo(np.float64).eps)


@pytest.mark.parametrize("rank", [1, 5, 20])
def test_weightwatcher_matrix_rank(rank):
    """WeightWatcher 0.7.7 uses numpy's matrix_rank default tolerance σ_max·max(N, d)·eps₆₄."""
    g = torch.Generator().manual_seed(rank)
    a = torch.randn(60, rank, dtype=torch.float64, generator=g) @ torch.randn(
        rank, 30, dtype=torch.float64, generator=g
    )
    want = int(np.linalg.matrix_rank(a.numpy()))  # numpy's default tol is exactly that formula
    assert want == int((np.linalg.svd(a.numpy(), compute_uv=False) > _numpy_matrix_rank_tol(a.numpy())).sum())
    assert int(conventions.weightwatcher_matrix_rank(a)) == want == min(rank, 30)


def test_weightwatcher_entropy_formula():
    """WeightWatcher 0.7.7 entropy, as written: H(λ/Σλ + 1e-10) / log R, λ = σ², R = matrix_rank."""
    a = _features(50, 20, seed=11).numpy()
    s = np.linalg.svd(a, compute_uv=False)
    q = s**2 / (s**2).sum() + 1e-10
    want = float(-(q * np.log(q)).sum() / math.log(np.linalg.matrix_rank(a)))
    assert float(conventions.weightwatcher_entropy(torch.from_numpy(a))) == pytest.approx(want, rel=1e-12)


def test_options_against_the_reference():
    """Each option on its own against the float64 SVD oracle (reference.entropy_rank)."""
    phi = _features(30, 50, seed=2)
    for basis in ("sigma", "lambda"):
        for fudge in (0.0, 1e-7, 1e-5):
            for components in ("all", "min", 7):
                kw = {"basis": basis, "fudge": fudge, "components": components}
                want = float(ef.reference.entropy_rank(phi, **kw))
                assert float(ef.entropy_rank(phi, **kw)) == pytest.approx(want, rel=1e-9), kw
                assert float(ef.measures(phi, 1e-3, **kw).entropy_rank) == pytest.approx(want, rel=1e-9), kw


def test_defaults_are_unchanged():
    """Default: σ-based Roy–Vetterli, no fudge, no centring — the same number as convention='roy-vetterli'."""
    phi = _features(40, 10, seed=4)
    assert float(ef.entropy_rank(phi)) == float(ef.entropy_rank(phi, convention="roy-vetterli"))
    assert float(ef.entropy_rank(phi)) == pytest.approx(float(ef.reference.entropy_rank(phi)), rel=1e-10)
    assert float(ef.entropy_rank(phi)) != pytest.approx(float(ef.reference.entropy_rank(phi, center=True)), rel=1e-6)


def test_bad_options():
    phi = _features(10, 4, seed=1)
    with pytest.raises(ValueError, match="convention"):
        ef.entropy_rank(phi, convention="rankme2")
    with pytest.raises(ValueError, match="basis"):
        ef.entropy_rank(phi, basis="sv")
    with pytest.raises(ValueError, match="fudge"):
        ef.entropy_rank(phi, fudge=-1.0)
    with pytest.raises(ValueError, match="components"):
        ef.measures(phi, 1e-3, components=0)
    with pytest.raises(ValueError, match="not both"):
        ef.entropy_rank(phi, convention="reptrix", fudge=1e-7)
