"""linear_act_gram: h = act(x Wᵀ + b) and hᵀ diag(w) h, fused (Triton) and unfused (reference).

- The Gram of the returned h is checked against a float64 Gram of that same h (the accuracy
  contract of ops/gram: ≤ 2× an fp32 SIMT Gram, plus 4 fp32 roundings).
- h itself is checked against torch's unfused layer in x's dtype: the fused kernel rounds the
  linear output and the activation to x's dtype as the layer does, so h agrees to a couple of
  units in the last place (different summation order; the interpreter casts by truncation).
- A monitored layer's forward is bit-identical with and without the fused monitor.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from effrank_fast.ops.gram import triton_plan as plan  # noqa: E402
from effrank_fast.ops.linear_act_gram import ACTIVATIONS, apply_activation, linear_act_gram, linear_act_gram_ref  # noqa: E402
from effrank_fast.ops.linear_act_gram import triton as lt  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

U32 = 2.0**-24
FLOOR = 4 * U32


def _inputs(n, k, d, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g).to(DEV, dtype)
    w = (torch.randn(d, k, generator=g) / k**0.5).to(DEV, dtype)
    b = (0.5 * torch.randn(d, generator=g)).to(DEV, dtype) if bias else None
    return x, w, b


def _sample_weights(kind, n):
    if kind is None:
        return None
    if kind == "uniform":
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=DEV)
    return torch.rand(n, device=DEV) + 0.05


def _spy_splits(monkeypatch):
    """Programs per tile along N of every fused launch from now on (1: no atomics)."""
    used = []
    real = lt._launch
    monkeypatch.setattr(lt, "_launch", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    return used


def _spy_kernels(monkeypatch):
    """The Triton kernel of every fused launch from now on."""
    seen = []
    real = lt.wrap_triton
    monkeypatch.setattr(lt, "wrap_triton", lambda kernel: seen.append(kernel) or real(kernel))
    return seen


def _gram_err(h, sw, m, base=None):
    """(relative error of m against the float64 Gram of h, that of the fp32 SIMT Gram, ‖ref‖)."""
    x = h.double().cpu()
    xs = h.float()
    if sw is not None:
        x = x * sw.double().cpu().sqrt()[:, None]
        xs = xs * sw.float().sqrt()[:, None]
    ref = x.T @ x
    if base is not None:
        ref = ref + base.double().cpu()
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    simt = float(((xs.T @ xs).double().cpu() - (x.T @ x)).norm() / (x.T @ x).norm().clamp_min(1e-300))
    torch.backends.cuda.matmul.allow_tf32 = old
    err = float((m.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-300))
    return err, simt


def _check_gram_of(h, sw, m):
    x = h.double().cpu()
    xs = h.float()
    if sw is not None:
        x = x * sw.double().cpu().sqrt()[:, None]
        xs = xs * sw.float().sqrt()[:, None]
    ref = x.T @ x
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    base = float(((xs.T @ xs).double().cpu() - ref).norm() / ref.norm().clamp_min(1e-300))
    torch.backends.cuda.matmul.allow_tf32 = old
    err = float((m.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-300))
    assert err <= 2 * base + FLOOR, f"fused Gram {err:.3e} vs fp32 SIMT {base:.3e}"
    assert torch.equal(m, m.T)


def _check_h(h, x, w, b, act):
    """h ≈ torch's unfused layer in x's dtype: ≤ 2 ulps of the value plus 2 ulps of |z|·|act'| ≤ |z|."""
    z = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    want = apply_activation(torch.nn.functional.linear(x, w, b), act).double()
    eps = torch.finfo(x.dtype).eps
    tol = 2 * eps * (want.abs() + z.abs()) + 2 * eps * 1e-3
    assert h.dtype == x.dtype and h.shape == want.shape
    assert bool(((h.double() - want).abs() <= tol).all()), float(((h.double() - want).abs() - tol).max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("swkind", [None, "uniform", "random"])
@pytest.mark.parametrize("shape", [(1, 3, 1), (77, 19, 37), (150, 40, 70)], ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_unfused_layer_and_float64_gram(dtype, act, swkind, shape):
    n, k, d = shape
    x, w, b = _inputs(n, k, d, dtype, bias=act != "identity")
    sw = _sample_weights(swkind, n)
    assert lt.fused_why_not(x, w, b, torch.float32) is None
    m, h = linear_act_gram(x, w, b, act, None, sw, True, backend="triton")
    _check_h(h, x, w, b, act)
    _check_gram_of(h, sw, m)


@pytest.mark.parametrize("split", [None, 2, 3])
def test_fused_accumulates_into_gram_out(split, monkeypatch):
    """Batches of 70, 70, 60 rows in 32-row windows (3, 3, 2): one window per program (None, 3) or
    up to two (2: the multi-window kernel, promoting in registers), atomics between programs."""
    used = _spy_splits(monkeypatch)
    kernels = _spy_kernels(monkeypatch)
    monkeypatch.setitem(lt.OVERRIDES, "window_rows", 32)
    if split:
        monkeypatch.setitem(lt.OVERRIDES, "split", split)
    x, w, b = _inputs(200, 24, 40, torch.bfloat16)
    acc = torch.zeros(40, 40, device=DEV)
    hs = []
    for start in range(0, 200, 70):
        ret, h = linear_act_gram(x[start : start + 70], w, b, "gelu", acc, None, True, backend="triton")
        assert ret is acc
        hs.append(h)
    if split or DEV == "cpu":  # one window per program unless forced (the interpreter's one "SM": ≤ 16)
        assert used == [split or 3] * 2 + [2]
        one, multi = lt._linear_act_gram_kernel, lt._linear_act_gram_windows_kernel
        assert kernels == ([multi, multi, one] if split == 2 else [one] * 3)
    _check_gram_of(torch.cat(hs), None, acc)


@pytest.mark.parametrize("swkind", [None, "uniform", "random"])
def test_single_program_adds_into_nonzero_gram_out(swkind, monkeypatch):
    """N = 20 rows fit one window: one program owns the tile and adds Out's old upper triangle
    (no atomics), then writes both triangles."""
    used = _spy_splits(monkeypatch)
    x, w, b = _inputs(20, 24, 40, torch.bfloat16)
    sw = _sample_weights(swkind, 20)
    g = torch.randn(40, 40, device=DEV)
    old = g @ g.T  # a symmetric running sum, as big as the new Gram
    acc = old.clone()
    _, h = linear_act_gram(x, w, b, "tanh", acc, sw, True, backend="triton")
    assert used == [1] * (1 if swkind is None else 2)  # weights: the guarded pair
    err, simt = _gram_err(h, sw, acc, base=old)
    assert err <= 2 * simt + FLOOR + U32, f"{err:.3e} vs fp32 SIMT {simt:.3e}"  # + the final fp32 add
    assert torch.equal(acc, acc.T)


def test_programs_walk_several_windows_below_the_grid_limit(monkeypatch):
    """Past CUDA's grid y-limit (65535) a program walks several windows: shrink the limit to 2."""
    used = _spy_splits(monkeypatch)
    kernels = _spy_kernels(monkeypatch)
    monkeypatch.setitem(lt.OVERRIDES, "window_rows", 32)
    monkeypatch.setattr(lt, "MAX_GRID_Y", 2)
    x, w, b = _inputs(200, 24, 40, torch.bfloat16)  # 7 windows: programs of 4 and 3
    sw = _sample_weights("random", 200)
    acc = torch.zeros(40, 40, device=DEV)
    m, h = linear_act_gram(x, w, b, "sin", acc, sw, True, backend="triton")
    assert used == [2, 2] and set(kernels) == {lt._linear_act_gram_windows_kernel}  # the guarded pair
    _check_gram_of(h, sw, m)


def test_row_plan_stays_inside_the_cuda_grid(monkeypatch):
    """At 40M rows one window per program would launch 78125 programs per tile along y."""
    monkeypatch.setattr(plan, "_num_sms", lambda device: 132)
    cfg = lt.HOPPER_CONFIG
    for waves in (lt.SPLIT_WAVES, 10**9):  # the default cap, and none but the grid's
        monkeypatch.setattr(lt, "SPLIT_WAVES", waves)
        for n in (65536, 40_000_000, 2**31 - 1):
            window, per_program = lt._rows_plan(n, 1, 1, cfg, torch.device("cuda"))
            split = -(-n // per_program)
            assert per_program % window == 0 and window % cfg.BR == 0
            assert 1 <= split <= min(lt.MAX_GRID_Y, waves * 132)
    assert lt._rows_plan(65536, 1, 1, cfg, torch.device("cuda")) == (128, 128)  # one window each, 512 programs


def test_deterministic_mode_is_one_program_per_tile(deterministic, monkeypatch):
    """7 windows in one program, promoted in registers: no atomics, bitwise repeatable."""
    used = _spy_splits(monkeypatch)
    kernels = _spy_kernels(monkeypatch)
    monkeypatch.setitem(lt.OVERRIDES, "window_rows", 32)
    x, w, b = _inputs(200, 24, 40, torch.bfloat16)
    sw = _sample_weights("uniform", 200)
    m1, h = linear_act_gram(x, w, b, "relu", None, sw, True, backend="triton")
    m2 = linear_act_gram(x, w, b, "relu", None, sw, backend="triton")
    assert set(used) == {1} and set(kernels) == {lt._linear_act_gram_windows_kernel} and torch.equal(m1, m2)
    _check_gram_of(h, sw, m1)


def test_gram_without_activations_returns_only_the_matrix():
    x, w, b = _inputs(64, 16, 24, torch.bfloat16)
    m = linear_act_gram(x, w, b, "relu", backend="triton")
    assert isinstance(m, torch.Tensor) and m.shape == (24, 24) and m.dtype == torch.float32
    m2, h = linear_act_gram(x, w, b, "relu", return_activations=True, backend="triton")
    torch.testing.assert_close(m, m2, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["fp32", "wide", "fp64_out"])
def test_unfused_route_equals_reference(case, monkeypatch):
    """float32 x, d > FUSED_MAX_D, or a float64 accumulator: torch's layer, then the Triton SYRK."""
    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    x, w, b = _inputs(90, 12, 20, dtype)
    if case == "wide":
        monkeypatch.setitem(lt.OVERRIDES, "max_d", 16)
    acc_dtype = torch.float64 if case == "fp64_out" else torch.float32
    assert lt.fused_why_not(x, w, b, acc_dtype) is not None
    got_m, got_h = linear_act_gram(
        x, w, b, "tanh", torch.zeros(20, 20, dtype=acc_dtype, device=DEV), None, True, backend="triton"
    )
    want_m, want_h = linear_act_gram_ref(x, w, b, "tanh", torch.zeros(20, 20, dtype=acc_dtype, device=DEV), None, True)
    torch.testing.assert_close(got_h, want_h, rtol=0, atol=0)
    _check_gram_of(got_h, None, got_m) if acc_dtype == torch.float32 else None
    torch.testing.assert_close(got_m, want_m, rtol=1e-5, atol=0)


def test_monitored_forward_is_bit_identical():
    """The monitor's fused mode reads the layer input only; the forward and backward are untouched."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40).to(DEV, torch.bfloat16)
    x = torch.randn(96, 24, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    gram = torch.zeros(40, 40, device=DEV)

    def hook(module, args):
        with torch.no_grad():
            linear_act_gram(args[0].detach(), module.weight, module.bias, "tanh", gram_out=gram, backend="triton")

    y0 = torch.tanh(layer(x))
    (g0,) = torch.autograd.grad(y0.float().square().sum(), x)
    handle = layer.register_forward_pre_hook(hook)
    y1 = torch.tanh(layer(x))
    (g1,) = torch.autograd.grad(y1.float().square().sum(), x)
    handle.remove()
    assert torch.equal(y0, y1) and torch.equal(g0, g1)
    # The monitor's h is a recomputation: each of its two roundings may land one ulp (eps·|h|) away
    # from the layer's, so its Gram (bilinear in h) is within 4·eps of the layer's activations' Gram.
    y64 = y0.detach().double().cpu()
    err = float((gram.double().cpu() - y64.T @ y64).norm() / (y64.T @ y64).norm())
    assert err <= 4 * torch.finfo(torch.bfloat16).eps


def test_auto_backend_on_cpu_is_the_reference():
    x, w, b = _inputs(30, 8, 12, torch.float32)
    x, w, b = x.cpu(), w.cpu(), b.cpu()
    torch.testing.assert_close(linear_act_gram(x, w, b, "sin"), linear_act_gram_ref(x, w, b, "sin"), rtol=0, atol=0)


def test_bad_inputs_raise_clear_errors():
    x, w, b = _inputs(10, 4, 6, torch.bfloat16)
    with pytest.raises(ValueError, match="act"):
        linear_act_gram(x, w, b, "swish")
    with pytest.raises(ValueError, match="weight"):
        linear_act_gram(x, w[:, :3], b, "tanh")
    with pytest.raises(TypeError, match="dtype"):
        linear_act_gram(x, w.float(), b, "tanh")
    with pytest.raises(ValueError, match="bias"):
        linear_act_gram(x, w, b[:2], "tanh")
    with pytest.raises(TypeError, match="bias"):
        linear_act_gram(x, w, b.float(), "tanh")
    with pytest.raises(ValueError, match="gram_out"):
        linear_act_gram(x, w, b, "tanh", torch.zeros(5, 5, device=DEV))
    with pytest.raises(ValueError, match="weights"):
        linear_act_gram(x, w, b, "tanh", weights=torch.ones(3, device=DEV))
    with pytest.raises(ValueError, match="backend"):
        linear_act_gram(x, w, b, "tanh", backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("d", [128, 256])
def test_gpu_fused_at_scale(d, monkeypatch):
    monkeypatch.setitem(lt.OVERRIDES, "max_d", 256)  # 256: off-diagonal tiles, recomputed blocks
    x, w, b = _inputs(65536, d, d, torch.bfloat16)
    assert lt.fused_why_not(x, w, b, torch.float32) is None
    m, h = linear_act_gram(x, w, b, "tanh", None, None, True)
    _check_h(h, x, w, b, "tanh")
    _check_gram_of(h, None, m)


@pytest.mark.gpu
def test_gpu_opcheck_and_compile(monkeypatch):
    x, w, b = _inputs(500, 32, 96, torch.bfloat16)
    sw = torch.rand(500, device="cuda")
    acc = torch.zeros(96, 96, device="cuda")
    torch.library.opcheck(torch.ops.effrank_fast.linear_act_gram.default, (x, w, b, "gelu", sw, True))
    torch.library.opcheck(
        torch.ops.effrank_fast.linear_act_gram_accumulate.default, (x, w, None, "relu", acc, None, False)
    )

    def f(x, acc):
        return linear_act_gram(x, w, b, "tanh", acc, None, True)

    used = _spy_splits(monkeypatch)  # d = 96 on 132 SMs: one 64-row window per program, atomics
    acc_c, acc_e = torch.zeros_like(acc), torch.zeros_like(acc)
    _, h_c = torch.compile(f, fullgraph=True)(x, acc_c)
    _, h_e = f(x, acc_e)
    # Two orders of s + 1 fp32 terms (PSD partials, Σ|P_k,ij| ≤ max|M|) differ by ≤ 2·s·u₃₂·max|M|.
    torch.testing.assert_close(acc_c, acc_e, rtol=0, atol=2 * (max(used) + 1) * U32 * float(acc_e.abs().max()))
    torch.testing.assert_close(h_c, h_e, rtol=0, atol=0)  # each row of h is formed by one program


@pytest.mark.gpu
def test_gpu_deterministic_mode_is_bitwise_reproducible(deterministic, monkeypatch):
    used = _spy_splits(monkeypatch)
    x, w, b = _inputs(5000, 32, 96, torch.bfloat16)
    m1, h = linear_act_gram(x, w, b, "gelu", None, None, True)
    m2 = linear_act_gram(x, w, b, "gelu")
    assert set(used) == {1} and torch.equal(m1, m2)
    _check_gram_of(h, None, m1)
