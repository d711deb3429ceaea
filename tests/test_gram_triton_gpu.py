"""GPU-only tests of the Triton Gram: contract at scale, no N-growing bias, opcheck, torch.compile."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from effrank_fast.ops.gram import triton as gt  # noqa: E402
from effrank_fast.ops.gram import triton_plan as plan  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from gram_contract import (  # noqa: E402
    U32,
    atomic_tol,
    check_contract,
    spy_splits,
    weights_of,
)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("wkind,center", [(None, False), ("uniform", False), ("random", False), ("uniform", True)])
def test_gpu_contract_at_scale(dtype, wkind, center):
    for n, d in [(16384, 384), (65536, 256)]:
        phi = (torch.randn(n, d, device="cuda") * torch.linspace(0.5, 3, d, device="cuda") + 0.3).to(dtype)
        w = weights_of(wkind, n, "cuda")
        check_contract(phi, w, center, gt.gram_triton(phi, w, center))


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
    used = spy_splits(monkeypatch)  # d = 96 on 132 SMs: rows split over up to 16 programs (atomics)

    def step(phi, w, acc):
        gt.gram_triton(phi, w, out=acc)
        return gt.gram_triton(phi, None, True), gt.kernel_triton(phi[:40], w[:40])

    acc_c, acc_e = torch.zeros(96, 96, device="cuda"), torch.zeros(96, 96, device="cuda")
    got = torch.compile(step, fullgraph=True)(phi, w, acc_c)
    want = step(phi, w, acc_e)
    # Same kernels, same plan; only the order of the atomic adds differs between runs.
    for g, e in zip((acc_c, *got), (acc_e, *want), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=atomic_tol(e, used))
        assert torch.equal(g, g.T)


@pytest.mark.gpu
def test_gpu_deterministic_mode_is_bitwise_reproducible(deterministic, monkeypatch):
    used = spy_splits(monkeypatch)
    phi = torch.randn(1000, 96, device="cuda", dtype=torch.bfloat16)
    w = torch.full((1000,), 1e-3, device="cuda")
    runs = [(gt.gram_triton(phi, w), gt.gram_triton(phi, None, False, torch.float64), gt.kernel_triton(phi[:40]))]
    runs.append((gt.gram_triton(phi, w), gt.gram_triton(phi, None, False, torch.float64), gt.kernel_triton(phi[:40])))
    assert set(used) == {1}
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
