"""The Gram matrix of every CPU backend against a float64 Gram of the same stored inputs."""

from __future__ import annotations

import pytest
import torch

import effrank_fast as ef
from effrank_fast.ops import native
from effrank_fast.ops.gram import gram_ref
from effrank_fast.testing import gram_error_bound

BACKENDS = [
    b for b in ("torch", "native") if ef.ops.backends.BACKENDS[b].why_not(torch.device("cpu"), torch.float32) is None
]
CHUNK = 8192  # the largest chunk either CPU backend sums before adding to the total
needs_native = pytest.mark.skipif(not native.has_kernel("gram_native", "cpu"), reason=str(native.NATIVE_ERROR))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("n,d", [(1, 1), (1, 13), (7, 1), (4099, 33), (300, 130)])
@pytest.mark.parametrize("weighted", [False, True])
def test_gram_within_accumulation_bound(backend, dtype, n, d, weighted):
    phi = (torch.randn(n, d) * 3 + 1).to(dtype)
    w = torch.rand(n, dtype=torch.float64) + 0.01 if weighted else None
    m = ef.gram(phi, w, mode="sum", backend=backend)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert m.dtype == acc and m.shape == (d, d)
    assert torch.equal(m, m.T), "the Gram must be exactly symmetric"
    ref = ef.reference.gram(phi, w, mode="sum")
    bound = gram_error_bound(phi, w, acc, CHUNK)
    assert ((m.double() - ref).abs() <= bound).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_centering_matches_reference(backend):
    n, d = 5000, 20
    phi = torch.randn(n, d) + 100.0  # a large mean: one-pass downdating would cancel badly here
    w = torch.rand(n, dtype=torch.float64)
    m = ef.gram(phi, w, center=True, backend=backend)
    ref = ef.reference.gram(phi, w, center=True)
    # Each centred entry carries the error of μ (a length-N weighted sum) on top of the
    # accumulation: bound with inputs of magnitude |φ| and K = N + chunk terms.
    bound = gram_error_bound(phi.abs() + 100.0, w, torch.float32, CHUNK + n)
    assert ((m.double() - ref).abs() <= bound).all()
    # a rank-one-downdate would lose ~ (mean/std)² = 1e4 × fp32 eps relative; two passes do not
    assert (m.double() - ref).abs().max() / ref.abs().max() < 1e-5


def test_backends_agree_with_gram_ref():
    phi = torch.randn(1000, 40, dtype=torch.float64)
    w = torch.rand(1000, dtype=torch.float64)
    ref = gram_ref(phi, w, True, torch.float64)
    for backend in BACKENDS:
        torch.testing.assert_close(ef.gram(phi, w, center=True, backend=backend), ref, rtol=1e-12, atol=1e-12)


@needs_native
def test_opcheck_gram_native():
    op = torch.ops.effrank_fast.gram_native.default
    for args in [
        (torch.randn(50, 7), None, False, torch.float32),
        (torch.randn(50, 7, dtype=torch.float64), torch.rand(50, dtype=torch.float64), True, torch.float64),
        (torch.randn(9, 3).bfloat16(), torch.rand(9), True, torch.float32),
    ]:
        torch.library.opcheck(op, args)


@needs_native
@pytest.mark.parametrize("backend", ["native", "torch"])
def test_compile_fullgraph(backend):
    torch._dynamo.reset()

    def f(phi, w):
        return ef.gram(phi, w, center=True, backend=backend, check=False)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    phi, w = torch.randn(64, 9), torch.rand(64)
    torch.testing.assert_close(compiled(phi, w), f(phi, w))


@needs_native
def test_opcheck_gram_stack_native():
    op = torch.ops.effrank_fast.gram_stack_native.default
    for args in [
        ([torch.randn(50, 7), torch.randn(50, 7)], None, torch.float32),
        ([torch.randn(9, 3, dtype=torch.float64)], torch.rand(9, dtype=torch.float64), torch.float64),
        ([torch.randn(9, 3).bfloat16()] * 3, torch.rand(9), torch.float64),
    ]:
        torch.library.opcheck(op, args)


@needs_native
@pytest.mark.parametrize("mode", ["integral", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_features_to_matrices_forms_each_layers_features_to_matrix(mode, dtype):
    """The monitor's stacked formation (one gram_stack_native call) gives every layer the matrix,
    backend and δ_G that features_to_matrix (without Lanczos) gives it alone; and that matrix is within δ_G of the
    float64 reference Gram."""
    from effrank_fast.rank.prepare import features_to_matrices, features_to_matrix

    torch.manual_seed(3)
    n, d = 700, 65
    phis = [torch.randn(n, d, dtype=torch.float64).mul(s).to(dtype) for s in (1.0, 1e-3, 30.0)]
    w = torch.rand(n, dtype=torch.float64) + 0.1 if mode == "integral" else None
    stacked, sps = features_to_matrices(phis, w, mode, "auto", torch.float64)
    assert stacked.shape == (3, d, d)
    for phi, sp, k in zip(phis, sps, range(3), strict=True):
        # λ_max from tr M in both (the monitor's float64 formation runs no Lanczos steps)
        alone = features_to_matrix(phi, w, mode, False, "auto", torch.float64, False, lanczos=False)
        assert sp.backend == alone.backend == "native"
        assert torch.equal(sp.matrix, alone.matrix) and torch.equal(stacked[k], alone.matrix)
        assert float(sp.gram_error) == float(alone.gram_error)
        ref = ef.reference.gram(phi, w, mode=mode)
        assert float(torch.linalg.matrix_norm(sp.matrix - ref, 2)) <= float(sp.gram_error)


@needs_native
def test_gram_stack_native_rejects_bad_arguments():
    op = torch.ops.effrank_fast.gram_stack_native
    with pytest.raises(NotImplementedError, match="empty list of Tensors"):  # the dispatcher's own refusal
        op([], None, torch.float64)
    with pytest.raises(RuntimeError, match="phis must share one shape, dtype and device"):
        op([torch.randn(5, 3), torch.randn(5, 4)], None, torch.float64)
    with pytest.raises(RuntimeError, match="phis must share one shape, dtype and device"):
        op([torch.randn(5, 3), torch.randn(5, 3, dtype=torch.float64)], None, torch.float64)
    with pytest.raises(RuntimeError, match="weights must be"):
        op([torch.randn(5, 3)], torch.ones(4), torch.float64)
    with pytest.raises(RuntimeError, match="acc_dtype must be float32 or float64"):
        op([torch.randn(5, 3)], None, torch.float16)
    with pytest.raises(RuntimeError, match="phis\\[0\\] must be a 2-D tensor"):
        op([torch.randn(5)], None, torch.float64)


@needs_native
def test_native_op_rejects_bad_arguments():
    with pytest.raises(RuntimeError, match="phi must be a 2-D tensor"):
        torch.ops.effrank_fast.gram_native(torch.randn(3), None, False, torch.float32)
    with pytest.raises(RuntimeError, match="weights must be"):
        torch.ops.effrank_fast.gram_native(torch.randn(3, 2), torch.ones(4), False, torch.float32)
    with pytest.raises(RuntimeError, match="acc_dtype must be float32 or float64"):
        torch.ops.effrank_fast.gram_native(torch.randn(3, 2), None, False, torch.float16)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize(("center", "weighted"), [(False, False), (True, False), (False, True), (True, True)])
def test_upper_triangle_gram_within_its_error_bound(backend, dtype, center, weighted):
    # d = 600 crosses the blocked upper-triangle split (leaf 256, blocks of 64 columns) and the
    # SYRK; the spectral error against the float64 Gram must stay below ops/gram/error's δ_G.
    from effrank_fast.ops.gram.error import gram_error_bound as delta_g

    n, d = 700, 600
    phi = (torch.randn(n, d, dtype=torch.float64) * torch.logspace(0, -3, d, dtype=torch.float64) + 0.5).to(dtype)
    w = torch.rand(n, dtype=torch.float64) + 0.1 if weighted else None
    m = ef.gram(phi, w, center=center, backend=backend)
    assert torch.equal(m, m.T)
    ref = ef.reference.gram(phi, w, center=center)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    mu = ref.new_zeros(())
    if center:
        x = phi.double()
        ww = torch.full((n,), 1.0 / n, dtype=torch.float64) if w is None else w
        mean = (ww @ x) / ww.sum()
        mu = ww.sum() * mean.square().sum()
    bound = delta_g(
        m.diagonal(),
        n,
        acc,
        input_dtype=dtype,
        backend=backend,
        weighted=weighted,
        centered=center,
        post_scale=None if weighted else 1 / n,
        mean_sq_norm=mu,
    )
    err = float(torch.linalg.matrix_norm(m.double() - ref, 2))
    assert err <= float(bound)
    assert err > 0 or dtype == torch.float64  # the check is not vacuous for fp32 accumulation


_PATH_SCRIPT = r"""
import torch, effrank_fast as ef
torch.manual_seed(0)
torch.set_num_threads(2)
worst = 0.0
for n, d in [(1, 1), (2, 3), (513, 70), (3000, 257)]:
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        base = torch.randn(n, 2 * d, dtype=torch.float64)
        views = (base[:, :d].to(dtype), base.to(dtype)[:, ::2], base[:, :d].T.contiguous().T.to(dtype))
        for phi in views + (base[:1, :d].to(dtype).expand(n, d),):  # the last: stride-0 rows
            for w, center in ((None, False), (torch.rand(n, dtype=torch.float64) + 0.1, True)):
                for acc in (torch.float32, torch.float64):
                    m = torch.ops.effrank_fast.gram_native(phi, w, center, acc)
                    assert torch.equal(m, m.T)
                    ref = ef.reference.gram(phi, w, center=center, mode="sum")
                    u = 2.0**-24 if acc == torch.float32 else 2.0**-53
                    ww = w if w is not None else torch.ones(n, dtype=torch.float64)
                    x = phi.double().abs()
                    if center:  # |x − μ̂| ≤ |x − μ| + |μ − μ̂| ≤ |x| + 2|μ|, loosely
                        x = (phi.double() - (ww @ phi.double()) / ww.sum()).abs() + 2 * ((ww @ x) / ww.sum())
                    absgram = (x * ww[:, None]).T @ x  # Σ_k w_k |x_ki||x_kj|
                    rel = float(((m.double() - ref).abs() / (absgram + 1e-300)).max())
                    worst = max(worst, rel / (2 * (n + 2) * u))
        # the stacked op on all views at once: each slice is gram_native's (uncentred)
        for w in (None, torch.rand(n, dtype=torch.float64) + 0.1):
            for acc in (torch.float32, torch.float64):
                stacked = torch.ops.effrank_fast.gram_stack_native(list(views), w, acc)
                for k, phi in enumerate(views):
                    assert torch.equal(stacked[k], torch.ops.effrank_fast.gram_native(phi, w, False, acc)), (n, d, k)
assert worst <= 1.0, worst
print("worst", worst)
"""


@needs_native
@pytest.mark.parametrize("path", ["auto", "blas", "avx2"])
def test_native_cpu_paths_within_the_entrywise_bound(path):
    """Every CPU path (sequential SYRK per thread on disjoint rows: our kernel at 512-bit vectors
    where the CPU has AVX-512, ``avx2`` at 256-bit; threaded BLAS per chunk), for
    strided and transposed inputs, 16-bit inputs, weights and centring: every entry within the
    rigorous γ_{n+2}·Σ_k w_k|x_ki||x_kj| of the float64 Gram (the centred x from the float64 mean,
    so that bound also covers the computed mean's error only to first order: slack 2×)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, EFFRANK_FAST_CPU_SYRK=path)
    out = subprocess.run([sys.executable, "-c", _PATH_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_gram_check_counts_and_maxima(dtype):
    """effrank_fast::gram_check against the torch expressions it replaces, on odd sizes (tiles of
    64), a transposed view, and NaN/±Inf in either triangle."""
    torch.manual_seed(1)
    for d in (1, 5, 64, 65, 200):
        a = torch.randn(d, d, dtype=torch.float64)
        a = (a + a.T) + 1e-3 * torch.randn(d, d, dtype=torch.float64)
        for m in (a.to(dtype), a.to(dtype).T):
            bad, asym, scale = torch.ops.effrank_fast.gram_check(m)
            g = m.double()
            assert int(bad) == 0
            assert float(asym) == float((g - g.T).abs().max())
            assert float(scale) == float(g.abs().max())
        if d >= 5:
            m = a.to(dtype).clone()
            m[3, 1], m[0, 4], m[2, 2] = float("nan"), float("inf"), float("-inf")
            assert int(torch.ops.effrank_fast.gram_check(m)[0]) == int((~torch.isfinite(m)).sum()) == 3


@needs_native
def test_bench_gram_cpu_smoke_checks_every_path_against_the_float64_gram(tmp_path):
    """benchmarks/bench_gram_cpu.py --smoke: every SYRK path (each in its own process) times a Gram
    only after it passed the rigorous entrywise bound against the float64 Gram; none is FAILED."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gram_cpu.json"
    cmd = [sys.executable, str(root / "benchmarks" / "bench_gram_cpu.py"), "--smoke", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["paths"]) == {"auto", "avx2", "blas"}
    for path in res["paths"].values():
        for d in ("5", "70"):
            assert isinstance(path[d]["f32"], float) and isinstance(path[d]["f64"], float), path[d]
        assert isinstance(path["stack"]["stack_ms"], float), path["stack"]
