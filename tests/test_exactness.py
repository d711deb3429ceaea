"""The count contract of issue 10: exact ε-ranks with default arguments, for every input dtype.

Every expected count comes from ``effrank_fast.rank.reference`` (a float64 SVD of the given values,
upcast exactly). A case is only asserted where the contract applies: no reference eigenvalue within
1e-9·λ_max of τ (``_gapped``), so every assertion here can fail.
"""

from __future__ import annotations

import pytest
import torch

import effrank_fast as ef
from effrank_fast.ops import native
from effrank_fast.ops.gram.error import gram_error_bound
from effrank_fast.ops.inertia import inertia_count, inertia_count_relative
from effrank_fast.rank import eps_rank_result, reference
from effrank_fast.testing import features_with_spectrum, random_orthogonal

F64 = torch.float64
LOW = (torch.float32, torch.bfloat16, torch.float16)
needs_inertia = pytest.mark.skipif(not native.has_kernel("inertia", "cpu"), reason="no native inertia kernel")


def _gapped(
    phi: torch.Tensor, eps: float, relative: str | None = None, center: bool = False, band: float | None = None
) -> int:
    """The reference count, asserting the contract's gap: no eigenvalue within 1e-9·λ_max of τ
    (or within ``band``·τ, for cases the issue asks for below that band)."""
    lam = reference.eigenvalues(phi, center=center)
    lam_max = float(lam[0])
    tau = eps * (lam_max if relative == "max" else float(lam.sum()) if relative == "trace" else 1.0)
    width = 1e-9 * lam_max if band is None else band * tau
    assert float((lam - tau).abs().min()) > width, "test case sits inside the contract's band"
    return int(reference.eps_rank(phi, eps, relative=relative, center=center))


def _low_rank_plus_noise(n: int, d: int, rank: int, noise: float, seed: int) -> torch.Tensor:
    """The issue's case: λ_i = 1/i for i ≤ rank (Gram units), plus i.i.d. noise of the given size."""
    g = torch.Generator().manual_seed(seed)
    u = random_orthogonal(n, rank, generator=g)
    v = random_orthogonal(d, rank, generator=g)
    lam = 1.0 / torch.arange(1, rank + 1, dtype=F64)
    return (u * (lam * n).sqrt()) @ v.T + noise * torch.randn(n, d, generator=g, dtype=F64)


@pytest.fixture(scope="module")
def issue_case() -> torch.Tensor:
    return _low_rank_plus_noise(4096, 256, 20, 1e-7, seed=0).float()


@pytest.mark.parametrize("eps", [1e-8, 1e-10])
def test_issue_case_below_the_fp32_floor(issue_case, eps):
    want = _gapped(issue_case, eps, band=0.5)  # noise eigenvalues ≈ 6e-15: far below τ
    assert want == 20
    res = eps_rank_result(issue_case, eps)
    assert int(res.counts[0]) == want
    assert bool(res.certified.all())
    assert res.promoted  # the float32 Gram's error (≈1e-8 here) covers τ: it had to be promoted
    assert int(ef.eps_rank(issue_case, eps)) == want


@needs_inertia
def test_inertia_never_calls_a_flippable_count_reliable(issue_case):
    m = ef.gram(issue_case)
    want = _gapped(issue_case, 1e-10, band=0.5)
    for res in (
        inertia_count(m, [1e-10], fallback=False),  # no gram_error: M's own rounding, u·‖M‖_F
        inertia_count(m, [1e-10], fallback=False, gram_error=_formation_error(issue_case, m)),
    ):
        assert not (bool(res.reliable[0]) and int(res.counts[0]) != want)
        assert not bool(res.reliable[0])  # an fp32 Gram cannot resolve 1e-10 here
        lo, hi = res.count_bounds  # type: ignore[misc]
        assert int(lo[0]) <= want <= int(hi[0])  # the bounds hold for the exact matrix


def _formation_error(phi: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n = phi.shape[0]
    return gram_error_bound(m.diagonal(), n, torch.float32, input_dtype=phi.dtype, backend="native", post_scale=1 / n)


def test_gram_error_bound_covers_the_actual_error():
    g = torch.Generator().manual_seed(3)
    for dtype in LOW:
        for backend in ("torch", "native"):
            if backend == "native" and not native.has_kernel("gram_native", "cpu"):
                continue
            phi = (torch.randn(3000, 64, generator=g, dtype=F64) * torch.logspace(0, -3, 64, dtype=F64)).to(dtype)
            m = ef.gram(phi, backend=backend)
            exact = reference.gram(phi)
            err = float(torch.linalg.matrix_norm(m.double() - exact, 2))
            for prob in (True, False):
                bound = gram_error_bound(
                    m.diagonal(), 3000, torch.float32, input_dtype=dtype, backend=backend, probabilistic=prob
                )
                assert err <= float(bound)


def _widest_gap_eps(phi: torch.Tensor, center: bool = False) -> float:
    """ε in the widest (log-scale) gap of the reference spectrum, below the fp32 floor if it is there."""
    lam = reference.eigenvalues(phi, center=center).clamp(min=1e-300)
    ratios = lam[:-1] / lam[1:]
    k = int(ratios.argmax())
    return max(float((lam[k] * lam[k + 1]).sqrt()), 1e-7 * float(lam[0]))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("eps", [1e-3, 1e-5, None])
def test_every_dtype_exact_with_defaults(dtype, eps):
    phi = _low_rank_plus_noise(2000, 96, 30, 1e-6, seed=7).to(dtype)
    eps = _widest_gap_eps(phi) if eps is None else eps
    want = _gapped(phi, eps)
    assert int(ef.eps_rank(phi, eps)) == want
    assert int(ef.eps_rank(phi, eps, method="eigh")) == want


@pytest.mark.parametrize("relative", ["max", "trace"])
@pytest.mark.parametrize("scale", [1e-30, 1e-25, 1e-20, 1.0, 1e20, 1e30])
def test_any_finite_scale(scale, relative):
    lam = torch.logspace(0, -6, 24, dtype=F64)
    base = features_with_spectrum(lam, 800, generator=torch.Generator().manual_seed(5))
    phi = (base * scale).float()
    assert bool(torch.isfinite(phi).all()) and bool((phi != 0).any())
    eps = 3e-4 if relative == "max" else 1e-4
    want = _gapped(phi, eps, relative)
    assert int(ef.eps_rank(phi, eps, relative=relative)) == want


def test_unrepresentable_gram_is_a_value_error_naming_phi_but_counts_still_work():
    phi = torch.full((50, 4), 1e300, dtype=F64)
    phi[:, 1] *= -0.5  # rank 1 (the columns are proportional); M ≈ 1e600 fits no dtype
    with pytest.raises(ValueError, match="phi"):
        ef.gram(phi)
    with pytest.raises(ValueError, match="phi"):
        ef.gram(torch.full((50, 4), 1e30))  # float32 output cannot hold 1e60
    # the counts never needed M itself: it is formed at a safe scale (every eigenvalue ≈ 1e600 > ε)
    assert int(ef.eps_rank(phi, 1e-3)) == 1
    assert int(ef.eps_rank(phi, 1e-3, relative="max")) == 1


@pytest.mark.parametrize("dtype", (*LOW, F64))
@pytest.mark.parametrize("relative", [None, "max", "trace"])
def test_constant_centred_features_have_rank_zero(dtype, relative):
    phi = torch.full((300, 12), 3.7, dtype=dtype)
    assert int(ef.eps_rank(phi, 1e-3, center=True, relative=relative)) == 0
    assert int(ef.eps_rank(torch.zeros(40, 6, dtype=dtype), 1e-3, relative=relative)) == 0


@pytest.mark.parametrize("dtype", LOW)
def test_low_rank_square_2048(dtype):
    n = d = 2048
    g = torch.Generator().manual_seed(11)
    lam = torch.logspace(0, -2, 8, dtype=F64)
    u, v = random_orthogonal(n, 8, generator=g), random_orthogonal(d, 8, generator=g)
    phi = ((u * (lam * n).sqrt()) @ v.T).to(dtype)
    # the float64 spectrum of the given values (Gram of the upcast values + eigvalsh: the SVD of a
    # 2048² matrix would dominate the suite's time; both are float64 references)
    ref = torch.linalg.eigvalsh(reference.gram(phi)).flip(0)
    floor = float(ref[8:].abs().max())  # the rounding floor of the given values
    eps = max(1e-7, 10 * floor)  # below the fp32 Gram's floor, above the values' own
    assert float(ref[7]) > 2 * eps and eps - floor > 1e-9 * float(ref[0])
    res = eps_rank_result(phi, eps)
    assert int(res.counts[0]) == int((ref > eps).sum()) == 8
    assert bool(res.certified.all())


def test_promotion_does_not_fire_far_above_the_floor():
    lam = torch.logspace(0, -2, 64, dtype=F64)
    phi = features_with_spectrum(lam, 4000, generator=torch.Generator().manual_seed(2)).float()
    res = eps_rank_result(phi, 1e-3)
    assert not res.promoted and bool(res.certified.all())
    assert int(res.counts[0]) == _gapped(phi, 1e-3)


def test_check_false_does_not_promote_and_reports_it(issue_case):
    res = eps_rank_result(issue_case, 1e-10, check=False)
    assert not res.promoted
    assert not bool(res.certified[0])
    want = _gapped(issue_case, 1e-10, band=0.5)
    assert int(res.lower[0]) <= want <= int(res.upper[0])


@needs_inertia
@pytest.mark.parametrize("fn", [inertia_count, inertia_count_relative])
def test_inertia_validates_like_eps_rank(fn):
    m = torch.eye(5, dtype=F64)
    asym = m.clone()
    asym[0, 1] = 0.5
    with pytest.raises(ValueError, match="gram is not symmetric"):
        fn(asym, [0.5])
    with pytest.raises(ValueError, match="gram is not symmetric"):
        ef.eps_rank(gram=asym, eps=0.5)
    bad = m.clone()
    bad[2, 2] = float("nan")
    with pytest.raises(ValueError, match="gram contains 1 NaN/Inf"):
        fn(bad, [0.5])
    with pytest.raises(ValueError, match="gram contains 1 NaN/Inf"):
        ef.eps_rank(gram=bad, eps=0.5)
    with pytest.raises(ValueError, match="thresholds must be finite"):
        fn(m, [float("nan")])
    with pytest.raises(ValueError, match="gram must be square"):
        fn(torch.ones(3, 4), [0.5])
    # check=False skips the value checks (no host sync) but a non-finite M is never reliable
    res = fn(bad, [0.5], check=False, fallback=False)
    assert not bool(res.reliable.any())
    assert res.certified is not None and not bool(res.certified.any())
