"""The inertia ε-count (effrank_fast::inertia, CPU) against float64 references.

Matrices M = Q diag(λ) Qᵀ with known spectra (tests/inertia_cases.py). The property the kernel
promises (Weyl, with its reported bound δ) is checked for every raw count:
    #{λ̂ > τ + δ + e_ref} ≤ count ≤ #{λ̂ > τ − δ − e_ref}.
So the count equals the reference whenever the gap at τ exceeds δ (+ e_ref), and otherwise the
eigenvalues inside the band cover the difference. The verdicts are checked against the known
spectrum (``check_verdicts``): every count called reliable is exact, float64 matrices are certified
wherever the gap clearly exceeds δ, and with the fallback every count is exact. The crafted
matrices break the pivot-free factorisation on purpose, to trigger the fallback.
"""

from __future__ import annotations

import math

import pytest
import torch
from inertia_cases import (
    F64,
    U,
    adversarial_cases,
    between,
    check_verdicts,
    check_weyl,
    crafted_growth,
    near_miss,
    power_law,
    spectrum_matrix,
)

from effrank_fast import InertiaFallbackWarning, eps_rank
from effrank_fast.ops import native
from effrank_fast.ops.inertia import (
    bunch_kaufman_counts,
    default_band_rel,
    inertia_count,
    inertia_count_relative,
    inertia_ref,
    lambda_max_bounds,
    probabilistic_bound,
)
from effrank_fast.ops.inertia.robust import bk_positive_count, butterfly_congruence

pytestmark = pytest.mark.skipif(
    not native.has_kernel("inertia", "cpu"), reason=f"native CPU kernel missing: {native.NATIVE_ERROR}"
)

SIZES = [*range(1, 18), 31, 63, 64, 65, 100, 127, 129, 200, 257, 333, 512, 700, 1024]


@pytest.mark.parametrize("d", SIZES)
def test_adversarial_spectra_exact(d):
    for i, (name, lam, taus) in enumerate(adversarial_cases(d)):
        m = spectrum_matrix(lam, seed=d * 7 + i)
        tau = torch.tensor(taus, dtype=F64)
        res = inertia_count(m, tau, fallback=False)
        check_weyl(res, m, tau)
        ref = inertia_ref(m, tau)
        exact_true = (lam.unsqueeze(0) > tau.unsqueeze(1)).sum(1)
        assert torch.equal(ref, exact_true), f"{name}: reference disagrees with the known spectrum"
        check_verdicts(res, lam, tau, exact_true, f"{name}, d={d}")
        assert torch.equal(inertia_count(m, tau).counts, exact_true), f"{name}, d={d}: with the fallback"


def test_near_miss_is_caught_by_the_certificate():
    # A tiny first pivot (growth 1e7) and an eigenvalue 1e-11 from τ: the pivot-free count can be
    # off by one (inside its Weyl bracket) where a 1e-6 tolerance alone would call it reliable.
    # Whether a case miscounts depends on the rounding pattern of the GEMM kernel this CPU runs, so
    # the family is scanned and every miscount found is checked.
    misses = []
    for g in (-1e-11, 1e-11):
        for seed in range(60):
            m, tau, lam = near_miss(seed, 1e-7, g)
            truth = (lam > tau).sum().reshape(1)
            loose = inertia_count(m, tau, band_rel=1e-6, certify=False, fallback=False, block_size=64)
            check_weyl(loose, m, tau)
            if not torch.equal(loose.counts, truth):
                misses.append((m, tau, truth, loose))
    assert misses, "no case of the family miscounts any more: the test checks nothing"
    for m, tau, truth, loose in misses:
        assert bool(loose.reliable[0]) and int(loose.band_counts[0]) >= 1
        res = inertia_count(m, tau, fallback=False, block_size=64)  # float64 M: certificate at τ ± 2δ
        assert not bool(res.reliable[0]) and not bool(res.certified[0])  # type: ignore[index]
        fixed = inertia_count(m, tau, block_size=64)
        assert bool(fixed.fell_back[0]) and torch.equal(fixed.counts, truth)
        with pytest.warns(InertiaFallbackWarning, match="recounted by eigh"):
            got = eps_rank(gram=m, eps=float(tau[0]), method="inertia")
        assert int(got) == int(truth[0])


def test_fp32_gram_is_certified_against_its_own_rounding():
    # without gram_error an fp32 M is the exact matrix rounded to fp32: δ_G = u₃₂·‖M‖_F
    lam = power_law(150)
    m = spectrum_matrix(lam, seed=4)
    tau = torch.tensor([between(lam, k) for k in (3, 70)], dtype=F64)
    res = inertia_count(m.float(), tau, fallback=False)
    storage = torch.finfo(torch.float32).eps / 2 * float(torch.linalg.matrix_norm(m.float().double()))
    assert res.gram_error is not None and float(res.gram_error[0]) == pytest.approx(storage)
    gap = float((torch.linalg.eigvalsh(m.float().double()).unsqueeze(1) - tau).abs().min())
    assert gap > 2 * storage  # the case is decidable at fp32 resolution
    assert res.certified is not None and bool(res.certified.all()) and bool(res.reliable.all())
    assert res.counts.tolist() == [3, 70]
    # a τ within the fp32 rounding of an eigenvalue is never called reliable
    lam32 = torch.linalg.eigvalsh(m.float().double())
    close = inertia_count(m.float(), [float(lam32[80]) * (1 + 1e-9)], fallback=False)
    assert not bool(close.reliable[0])
    lo, hi = close.count_bounds  # type: ignore[misc]
    want = int((lam32 > float(lam32[80]) * (1 + 1e-9)).sum())
    assert int(lo[0]) <= want <= int(hi[0])
    assert default_band_rel(torch.float64) == pytest.approx(16 * 2.0**-53)


def _ldl_pivots(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D and L of the pivot-free LDLᵀ, unblocked, float64: an independent reference for the diagnostics."""
    a = a.clone()
    n = a.shape[0]
    L = torch.eye(n, dtype=F64)
    for k in range(n):
        L[k + 1 :, k] = a[k + 1 :, k] / a[k, k]
        a[k + 1 :, k + 1 :] -= torch.outer(L[k + 1 :, k], a[k, k + 1 :])
    return a.diagonal().clone(), L


def test_diagnostics_against_an_unblocked_ldl():
    lam = torch.linspace(-1, 1, 90, dtype=F64) + 0.01
    m = spectrum_matrix(lam, seed=21)
    tau = torch.tensor([0.0, 0.3], dtype=F64)
    res = inertia_count(m, tau, certify=False, fallback=False)
    assert res.error_bound is not None and res.scale is not None and res.max_abs_l is not None
    for e in range(2):
        piv, L = _ldl_pivots(m - tau[e] * torch.eye(90, dtype=F64))
        assert int(res.counts[e]) == int((piv > 0).sum())
        # band = #{|D_ii| ≤ δ}: δ is huge next to the pivots' rounding, so no pivot sits on the edge
        assert int(res.band_counts[e]) == int((piv.abs() <= res.error_bound[e]).sum())
        assert float(res.max_abs_l[e]) == pytest.approx(float(L.abs().max()), rel=1e-8)
        growth = float((piv.abs() * L.abs().amax(0) ** 2).max()) / float(res.scale[e])
        assert float(res.growth[e]) == pytest.approx(growth, rel=1e-8)
        assert float(res.min_pivot_rel[e]) == pytest.approx(float(piv.abs().min()) / float(res.scale[e]), rel=1e-8)


def test_band_counts_every_pivot_after_a_zero_pivot():
    m, _ = crafted_growth(50)
    out = torch.ops.effrank_fast.inertia(m, m[0, 0].reshape(1), 0)
    assert math.isinf(float(out[4][0])) and int(out[3][0]) == 50 and math.isinf(float(out[6][0]))


@pytest.mark.parametrize("block_size", [1, 7, 16, 64, 100, 1000])
def test_block_sizes_agree(block_size):
    d = 150
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=3)
    tau = torch.tensor([between(lam, k) for k in (5, 50, 120)], dtype=F64)
    res = inertia_count(m, tau, block_size=block_size, fallback=False)
    check_weyl(res, m, tau)
    assert torch.equal(res.counts, torch.tensor([5, 50, 120]))


def test_several_thresholds_equal_single_calls():
    lam = power_law(90)
    m = spectrum_matrix(lam, seed=5)
    tau = torch.tensor([between(lam, k) for k in (3, 30, 60, 89)], dtype=F64)
    batched = torch.ops.effrank_fast.inertia(m, tau, 0)
    for e in range(tau.shape[0]):
        single = torch.ops.effrank_fast.inertia(m, tau[e : e + 1], 0)
        for b, s in zip(batched, single, strict=True):
            if s.dtype == torch.int64:  # counts and bands: identical
                assert torch.equal(b[e : e + 1], s)
            else:  # several thresholds factor side by side with sequential BLAS: rounding may differ
                torch.testing.assert_close(b[e : e + 1], s, rtol=1e-10, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_input_is_read_exactly(dtype):
    # The kernel upcasts entries exactly, so it counts the eigenvalues of the stored matrix.
    lam = torch.logspace(0, -3, 80, dtype=F64)
    m = spectrum_matrix(lam, seed=11).to(dtype)
    m64 = m.double()
    lam_hat = torch.linalg.eigvalsh(m64).flip(0)
    tau = torch.tensor([between(lam_hat, k) for k in (4, 40, 70)], dtype=F64)
    res = inertia_count(m, tau, fallback=False, gram_error=0.0)  # the stored matrix is the matrix
    assert torch.equal(res.counts, inertia_ref(m64, tau))
    assert bool(res.reliable.all())
    # without gram_error it is the exact matrix rounded to `dtype`: u·‖M‖_F may cover a τ
    rounded = inertia_count(m, tau, fallback=False)
    lo, hi = rounded.count_bounds  # type: ignore[misc]
    assert bool((lo <= res.counts).all() and (res.counts <= hi).all())


def test_only_the_lower_triangle_is_read():
    lam = power_law(40)
    m = spectrum_matrix(lam, seed=2)
    junk = m.clone()
    junk.triu_(1).mul_(1e3)
    junk = m.tril() + junk  # upper triangle garbage
    tau = torch.tensor([between(lam, 10)], dtype=F64)
    with pytest.raises(ValueError, match="gram is not symmetric"):  # validated like eps_rank(gram=)
        inertia_count(junk, tau, fallback=False)
    # check=False skips the value checks (no host sync): then only the lower triangle is read
    assert torch.equal(inertia_count(junk, tau, fallback=False, check=False).counts, torch.tensor([10]))


def test_probabilistic_bound_behind_the_verdict():
    d = 200
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=2)
    res = inertia_count(m, [between(lam, 50)], fallback=False)
    assert res.error_estimate is not None and res.error_bound is not None and res.scale is not None
    # same T = tr(|L||D||Lᵀ|), γ_{3d} = 3du/(1 − 3du) replaced by 12·√(3d)·u
    ratio = (res.error_estimate - U * res.scale) / (res.error_bound - U * res.scale)
    assert float(ratio[0]) == pytest.approx(12 * (1 - 3 * d * U) / math.sqrt(3 * d), rel=1e-9)
    inf = probabilistic_bound(torch.tensor([math.inf, math.nan], dtype=F64), torch.ones(2, dtype=F64), 10)
    assert torch.isinf(inf).all()


def test_crafted_growth_triggers_the_fallback():
    m, tau = crafted_growth()
    ref = inertia_ref(m, tau)
    raw = inertia_count(m, tau, fallback=False)
    assert not bool(raw.reliable.any()), "a 1e-12 pivot must break the error bound"
    assert float(raw.growth[0]) > 1e6 and float(raw.min_pivot_rel[0]) < 1e-10
    check_weyl(raw, m, tau)
    for fb in ("eigh", True, "ldl"):
        res = inertia_count(m, tau, fallback=fb)
        assert bool(res.fell_back.all()) and res.fallback_method == ("ldl" if fb == "ldl" else "eigh")
        assert torch.equal(res.counts, ref)


def test_exact_zero_pivot_is_reported_and_recounted():
    m, _ = crafted_growth(50)
    tau = m[0, 0].reshape(1)  # first pivot exactly 0
    raw = inertia_count(m, tau, fallback=False)
    assert math.isinf(float(raw.error_bound[0])) and math.isinf(float(raw.growth[0]))
    assert not bool(raw.reliable[0])
    assert torch.equal(inertia_count(m, tau).counts, inertia_ref(m, tau))


def test_random_butterfly_cures_the_crafted_growth():
    m, tau = crafted_growth()
    res = inertia_count(m, tau, rbt=True, fallback=False)
    assert res.rbt
    assert bool(res.reliable.all()), f"growth {res.growth}, δ {res.error_bound}"
    assert torch.equal(res.counts, inertia_ref(m, tau))
    check_weyl(res, m, tau)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 37, 128])
def test_random_butterfly_keeps_the_inertia(d):
    lam = torch.linspace(-1, 1, d, dtype=F64) + 0.013  # indefinite
    m = spectrum_matrix(lam, seed=d)
    a = m - 0.1 * torch.eye(d, dtype=F64)
    at, pad, inv_norm, _ = butterfly_congruence(a, seed=d)
    assert at.shape[0] == d + pad and at.shape[0] % 4 == 0
    pos = int((torch.linalg.eigvalsh(a) > 0).sum())
    assert int((torch.linalg.eigvalsh(at) > 0).sum()) == pos + pad
    assert float(inv_norm) <= math.exp(0.1) + 1e-12  # two levels, |log r| ≤ 1/20


def test_bunch_kaufman_counts_with_2x2_pivots():
    g = torch.Generator().manual_seed(4)
    for d in (2, 3, 6, 41):
        b = torch.randn(d, d, generator=g, dtype=F64)
        a = b + b.T
        a.diagonal().zero_()  # zero diagonal: Bunch–Kaufman must take 2×2 pivots
        ld, piv, info = torch.linalg.ldl_factor_ex(a)
        assert int(info) == 0
        assert (piv < 0).any() or d < 3
        assert int(bk_positive_count(ld, piv)) == int((torch.linalg.eigvalsh(a) > 0).sum())
    lam = power_law(60)
    m = spectrum_matrix(lam, seed=9)
    tau = torch.tensor([between(lam, k) for k in (1, 20, 59)], dtype=F64)
    assert torch.equal(bunch_kaufman_counts(m, tau), torch.tensor([1, 20, 59]))


@pytest.mark.parametrize(
    "lam",
    [
        power_law(300),
        torch.cat([1 - 1e-9 * torch.arange(6, dtype=F64), torch.logspace(-1, -5, 194, dtype=F64)]),  # top cluster
        torch.logspace(0, -8, 250, dtype=F64),  # slowly decaying top: Lanczos converges slowly
        torch.tensor([0.7], dtype=F64),
        torch.tensor([2.0, 1.0], dtype=F64),
        torch.zeros(5, dtype=F64),
    ],
    ids=["power-law", "top-cluster", "log-uniform", "d1", "d2", "zero"],
)
def test_lambda_max_bounds_bracket(lam):
    m = spectrum_matrix(lam, seed=1)
    b = lambda_max_bounds(m)
    lmax = float(torch.linalg.eigvalsh(m)[-1])
    slack = 8 * m.shape[0] * U * max(abs(lmax), 1e-300)
    assert float(b.lower) <= lmax + slack
    assert float(b.upper) >= lmax - slack
    if m.shape[0] <= b.steps:  # the whole space: the bracket is tight
        assert float(b.upper - b.lower) <= 1e-10 * max(abs(lmax), 1.0)


def test_lambda_max_bounds_converge_on_a_power_law():
    m = spectrum_matrix(power_law(400), seed=6)
    b = lambda_max_bounds(m)
    assert float(b.upper - b.lower) <= 1e-9  # top gap 56 %: Lanczos converges in a few steps


@pytest.mark.parametrize("k", [1, 2, 5, 40])
def test_tridiag_top_matches_eigh(k):
    g = torch.Generator().manual_seed(k)
    alpha = torch.randn(k, generator=g, dtype=F64)
    beta = torch.randn(k - 1, generator=g, dtype=F64)
    if k > 3:
        beta[k // 2] = 0.0  # a decoupled block
    theta, y = torch.ops.effrank_fast.tridiag_top(alpha, beta)
    t = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    lam, vec = torch.linalg.eigh(t)
    assert abs(float(theta) - float(lam[-1])) <= 8 * U * float(lam.abs().max())
    assert abs(float(y.norm()) - 1) < 1e-12
    if k == 1 or float(lam[-1] - lam[-2]) > 1e-6:
        assert abs(float(y @ vec[:, -1])) > 1 - 1e-10


@pytest.mark.parametrize("d", [1, 7, 64, 200])
def test_relative_counts(d):
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=d + 100)
    lam_hat = torch.linalg.eigvalsh(m).flip(0)
    eps = [float(between(lam_hat, k) / lam_hat[0]) for k in sorted({1, d // 2, d - 1}) if 0 < k < d] or [0.5]
    eps += [float(lam_hat[-1] / lam_hat[0]) * (1 - 1e-7)]
    res = inertia_count_relative(m, eps, fallback=False)
    ref = (lam_hat.unsqueeze(0) > (torch.tensor(eps, dtype=F64) * lam_hat[0]).unsqueeze(1)).sum(1)
    assert res.lambda_max is not None and res.count_bounds is not None
    lo, hi = res.lambda_max
    assert float(lo) <= float(lam_hat[0]) * (1 + 1e-12) and float(hi) >= float(lam_hat[0]) * (1 - 1e-12)
    assert torch.equal(res.counts, ref) and bool(res.reliable.all())
    assert torch.equal(inertia_count_relative(m, eps).counts, ref)


def test_relative_counts_fall_back_inside_the_bracket():
    # ε·λ_max sits exactly on an eigenvalue at the resolution of the bracket: the two ends disagree.
    lam = torch.logspace(0, -8, 250, dtype=F64)  # slow Lanczos: bracket width ~1e-9
    m = spectrum_matrix(lam, seed=12)
    lam_hat = torch.linalg.eigvalsh(m).flip(0)
    eps = float(lam_hat[100] / lam_hat[0])
    raw = inertia_count_relative(m, [eps], fallback=False)
    assert raw.count_bounds is not None
    at_upper, at_lower = raw.count_bounds  # counts at ε·upper ≤ true count ≤ counts at ε·lower
    assert int(at_upper[0]) <= 100 <= int(at_lower[0])
    res = inertia_count_relative(m, [eps])
    ref = int((lam_hat > eps * lam_hat[0]).sum())
    if not bool(raw.reliable[0]):
        assert bool(res.fell_back[0]) and res.fallback_method == "eigh"
    assert int(res.counts[0]) == ref


def test_argument_errors():
    m = torch.eye(4, dtype=F64)
    with pytest.raises(ValueError, match="gram"):
        inertia_count(torch.ones(3, 4), [0.5])
    with pytest.raises(TypeError, match="gram"):
        inertia_count([[1.0]], [0.5])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="thresholds"):
        inertia_count(m, torch.ones(2, 2))
    with pytest.raises(ValueError, match="fallback"):
        inertia_count(m, [0.5], fallback="svd")
    with pytest.raises(ValueError, match="band_rel"):
        inertia_count(m, [0.5], band_rel=-1.0)
    with pytest.raises(ValueError, match="block_size"):
        inertia_count(m, [0.5], block_size=-2)
    with pytest.raises(RuntimeError, match="gram must be square"):
        torch.ops.effrank_fast.inertia(torch.ones(3, 4, dtype=F64), torch.ones(1, dtype=F64), 0)
    with pytest.raises(RuntimeError, match="thresholds must be 1-D"):
        torch.ops.effrank_fast.inertia(m, torch.ones(1, 1, dtype=F64), 0)
    with pytest.raises(RuntimeError, match="beta must be 1-D"):
        torch.ops.effrank_fast.tridiag_top(torch.ones(3, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="steps"):
        lambda_max_bounds(m, steps=0)


def test_opcheck_cpu():
    m = spectrum_matrix(power_law(70), seed=0)
    tau = torch.tensor([1e-2, 1e-3], dtype=F64)
    torch.library.opcheck(torch.ops.effrank_fast.inertia.default, (m, tau, 0))
    torch.library.opcheck(torch.ops.effrank_fast.inertia.default, (m.float(), tau, 32))
    alpha, beta = torch.randn(9, dtype=F64), torch.randn(8, dtype=F64)
    torch.library.opcheck(torch.ops.effrank_fast.tridiag_top.default, (alpha, beta))


def test_torch_compile_fullgraph_cpu():
    m = spectrum_matrix(power_law(96), seed=8)
    tau = torch.tensor([between(power_law(96), k) for k in (2, 40)], dtype=F64)

    def count(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c, _, _, _, delta, scale, _ = torch.ops.effrank_fast.inertia(g, t, 0)
        return torch.where(delta <= 1e-7 * scale, c, -1)

    compiled = torch.compile(count, fullgraph=True)  # inductor: the op is opaque, the rest is fused
    assert torch.equal(compiled(m, tau), count(m, tau))
    assert torch.equal(compiled(m, tau), torch.tensor([2, 40]))


def test_count_method_rule():
    from effrank_fast.ops.inertia import cost

    cpu = torch.device("cpu")
    pick = cost.select_count_method
    assert pick("auto", cpu, 1, "given", dim=32) == "eigh"  # parity below d = 64: one spectrum serves all
    # eps_rank's certificate (gram_error, the default): two factorisations per threshold
    assert pick("auto", cpu, 1, "given", dim=100) == "inertia"  # 2 ≤ 2 at 64 ≤ d < 128
    assert pick("auto", cpu, 2, "given", dim=100) == "eigh"  # 4 > 2
    assert pick("auto", cpu, 1, "given", dim=130) == "inertia"
    assert pick("auto", cpu, 2, "native", dim=300) == "inertia"  # 4 ≤ 5
    assert pick("auto", cpu, 3, "native", dim=300) == "eigh"  # 6 > 5
    assert pick("auto", cpu, 3, "native", dim=600) == "inertia"  # 6 ≤ 6
    assert pick("auto", cpu, 4, "native", dim=3000) == "eigh"  # 8 > 6 from d = 2048
    assert pick("auto", cpu, 2, "given", dim=300, relative="max") == "eigh"  # 4 + 2 > 5
    assert pick("auto", cpu, 2, "given", dim=600, relative="max") == "inertia"  # 4 + 2 ≤ 6
    assert pick("auto", cpu, 1, "torch", dim=500) == "eigh"  # the pure-PyTorch backend was forced
    assert pick("inertia", cpu, 9, "torch", dim=8) == "inertia"
    assert pick("eigh", cpu, 1, "given", dim=500) == "eigh"
    assert cost.inertia_factorisations(4, None, gram_error=True) == 8
    assert cost.inertia_factorisations(4, "max", gram_error=True) == 10
    # M taken as exact (gram_error=False): one per threshold, three for a certified float64 M
    assert cost.inertia_factorisations(4, "max") == 10 and cost.inertia_factorisations(4, None) == 4
    assert cost.inertia_factorisations(4, None, certify=True) == 12
    assert cost.inertia_factorisations(4, "max", certify=True) == 26
    old = {"gram_error": False}
    assert pick("auto", cpu, 3, "native", dim=300, **old) == "inertia"
    assert pick("auto", cpu, 1, "given", dim=200, dtype=torch.float32, **old) == "inertia"
    assert pick("auto", cpu, 1, "given", dim=100, dtype=torch.float64, **old) == "eigh"  # 3 > 2 below d = 128
    assert pick("auto", cpu, 1, "given", dim=200, dtype=torch.float64, **old) == "inertia"  # 3 ≤ 4
    with pytest.raises(ValueError, match="method"):
        pick("svd", cpu, 1, "given")


def test_eps_rank_through_inertia_matches_eigh():
    import effrank_fast as ef

    d = 150
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=31)
    lam_hat = torch.linalg.eigvalsh(m).flip(0)
    eps_abs = [between(lam_hat, k) for k in (3, 75)]
    eps_rel = [e / float(lam_hat[0]) for e in eps_abs]
    eps_tr = [e / float(lam_hat.sum()) for e in eps_abs]
    for eps, relative in ((eps_abs, None), (eps_rel, "max"), (eps_tr, "trace")):
        got = ef.eps_rank(gram=m, eps=eps, relative=relative, method="inertia")
        assert got.tolist() == [3, 75], relative
        assert torch.equal(got, ef.eps_rank(gram=m, eps=eps, relative=relative, method="eigh"))
    assert int(ef.eps_rank(gram=m.float(), eps=eps_abs[1])) == 75  # auto: inertia for an fp32 M at this size
    phi = torch.randn(400, 60, dtype=F64) * torch.logspace(0, -3, 60, dtype=F64)
    ref = ef.reference.eps_rank(phi, [1e-2, 1e-5])
    assert torch.equal(ef.eps_rank(phi, [1e-2, 1e-5], method="inertia"), torch.as_tensor(ref))


_GEMM_PATH_SCRIPT = r"""
import sys, torch
sys.path.insert(0, "tests")
from inertia_cases import between, power_law, spectrum_matrix
torch.set_num_threads(2)
for d, block in [(1, 128), (5, 128), (300, 64), (700, 128)]:  # one block; several; trailing column blocks of 256
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=d)
    ks = sorted({1, max(1, d // 3), max(1, d - 1)})
    tau = torch.tensor([between(lam, k) if k < d else float(lam[-1]) / 2 for k in ks], dtype=torch.float64)
    raw = torch.ops.effrank_fast.inertia(m, tau, block)
    want = [(lam > t).sum().item() for t in tau.tolist()]
    assert raw[0].tolist() == want, (d, raw[0].tolist(), want)
    for view in (m, m.T.contiguous()):  # only the lower triangle is read
        assert torch.equal(torch.ops.effrank_fast.inertia(view, tau, block)[0], raw[0])
print("ok")
"""


@pytest.mark.skipif(not native.has_kernel("inertia", "cpu"), reason=str(native.NATIVE_ERROR))
@pytest.mark.parametrize("path", ["auto", "blas"])
def test_cpu_trailing_update_paths_count_exactly(path):
    """The LDLᵀ's trailing GEMM through MKL's per-ISA sequential kernel (``auto``, where this CPU has
    one) and through torch's addmm (``EFFRANK_FAST_CPU_GEMM=blas``): counts on known spectra, with
    one and several blocks and column blocks, equal the true ones."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, EFFRANK_FAST_CPU_GEMM=path)
    out = subprocess.run(
        [sys.executable, "-c", _GEMM_PATH_SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
