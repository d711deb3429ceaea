"""Every public measure against the float64 reference, on every backend that runs here."""

from __future__ import annotations

import pytest
import torch

import effrank_fast as ef
from effrank_fast.ops import backends
from effrank_fast.testing import (
    entropy_perturbation_bound,
    features_with_spectrum,
    gapped_spectrum,
    unit_roundoff,
)


def _available_backends(device: str = "cpu") -> list[str]:
    dev = torch.device(device)
    return [name for name, why in backends.explain(dev).items() if why is None and name != "triton"]


BACKENDS = _available_backends()
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["powerlaw", "lowrank", "cluster", "logspace"])
@pytest.mark.parametrize("d", [1, 7, 64, 257])
def test_eps_rank_exact_on_gapped_spectra(backend, kind, d):
    eps = 1e-3
    lam, want = gapped_spectrum(kind, d, eps, gap=0.2, generator=_gen(d))
    phi = features_with_spectrum(lam, n=2 * d + 3, generator=_gen(d + 1)).float()
    for method in ("eigh", "inertia") if backend == "native" else ("eigh",):
        got = ef.eps_rank(phi, eps, backend=backend, method=method)
        assert got.dtype == torch.int64 and got.dim() == 0
        assert int(got) == want, (method, int(got), want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [512, 1024])
def test_eps_rank_exact_large_d(backend, d):
    eps = [1e-2, 1e-4]
    lam, _ = gapped_spectrum("powerlaw", d, 1e-2, gap=0.3, generator=_gen(d))
    lam2, _ = gapped_spectrum("powerlaw", d, 1e-4, gap=0.3, generator=_gen(d))
    lam = torch.minimum(lam, lam2)  # both bands empty: each edge pushed outward stays outside the other band
    want = [int((lam > e).sum()) for e in eps]
    phi = features_with_spectrum(lam, n=d + 17, generator=_gen(d + 2))
    got = ef.eps_rank(phi, eps, backend=backend)
    assert got.tolist() == want


@pytest.mark.parametrize("relative", [None, "max", "trace"])
def test_eps_rank_several_eps_and_relative(relative):
    phi = torch.randn(300, 40, dtype=torch.float64) * torch.logspace(0, -3, 40, dtype=torch.float64)
    eps = torch.tensor([1e-1, 1e-3, 1e-5, 1e-7], dtype=torch.float64)
    want = ef.reference.eps_rank(phi, eps, relative=relative)
    got = ef.eps_rank(phi, eps, relative=relative)
    assert got.shape == (4,) and got.tolist() == want.tolist()
    # one count per ε, equal to separate calls
    assert [int(ef.eps_rank(phi, float(e), relative=relative)) for e in eps] == got.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d,center,weighted", [(333, 45, False, False), (100, 33, True, True), (17, 70, True, False)])
def test_float_measures_within_derived_tolerance(backend, dtype, n, d, center, weighted):
    """Each float measure moves by no more than the Gram's measured error allows.

    Weyl: every eigenvalue of the computed Gram lies within δ = ‖M̂ − M‖₂ of the exact one (plus
    the float64 eigensolver's d·u₆₄·‖M‖). Stable rank and PR are smooth in (tr, λ_max, ‖M‖_F);
    the entropy rank uses the Fannes–Audenaert bound.
    """
    g = _gen(n + d)
    phi = (torch.randn(n, d, dtype=torch.float64, generator=g) * torch.logspace(0, -2, d, dtype=torch.float64)).to(
        dtype
    )
    w = torch.rand(n, dtype=torch.float64, generator=g) + 0.1 if weighted else None
    kw = {"weights": w, "center": center}
    lam_ref = ef.reference.eigenvalues(phi, **kw)
    got = ef.measures(phi, eps=[1e-3], backend=backend, **kw)
    # δ from the matrix the measures used: the Gram, or the N×N kernel when n < d (same nonzero
    # spectrum), against the same matrix formed in float64 from the given values.
    from effrank_fast.rank.prepare import features_to_matrix

    mhat = features_to_matrix(phi, w, "mean", center, backend, None, True).matrix.double()
    a = ef.reference._weighted_features(phi, w, "mean", center)
    exact = a @ a.T if n < d else a.T @ a
    delta = float(torch.linalg.matrix_norm(mhat - exact, ord=2))
    delta += d * unit_roundoff(torch.float64) * float(lam_ref[0]) * 10
    assert (got.eigenvalues - lam_ref).abs().max() <= delta
    tr, lmax = float(lam_ref.sum()), float(lam_ref[0])
    sr_tol = (d * delta / tr + delta / lmax) / (1 - delta / lmax)
    assert float(got.stable_rank) == pytest.approx(float(ef.reference.stable_rank(phi, **kw)), rel=2 * sr_tol)
    fro = float(lam_ref.square().sum().sqrt())
    pr_tol = 2 * d * delta / tr + 2 * (d**0.5) * delta / fro
    assert float(got.participation_ratio) == pytest.approx(
        float(ef.reference.participation_ratio(phi, **kw)), rel=2 * pr_tol
    )
    bound = entropy_perturbation_bound(lam_ref, delta)
    assert abs(float(got.entropy_rank) - float(ef.reference.entropy_rank(phi, **kw))) <= bound + 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_low_precision_is_not_truncated(backend):
    """bf16 features: the Gram equals the float64 Gram of the *same bf16 values* to fp32 accuracy,
    i.e. nothing was rounded back to bf16 on the way (a bf16 round would cost ~3e-3 relative)."""
    phi = torch.randn(2000, 24).bfloat16()
    m = ef.gram(phi, backend=backend)
    assert m.dtype == torch.float32
    ref = ef.reference.gram(phi)
    err = (m.double() - ref).abs().max() / ref.abs().max()
    assert err < 64 * unit_roundoff(torch.float32) * 2000**0.5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,d", [(1, 1), (1, 9), (9, 1), (5, 300), (129, 65)])
def test_degenerate_sizes(backend, n, d):
    phi = torch.randn(n, d, dtype=torch.float64) + 0.5
    lam = ef.eigenvalues(phi, backend=backend)
    lam_ref = ef.reference.eigenvalues(phi)
    assert lam.shape == (d,)
    torch.testing.assert_close(lam, lam_ref, atol=1e-12 * float(lam_ref[0]) * d, rtol=0)
    assert int(ef.eps_rank(phi, 1e-9 * float(lam_ref[0]), backend=backend)) == min(n, d)
    topk = ef.eigenvalues(phi, k=3, backend=backend)
    assert topk.shape == (min(3, d),)


def test_n_less_than_d_uses_small_kernel_and_matches():
    phi = torch.randn(30, 500, dtype=torch.float64)
    w = torch.rand(30, dtype=torch.float64) + 0.5
    for center in (False, True):
        m = ef.measures(phi, eps=[1e-6, 1.0], weights=w, center=center)
        r = ef.reference.measures(phi, eps=[1e-6, 1.0], weights=w, center=center)
        assert m.eps_rank.tolist() == r.eps_rank.tolist()
        assert m.eps_rank[0] == (29 if center else 30)
        torch.testing.assert_close(m.eigenvalues, r.eigenvalues, atol=1e-10 * float(r.lambda_max), rtol=0)


def test_gram_input_matches_features():
    phi = torch.randn(400, 30, dtype=torch.float64)
    m = ef.gram(phi)
    for fn in (ef.entropy_rank, ef.stable_rank, ef.participation_ratio):
        torch.testing.assert_close(fn(gram=m), fn(phi))
    assert int(ef.eps_rank(gram=m, eps=0.9)) == int(ef.eps_rank(phi, 0.9))


def test_measures_is_one_consistent_spectrum():
    phi = torch.randn(256, 32, dtype=torch.float64)
    m = ef.measures(phi, eps=[0.5, 1.0], relative="max")
    lam = m.eigenvalues
    assert torch.equal(m.thresholds, torch.tensor([0.5, 1.0], dtype=torch.float64) * lam[0])
    assert m.eps_rank.tolist() == [int((lam > t).sum()) for t in m.thresholds]
    assert torch.equal(m.topk(4), lam[:4])
    d = m.to_dict()
    assert (
        d["n"] == 256 and d["d"] == 32 and d["mode"] == "mean" and d["eps_rank"][1] == 0
    )  # strict: λ_max is not > λ_max


def test_integral_mode_with_trapezoid_weights():
    """∫_{-1}^{1} φ_i φ_j dx for φ = (1, x): M = [[2, 0], [0, 2/3]] up to the trapezoid error h²."""
    x, w = ef.quadrature.trapezoid(-1.0, 1.0, 2001, dtype=torch.float64)
    phi = torch.cat([torch.ones_like(x), x], dim=1)
    m = ef.gram(phi, w, mode="integral")
    h = 2.0 / 2000
    want = torch.tensor([[2.0, 0.0], [0.0, 2.0 / 3.0]], dtype=torch.float64)
    torch.testing.assert_close(m, want, atol=h**2, rtol=0)
    assert float(w.sum()) == pytest.approx(2.0)
