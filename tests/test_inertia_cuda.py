"""The CUDA kernel of effrank_fast::inertia (run on the GPU machine; skipped without CUDA).

Same references and properties as tests/test_inertia.py (see its docstring); sizes up to 16384,
where the reference is the known spectrum (eigvalsh of a 16384² matrix takes seconds) and the
thresholds sit halfway between eigenvalues.
"""

from __future__ import annotations

import math

import pytest
import torch
from inertia_cases import (
    F64,
    adversarial_cases,
    between,
    check_verdicts,
    check_weyl,
    crafted_growth,
    power_law,
    spectrum_matrix,
)

from effrank_fast.ops.inertia import (
    inertia_count,
    inertia_count_relative,
    inertia_ref,
    lambda_max_bounds,
)

# GPU-marked only: on a CUDA machine a missing kernel fails here loudly (BackendUnavailableError)
# instead of skipping, so that a failed or partial build cannot pass as "skipped".
pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("d", [1, 2, 3, 17, 63, 64, 65, 127, 200, 257, 640, 1000, 2048, 4097])
def test_cuda_adversarial_spectra_exact(d):
    for i, (name, lam, taus) in enumerate(adversarial_cases(d)):
        m = spectrum_matrix(lam, seed=d * 7 + i, device="cuda")
        tau = torch.tensor(taus, dtype=F64, device="cuda")
        res = inertia_count(m, tau, fallback=False)
        check_weyl(res, m, tau)
        exact_true = (lam.unsqueeze(0) > tau.cpu().unsqueeze(1)).sum(1)
        assert torch.equal(inertia_ref(m, tau).cpu(), exact_true)
        check_verdicts(res, lam, tau, exact_true, f"{name}, d={d}")
        assert torch.equal(inertia_count(m, tau).counts.cpu(), exact_true), f"{name}, d={d}: with the fallback"


@pytest.mark.parametrize("d", [8192, 16384])
def test_cuda_large_known_spectrum(d):
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=d, device="cuda").float()  # an fp32 Gram, as in training
    lam_hat = lam  # fp32 rounding moves eigenvalues by ≲ 1e-7·λ_max; thresholds sit ≥ 1e-4 relative away
    ks = [1, 10, 100, 1000, d // 2]
    tau = torch.tensor([between(lam_hat, k) for k in ks], dtype=F64, device="cuda")
    res = inertia_count(m, tau, fallback=False)
    assert res.counts.cpu().tolist() == ks
    assert bool(res.reliable.all()), f"δ={res.error_bound}, growth={res.growth}"


@pytest.mark.parametrize("panel", [64, 128, 192, 512])
@pytest.mark.parametrize("trailing", ["syrkx", "gemm", "blocks"])
def test_cuda_panel_and_trailing_variants_match_cpu(panel, trailing, monkeypatch):
    monkeypatch.setenv("EFFRANK_INERTIA_TRAILING", trailing)
    monkeypatch.setenv("EFFRANK_INERTIA_COLBLOCK", "300")  # several block columns at d = 1000
    d = 1000
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=21)
    tau = torch.tensor([between(lam, k) for k in (1, 37, 500, 999)], dtype=F64)
    cpu = torch.ops.effrank_fast.inertia(m, tau, 0)
    gpu = torch.ops.effrank_fast.inertia(m.cuda(), tau.cuda(), panel)
    assert torch.equal(gpu[0].cpu(), cpu[0]) and gpu[0].tolist() == [1, 37, 500, 999]
    # Diagnostics are the same sums in another order: equal to far below their own meaning.
    for k in (1, 2, 4, 5, 6):  # min pivot, growth, δ, ‖A‖_F, max |L|
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], rtol=1e-6, atol=0)
    assert torch.equal(gpu[3].cpu(), cpu[3])  # #{|D| ≤ δ}: no pivot within 1e-6 of δ here


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_low_precision_input(dtype):
    lam = torch.logspace(0, -3, 300, dtype=F64)
    m = spectrum_matrix(lam, seed=11, device="cuda").to(dtype)
    lam_hat = torch.linalg.eigvalsh(m.double()).flip(0).cpu()
    tau = torch.tensor([between(lam_hat, k) for k in (4, 150, 290)], dtype=F64, device="cuda")
    res = inertia_count(m, tau, fallback=False)
    assert torch.equal(res.counts, inertia_ref(m.double(), tau)) and bool(res.reliable.all())


def test_cuda_crafted_growth_falls_back_and_rbt_cures_it():
    m, tau = crafted_growth()
    m, tau = m.cuda(), tau.cuda()
    ref = inertia_ref(m, tau)
    raw = inertia_count(m, tau, fallback=False)
    assert not bool(raw.reliable.any()) and float(raw.growth[0]) > 1e6
    for fb in ("eigh", "ldl"):
        res = inertia_count(m, tau, fallback=fb)
        assert bool(res.fell_back.all()) and res.fallback_method == fb
        assert torch.equal(res.counts, ref)
    cured = inertia_count(m, tau, rbt=True, fallback=False)
    assert bool(cured.reliable.all()) and torch.equal(cured.counts, ref)
    zero = inertia_count(m, m[0, 0].reshape(1), fallback=False)  # an exact zero pivot
    assert math.isinf(float(zero.error_bound[0])) and not bool(zero.reliable[0])


@pytest.mark.parametrize("d", [1, 64, 777])
def test_cuda_relative_counts(d):
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=d, device="cuda")
    lam_hat = torch.linalg.eigvalsh(m).flip(0).cpu()
    eps = [float(between(lam_hat, k) / lam_hat[0]) for k in sorted({1, d // 2}) if 0 < k < d] or [0.5]
    res = inertia_count_relative(m, eps, fallback=False)
    ref = (lam_hat.unsqueeze(0) > (torch.tensor(eps, dtype=F64) * lam_hat[0]).unsqueeze(1)).sum(1)
    assert torch.equal(res.counts.cpu(), ref) and bool(res.reliable.all())


def test_cuda_tridiag_top_matches_cpu():
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 9, 64):
        alpha, beta = torch.randn(k, generator=g, dtype=F64), torch.randn(k - 1, generator=g, dtype=F64)
        t_cpu, y_cpu = torch.ops.effrank_fast.tridiag_top(alpha, beta)
        t_gpu, y_gpu = torch.ops.effrank_fast.tridiag_top(alpha.cuda(), beta.cuda())
        torch.testing.assert_close(t_gpu.cpu(), t_cpu, rtol=1e-13, atol=0)
        torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=0, atol=1e-10)


def test_cuda_no_host_sync():
    lam = power_law(600)
    m = spectrum_matrix(lam, seed=4, device="cuda")
    tau = torch.tensor([between(lam, 10), between(lam, 300)], dtype=F64, device="cuda")
    eps = tau / lam[0]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.ops.effrank_fast.inertia(m, tau, 0)
        res = inertia_count(m, tau, fallback=False)
        b = lambda_max_bounds(m)
        rel = inertia_count_relative(m, eps, fallback=False)
        rbt = inertia_count(m, tau, fallback=False, rbt=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert res.counts.tolist() == [10, 300] and rbt.counts.tolist() == [10, 300]
    assert rel.counts.tolist() == [10, 300]
    assert float(b.lower) <= float(lam[0]) <= float(b.upper) * (1 + 1e-12)


def test_cuda_opcheck():
    m = spectrum_matrix(power_law(300), seed=0, device="cuda")
    tau = torch.tensor([1e-2, 1e-3], dtype=F64, device="cuda")
    torch.library.opcheck(torch.ops.effrank_fast.inertia.default, (m, tau, 0))
    torch.library.opcheck(torch.ops.effrank_fast.inertia.default, (m.float(), tau, 128))
    alpha, beta = torch.randn(9, dtype=F64, device="cuda"), torch.randn(8, dtype=F64, device="cuda")
    torch.library.opcheck(torch.ops.effrank_fast.tridiag_top.default, (alpha, beta))


def test_cuda_compile_fullgraph():
    lam = power_law(500)
    m = spectrum_matrix(lam, seed=8, device="cuda").float()
    tau = torch.tensor([between(lam, k) for k in (2, 200)], dtype=F64, device="cuda")

    def count(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c, _, _, _, delta, scale, _ = torch.ops.effrank_fast.inertia(g, t, 0)
        return torch.where(delta <= 1e-7 * scale, c, -1)

    compiled = torch.compile(count, fullgraph=True)
    assert compiled(m, tau).tolist() == [2, 200]


def test_cuda_eps_rank_auto_uses_inertia():
    import effrank_fast as ef
    from effrank_fast.ops.inertia import cost

    lam = power_law(2048)
    m = spectrum_matrix(lam, seed=3, device="cuda")
    assert cost.select_count_method("auto", m.device, 1, "given", dim=2048) == "inertia"
    eps = [between(lam, 100), between(lam, 1500)]
    got = ef.eps_rank(gram=m, eps=eps, check=False)
    assert got.tolist() == [100, 1500]
    assert torch.equal(got, ef.eps_rank(gram=m, eps=eps, method="eigh", check=False))
    rel = ef.eps_rank(gram=m, eps=[float(e / lam[0]) for e in eps], relative="max", method="inertia", check=False)
    assert rel.tolist() == [100, 1500]
