"""jacobi_eigh against torch.linalg.eigvalsh/eigh in float64: random, clustered, graded, warm.

Tolerances: Jacobi is backward stable, the computed decomposition is exact for A + E with
‖E‖ ≲ c·n·u·‖A‖ (c ~ sweeps·(rounding per rotation); measured c ≤ 0.5 for eigenvalues and ≤ 2
for orthogonality in float64, ≤ 0.8 in float32, n ≤ 288). The solver stops at off(A) ≤ n·u·‖A‖_F,
which is a backward error of the same size. Tests allow 4·n·u·‖A‖₂ (eigenvalues, residuals) and
8·n·u (orthogonality), and u of the float64 reference is negligible. A solve stopped by its sweep
cap is exact for A + E with ‖E‖_F ≤ off·‖A‖_F more (Weyl: off·‖A‖_F on each eigenvalue).
"""

from __future__ import annotations

import pytest
import torch

from effrank_fast.ops import native
from effrank_fast.ops.jacobi_eigh import JacobiResult, default_tol, jacobi_eigh, jacobi_eigh_ref
from tests.conftest import devices

needs_native_cpu = pytest.mark.skipif(
    native.kernel_missing_reason("jacobi_eigh", "cpu") is not None, reason="native jacobi_eigh (CPU) not built"
)


def _orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))
    return q * torch.sign(torch.diagonal(r))


def _matrix(kind: str, n: int, seed: int) -> torch.Tensor:
    """``kind``: random, clustered, graded, warm, or warm_clustered / warm_graded (those spectra in
    a basis rotated by ~1e-3 from the identity: the tracker's nearly diagonal VᵀMV)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        x = torch.randn(n, n, dtype=torch.float64, generator=gen)
        return x + x.T
    warm = kind.startswith("warm")
    q = None if warm else _orthogonal(n, gen)
    spectrum = kind.removeprefix("warm_")
    if spectrum == "clustered":
        # Three tight clusters (spread 1e-10) and an exactly repeated eigenvalue.
        centres = torch.tensor([1.0, -0.5, 1e-3], dtype=torch.float64)
        lam = centres[torch.arange(n) % 3] + 1e-10 * torch.randn(n, dtype=torch.float64, generator=gen)
        lam[: max(1, n // 4)] = 0.25
    elif spectrum == "graded":
        lam = torch.logspace(0, -12, n, dtype=torch.float64) * torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    elif spectrum == "warm":
        lam = torch.arange(1, n + 1, dtype=torch.float64) ** -1.2
    else:
        raise AssertionError(kind)
    if q is None:
        # V_prevᵀ M V_new-like: the eigenbasis rotated by a small angle (the tracker's case).
        y, _ = torch.linalg.qr(torch.eye(n, dtype=torch.float64) + 1e-3 * torch.randn(n, n, generator=gen))
        q = y.T
    a = q @ torch.diag(lam) @ q.T
    return (a + a.T) / 2


def _check(a64: torch.Tensor, res, dtype: torch.dtype, max_sweeps: int | None = None) -> None:
    """``max_sweeps``: the cap the solve ran under; where it was reached, off·‖A‖_F is added."""
    n = a64.shape[-1]
    u = torch.finfo(dtype).eps
    a = a64.to(dtype).double()  # what the solver saw
    ref = torch.linalg.eigvalsh(a)
    norm = torch.linalg.matrix_norm(a, 2).clamp_min(1e-300)
    w, v = res.eigenvalues.double(), res.eigenvectors.double()
    assert torch.isfinite(w).all() and torch.isfinite(v).all()
    assert torch.all(w[..., 1:] >= w[..., :-1]), "eigenvalues must be ascending"
    tol = torch.full_like(norm, 4 * n * u)
    if max_sweeps is not None:
        capped = torch.as_tensor(res.sweeps) >= max_sweeps
        unconverged = torch.as_tensor(res.off).double() * torch.linalg.matrix_norm(a) / norm
        tol = tol + torch.where(capped, unconverged, torch.zeros_like(unconverged))
    err = (w - ref).abs().amax(-1) / norm
    assert torch.all(err <= tol), f"eigenvalue error {err.max():.3e} > {tol.max():.3e}"
    resid = (a @ v - v * w.unsqueeze(-2)).abs().amax((-2, -1)) / norm
    assert torch.all(resid <= tol), f"residual {resid.max():.3e}"
    eye = torch.eye(n, dtype=torch.float64, device=a.device)
    orth = (v.mT @ v - eye).abs().amax((-2, -1))
    assert torch.all(orth <= 8 * n * u), f"orthogonality {orth.max():.3e}"


@needs_native_cpu
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["random", "clustered", "graded", "warm"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 32, 33, 64, 65, 97])
def test_native_matches_eigvalsh(device, dtype, kind, n):
    a64 = _matrix(kind, n, seed=n)
    # Exactly repeated eigenvalues of high multiplicity make Jacobi's convergence linear for a while
    # (the rotations inside the eigenspace are arbitrary-angle): allow more sweeps there.
    sweeps = 80 if kind == "clustered" else 30
    res = jacobi_eigh(a64.to(device, dtype), max_sweeps=sweeps, backend="native")
    assert res.eigenvalues.device.type == device and res.eigenvalues.dtype == dtype
    _check(a64.to(device), res, dtype)


@needs_native_cpu
@pytest.mark.parametrize("device", devices())
def test_native_tracker_size_288(device):
    # The Rayleigh–Ritz size of the tracker (k = 256, p = 32), warm and cold.
    for kind in ("warm", "random"):
        a64 = _matrix(kind, 288, seed=1)
        res = jacobi_eigh(a64.to(device), backend="native")
        _check(a64.to(device), res, torch.float64)


@needs_native_cpu
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("n", [5, 40, 70])
def test_batched_and_strided(device, n):
    mats = torch.stack([_matrix(k, n, seed=s) for s, k in enumerate(["random", "clustered", "graded", "warm"] * 2)])
    a = mats.reshape(2, 4, n, n).to(device)
    # A non-contiguous view of symmetric matrices.
    res = jacobi_eigh(a.transpose(-1, -2), max_sweeps=80, backend="native")
    assert res.eigenvalues.shape == (2, 4, n) and res.eigenvectors.shape == (2, 4, n, n)
    assert res.off.shape == (2, 4) and res.sweeps.shape == (2, 4)
    _check(a, res, torch.float64)


@needs_native_cpu
def test_uses_the_symmetric_part():
    a = _matrix("random", 20, seed=3)
    skew = torch.randn(20, 20, dtype=torch.float64)
    res = jacobi_eigh(a + (skew - skew.T), backend="native")
    _check(a, res, torch.float64)


@needs_native_cpu
def test_warm_start_converges_in_few_sweeps():
    # Off-diagonal 1e-3 relative, well-separated spectrum: quadratic convergence gives
    # 1e-3 → 1e-6 → 1e-12 → u, so at most 4 sweeps (a cold random matrix of this size needs ~8).
    n = 96
    gen = torch.Generator().manual_seed(5)
    lam = torch.linspace(1.0, 2.0, n, dtype=torch.float64)
    y, _ = torch.linalg.qr(torch.eye(n, dtype=torch.float64) + 1e-4 * torch.randn(n, n, generator=gen))
    a = y.T @ torch.diag(lam) @ y
    res = jacobi_eigh(a, backend="native")
    assert int(res.sweeps) <= 4
    cold = jacobi_eigh(_matrix("random", n, seed=6), backend="native")
    assert int(cold.sweeps) > int(res.sweeps)
    _check(a, res, torch.float64)


@needs_native_cpu
def test_diagonal_input_needs_no_sweep_and_off_reports_backward_error():
    d = torch.diag(torch.tensor([3.0, -1.0, 2.0, 0.0], dtype=torch.float64))
    res = jacobi_eigh(d, backend="native")
    assert int(res.sweeps) == 0 and float(res.off) == 0.0
    assert torch.equal(res.eigenvalues, torch.tensor([-1.0, 0.0, 2.0, 3.0], dtype=torch.float64))
    # With max_sweeps = 1 on a random matrix, off is the Frobenius norm of what is left, relative.
    a = _matrix("random", 40, seed=9)
    one = jacobi_eigh(a, max_sweeps=1, backend="native")
    ref = torch.linalg.eigvalsh(a)
    err = (one.eigenvalues - ref).abs().max()
    assert float(one.off) > 1e-6 and int(one.sweeps) == 1
    assert err <= float(one.off) * torch.linalg.matrix_norm(a) * (1 + 1e-12)  # Weyl: |Δλ| ≤ ‖offdiag‖₂


@pytest.mark.parametrize("kind", ["random", "clustered", "graded"])
@pytest.mark.parametrize("n", [1, 6, 19])
def test_reference_matches_eigvalsh(kind, n):
    a64 = _matrix(kind, n, seed=n + 100)
    _check(a64, JacobiResult(*jacobi_eigh_ref(a64, max_sweeps=40)), torch.float64)


@needs_native_cpu
def test_native_and_reference_agree():
    a = _matrix("warm", 24, seed=4)
    nat = jacobi_eigh(a, backend="native")
    ref = jacobi_eigh(a, backend="torch")
    u = torch.finfo(torch.float64).eps
    assert torch.allclose(nat.eigenvalues, ref.eigenvalues, rtol=0, atol=8 * 24 * u)
    assert int(nat.sweeps) == int(ref.sweeps)  # same rotations, same convergence test


@needs_native_cpu
@pytest.mark.parametrize("kind", ["random", "graded", "clustered"])
@pytest.mark.parametrize("n", [7, 32, 33, 48, 64])
def test_native_cpu_runs_the_cuda_algorithm_of_its_size(kind, n):
    """n ≤ 64 is the scalar parallel-order Jacobi on the whole matrix on CPU as on CUDA (one block
    per matrix); ``ref`` is the same rotations in the same order. Stopped after 2 sweeps (far from
    converged, off ~1e-2) both must hold the same matrix: each is backward stable (4·n·u·‖A‖₂, see
    the module docstring), so they differ by at most twice that. The blocked algorithm, which the
    CPU used to run for 33 ≤ n ≤ 64, differs by ~1e-2·‖A‖ here (the rotations are others)."""
    a = _matrix(kind, n, seed=n)
    nat = jacobi_eigh(a, max_sweeps=2, tol=0.0, backend="native")
    ref = jacobi_eigh(a, max_sweeps=2, tol=0.0, backend="torch")
    u = torch.finfo(torch.float64).eps
    norm = float(torch.linalg.matrix_norm(a, 2))
    assert float(nat.off) > 1e-6, "the case must stop far from convergence"
    assert torch.allclose(nat.eigenvalues, ref.eigenvalues, rtol=0, atol=8 * n * u * norm)
    assert abs(float(nat.off) - float(ref.off)) <= 8 * n * u


def test_reference_builds_its_index_tensors_once(monkeypatch):
    """``ref`` must not build tensors from Python lists per round: on CUDA each such
    ``torch.tensor(list, device=...)`` is a synchronising host→device copy. The round-robin
    index tensors are cached per (n, device); a second solve of the same size builds none."""
    from effrank_fast.ops.jacobi_eigh import reference

    a = _matrix("random", 10, seed=11)
    jacobi_eigh(a, max_sweeps=2, backend="torch")
    built = []
    real = torch.tensor

    def counting(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(reference.torch, "tensor", counting)
    res = jacobi_eigh(a + 1, max_sweeps=40, backend="torch")
    assert built == []
    _check(a + 1, res, torch.float64)


def test_eigh_backend_and_validation():
    a = _matrix("random", 10, seed=2)
    res = jacobi_eigh(a, backend="eigh")
    _check(a, res, torch.float64)
    with pytest.raises(ValueError, match="square"):
        jacobi_eigh(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="float32 or float64"):
        jacobi_eigh(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="max_sweeps"):
        jacobi_eigh(a, max_sweeps=-1)
    with pytest.raises(ValueError, match="backend"):
        jacobi_eigh(a, backend="lapack")
    with pytest.raises(TypeError, match="torch.Tensor"):
        jacobi_eigh([[1.0]])


@needs_native_cpu
def test_nan_input_is_not_silently_finite():
    a = _matrix("random", 12, seed=8)
    a[3, 5] = a[5, 3] = float("nan")
    res = jacobi_eigh(a, backend="native")
    assert not torch.isfinite(res.eigenvalues).all()


@needs_native_cpu
@pytest.mark.parametrize("device", devices())
def test_opcheck(device):
    for n in (9, 70):
        a = _matrix("random", n, seed=n).to(device)
        torch.library.opcheck(torch.ops.effrank_fast.jacobi_eigh.default, (a, 12, 1e-13))
        torch.library.opcheck(torch.ops.effrank_fast.jacobi_eigh.default, (a.float().reshape(1, n, n), 12, 1e-6))


@needs_native_cpu
def test_compile_fullgraph_cpu():
    @torch.compile(fullgraph=True, backend="inductor")
    def top_eigenvalue(m: torch.Tensor) -> torch.Tensor:
        w, v, off, sweeps = torch.ops.effrank_fast.jacobi_eigh(m @ m.T, 12, 1e-13)
        return w[-1] * 2

    x = torch.randn(30, 30, dtype=torch.float64)
    got = top_eigenvalue(x)
    ref = torch.linalg.eigvalsh(x @ x.T)[-1] * 2
    assert torch.allclose(got, ref, rtol=1e-12, atol=0)


@pytest.mark.gpu
@needs_native_cpu
def test_cuda_and_cpu_kernels_agree():
    for n in (48, 288):
        a = _matrix("warm", n, seed=n)
        cpu = jacobi_eigh(a, backend="native")
        gpu = jacobi_eigh(a.cuda(), backend="native")
        u = torch.finfo(torch.float64).eps
        assert torch.allclose(cpu.eigenvalues, gpu.eigenvalues.cpu(), rtol=0, atol=8 * n * u)


# (name, kernel, dtype, matrices, max_sweeps) for the emulated CUDA kernels. An emulated sweep of
# the blocked kernel at n = 288 (the tracker's k + p = 256 + 32) costs ~0.2 s, and cold clustered
# and graded 288s take 22–32 sweeps to converge: those two stop at the tracker's default cap of 8
# sweeps and are checked with the off they report (see ``_check``); the converged clustered and
# graded cases are n = 100 (blocked) and 33, 48 (one-block kernel).
def _emulation_cases() -> list[tuple[str, str, torch.dtype, list[torch.Tensor], int]]:
    f64, f32 = torch.float64, torch.float32
    return [
        ("warm288", "blocked", f64, [_matrix("warm", 288, seed=1)], 30),
        ("graded288", "blocked", f64, [_matrix("graded", 288, seed=2)], 8),
        ("clust288", "blocked", f64, [_matrix("clustered", 288, seed=3)], 8),
        ("clust100", "blocked", f64, [_matrix("clustered", 100, seed=4)], 80),
        ("graded100", "blocked", f32, [_matrix("graded", 100, seed=5)], 30),
        ("small48", "small", f64, [_matrix(k, 48, seed=6) for k in ("clustered", "graded", "random")], 80),
        ("small33", "small", f32, [_matrix(k, 33, seed=7) for k in ("clustered", "graded")], 80),
    ]


def test_cuda_kernels_source_under_host_emulation(tmp_path):
    """The CUDA kernels' own source (jacobi_kernels.cuh), compiled for the host with emulated
    threads, barriers and warp shuffles (tests/cuda_emulation/): CI has no GPU, and this is the only
    place the kernel code runs there. The built-in cases check themselves (V orthogonal,
    AV = VΛ); the cases above (n = 288, clustered, graded, both kernels, both dtypes) come back
    and are checked against float64 eigvalsh with the tolerances of ``_check``. One block per
    launch: multi-block execution is not emulated (see tests/cuda_emulation/cuda_emulation.h)."""
    import shutil
    import subprocess
    from pathlib import Path

    import numpy as np

    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    root = Path(__file__).resolve().parents[1]
    exe = tmp_path / "jacobi_emulated"
    build = subprocess.run(
        [
            cxx,
            "-std=c++20",
            "-O2",
            f"-I{root / 'csrc'}",
            f"-I{root / 'tests' / 'cuda_emulation'}",
            str(root / "tests" / "cuda_emulation" / "jacobi_emulated.cpp"),
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "c++20" in build.stderr.lower():
        pytest.skip(f"the compiler lacks C++20: {build.stderr[:200]}")
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "ALL OK" in run.stdout, run.stdout + run.stderr

    cases = _emulation_cases()
    lines = []
    for name, kernel, dtype, mats, max_sweeps in cases:
        n = mats[0].shape[-1]
        torch.stack(mats).numpy().astype(np.float64).tofile(tmp_path / f"{name}.in")
        tol = default_tol(n, dtype)
        lines.append(
            f"{name} {kernel} {'f64' if dtype == torch.float64 else 'f32'} {n} {len(mats)} 32 {max_sweeps} {tol!r}"
        )
    (tmp_path / "cases.txt").write_text("\n".join(lines) + "\n")
    run = subprocess.run([str(exe), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "ALL OK" in run.stdout, run.stdout + run.stderr
    for name, _kernel, dtype, mats, max_sweeps in cases:
        n, b = mats[0].shape[-1], len(mats)
        out = torch.from_numpy(np.fromfile(tmp_path / f"{name}.out", dtype=np.float64)).reshape(b, n + n * n + 2)
        res = JacobiResult(
            out[:, :n].to(dtype), out[:, n : n + n * n].reshape(b, n, n).to(dtype), out[:, -2], out[:, -1].long()
        )
        _check(torch.stack(mats), res, dtype, max_sweeps)


def test_old_backend_name_ref_still_works_with_a_warning():
    a = torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    want = jacobi_eigh(a, max_sweeps=3, backend="torch")
    with pytest.warns(DeprecationWarning, match="'ref' is now called 'torch'"):
        got = jacobi_eigh(a, max_sweeps=3, backend="ref")
    assert torch.equal(got.eigenvalues, want.eigenvalues) and torch.equal(got.eigenvectors, want.eigenvectors)
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        jacobi_eigh(a, backend="reference")
