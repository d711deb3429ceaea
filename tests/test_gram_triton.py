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
from effrank_fast.ops.gram import autotune  # noqa: E402
from effrank_fast.ops.gram import triton as gt  # noqa: E402
from effrank_fast.ops.gram import triton_plan as plan  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

U32 = 2.0**-24
U64 = 2.0**-53
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


def _fp64_tol(phi, w, center):
    """Relative Frobenius bound of a float64-accumulated Gram against ``_features64``'s, itself float64.

    Each side sums N products (any order: γ_N ≤ N·u₆₄) after a few more roundings per term (w·v,
    √w, the centring subtraction, streamed adds: 8 is ample), and μ carries γ_N·Σw|φ|/Σw. First
    order, per entry: (N + 8)·u₆₄·(Aᵀ diag(w) A) with A = |Φ − 1μᵀ| + m, m = Σw|φ|/Σw if centred;
    both sides err, hence the 2.
    """
    x = phi.detach().double().cpu()
    ww = torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.detach().double().cpu()
    a = x.abs()
    if center:
        a = (x - (ww @ x) / ww.sum()).abs() + (ww @ x.abs()) / ww.sum()
    bound = 2 * (x.shape[0] + 8) * U64 * (a.T @ (a * ww[:, None]))
    ref = _features64(phi, w, center)
    return float(bound.norm() / (ref.T @ ref).norm())


def _spy_splits(monkeypatch):
    """The split factor of every SYRK launch from now on (1: one program per tile, no atomics)."""
    used = []
    real = gt._launch_syrk
    monkeypatch.setattr(gt, "_launch_syrk", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    return used


def _atomic_tol(m, splits):
    """How far two runs may differ when s programs add PSD partial Grams P_k with atomics.

    Two orders of the same s + 1 fp32 terms (the old value too) differ by ≤ 2·s·u₃₂·Σ|P_k,ij|
    (first order), and Σ_k |P_k,ij| ≤ Σ_k √(P_k,ii P_k,jj) ≤ √(M_ii M_jj) ≤ max|M| (Cauchy–Schwarz).
    """
    return 2 * (max(splits) + 1) * U32 * float(m.abs().max())


@pytest.fixture
def deterministic():
    """torch.use_deterministic_algorithms(True) for one test (warn_only: cuBLAS needs an env var)."""
    state = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])


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
    assert _relerr(m, x.T @ x) <= _fp64_tol(phi, w, center)


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
            assert _relerr(m, x.T @ x) <= _fp64_tol(phi, w, False) and torch.equal(m, m.T)


@pytest.mark.parametrize("split", [None, 3])
@pytest.mark.parametrize("acc", [torch.float32, torch.float64], ids=str)
def test_streaming_out_accumulates_in_place(split, acc, monkeypatch):
    used = _spy_splits(monkeypatch)
    if split:
        monkeypatch.setitem(gt.OVERRIDES, "split", split)
        # A split needs as many windows: 96-row batches of 32-row windows (fp64: 32-row k-blocks).
        monkeypatch.setitem(gt.OVERRIDES, "window_rows", 32)
    phi = torch.randn(250, 33, device=DEV).to(torch.bfloat16)
    w = _weights("random", 250)
    out = torch.zeros(33, 33, dtype=acc, device=DEV)
    for start in range(0, 250, 96):  # micro-batches of a streamed epoch
        ret = gt.gram_triton(phi[start : start + 96], w[start : start + 96], out=out)
        assert ret is out
    if split or DEV == "cpu":  # the interpreter has one "SM": no split unless forced
        per_batch = 2 if acc == torch.float32 else 1  # fp32: the guarded pair of launches
        assert used == [split or 1] * 2 * per_batch + [min(split or 1, 2)] * per_batch  # 96, 96, 58 rows
    x = _features64(phi, w, False)
    ref = x.T @ x
    tol = _fp64_tol(phi, w, False) if acc == torch.float64 else 2 * _relerr(_simt32(phi, w, False), ref) + 4 * FLOOR
    assert _relerr(out, ref) <= tol and torch.equal(out, out.T)


def test_streaming_ema_recipe():
    phi1, phi2 = torch.randn(64, 20, device=DEV), torch.randn(64, 20, device=DEV)
    beta = 0.9
    w = torch.full((64,), 1.0 / 64, device=DEV)
    m = gt.gram_triton(phi1, w)
    m.mul_(beta)
    gt.gram_triton(phi2, (1 - beta) * w, out=m)
    x1, x2 = _features64(phi1, w, False), _features64(phi2, w, False)
    g1, g2 = x1.T @ x1, x2.T @ x2
    ref = beta * g1 + (1 - beta) * g2
    # Each Gram within its contract (2× fp32 SIMT + FLOOR); (1 − β)·w is rounded to fp32 (u₃₂ on
    # the second Gram); β·M and the final add are one rounding each (2u₃₂ of the result).
    e1 = 2 * _relerr(_simt32(phi1, w, False), g1) + FLOOR
    e2 = 2 * _relerr(_simt32(phi2, (1 - beta) * w, False), g2) + FLOOR + U32
    tol = (beta * e1 * g1.norm() + (1 - beta) * e2 * g2.norm()) / ref.norm() + 2 * U32
    assert _relerr(m, ref) <= float(tol)


@pytest.mark.parametrize("acc", [torch.float32, torch.float64], ids=str)
def test_deterministic_mode_uses_one_program_per_tile(acc, monkeypatch, request):
    """Few tiles on an H100 (132 SMs) split the rows over programs that add with atomics, in a
    run-dependent order; torch.use_deterministic_algorithms(True) must launch one per tile."""
    monkeypatch.setattr(plan, "_num_sms", lambda device: 132)
    if acc == torch.float64:  # the fp64 path splits only past 4096 rows: force it
        monkeypatch.setitem(gt.OVERRIDES, "split", 3)
    used = _spy_splits(monkeypatch)
    phi = torch.randn(300, 70, device=DEV).to(torch.bfloat16)
    w = _weights("uniform", 300)
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
        _check_contract(phi, w, False, m1)
    else:
        x = _features64(phi, w, False)
        assert _relerr(m1, x.T @ x) <= _fp64_tol(phi, w, False)


def _spy_configs(monkeypatch):
    """The SyrkConfig of every launch plan from now on."""
    seen = []
    real = gt._plan
    monkeypatch.setattr(gt, "_plan", lambda cfg, *a: seen.append(cfg) or real(cfg, *a))
    return seen


def test_autotune_is_opt_in_and_picks_the_default_under_the_interpreter(monkeypatch):
    monkeypatch.setattr(autotune, "CHOICES", {})
    phi = torch.randn(300, 70, device=DEV, dtype=torch.bfloat16)
    seen = _spy_configs(monkeypatch)
    monkeypatch.delenv(autotune.ENV_AUTOTUNE, raising=False)
    gt.gram_triton(phi)
    assert seen[-1] == gt._pick_config("native16", 70) and not autotune.CHOICES  # fixed config, no tuning
    monkeypatch.setenv(autotune.ENV_AUTOTUNE, "1")
    m = gt.gram_triton(phi)
    if DEV == "cpu":  # no timing in the interpreter: every candidate ties, the first (default) wins
        assert seen[-1] == gt.HOPPER_CANDIDATES["native16"][0]
        assert list(autotune.CHOICES.values()) == [gt.HOPPER_CANDIDATES["native16"][0]]
    _check_contract(phi, None, False, m)
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert autotune.can_time(phi)
    with FakeTensorMode():  # torch.compile traces the op bodies with fake tensors: nothing to time
        assert not autotune.can_time(torch.zeros(2, device=DEV))


def test_autotune_times_candidates_once_per_key_into_scratch(monkeypatch):
    """With a scripted timer: the fastest candidate wins, a failing one is skipped, the choice is
    cached per key, and the timing runs never touch the caller's streaming ``out``."""
    monkeypatch.setattr(autotune, "CHOICES", {})
    cands = gt.HOPPER_CANDIDATES["native16"]
    script = iter([3.0, RuntimeError("does not compile"), 2.0, 1.0, 4.0])
    timed = []

    def fake_bench(fn):
        fn()  # the real launch of this candidate, into the scratch output
        timed.append(1)
        t = next(script)
        if isinstance(t, Exception):
            raise t
        return t

    monkeypatch.setattr(autotune, "bench_ms", fake_bench)
    seen = _spy_configs(monkeypatch)
    phi = torch.randn(300, 70, device=DEV, dtype=torch.bfloat16)  # window 128: the BK = 128 configs qualify
    w = None  # one launch per call (uniform weights would add a guarded, untuned split-mode launch)
    out = gt.gram_triton(phi[:100])  # a running sum, formed before tuning is switched on
    monkeypatch.setenv(autotune.ENV_AUTOTUNE, "1")
    gt.gram_triton(phi, out=out)
    assert len(timed) == len(cands) and seen[-1] == cands[3]
    assert list(autotune.CHOICES.values()) == [cands[3]]
    assert autotune.bucket(290) == autotune.bucket(300) == 512
    gt.gram_triton(phi[:290])  # same key: no new timing
    assert len(timed) == len(cands) and seen[-1] == cands[3]
    x0, x1 = _features64(phi[:100], w, False), _features64(phi, w, False)
    ref = x0.T @ x0 + x1.T @ x1  # had the timing runs used ``out``, it would hold 5 more Grams
    tol = 2 * _relerr(_simt32(phi, w, False), x1.T @ x1) + 2 * _relerr(_simt32(phi[:100], w, False), x0.T @ x0)
    assert _relerr(out, ref) <= tol + 3 * FLOOR


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
def test_gpu_no_n_growing_bias(monkeypatch):
    """Unpromoted tensor cores shrink the diagonal ∝ N (−3e-4 at N = 65536, 16× more at 16× N).

    Error model (README): a window of R rows biases by −c·R with c ≈ 2.3e-9 per MMA (H100), taken
    with a 2× margin; the promoted fp32 adds of N/R partials add unbiased rounding of ≲ 4·u₃₂·√(N/R).
    - each N, at the launcher's own window: |bias| ≤ 2c·R + 4u₃₂·√(N/R);
    - at one fixed window for both N the model predicts the same bias: the two must agree within
      the rounding terms and a 50% spread of c (an N-growing bias would differ by ~1e-3).
    """
    c, d = 2.3e-9, 256
    seen = []
    real = gt._plan
    monkeypatch.setattr(gt, "_plan", lambda *a: seen.append(real(*a)) or seen[-1])
    phis = {}
    for n in (16384, 262144):
        phis[n] = (torch.randn(n, d, device="cuda") * (1 + torch.rand(d, device="cuda"))).bfloat16()
        diag64 = phis[n].double().square().sum(0)
        bias = float(((gt.gram_triton(phis[n]).diagonal().double() - diag64) / diag64).mean())
        r = seen[-1].window
        assert abs(bias) <= 2 * c * r + 4 * U32 * (n / r) ** 0.5, f"N={n}, R={r}: mean diagonal bias {bias:.2e}"
    r = plan.MAX_WINDOW_ROWS // 4  # the largest window either N takes on its own (few tiles)
    monkeypatch.setitem(gt.OVERRIDES, "window_rows", r)
    fixed = []
    for phi in phis.values():
        diag64 = phi.double().square().sum(0)
        fixed.append(float(((gt.gram_triton(phi).diagonal().double() - diag64) / diag64).mean()))
        assert seen[-1].window == r
    noise = 4 * U32 * ((16384 / r) ** 0.5 + (262144 / r) ** 0.5)
    assert abs(fixed[1] - fixed[0]) <= 0.5 * c * r + noise, f"bias at R={r}: {fixed} (not flat in N)"


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
def test_gpu_torch_compile_fullgraph(monkeypatch):
    phi = torch.randn(1000, 96, device="cuda", dtype=torch.bfloat16)
    w = torch.full((1000,), 1e-3, device="cuda")
    used = _spy_splits(monkeypatch)  # d = 96 on 132 SMs: rows split over up to 16 programs (atomics)

    def step(phi, w, acc):
        gt.gram_triton(phi, w, out=acc)
        return gt.gram_triton(phi, None, True), gt.kernel_triton(phi[:40], w[:40])

    acc_c, acc_e = torch.zeros(96, 96, device="cuda"), torch.zeros(96, 96, device="cuda")
    got = torch.compile(step, fullgraph=True)(phi, w, acc_c)
    want = step(phi, w, acc_e)
    # Same kernels, same plan; only the order of the atomic adds differs between runs.
    for g, e in zip((acc_c, *got), (acc_e, *want), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=_atomic_tol(e, used))
        assert torch.equal(g, g.T)


@pytest.mark.gpu
def test_gpu_deterministic_mode_is_bitwise_reproducible(deterministic, monkeypatch):
    used = _spy_splits(monkeypatch)
    phi = torch.randn(1000, 96, device="cuda", dtype=torch.bfloat16)
    w = torch.full((1000,), 1e-3, device="cuda")
    runs = [(gt.gram_triton(phi, w), gt.gram_triton(phi, None, False, torch.float64), gt.kernel_triton(phi[:40]))]
    runs.append((gt.gram_triton(phi, w), gt.gram_triton(phi, None, False, torch.float64), gt.kernel_triton(phi[:40])))
    assert set(used) == {1}
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
