"""Benchmark: the small symmetric eigensolve of the tracker's Rayleigh–Ritz step.

    python benchmarks/bench_jacobi_eigh.py [--small] [--json out.json]

Times jacobi_eigh (native) against torch.linalg.eigh on the same inputs: the warm case (VᵀMV with
V last step's eigenbasis, off-diagonal ~1e-3 relative) for a power-law, a graded (1 … 1e-12) and a
clustered (three clusters of spread 1e-10) spectrum, the same spectra cold (random eigenbasis;
graded and clustered take 22–32 sweeps at n = 288, against the tracker's cap of 8: see
SpectrumTracker's ``jacobi_sweeps``), a cold random matrix, and the batched small tridiagonals of
the SLQ estimate. The sweep counts are reported. CUDA events, median of repeats after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
from effrank_fast.ops.jacobi_eigh import jacobi_eigh  # noqa: E402


def _timeit(fn, device: torch.device, reps: int = 20, warmup: int = 3) -> float:
    """Median milliseconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def spectrum(kind: str, n: int) -> torch.Tensor:
    """power: i^-1.2; graded: 1 … 1e-12, alternating signs; clustered: 1, −0.5, 1e-3 (spread 1e-10)."""
    i = torch.arange(n, dtype=torch.float64)
    if kind == "graded":
        return torch.logspace(0, -12, n, dtype=torch.float64) * torch.where(i % 2 == 0, 1.0, -1.0)
    if kind == "clustered":
        gen = torch.Generator().manual_seed(3)
        centres = torch.tensor([1.0, -0.5, 1e-3], dtype=torch.float64)
        return centres[torch.arange(n) % 3] + 1e-10 * torch.randn(n, dtype=torch.float64, generator=gen)
    return (i + 1) ** -1.2


def warm_matrix(
    n: int, dtype: torch.dtype, device: torch.device, perturb: float = 1e-3, seed: int = 0, kind: str = "power"
) -> torch.Tensor:
    """diag(λ) in a basis rotated by ~``perturb`` from the identity (``perturb=None``: a random basis)."""
    gen = torch.Generator().manual_seed(seed)
    lam = spectrum(kind, n)
    if perturb is None:
        y, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))
    else:
        y, _ = torch.linalg.qr(torch.eye(n, dtype=torch.float64) + perturb * torch.randn(n, n, generator=gen))
    a = y.T @ torch.diag(lam) @ y
    return ((a + a.T) / 2).to(device, dtype)


def cold_matrix(n: int, dtype: torch.dtype, device: torch.device, seed: int = 1) -> torch.Tensor:
    x = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (x + x.T).to(device, dtype)


def tridiagonals(batch: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(batch, n, dtype=torch.float64, generator=gen)
    b = torch.rand(batch, n - 1, dtype=torch.float64, generator=gen) * 0.3
    t = torch.diag_embed(a) + torch.diag_embed(b, 1) + torch.diag_embed(b, -1)
    return t.to(device, dtype)


def run(small: bool) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = 96 if small else 288
    rows = []
    cases = [
        ("warm", lambda dt: warm_matrix(n, dt, device)),
        ("warm graded", lambda dt: warm_matrix(n, dt, device, kind="graded")),
        ("warm clustered", lambda dt: warm_matrix(n, dt, device, kind="clustered")),
        ("cold graded", lambda dt: warm_matrix(n, dt, device, perturb=None, kind="graded")),
        ("cold clustered", lambda dt: warm_matrix(n, dt, device, perturb=None, kind="clustered")),
        ("cold", lambda dt: cold_matrix(n, dt, device)),
        ("slq 16x20x20", lambda dt: tridiagonals(16, 20, dt, device)),
    ]
    for dtype in (torch.float32, torch.float64):
        for name, make in cases:
            a = make(dtype)
            ref = torch.linalg.eigvalsh(a.double())
            res = jacobi_eigh(a, max_sweeps=60, backend="native")
            err = float((res.eigenvalues.double() - ref).abs().max() / ref.abs().max())
            t_jac = _timeit(lambda a=a: jacobi_eigh(a, max_sweeps=60, backend="native"), device)
            t_eigh = _timeit(lambda a=a: torch.linalg.eigh(a), device)
            rows.append(
                {
                    "case": name,
                    "n": a.shape[-1],
                    "dtype": str(dtype).replace("torch.", ""),
                    "device": device.type,
                    "jacobi_ms": t_jac,
                    "eigh_ms": t_eigh,
                    "sweeps": int(res.sweeps.max()),
                    "off": float(res.off.max()),
                    "max_err_rel": err,
                }
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = run(args.small)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)
    print(f"{'case':14s} {'n':>4s} {'dtype':8s} {'jacobi ms':>10s} {'eigh ms':>9s} {'sweeps':>6s} {'max err':>9s}")
    for r in rows:
        print(
            f"{r['case']:14s} {r['n']:4d} {r['dtype']:8s} {r['jacobi_ms']:10.3f} {r['eigh_ms']:9.3f} "
            f"{r['sweeps']:6d} {r['max_err_rel']:9.1e}"
        )


if __name__ == "__main__":
    main()
