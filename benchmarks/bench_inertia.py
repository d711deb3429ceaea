"""Exact ε-rank by inertia: timings against eigvalsh, cholesky_ex (the floor) and svdvals.

    python benchmarks/bench_inertia.py [--sizes 1024,2048,4096,8192,16384] [--svd-max 8192]
                                       [--variants 4096,8192] [--json out.json] [--stat median|min]

For each d: features Φ [2d, d] with a power-law spectrum (σ_i² ∝ i^-1.2, random rotation) and the
fp32 Gram M = ΦᵀΦ/N. Timed with CUDA events (median of repeats after a warm-up; slow operations once):
inertia (the op, one threshold, fp32 Gram in), inertia_count (the wrapper, with its fallback check
— one host sync), the relative count (Lanczos + 3 factorisations), eigvalsh fp32/fp64,
cholesky_ex fp32/fp64 of M + I (the d³/3 floor), svdvals(Φ) fp32. Exactness: the inertia count
against a float64 eigvalsh count at the same τ (midway between two eigenvalues of the fp64 spectrum
of the fp32 Gram). ``--variants`` sweeps the panel width and the trailing update (blocks | syrkx | gemm).
Without CUDA it runs small sizes on the CPU (a smoke test of the script).

Named explicitly, pytest runs the ``test_*`` functions below with pytest-benchmark (one size:
d = 4096 on CUDA, 512 on the CPU): ``python -m pytest benchmarks/bench_inertia.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from effrank_fast.ops.inertia import inertia_count, inertia_count_relative, lambda_max_bounds  # noqa: E402

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"


STAT = statistics.median  # --stat min: the least-disturbed run, for a shared (noisy) CPU machine


def timed(fn, reps: int = 5, warm: int = 1) -> float:
    """Milliseconds of ``fn()``: the median (or minimum, ``--stat min``) of ``reps`` runs."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(reps):
        if CUDA:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            out.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return STAT(out)


def features(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device=DEV).manual_seed(seed)
    n = 2 * d
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, device=DEV))
    sigma = torch.arange(1, d + 1, device=DEV, dtype=torch.float32) ** -0.6
    return (torch.randn(n, d, generator=g, device=DEV) * sigma) @ q.T


def reps_for(d: int) -> int:
    return 10 if d <= 2048 else 5 if d <= 8192 else 3


def bench_size(d: int, svd_max: int, variants: bool) -> dict:
    phi = features(d)
    m = (phi.T @ phi) / phi.shape[0]
    m = (m + m.T) / 2  # exactly symmetric fp32 Gram
    lam = torch.linalg.eigvalsh(m.double()).flip(0)
    k = max(1, d // 10)  # ε ≈ 1e-2…1e-3 λ_max for these sizes: inside the dense part of the spectrum
    tau_v = math.sqrt(float(lam[k - 1]) * float(lam[k]))
    tau = torch.tensor([tau_v], dtype=torch.float64, device=DEV)
    eps_rel = tau_v / float(lam[0])
    row: dict = {"d": d, "tau": tau_v, "eps_rel": eps_rel, "exact": k, "gap_rel": float((lam[k - 1] - lam[k]) / lam[0])}
    op = torch.ops.effrank_fast.inertia
    out = op(m, tau, 0)
    row.update(
        count=int(out[0][0]),
        min_pivot_rel=float(out[1][0]),
        growth=float(out[2][0]),
        band=int(out[3][0]),
        delta=float(out[4][0]),
        scale=float(out[5][0]),
        max_abs_l=float(out[6][0]),
    )
    verdict = inertia_count(m, tau, fallback=False)  # the default tolerance and the probabilistic δ_p
    row["reliable"] = bool(verdict.reliable[0])
    cert = inertia_count(m.double(), tau, fallback=False)  # float64 M: certified by counts at τ ± 2δ
    row["certified_fp64"] = bool(cert.certified[0])  # type: ignore[index]
    row["delta_p"] = float(verdict.error_estimate[0])  # type: ignore[index]
    r = reps_for(d)
    row["inertia_ms"] = timed(lambda: op(m, tau, 0), reps=r)
    row["inertia_fp64in_ms"] = timed(lambda: op(m.double(), tau, 0), reps=r)
    row["inertia_count_ms"] = timed(lambda: inertia_count(m, tau), reps=r)
    row["inertia_certified_fp64_ms"] = timed(lambda: inertia_count(m.double(), tau, fallback=False), reps=r)
    rel = inertia_count_relative(m, [eps_rel])
    row["relative_count"] = int(rel.counts[0])
    row["relative_exact"] = int((lam > eps_rel * lam[0]).sum())
    row["relative_fell_back"] = bool(rel.fell_back[0])
    row["relative_ms"] = timed(lambda: inertia_count_relative(m, [eps_rel]), reps=max(1, r // 2))
    row["lanczos_ms"] = timed(lambda: lambda_max_bounds(m), reps=max(1, r // 2))
    slow = 1 if d >= 8192 else 3
    row["eigvalsh_fp32_ms"] = timed(lambda: torch.linalg.eigvalsh(m), reps=slow)
    row["eigvalsh_fp64_ms"] = timed(lambda: torch.linalg.eigvalsh(m.double()), reps=slow)
    spd = m + torch.eye(d, device=DEV) * float(lam[0]) * 1e-3
    row["cholesky_fp32_ms"] = timed(lambda: torch.linalg.cholesky_ex(spd), reps=r)
    spd64 = spd.double()
    row["cholesky_fp64_ms"] = timed(lambda: torch.linalg.cholesky_ex(spd64), reps=r)
    if d <= svd_max:
        row["svdvals_ms"] = timed(lambda: torch.linalg.svdvals(phi), reps=1, warm=1 if d < 8192 else 0)
    if variants:
        for panel in (128, 256, 512):
            for trailing in ("blocks", "syrkx", "gemm"):
                os.environ["EFFRANK_INERTIA_TRAILING"] = trailing
                key = f"var_p{panel}_{trailing}_ms"
                row[key] = timed(lambda p=panel: op(m, tau, p), reps=r)
                assert int(op(m, tau, panel)[0][0]) == row["count"]
        os.environ.pop("EFFRANK_INERTIA_TRAILING", None)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_sizes = "1024,2048,4096,8192,16384" if CUDA else "256,512"
    ap.add_argument("--sizes", default=default_sizes)
    ap.add_argument("--svd-max", type=int, default=8192)
    ap.add_argument("--variants", default="", help="sizes at which to sweep panel width / trailing update")
    ap.add_argument("--json", default="")
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    args = ap.parse_args()
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    sizes = [int(s) for s in args.sizes.split(",") if s]
    variant_sizes = {int(s) for s in args.variants.split(",") if s}
    info = {
        "device": torch.cuda.get_device_name(0) if CUDA else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d"),
        "argv": sys.argv,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(info), flush=True)
    rows = []
    for d in sizes:
        row = bench_size(d, args.svd_max, d in variant_sizes)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if CUDA:
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    hdr = (
        "d      count/exact rel  inertia  count()  cert64  relative  eig32   eig64   chol32  chol64  svd     "
        "x_eig32 x_chol64"
    )
    print(hdr)
    for r in rows:
        svd = r.get("svdvals_ms", float("nan"))
        print(
            f"{r['d']:<6d} {r['count']:>5d}/{r['exact']:<5d} {'ok' if r['reliable'] else 'NO'}  "
            f"{r['inertia_ms']:7.2f}  {r['inertia_count_ms']:7.2f}  "
            f"{r['inertia_certified_fp64_ms']:6.2f}{'' if r['certified_fp64'] else '!'} {r['relative_ms']:8.2f}  "
            f"{r['eigvalsh_fp32_ms']:7.1f} {r['eigvalsh_fp64_ms']:7.1f} {r['cholesky_fp32_ms']:6.2f}  "
            f"{r['cholesky_fp64_ms']:6.2f}  {svd:8.1f} {r['eigvalsh_fp32_ms'] / r['inertia_ms']:7.1f} "
            f"{r['inertia_ms'] / r['cholesky_fp64_ms']:7.2f}"
        )


def _bench_case() -> tuple[torch.Tensor, torch.Tensor]:
    d = 4096 if CUDA else 512
    phi = features(d)
    m = (phi.T @ phi) / phi.shape[0]
    m = (m + m.T) / 2
    lam = torch.linalg.eigvalsh(m.double()).flip(0)
    k = d // 10
    tau = torch.tensor([math.sqrt(float(lam[k - 1]) * float(lam[k]))], dtype=torch.float64, device=DEV)
    return m, tau


def _synced(fn):
    def run():
        out = fn()
        if CUDA:
            torch.cuda.synchronize()
        return out

    return run


def test_inertia_one_threshold(benchmark):
    m, tau = _bench_case()
    out = benchmark(_synced(lambda: torch.ops.effrank_fast.inertia(m, tau, 0)))
    assert int(out[0][0]) == m.shape[0] // 10


def test_eigvalsh_fp64_same_count(benchmark):
    m, tau = _bench_case()
    lam = benchmark(_synced(lambda: torch.linalg.eigvalsh(m.double())))
    assert int((lam > tau).sum()) == m.shape[0] // 10


def test_cholesky_fp64_floor(benchmark):
    m, _ = _bench_case()
    spd = (m + torch.eye(m.shape[0], device=m.device) * float(m.diagonal().max()) * 1e-3).double()
    benchmark(_synced(lambda: torch.linalg.cholesky_ex(spd)))


if __name__ == "__main__":
    main()
