"""The oracle itself, against an independent numpy/scipy float64 computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import effrank_fast as ef


def _numpy_measures(phi: np.ndarray, w: np.ndarray, center: bool, eps: float):
    x = phi.astype(np.float64)
    if center:
        x = x - (w @ x) / w.sum()
    m = x.T @ (w[:, None] * x)
    lam = np.sort(scipy.linalg.eigvalsh(m))[::-1]
    sigma = np.sqrt(np.clip(lam, 0, None))
    p = sigma[sigma > 0] / max(sigma.sum(), np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero matrix (centred N = 1) is skipped below
        stable = float(lam.sum() / lam[0])
        participation = float(lam.sum() ** 2 / (lam**2).sum())
    return {
        "gram": m,
        "eigenvalues": lam,
        "eps_rank": int((lam > eps).sum()),
        "entropy_rank": float(np.exp(-(p * np.log(p)).sum())),
        "stable_rank": stable,
        "participation_ratio": participation,
    }


@pytest.mark.parametrize("n,d", [(200, 16), (40, 7), (9, 30), (1, 5), (50, 1)])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_reference_matches_numpy(n, d, center, weighted):
    rng = np.random.default_rng(n * 100 + d)
    phi = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, size=d)
    w = rng.uniform(0.2, 2.0, size=n) if weighted else np.full(n, 1.0 / n)
    weights = torch.from_numpy(w) if weighted else None
    eps = 0.05
    want = _numpy_measures(phi, w, center, eps)
    t = torch.from_numpy(phi)
    kw = {"weights": weights, "center": center}
    scale = max(1.0, abs(want["eigenvalues"][0]))
    # Two float64 paths (SVD of the scaled features vs eigh of the Gram): eigenvalues agree to a
    # few hundred ulps of λ_max.
    tol = 1e3 * np.finfo(np.float64).eps * scale
    np.testing.assert_allclose(ef.reference.gram(t, **kw).numpy(), want["gram"], atol=tol, rtol=0)
    np.testing.assert_allclose(ef.reference.eigenvalues(t, **kw).numpy(), want["eigenvalues"], atol=tol, rtol=0)
    if center and n == 1:
        return  # every measure of a zero matrix is 0 by convention; numpy's formulas divide by 0
    lam = want["eigenvalues"]
    if np.min(np.abs(lam - eps)) > tol:
        assert int(ef.reference.eps_rank(t, eps, **kw)) == want["eps_rank"]
    for name in ("stable_rank", "participation_ratio"):
        assert float(getattr(ef.reference, name)(t, **kw)) == pytest.approx(want[name], rel=1e-9)
    # σ = √λ amplifies the absolute error of tiny eigenvalues: √tol bounds each σ's error.
    sig_err = d * np.sqrt(tol) / np.sqrt(np.clip(lam, 0, None)).sum()
    assert float(ef.reference.entropy_rank(t, **kw)) == pytest.approx(want["entropy_rank"], rel=4 * sig_err + 1e-9)


def test_reference_zero_matrix_conventions():
    z = torch.zeros(10, 4, dtype=torch.float64)
    assert int(ef.reference.eps_rank(z, 1e-3)) == 0
    assert float(ef.reference.entropy_rank(z)) == 0.0
    assert float(ef.reference.stable_rank(z)) == 0.0
    assert float(ef.reference.participation_ratio(z)) == 0.0


def test_reference_modes_scale_eigenvalues():
    phi = torch.randn(64, 8, dtype=torch.float64)
    mean = ef.reference.eigenvalues(phi, mode="mean")
    total = ef.reference.eigenvalues(phi, mode="sum")
    torch.testing.assert_close(total, 64 * mean)


@pytest.mark.parametrize("basis", ["sigma", "lambda"])
@pytest.mark.parametrize("fudge", [0.0, 1e-7, 1e-5])
@pytest.mark.parametrize("components", ["all", "min", 3])
@pytest.mark.parametrize("n,d", [(40, 7), (5, 12)])
def test_reference_entropy_options_match_numpy(basis, fudge, components, n, d):
    """The peer-convention options of the oracle, written out with numpy's SVD."""
    rng = np.random.default_rng(n + d)
    phi = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, size=d)
    s = np.linalg.svd(phi / np.sqrt(n), compute_uv=False)  # mode="mean": λ = σ²/N
    vals = np.concatenate([s, np.zeros(d - s.size)])  # all d values, zeros for N < d
    k = {"all": d, "min": min(n, d)}.get(components, min(3, n, d))  # type: ignore[arg-type]
    x = vals[:k] if basis == "sigma" else vals[:k] ** 2
    q = x / x.sum() + fudge
    q = q[q > 0]
    want = float(np.exp(-(q * np.log(q)).sum()))
    got = ef.reference.entropy_rank(torch.from_numpy(phi), basis=basis, fudge=fudge, components=components)
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_reference_constant_centred_columns_are_exactly_zero():
    """Centring about the first row: constant columns (0.1 is not a binary fraction) centre to exact 0."""
    phi = torch.full((37, 5), 0.1, dtype=torch.float64)
    phi[:, 2] = 3.3
    assert torch.equal(ef.reference.gram(phi, center=True), torch.zeros(5, 5, dtype=torch.float64))
    for name in ("entropy_rank", "stable_rank", "participation_ratio"):
        assert float(getattr(ef.reference, name)(phi, center=True)) == 0.0
