"""The CUDA kernels of effrank_fast::inertia, run on the CPU without a GPU.

csrc/inertia/inertia_kernels.cuh (the very source nvcc compiles) is built with g++ against
tests/cuda_emulation/cuda_emulation.h, which runs each CUDA thread as a fiber with real block
barriers, warp shuffles and atomics, and a naive BLAS in place of cuBLAS; the workspace starts as
NaN, like uninitialised device memory. The counts must match the known spectrum and the CPU
kernel; the diagnostics (growth, δ, ‖A‖_F) are the same sums in another order, so they agree with
the CPU kernel far below their own meaning (rtol 1e-6). A missing barrier deadlocks or corrupts
the result here (checked by hand with a barrier removed, under ThreadSanitizer as well).
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from inertia_cases import F64, between, crafted_growth, power_law, spectrum_matrix

from effrank_fast.ops import native

ROOT = Path(__file__).resolve().parents[1]
TRAILING = {"syrkx": 0, "gemm": 1, "blocks": 2}

pytestmark = [
    pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (C++20) to build the emulation"),
    pytest.mark.skipif(not native.has_kernel("inertia", "cpu"), reason="the CPU kernel is the comparison"),
]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    exe = tmp_path_factory.mktemp("emu") / "inertia_emulated"
    cmd = [
        "g++",
        "-std=c++20",
        "-O2",
        "-pthread",
        "-Wall",
        "-Wno-unknown-pragmas",
        f"-I{ROOT / 'csrc'}",
        f"-I{ROOT / 'tests' / 'cuda_emulation'}",
        str(ROOT / "tests" / "cuda_emulation" / "inertia_emulated.cpp"),
        "-o",
        str(exe),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        if "source_location" in out.stderr and "No such file" in out.stderr:
            pytest.skip("the C++ library lacks <source_location> (C++20)")
        pytest.fail(f"emulation build failed:\n{out.stderr[-3000:]}")
    return exe


def run_emulated(exe: Path, m: torch.Tensor, tau: list[float], *, panel=256, trailing="syrkx", col_block=1024):
    """[(count, min_pivot_rel, growth, band, error_bound, scale, max_abs_l)] per threshold."""
    dtype = 0 if m.dtype == torch.float64 else 1
    hdr = struct.pack("6q", m.shape[0], len(tau), dtype, panel, TRAILING[trailing], col_block)
    body = np.asarray(tau, dtype=np.float64).tobytes() + m.contiguous().numpy().tobytes()
    out = subprocess.run([str(exe)], input=hdr + body, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    rows = [line.split() for line in out.stdout.decode().strip().splitlines()]
    return [(int(r[0]), float(r[1]), float(r[2]), int(r[3]), float(r[4]), float(r[5]), float(r[6])) for r in rows]


@pytest.mark.parametrize(
    ("d", "panel", "trailing", "col_block", "dtype"),
    [
        (1, 256, "syrkx", 1024, F64),
        (5, 256, "syrkx", 1024, F64),
        (64, 64, "syrkx", 1024, F64),
        (65, 64, "gemm", 1024, F64),
        (97, 64, "syrkx", 1024, torch.float32),
        (130, 128, "blocks", 50, F64),
    ],
)
def test_cuda_kernels_emulated_match_cpu(emulator, d, panel, trailing, col_block, dtype):
    lam = power_law(d)
    m = spectrum_matrix(lam, seed=d).to(dtype)
    ks = sorted({k for k in (1, d // 2, d - 1) if 0 < k < d})
    tau = [between(lam, k) for k in ks] or [0.5]
    got = run_emulated(emulator, m, tau, panel=panel, trailing=trailing, col_block=col_block)
    cpu = torch.ops.effrank_fast.inertia(m, torch.tensor(tau, dtype=F64), 0)
    assert [g[0] for g in got] == cpu[0].tolist() == (ks or [1])
    for k in (1, 2, 4, 5, 6):  # min pivot, growth, δ, ‖A‖_F, max |L|
        torch.testing.assert_close(torch.tensor([g[k] for g in got], dtype=F64), cpu[k], rtol=1e-6, atol=0)
    assert [g[3] for g in got] == cpu[3].tolist()  # #{|D| ≤ δ}, the second pass of finalize_kernel


def test_cuda_kernels_emulated_report_a_zero_pivot(emulator):
    m, tau = crafted_growth(70)
    got = run_emulated(emulator, m, [float(m[0, 0]), float(tau[0])], panel=64)
    assert math.isinf(got[0][2]) and math.isinf(got[0][4])  # exact zero pivot: growth, δ = inf
    assert got[0][3] == 70 and math.isinf(got[0][6])  # every pivot in the (infinite) band
    cpu = torch.ops.effrank_fast.inertia(m, tau, 0)
    assert got[1][0] == int(cpu[0][0])  # the tiny pivot: same count, huge δ
    assert got[1][4] > 1e-7 * got[1][5]
    assert got[1][3] == int(cpu[3][0]) >= 1  # the tiny pivot lies inside the band |D| ≤ δ
