"""Triton Gram (SYRK) kernels against a float64 Gram of the same inputs.

Accuracy contract: every Triton path errs (relative Frobenius, vs float64) by at most 2× an fp32
SIMT Gram of the same inputs (fp32 matmul without TF32), plus a floor of 4 fp32 roundings of the
output (uniform weights are applied as one extra product, which the SIMT Gram spreads over √w).
On the CPU the kernels run under TRITON_INTERPRET=1 with small odd shapes; on a GPU the same tests
run on CUDA and the ``gpu`` ones add large N (tensor-core bias), opcheck and torch.compile.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

import effrank_fast as ef  # noqa: E402
from effrank_fast.ops.gram import triton as gt  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

U32 = 2.0**-24
FLOOR = 4 * U32


def _features64(phi, w, center):
    """diag(√w)(Φ − 1μᵀ) in float64 (on the CPU)."""
    x = phi.detach().double().cpu()
    w64 = None if w is None else w.detach().double().cpu()
    if center:
        ww = torch.ones(x.shape[0], dtype=torch.float64) if w64 is None else w64
        x = x - (ww @ x) / ww.sum()
    return x if w64 is None else x * w64.sqrt()[:, None]


def _simt32(phi, w, center):
    """fp32 SIMT Gram of the same inputs: fp32 centring and √w scaling, one fp32 matmul, no TF32."""
    x = phi.float()
    if center:
        ww = torch.ones(x.shape[0], device=x.device) if w is None else w.float()
        x = x - (ww @ x) / ww.sum()
    if w is not None:
        x = x * w.float().sqrt()[:, None]
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return x.T @ x
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _relerr(m, ref):
    return float((m.detach().double().cpu() - ref).norm() / ref.norm().clamp_min(1e-300))


def _weights(kind, n, device=DEV):
    if kind is None:
        return None
    if kind == "uniform":
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    return torch.rand(n, device=device) + 0.05


def _check_contract(phi, w, center, m):
    x = _features64(phi, w, center)
    ref = x.T @ x
    err, base = _relerr(m, ref), _relerr(_simt32(phi, w, center), ref)
    assert err <= 2 * base + FLOOR, f"triton {err:.3e} vs fp32 SIMT {base:.3e}"
    assert torch.equal(m, m.T), "the Gram must be exactly symmetric (upper triangle mirrored)"


SHAPES = [(1, 1), (37, 5), (333, 70), (40, 90)]  # N = 1, d = 1, d not a multiple of the tile, N < d


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("wkind", [None, "uniform", "random"])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centred"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_gram_matches_float64_within_twice_simt(dtype, wkind, center, shape):
    n, d = shape
    phi = (torch.randn(n, d, device=DEV) * torch.linspace(0.5, 3, d, device=DEV) + 0.3).to(dtype)
    w = _weights(wkind, n)
    m = gt.gram_triton(phi, w, center, torch.float32)
    if n == 1 and center:
        # One centred sample is 0 up to the rounding of μ = w·φ/w: |M| ≤ a few ulps of ‖√w φ‖².
        scale = float((phi.double().square().sum()) * (1 if w is None else w.double().max()))
        assert float(m.abs().max()) <= FLOOR * scale and torch.equal(m, m.T)
        return
    _check_contract(phi, w, center, m)


@pytest.mark.parametrize("wkind", [None, "random"])
def test_float64_input_with_fp32_accumulation(wkind):
    """fp64 features, fp32 accumulator: the values are rounded to fp32 once, like the SIMT Gram's."""
    phi = torch.randn(123, 37, device=DEV, dtype=torch.float64) + 0.2
    w = _weights(wkind, 123)
    _check_contract(phi, w, True, gt.gram_triton(phi, w, True, torch.float32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centred"])
def test_fp64_accumulation_is_float64_accurate(dtype, center):
    phi = torch.randn(211, 45, device=DEV).to(dtype)
    w = _weights("random", 211)
    x = _features64(phi, w, center)
    m = gt.gram_triton(phi, w, center, torch.float64)
    assert m.dtype == torch.float64 and torch.equal(m, m.T)
    # fp64 roundings: ~√N·2⁻⁵³ relative, with a 100× margin.
    assert _relerr(m, x.T @ x) < 1e-13


@pytest.mark.parametrize("split", [2, 5])
@pytest.mark.parametrize("acc", [torch.float32, torch.float64], ids=str)
def test_split_k_atomics_then_mirror(split, acc, monkeypatch):
    monkeypatch.setitem(gt.OVERRIDES, "split", split)
    monkeypatch.setitem(gt.OVERRIDES, "window_rows", 32)
    phi = torch.randn(300, 70, device=DEV).to(torch.bfloat16)
    for wkind in (None, "uniform", "random"):
        w = _weights(wkind, 300)
        m = gt.gram_triton(phi, w, False, acc)
        if acc == torch.float32:
            _check_contract(phi, w, False, m)
        else:
            x = _features64(phi, w, False)
            assert _relerr(m, x.T @ x) < 1e-13 and torch.equal(m, m.T)


@pytest.mark.parametrize("split", [None, 3])
@pytest.mark.parametrize("acc", [torch.float32, torch.float64], ids=str)
def test_streaming_out_accumulates_in_place(split, acc, monkeypatch):
    if split:
        monkeypatch.setitem(gt.OVERRIDES, "split", split)
    phi = torch.randn(250, 33, device=DEV).to(torch.bfloat16)
    w = _weights("random", 250)
    out = torch.zeros(33, 33, dtype=acc, device=DEV)
    for start in range(0, 250, 64):  # micro-batches of a streamed epoch
        ret = gt.gram_triton(phi[start : start + 64], w[start : start + 64], out=out)
        assert ret is out
    x = _features64(phi, w, False)
    ref = x.T @ x
    tol = 1e-13 if acc == torch.float64 else 2 * _relerr(_simt32(phi, w, False), ref) + 4 * FLOOR
    assert _relerr(out, ref) <= tol and torch.equal(out, out.T)


def test_streaming_ema_recipe():
    phi1, phi2 = torch.randn(64, 20, device=DEV), torch.randn(64, 20, device=DEV)
    beta = 0.9
    w = torch.full((64,), 1.0 / 64, device=DEV)
    m = gt.gram_triton(phi1, w)
    m.mul_(beta)
    gt.gram_triton(phi2, (1 - beta) * w, out=m)
    x1, x2 = _features64(phi1, w, False), _features64(phi2, w, False)
    ref = beta * (x1.T @ x1) + (1 - beta) * (x2.T @ x2)
    assert _relerr(m, ref) < 1e-5  # 4 fp32 operations deep, on sums of 64 products


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("wkind", [None, "random"])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centred"])
@pytest.mark.parametrize("shape", [(1, 3), (20, 333), (45, 64)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_kernel_matrix_n_less_than_d(dtype, wkind, center, shape):
    n, d = shape
    phi = (torch.randn(n, d, device=DEV) + 0.2).to(dtype)
    w = _weights(wkind, n)
    k = gt.kernel_triton(phi, w, center, torch.float32)
    x = _features64(phi, w, center)
    ref = x @ x.T
    xs = phi.float()
    if center:
        ww = torch.ones(n, device=DEV) if w is None else w.float()
        xs = xs - (ww @ xs) / ww.sum()
    if w is not None:
        xs = xs * w.float().sqrt()[:, None]
    base = _relerr(xs @ xs.T, ref)
    assert k.shape == (n, n) and torch.equal(k, k.T)
    assert _relerr(k, ref) <= 2 * base + FLOOR


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
    m = ef.gram(phi, backend="triton")  # mode="mean": w = 1/N, the guarded uniform-weight pair
    assert len(calls) == 2
    _check_contract(phi, torch.full((129,), 1 / 129, dtype=torch.float64, device=DEV), False, m)


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


# ------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("wkind,center", [(None, False), ("uniform", False), ("random", False), ("uniform", True)])
def test_gpu_contract_at_scale(dtype, wkind, center):
    for n, d in [(16384, 384), (65536, 256)]:
        phi = (torch.randn(n, d, device="cuda") * torch.linspace(0.5, 3, d, device="cuda") + 0.3).to(dtype)
        w = _weights(wkind, n, "cuda")
        _check_contract(phi, w, center, gt.gram_triton(phi, w, center))


@pytest.mark.gpu
def test_gpu_no_n_growing_bias():
    """Unpromoted tensor cores shrink the diagonal ∝ N (−3e-4 at N = 65536); promotion must not."""
    d = 256
    for n in (16384, 262144):
        phi = (torch.randn(n, d, device="cuda") * (1 + torch.rand(d, device="cuda"))).bfloat16()
        diag64 = phi.double().square().sum(0)
        m = gt.gram_triton(phi)
        bias = float(((m.diagonal().double() - diag64) / diag64).mean())
        # window ≤ 2048 rows: bias ≈ −2.3e-9·2048 ≈ −5e-6 (README error model), 2× margin.
        assert abs(bias) < 1e-5, f"N={n}: mean relative diagonal bias {bias:.2e}"


@pytest.mark.gpu
def test_gpu_opcheck():
    phi = torch.randn(300, 70, device="cuda", dtype=torch.bfloat16)
    w = torch.rand(300, device="cuda")
    out = torch.zeros(70, 70, device="cuda")
    torch.library.opcheck(torch.ops.effrank_fast.gram_triton.default, (phi, w, True, torch.float32))
    torch.library.opcheck(torch.ops.effrank_fast.gram_triton.default, (phi, None, False, torch.float64))
    torch.library.opcheck(torch.ops.effrank_fast.gram_triton_accumulate.default, (phi, w, False, out))
    torch.library.opcheck(torch.ops.effrank_fast.kernel_triton.default, (phi[:50], w[:50], False, torch.float32))


@pytest.mark.gpu
def test_gpu_torch_compile_fullgraph():
    phi = torch.randn(1000, 96, device="cuda", dtype=torch.bfloat16)
    w = torch.full((1000,), 1e-3, device="cuda")

    def step(phi, w, acc):
        gt.gram_triton(phi, w, out=acc)
        return gt.gram_triton(phi, None, True), gt.kernel_triton(phi[:40], w[:40])

    acc_c, acc_e = torch.zeros(96, 96, device="cuda"), torch.zeros(96, 96, device="cuda")
    got = torch.compile(step, fullgraph=True)(phi, w, acc_c)
    want = step(phi, w, acc_e)
    torch.testing.assert_close(acc_c, acc_e, rtol=0, atol=0)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
