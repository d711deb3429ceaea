"""Every finite scale: features (or a gram=) near the ends of their dtype's range give the counts and
σ-measures of a float64 SVD of the same values (numpy, computed here), or a ValueError naming phi."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import effrank_fast as ef
from effrank_fast.rank import eps_rank_result, measures
from effrank_fast.rank.certified import certified_count
from effrank_fast.rank.prepare import BoundedGram

EPS = 1e-3


def _base(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(200, 16, dtype=torch.float64, generator=g) * torch.logspace(0, -3, 16, dtype=torch.float64)


def _reference_lam(phi: torch.Tensor) -> tuple[np.ndarray, int]:
    """λ of (1/N)·ΦᵀΦ of the stored values, from an SVD of Φ·2^-e (exact: a power of two), and e."""
    x = phi.double().numpy()
    e = int(np.frexp(np.abs(x).max())[1])
    sigma = np.linalg.svd(np.ldexp(x, -e), compute_uv=False)
    return sigma**2 / x.shape[0], e


def _reference(phi: torch.Tensor) -> dict[str, float]:
    lam, _ = _reference_lam(phi)
    s = np.sqrt(lam)
    p = s[s > 0] / s.sum()
    return {
        "max": int((lam > EPS * lam.max()).sum()),
        "trace": int((lam > EPS * lam.sum()).sum()),
        "entropy": float(np.exp(-(p * np.log(p)).sum())),
        "stable": float(lam.sum() / lam.max()),
        "pr": float(lam.sum() ** 2 / (lam**2).sum()),
    }


CASES = [
    (torch.float32, 1e-30),
    (torch.float32, 1e-22),
    (torch.float32, 1e30),
    (torch.bfloat16, 1e-30),
    (torch.bfloat16, 1e30),
    (torch.float16, 1e-3),  # fp16 holds 6e-8…65504: these are its ends for this spectrum
    (torch.float16, 1e3),
    (torch.float64, 1e-150),
    (torch.float64, 1e80),
    (torch.float64, 1e150),
]


@pytest.mark.parametrize("dtype,scale", CASES)
def test_counts_and_sigma_measures_at_every_scale(dtype, scale):
    phi = (_base() * scale).to(dtype)
    ref = _reference(phi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rmax = eps_rank_result(phi, EPS, relative="max")
        rtr = eps_rank_result(phi, EPS, relative="trace")
    assert int(rmax.counts[0]) == ref["max"] and int(rtr.counts[0]) == ref["trace"]
    for r in (rmax, rtr):  # certified means finite bounds that prove the count
        assert bool(r.certified.all()) and r.gram_error is not None and bool(torch.isfinite(r.gram_error))
    assert float(ef.entropy_rank(phi)) == pytest.approx(ref["entropy"], rel=1e-3)
    assert float(ef.stable_rank(phi)) == pytest.approx(ref["stable"], rel=1e-3)
    assert float(ef.participation_ratio(phi)) == pytest.approx(ref["pr"], rel=1e-3)
    m = measures(phi, EPS, relative="max")
    assert int(m.eps_rank[0]) == ref["max"]


def test_eigenvalues_and_absolute_counts_in_the_given_units():
    phi = (_base() * 1e-30).float()
    lam, e = _reference_lam(phi)
    lam_true = np.ldexp(lam, 2 * e)  # λ of the values as given (≈ 1e-60), float64 holds them
    got = ef.eigenvalues(phi).numpy()
    np.testing.assert_allclose(got[:8], np.sort(lam_true)[::-1][:8], rtol=1e-4)
    eps = float(np.sqrt(lam_true[7] * lam_true[8]))  # between the 8th and 9th eigenvalue
    assert int(ef.eps_rank(phi, eps)) == int((lam_true > eps).sum()) == 8
    assert float(measures(phi, eps).lambda_max) == pytest.approx(lam_true.max(), rel=1e-4)


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_given_gram_at_extreme_scales(scale):
    base = _base(1)
    m = base.T @ base / base.shape[0] * scale
    lam = np.linalg.eigvalsh((base.T @ base / base.shape[0]).numpy())
    r = eps_rank_result(gram=m, eps=EPS, relative="max")
    assert int(r.counts[0]) == int((lam > EPS * lam.max()).sum()) and bool(r.certified.all())
    assert int(ef.eps_rank(gram=m, eps=EPS, relative="trace")) == int((lam > EPS * lam.sum()).sum())


def test_unrepresentable_gram_is_a_value_error_naming_phi():
    with pytest.raises(ValueError, match="phi"):
        ef.gram((_base() * 1e-30).float())  # M ≈ 1e-60: below float32's range
    phi = (_base() * 1e-150).double()  # M ≈ 1e-300: float64 holds it; formed at a safe scale
    x = phi.numpy()
    np.testing.assert_allclose(ef.gram(phi).numpy(), x.T @ x / x.shape[0], rtol=1e-12, atol=0)
    phi = (_base() * 1e-18).float()  # M ≈ 1e-36: float32's normal range still holds the diagonal
    m = ef.gram(phi).double().numpy()
    x = phi.double().numpy()
    ref = x.T @ x / x.shape[0]
    assert np.abs(m - ref).max() <= 1e-5 * np.abs(ref).max()


def test_a_count_with_an_infinite_bound_is_never_certified():
    base = _base(2)
    m = base.T @ base / base.shape[0]
    lam = np.linalg.eigvalsh(m.numpy())
    for method in ("eigh", "inertia"):
        sp = BoundedGram(m, 16, "torch", 200, torch.tensor(math.inf, dtype=torch.float64), torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = certified_count(sp, torch.tensor([EPS], dtype=torch.float64), "max", method, check=True)
        assert not bool(r.certified.any())  # the "numerically zero" rule needs a finite δ_G
        assert int(r.counts[0]) == int((lam > EPS * lam.max()).sum())
    with pytest.raises(ValueError, match="phi"):
        ef.gram((_base() * 1e160).double())  # M ≈ 1e320 overflows float64
