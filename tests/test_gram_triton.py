"""Triton Gram (SYRK) kernels against a float64 Gram of the same inputs (tests/gram_contract.py).

On the CPU the kernels run under TRITON_INTERPRET=1 with small odd shapes; on a GPU the same tests
run on CUDA. The GPU-only tests (large N, tensor-core bias, opcheck, torch.compile) are in
test_gram_triton_gpu.py, the opt-in autotuner's in test_gram_triton_autotune.py.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

import effrank_fast as ef  # noqa: E402
from effrank_fast.ops.gram import triton as gt  # noqa: E402
from effrank_fast.ops.gram import triton_plan as plan  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from gram_contract import (  # noqa: E402
    FLOOR,
    U32,
    check_contract,
    features64,
    fp64_tol,
    relerr,
    simt32,
    spy_splits,
    weights_of,
)

SHAPES = [(1, 1), (37, 5), (333, 70), (40, 90)]  # N = 1, d = 1, d not a multiple of the tile, N < d


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("wkind", [None, "uniform", "random"])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centred"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_gram_matches_float64_within_twice_simt(dtype, wkind, center, shape):
    n, d = shape
    phi = (torch.randn(n, d, device=DEV) * torch.linspace(0.5, 3, d, device=DEV) + 0.3).to(dtype)
    w = weights_of(wkind, n)
    m = gt.gram_triton(phi, w, center, torch.float32)
    if n == 1 and center:
        # One centred sample is 0 up to the rounding of μ = w·φ/w: |M| ≤ a few ulps of ‖√w φ‖².
        scale = float((phi.double().square().sum()) * (1 if w is None else w.double().max()))
        assert float(m.abs().max()) <= FLOOR * scale and torch.equal(m, m.T)
        return
    check_contract(phi, w, center, m)


@pytest.mark.parametrize("wkind", [None, "random"])
def test_float64_input_with_fp32_accumulation(wkind):
    """fp64 features, fp32 accumulator: the values are rounded to fp32 once, like the SIMT Gram's."""
    phi = torch.randn(123, 37, device=DEV, dtype=torch.float64) + 0.2
    w = weights_of(wkind, 123)
    check_contract(phi, w, True, gt.gram_triton(phi, w, True, torch.float32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centred"])
def test_fp64_accumulation_is_float64_accurate(dtype, center):
    phi = torch.randn(211, 45, device=DEV).to(dtype)
    w = weights_of("random", 211)
    x = features64(phi, w, center)
    m = gt.gram_triton(phi, w, center, torch.float64)
    assert m.dtype == torch.float64 and torch.equal(m, m.T)
    assert relerr(m, x.T @ x) <= fp64_tol(phi, w, center)


@pytest.mark.parametrize("split", [2, 5])
@pytest.mark.parametrize("acc", [torch.float32, torch.float64], ids=str)
def test_split_k_atomics_then_mirror(split, acc, monkeypatch):
    monkeypatch.setitem(gt.OVERRIDES, "split", split)
    monkeypatch.setitem(gt.OVERRIDES, "window_rows", 32)
    phi = torch.randn(300, 70, device=DEV).to(torch.bfloat16)
    for wkind in (None, "uniform", "random"):
        w = weights_of(wkind, 300)
        m = gt.gram_triton(phi, w, False, acc)
        if acc == torch.float32:
            check_contract(phi, w, False, m)
        else:
            x = features64(phi, w, False)
            assert relerr(m, x.T @ x) <= fp64_tol(phi, w, False) and torch.equal(m, m.T)


@pytest.mark.parametrize("split", [None, 3])
@pytest.mark.parametrize("acc", [torch.float32, torch.float64], ids=str)
def test_streaming_out_accumulates_in_place(split, acc, monkeypatch):
    used = spy_splits(monkeypatch)
    if split:
        monkeypatch.setitem(gt.OVERRIDES, "split", split)
        # A split needs as many windows: 96-row batches of 32-row windows (fp64: 32-row k-blocks).
        monkeypatch.setitem(gt.OVERRIDES, "window_rows", 32)
    phi = torch.randn(250, 33, device=DEV).to(torch.bfloat16)
    w = weights_of("random", 250)
    out = torch.zeros(33, 33, dtype=acc, device=DEV)
    for start in range(0, 250, 96):  # micro-batches of a streamed epoch
        ret = gt.gram_triton(phi[start : start + 96], w[start : start + 96], out=out)
        assert ret is out
    if split or DEV == "cpu":  # the interpreter has one "SM": no split unless forced
        per_batch = 2 if acc == torch.float32 else 1  # fp32: the guarded pair of launches
        assert used == [split or 1] * 2 * per_batch + [min(split or 1, 2)] * per_batch  # 96, 96, 58 rows
    x = features64(phi, w, False)
    ref = x.T @ x
    tol = fp64_tol(phi, w, False) if acc == torch.float64 else 2 * relerr(simt32(phi, w, False), ref) + 4 * FLOOR
    assert relerr(out, ref) <= tol and torch.equal(out, out.T)


def test_streaming_ema_recipe():
    phi1, phi2 = torch.randn(64, 20, device=DEV), torch.randn(64, 20, device=DEV)
    beta = 0.9
    w = torch.full((64,), 1.0 / 64, device=DEV)
    m = gt.gram_triton(phi1, w)
    m.mul_(beta)
    gt.gram_triton(phi2, (1 - beta) * w, out=m)
    x1, x2 = features64(phi1, w, False), features64(phi2, w, False)
    g1, g2 = x1.T @ x1, x2.T @ x2
    ref = beta * g1 + (1 - beta) * g2
    # Each Gram within its contract (2× fp32 SIMT + FLOOR); (1 − β)·w is rounded to fp32 (u₃₂ on
    # the second Gram); β·M and the final add are one rounding each (2u₃₂ of the result).
    e1 = 2 * relerr(simt32(phi1, w, False), g1) + FLOOR
    e2 = 2 * relerr(simt32(phi2, (1 - beta) * w, False), g2) + FLOOR + U32
    tol = (beta * e1 * g1.norm() + (1 - beta) * e2 * g2.norm()) / ref.norm() + 2 * U32
    assert relerr(m, ref) <= float(tol)


@pytest.mark.parametrize("acc", [torch.float32, torch.float64], ids=str)
def test_deterministic_mode_uses_one_program_per_tile(acc, monkeypatch, request):
    """Few tiles on an H100 (132 SMs) split the rows over programs that add with atomics, in a
    run-dependent order; torch.use_deterministic_algorithms(True) must launch one per tile."""
    monkeypatch.setattr(plan, "_num_sms", lambda device: 132)
    if acc == torch.float64:  # the fp64 path splits only past 4096 rows: force it
        monkeypatch.setitem(gt.OVERRIDES, "split", 3)
    used = spy_splits(monkeypatch)
    phi = torch.randn(300, 70, device=DEV).to(torch.bfloat16)
    w = weights_of("uniform", 300)
    gt.gram_triton(phi, w, False, acc)
    gt.kernel_triton(phi[:40], None, False, acc)
    assert max(used) > 1, "the test shape must split when not deterministic"
    used.clear()
    request.getfixturevalue("deterministic")
    m1, m2 = gt.gram_triton(phi, w, False, acc), gt.gram_triton(phi, w, False, acc)
    k1, k2 = gt.kernel_triton(phi[:40], None, False, acc), gt.kernel_triton(phi[:40], None, False, acc)
    assert used and set(used) == {1}
    assert torch.equal(m1, m2) and torch.equal(k1, k2)
    if acc == torch.float32:
        check_contract(phi, w, False, m1)
    else:
        x = features64(phi, w, False)
        assert relerr(m1, x.T @ x) <= fp64_tol(phi, w, False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("wkind", [None, "random"])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centred"])
@pytest.mark.parametrize("shape", [(1, 3), (20, 333), (45, 64)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_kernel_matrix_n_less_than_d(dtype, wkind, center, shape):
    n, d = shape
    phi = (torch.randn(n, d, device=DEV) + 0.2).to(dtype)
    w = weights_of(wkind, n)
    k = gt.kernel_triton(phi, w, center, torch.float32)
    x = features64(phi, w, center)
    ref = x @ x.T
    xs = phi.float()
    if center:
        ww = torch.ones(n, device=DEV) if w is None else w.float()
        xs = xs - (ww @ xs) / ww.sum()
    if w is not None:
        xs = xs * w.float().sqrt()[:, None]
    base = relerr(xs @ xs.T, ref)
    assert k.shape == (n, n) and torch.equal(k, k.T)
    assert relerr(k, ref) <= 2 * base + FLOOR


def _gapped_features(n, d, rank, gap_lo, device=DEV, dtype=torch.float32, seed=0):
    """Φ = U diag(σ) Vᵀ with λ = σ² ∈ [1, 2] for the top ``rank`` and ≤ gap_lo below (mode="sum")."""
    g = torch.Generator().manual_seed(seed)
    r = min(n, d)
    u, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))
    lam = torch.cat(
        [1 + torch.rand(rank, generator=g, dtype=torch.float64), gap_lo * torch.rand(r - rank, generator=g)]
    )
    return ((u * lam.sqrt()) @ v.T).to(device, dtype)


@pytest.mark.parametrize("shape", [(300, 40), (30, 64)], ids=["N>d", "N<d"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_eps_rank_through_triton_matches_reference(shape, dtype, monkeypatch):
    n, d = shape
    calls = []
    real = gt._launch_syrk
    monkeypatch.setattr(gt, "_launch_syrk", lambda *a, **k: calls.append(1) or real(*a, **k))
    # bf16 rounding of Φ moves λ by ~2⁻⁸·λmax, far inside the decade-wide gap [1e-3, 1] around ε.
    phi = _gapped_features(n, d, rank=12, gap_lo=1e-3, dtype=dtype)
    eps = [3e-2, 0.5]
    got = ef.eps_rank(phi, eps, mode="sum", backend="triton", method="eigh")
    want = ef.reference.eps_rank(phi, eps, mode="sum")
    assert got.tolist() == want.tolist() == [12, 12]
    assert calls, "eps_rank(backend='triton') must launch the Triton kernels"


def test_public_gram_goes_through_triton(monkeypatch):
    calls = []
    real = gt._launch_syrk
    monkeypatch.setattr(gt, "_launch_syrk", lambda *a, **k: calls.append(1) or real(*a, **k))
    phi = torch.randn(129, 17, device=DEV, dtype=torch.bfloat16)
    # mode="mean": the plain products in one unweighted launch, scaled by 1/N once afterwards
    m = ef.gram(phi, backend="triton")
    assert len(calls) == 1
    check_contract(phi, torch.full((129,), 1 / 129, dtype=torch.float64, device=DEV), False, m)


def test_bad_inputs_raise_clear_errors():
    phi = torch.randn(10, 4, device=DEV)
    with pytest.raises(ValueError, match="phi"):
        gt.gram_triton(phi[0])
    with pytest.raises(TypeError, match="phi"):
        gt.gram_triton(phi.to(torch.int32))
    with pytest.raises(ValueError, match="weights"):
        gt.gram_triton(phi, torch.ones(3, device=DEV))
    with pytest.raises(ValueError, match="out"):
        gt.gram_triton(phi, out=torch.zeros(3, 3, device=DEV))
    with pytest.raises(TypeError, match="acc_dtype"):
        gt.gram_triton(phi, acc_dtype=torch.float16)
    with pytest.raises(TypeError, match="acc_dtype"):
        gt.gram_triton(phi, acc_dtype=torch.float32, out=torch.zeros(4, 4, dtype=torch.float64, device=DEV))
    assert gt.why_not(torch.device(DEV), torch.int32) is not None
    assert gt.why_not(torch.device(DEV), torch.bfloat16) is None


def test_promotion_window_follows_the_error_model():
    assert gt.promotion_window_rows(65536) == 2048  # the measured bias-free setting (§2.4)
    assert gt.promotion_window_rows(4096) == 512  # R·n_mma ≤ 8·√4096 = 512
    assert gt.promotion_window_rows(65536, 6) == 256
    assert gt.promotion_window_rows(65536, compute_bound=False) == 512  # R ≤ 2·√65536
    assert gt.promotion_window_rows(1) == 64
    for n in (100, 5000, 10**6):
        for k in (1, 3, 6):
            for bound, factor in ((True, 8), (False, 2)):
                r = gt.promotion_window_rows(n, k, compute_bound=bound)
                assert r == 64 or (r * k) ** 2 <= factor**2 * n


def test_op_bodies_trace_under_fake_tensors_and_aot(monkeypatch):
    """The Python side of every triton_op traces with FakeTensors and symbolic shapes.

    The interpreter cannot run kernels on fake tensors, so launches are stubbed here; the GPU
    test below runs the full opcheck with the real kernels.
    """
    from effrank_fast.ops.linear_act_gram import triton as lt

    class _NoLaunch:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    monkeypatch.setattr(gt, "wrap_triton", lambda kernel: _NoLaunch())
    monkeypatch.setattr(lt, "wrap_triton", lambda kernel: _NoLaunch())
    phi = torch.randn(60, 20, device=DEV).bfloat16()
    w = torch.rand(60, device=DEV)
    lin = torch.randn(30, 20, device=DEV).bfloat16()
    ops = torch.ops.effrank_fast
    cases = [
        (ops.gram_triton.default, (phi, w, True, torch.float32)),
        (ops.gram_triton.default, (phi, None, False, torch.float64)),
        (ops.gram_triton_accumulate.default, (phi, w, False, torch.zeros(20, 20, device=DEV))),
        (ops.kernel_triton.default, (phi[:10], w[:10], True, torch.float32)),
        (ops.linear_act_gram.default, (phi, lin, None, "gelu", w, False)),
        (ops.linear_act_gram_accumulate.default, (phi, lin, None, "relu", torch.zeros(30, 30).to(DEV), None, False)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)
