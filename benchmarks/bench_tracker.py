"""Benchmark: SpectrumTracker.update on a drifting Gram sequence, against full and truncated solvers.

    python benchmarks/bench_tracker.py [--small] [--json out.json]

Sequence: M_0 = Q diag(λ) Qᵀ with λ_i = i^-1.2 (a power law, docs/tracker.md), then
M_{t+1} = (I + ρR)ᵀ M_t (I + ρR), R Gaussian/√d — the Gram of Φ ← Φ + ρΦR. Steady state: the
first updates (cold start) are excluded. Per configuration: median CUDA-event time per update
(the update includes its own host syncs in sync="step"), median host wall time, subspace
iterations, and the max relative error of the top-k values against float64 eigvalsh.
Baselines on the same matrices: torch.linalg.eigvalsh (fp32, fp64), torch.svd_lowrank(M, q=k+p,
niter=2), torch.lobpcg (k, warm-started from the previous step's vectors).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
import effrank_fast as ef  # noqa: E402
from effrank_fast.ops.jacobi_eigh import jacobi_eigh  # noqa: E402
from effrank_fast.tracker import orthonormalize  # noqa: E402


def sequence(d: int, steps: int, rho: float, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, device=device, dtype=torch.float64, generator=gen))
    lam = torch.arange(1, d + 1, device=device, dtype=torch.float64) ** -1.2
    m = (q * lam) @ q.T
    out = []
    for _ in range(steps):
        step = (
            torch.eye(d, device=device, dtype=torch.float64)
            + rho * torch.randn(d, d, device=device, dtype=torch.float64, generator=gen) / d**0.5
        )
        m = step.T @ m @ step
        m = (m + m.T) / 2
        out.append(m.float())
    return out


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, fn):
        """(result, device ms, host wall ms) of one call."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            b.record()
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3
        return out, (a.elapsed_time(b) if cuda else wall), wall


def topk_err(values: torch.Tensor, lam_ref: torch.Tensor) -> float:
    k = values.shape[0]
    v = values.double().sort(descending=True).values
    return float(((v - lam_ref[:k]).abs() / lam_ref[0]).max())


def run(small: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d, k, p = (256, 32, 8) if small else (4096, 256, 32)
    steps, skip = (8, 3) if small else (16, 4)
    torch.backends.cuda.matmul.allow_tf32 = False
    grams = sequence(d, steps, rho=1e-3, device=device)
    refs = [torch.linalg.eigvalsh(g.double()).flip(0) for g in grams]
    eps = [0.1, 0.01]
    rows = []
    # The 1.5 ms target is for tracking + certification; settling an open interval costs an
    # exact count (a d³/3 factorisation, or eigvalsh without the CUDA inertia kernel) and is timed
    # separately in the last two rows.
    off = {"escalate": False}
    configs = [
        ("fp64 step", {"dtype": torch.float64, "sync": "step", "slq_probes": 0, **off}),
        ("fp32 step", {"dtype": torch.float32, "sync": "step", "slq_probes": 0, **off}),
        ("fp64 deferred", {"dtype": torch.float64, "sync": "deferred", "slq_probes": 0, **off}),
        ("fp32 deferred", {"dtype": torch.float32, "sync": "deferred", "slq_probes": 0, **off}),
        ("fp32 deferred +SLQ(8x20)", {"dtype": torch.float32, "sync": "deferred", "slq_probes": 8, **off}),
        ("fp64 step +SLQ(8x20)", {"dtype": torch.float64, "sync": "step", "slq_probes": 8, **off}),
        ("fp64 step +escalate", {"dtype": torch.float64, "sync": "step", "slq_probes": 0}),
        ("fp64 deferred +escalate", {"dtype": torch.float64, "sync": "deferred", "slq_probes": 0}),
    ]
    timer = Timer(device)
    for name, kw in configs:
        solver = os.environ.get("TRACKER_EIGENSOLVER", "auto")
        tr = ef.SpectrumTracker(k=k, oversample=p, eps=eps, relative="max", auto_grow=False, eigensolver=solver, **kw)
        dev_ms, wall_ms, iters, errs, paths = [], [], [], [], set()
        for t, g in enumerate(grams):
            res, ms, wall = timer(lambda g=g, tr=tr: tr.update(g))
            if t >= skip:
                dev_ms.append(ms)
                wall_ms.append(wall)
                iters.append(res.iterations)
                errs.append(topk_err(res.eigenvalues, refs[t]))
                paths |= set(res.path.tolist())
        rows.append(
            {
                "method": f"tracker {name}",
                "device_ms": statistics.median(dev_ms),
                "wall_ms": statistics.median(wall_ms),
                "iterations": statistics.mean(iters),
                "max_topk_err": max(errs),
                "paths": sorted(paths),
            }
        )

    def baseline(name, fn, reps=3):
        dev_ms, wall_ms, errs = [], [], []
        try:
            for t in range(skip, min(steps, skip + reps)):
                vals, ms, wall = timer(lambda t=t: fn(t))
                dev_ms.append(ms)
                wall_ms.append(wall)
                errs.append(topk_err(vals[:k], refs[t]))
        except Exception as exc:  # record the failure, keep benchmarking
            print(f"{name}: failed: {type(exc).__name__}: {exc}")
            return
        rows.append(
            {
                "method": name,
                "device_ms": statistics.median(dev_ms),
                "wall_ms": statistics.median(wall_ms),
                "iterations": None,
                "max_topk_err": max(errs),
                "paths": None,
            }
        )

    baseline("eigvalsh fp32", lambda t: torch.linalg.eigvalsh(grams[t]).flip(0))
    baseline("eigvalsh fp64", lambda t: torch.linalg.eigvalsh(grams[t].double()).flip(0))
    baseline("svd_lowrank q=k+p niter=2", lambda t: torch.svd_lowrank(grams[t], q=k + p, niter=2)[1])
    state = {"x": None}

    def lobpcg(t):
        x = state["x"]
        vals, vecs = torch.lobpcg(grams[t], k=k, X=x, niter=20, tol=1e-4, largest=True)
        state["x"] = vecs
        return vals

    try:
        state["x"] = torch.lobpcg(grams[skip - 1], k=k, niter=50, largest=True)[1]
        baseline("lobpcg k warm niter<=20", lobpcg)
    except Exception as exc:
        print(f"lobpcg: failed: {type(exc).__name__}: {exc}")

    # Pieces of one update at this size.
    g = grams[-1]
    gd = g.double()
    v = orthonormalize(torch.randn(d, k + p, device=device, dtype=torch.float64))
    pieces = {}
    for label, fn in [
        ("symmetrise (M + M^T)/2 fp32 (first op of every update)", lambda: torch.add(g, g.mT).mul_(0.5)),
        ("GEMM M@V fp64 (incl. fp32->fp64 cast of M)", lambda: g.double() @ v),
        ("GEMM M@V fp32", lambda: g @ v.float()),
        ("orthonormalize d x q fp64 (3 CholQR passes)", lambda: orthonormalize(gd @ v, fallback=v)),
        ("jacobi_eigh q x q fp64 warm", lambda: jacobi_eigh(v.T @ gd @ v)),
    ]:
        ms = [timer(fn)[1] for _ in range(5)]
        pieces[label] = statistics.median(ms[1:])
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "d": d,
        "k": k,
        "p": p,
        "rows": rows,
        "pieces": pieces,
    }


def slq_study(seeds: int = 20) -> None:
    """Spread of the SLQ entropy-rank estimate vs its reported error, with and without the
    control variate (d = 200 power law, top 24 deflated exactly, 20 Lanczos steps)."""
    from effrank_fast.tracker import slq

    gen = torch.Generator().manual_seed(0)
    d = 200
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** -1.2
    phi = torch.randn(4 * d, d, dtype=torch.float64, generator=gen) * lam.sqrt()
    g = phi.T @ phi / (4 * d)
    w, v = torch.linalg.eigh(g)
    w, v = w.flip(0), v.flip(1)
    exact = float(ef.reference.entropy_rank(gram=g))
    cv = slq._cv_mean

    def plain(y, x):
        return y.mean(), (y.sum() - y) / (y.shape[0] - 1)

    for name, fn in (("control variate", cv), ("plain Hutchinson", plain)):
        slq._cv_mean = fn
        for probes in (8, 32):
            est, err = zip(
                *[
                    slq.entropy_rank_slq(
                        g,
                        v[:, :24],
                        w[:24],
                        g.trace(),
                        probes=probes,
                        steps=20,
                        generator=torch.Generator().manual_seed(s),
                    )
                    for s in range(seeds)
                ],
                strict=True,
            )
            e, r = torch.stack(est), torch.stack(err)
            print(
                f"{name:17s} probes={probes:2d}: bias {100 * float(e.mean() - exact) / exact:+.3f} %  "
                f"std {100 * float(e.std()) / exact:.3f} %  mean reported error {100 * float(r.mean()) / exact:.3f} %"
            )
    slq._cv_mean = cv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--slq-study", action="store_true", help="only the SLQ error study (CPU, ~1 min)")
    args = ap.parse_args()
    if args.slq_study:
        slq_study()
        return
    out = run(args.small)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"device {out['device']}  torch {out['torch']}  d={out['d']} k={out['k']} p={out['p']}")
    print(f"{'method':34s} {'device ms':>10s} {'wall ms':>9s} {'iters':>6s} {'top-k err':>10s} paths")
    for r in out["rows"]:
        it = "" if r["iterations"] is None else f"{r['iterations']:.2f}"
        err = r["max_topk_err"]
        print(f"{r['method']:34s} {r['device_ms']:10.3f} {r['wall_ms']:9.3f} {it:>6s} {err:10.1e} {r['paths'] or ''}")
    for label, ms in out["pieces"].items():
        print(f"  piece: {label:48s} {ms:8.3f} ms")


if __name__ == "__main__":
    main()
