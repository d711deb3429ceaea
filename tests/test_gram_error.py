"""The Gram error δ_G of each kind against the true ‖M̂ − M‖₂ (M from a float64 numpy product of the
stored feature values), and the certificate built on it: a certified count is the float64 count."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from effrank_fast.ops.gram.error import KINDS
from effrank_fast.rank import eps_rank_result
from effrank_fast.rank.prepare import features_to_matrix
from effrank_fast.testing import FAMILIES, family_features, rotated_features

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _true_error(phi: torch.Tensor, m_hat: torch.Tensor) -> float:
    x = phi.double().numpy()
    m = x.T @ x / x.shape[0]
    return float(np.linalg.norm(m_hat.double().numpy() - m, 2))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kind_bounds_the_true_error(family, dtype):
    for seed in (0, 1):
        phi = family_features(family, 2000, 128, seed).to(dtype)
        for kind in KINDS:
            sp = features_to_matrix(phi, None, "mean", False, "auto", None, True, certificate=kind)
            true = _true_error(phi, sp.matrix)
            assert sp.gram_error is not None and true > 0
            assert float(sp.gram_error) >= true, (kind, float(sp.gram_error), true)


def test_tight_estimate_bounds_centred_and_weighted_grams():
    g = torch.Generator().manual_seed(3)
    phi = (family_features("power1.2", 1500, 96, 3) + 2.0).float()  # a large mean: centring matters
    w = torch.rand(1500, dtype=torch.float64, generator=g)
    for weights, center in ((None, True), (w, False), (w, True)):
        sp = features_to_matrix(phi, weights, "sum" if weights is not None else "mean", center, "auto", None, True)
        x = phi.double().numpy()
        ww = np.full(x.shape[0], 1 / x.shape[0]) if weights is None else weights.numpy()
        if center:
            x = x - (ww @ x) / ww.sum()
        m = (x * ww[:, None]).T @ x
        true = float(np.linalg.norm(sp.matrix.double().numpy() - m, 2))
        assert float(sp.gram_error) >= true


@pytest.mark.parametrize("alpha", [0.8, 1.2, 2.0])
def test_tight_estimate_is_within_15x_of_the_true_error_on_power_laws(alpha):
    phi = family_features(f"power{alpha}", 8000, 256, 5).float()
    sp = features_to_matrix(phi, None, "mean", False, "auto", None, True)
    true = _true_error(phi, sp.matrix)
    assert true <= float(sp.gram_error) <= 15 * true


@pytest.mark.parametrize("d", [8, 64, 256])
def test_tight_estimate_keeps_its_margin_on_one_signed_coherent_features(d):
    """tanh of one shared input (shifted or not): every entry one-signed, λ_max ≈ tr M, the case
    whose error along the dominant direction is largest (≈ 3–4·u·λ_max); the estimate must stay
    ≥ 2× above the true error there (it was 0.9× on the 512-row-block kernel with C_L = 2)."""
    for n in (2000, 20000):
        g = torch.Generator().manual_seed(d + n)
        x = torch.randn(n, 1, dtype=torch.float64, generator=g) * torch.randn(1, d, dtype=torch.float64, generator=g)
        x = torch.tanh(3 * x + torch.randn(d, dtype=torch.float64, generator=g))
        for shift in (0.0, 2.0):
            phi = (x + shift).float()
            sp = features_to_matrix(phi, None, "mean", False, "auto", None, True)
            true = _true_error(phi, sp.matrix)
            assert 2 * true <= float(sp.gram_error), (n, shift, true, float(sp.gram_error))


def test_a_wrong_count_is_never_certified():
    """ε on a grid and right at eigenvalues (the hardest place): certified ⇒ the float64 count."""
    wrong = []
    for family in FAMILIES:
        for dtype in DTYPES:
            phi = family_features(family, 600, 48, 11).to(dtype)
            x = phi.double().numpy()
            lam = np.linalg.eigvalsh(x.T @ x / x.shape[0])
            at = lam[[-2, -5, -12, 24]]  # τ right at an eigenvalue, and a hair off it
            eps = np.concatenate([np.logspace(-1, -9, 9), at, at * (1 + 1e-7), at * (1 - 1e-7)])
            eps = eps[eps > 0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for method in ("eigh", "inertia"):
                    r = eps_rank_result(phi, eps.tolist(), method=method)
                    r0 = eps_rank_result(phi, eps.tolist(), method=method, check=False)  # no promotion
                    for res in (r, r0):
                        want = (lam[None, :] > eps[:, None]).sum(1)
                        cert = res.certified.numpy()
                        bad = cert & (res.counts.numpy() != want)
                        if bad.any():
                            wrong.append((family, dtype, method, eps[bad].tolist()))
    assert not wrong, wrong


def test_certificate_kind_is_checked_and_recorded():
    phi = family_features("power1.2", 300, 16, 0).float()
    with pytest.raises(ValueError, match="certificate"):
        eps_rank_result(phi, 1e-3, certificate="loose")
    for kind in KINDS:
        assert eps_rank_result(phi, 1e-3, certificate=kind).certificate == kind


@pytest.mark.parametrize("seed,eps", [(0, 0.034145488738336005), (1, 0.1)])
def test_factorisation_growth_mid_spectrum_does_not_cost_the_certificate(seed, eps):
    """τ mid-spectrum of a dense power law (the nearest eigenvalue ≥ 100·δ_G away): the LDLᵀ of
    M − τ ± a grows past the 256·γ_{3d}·(tr M + d|τ|) allotted to it, yet stays far below the
    float32 Gram's δ_G. The count is proven without a float64 Gram, and it is the float64 count."""
    n, d = 3000, 256
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** -0.8
    phi = rotated_features(lam, n, torch.Generator().manual_seed(seed)).float()
    x = phi.double().numpy()
    ref = np.linalg.eigvalsh(x.T @ x / n)
    for check in (False, True):
        res = eps_rank_result(phi, eps, method="inertia", check=check)
        assert np.abs(ref - eps).min() > 100 * float(res.gram_error)
        assert int(res.counts) == int((ref > eps).sum())
        assert bool(res.certified) and not res.promoted, (check, res)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_diagonals_give_each_matrix_its_bound(kind):
    """δ_G of L diagonals [L, d] at once is each diagonal's own δ_G (the monitor forms its layers
    of one width together); a non-finite diagonal gives inf for its matrix only."""
    from effrank_fast.ops.gram.error import gram_error

    gen = torch.Generator().manual_seed(0)
    diags = torch.rand(4, 32, dtype=torch.float64, generator=gen) * torch.tensor([[1.0], [1e-3], [1e3], [1.0]])
    diags[3, 5] = float("inf")
    kw = {"input_dtype": torch.float32, "backend": "native", "weighted": True}
    batched = gram_error(kind, diags, 500, torch.float64, **kw)
    one_by_one = torch.stack([gram_error(kind, d, 500, torch.float64, **kw) for d in diags])
    assert batched.shape == (4,)
    torch.testing.assert_close(batched, one_by_one, rtol=1e-14, atol=0)
    assert torch.isinf(batched[3]) and torch.isfinite(batched[:3]).all()
