"""The CPU Gram (``gram_native``, ``gram_stack_native``) against torch's ``phi.T @ phi``, per SYRK path.

    PYTHONPATH=$PWD python benchmarks/bench_gram_cpu.py [--threads 1] [--rows 20000] [--dims 64,128,256,320,512]
    PYTHONPATH=$PWD python benchmarks/bench_gram_cpu.py --smoke     # tiny sizes (the test)

Each path runs in its own process (``EFFRANK_FAST_CPU_SYRK`` is read once per process): ``auto``
(our kernel at 512-bit vectors where the CPU has AVX-512F, MKL's per-ISA kernel above its width),
``avx2`` (our kernel at 256-bit vectors) and ``blas`` (the threaded BLAS SYRK). For each width d it
reports the median ms of an uncentred Gram of N × d features in float32 and float64, the rate
N·d(d+1) flop/s of the lower triangle, torch's ``phi.T @ phi`` (a full GEMM) in the same dtype, and
the monitor's case: L = 3 layers of 2000 × 64 float32 features with quadrature weights, formed in
float64 by one ``gram_stack_native`` call against three ``gram_native`` calls. Every timed Gram is
checked first against the float64 reference (entrywise within γ_{N+2}·Σ|φ_i||φ_j|, the rigorous
bound): a path that fails it prints FAILED and no time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

PATHS = ("auto", "avx2", "blas")


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _within_bound(m: torch.Tensor, phi: torch.Tensor, w: torch.Tensor | None, acc: torch.dtype) -> bool:
    x = phi.double()
    ww = torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.double()
    ref = (x * ww[:, None]).T @ x
    absgram = (x.abs() * ww[:, None]).T @ x.abs()
    u = torch.finfo(acc).eps / 2
    n = x.shape[0]
    return bool(((m.double() - ref).abs() <= 2 * (n + 2) * u * absgram + 1e-300).all())


def one_path(rows: int, dims: list[int], reps: int) -> dict:
    """Times in this process (its EFFRANK_FAST_CPU_SYRK): {d: {...}, "stack": {...}}."""
    import effrank_fast  # noqa: F401  (loads the ops)

    gram = torch.ops.effrank_fast.gram_native
    out: dict = {}
    torch.manual_seed(0)
    for d in dims:
        row: dict = {}
        for acc in (torch.float32, torch.float64):
            phi = torch.randn(rows, d, dtype=acc)
            name = "f32" if acc == torch.float32 else "f64"
            if not _within_bound(gram(phi, None, False, acc), phi, None, acc):
                row[name] = "FAILED"
                continue
            ms = _median_ms(lambda phi=phi, acc=acc: gram(phi, None, False, acc), reps)
            row[name] = ms
            row[name + "_gflops"] = rows * d * (d + 1) / ms / 1e6
            row[name + "_torch_mm"] = _median_ms(lambda phi=phi: phi.T @ phi, reps)
        out[str(d)] = row
    phis = [torch.tanh(torch.randn(2000, 64)) for _ in range(3)]
    w = torch.rand(2000)
    stacked = torch.ops.effrank_fast.gram_stack_native(phis, w, torch.float64)
    ok = all(_within_bound(stacked[k], phis[k], w, torch.float64) for k in range(3))
    out["stack"] = (
        {
            "stack_ms": _median_ms(lambda: torch.ops.effrank_fast.gram_stack_native(phis, w, torch.float64), reps * 5),
            "three_calls_ms": _median_ms(lambda: [gram(p, w, False, torch.float64) for p in phis], reps * 5),
        }
        if ok
        else {"stack_ms": "FAILED"}
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--dims", default="64,128,256,320,512")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.rows, args.dims, args.reps = 300, "5,70", 2
    dims = [int(x) for x in args.dims.split(",")]
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(one_path(args.rows, dims, args.reps)))
        return {}
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads",
        "rows": args.rows,
        "paths": {},
    }
    print(f"# {results['machine']}; N = {args.rows}")
    for path in args.paths.split(","):
        env = dict(os.environ, EFFRANK_FAST_CPU_SYRK=path)
        cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads), "--rows", str(args.rows)]
        cmd += ["--dims", ",".join(map(str, dims)), "--reps", str(args.reps)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"path {path} failed:\n{proc.stderr[-3000:]}")
        results["paths"][path] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\n| d | path | fp32 ms | fp32 GFLOP/s | torch fp32 `phi.T@phi` | fp64 ms | fp64 GFLOP/s | torch fp64 |")
    print("|---|---|---|---|---|---|---|---|")

    def f(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    for d in dims:
        for path, res in results["paths"].items():
            r = res[str(d)]
            print(
                f"| {d} | {path} | {f(r.get('f32'))} | {f(r.get('f32_gflops', '-'))} | {f(r.get('f32_torch_mm', '-'))} "
                f"| {f(r.get('f64'))} | {f(r.get('f64_gflops', '-'))} | {f(r.get('f64_torch_mm', '-'))} |"
            )
    print("\n3 layers of 2000 × 64 (fp32 features, weights) in float64: one gram_stack_native call, three gram_native")
    for path, res in results["paths"].items():
        s = res["stack"]
        print(f"- {path}: stack {f(s['stack_ms'])} ms, three calls {f(s.get('three_calls_ms', '-'))} ms")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
