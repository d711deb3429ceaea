"""Benchmark: the exact engine's rows of L small solved matrices, native kernel against the Python path.

    PYTHONPATH=$PWD python benchmarks/bench_spectrum_rows.py [--rounds 7]

L probed layers of width d formed together (``monitor.core.from_features_many``, N = 2000 tanh
features, float64), then ``ExactEngine.record_many``: with the ``spectrum_rows`` kernel (one pass,
the L eigensolves spread over the threads) and through its Python reference (batched ``eigvalsh``,
the formulas and the certificate in PyTorch). Interleaved rounds, median µs per call; each shape's
rows are checked in the same run (``_check``: on one spectrum the kernel equals the Python path, and
the spectra it solves itself agree with torch's within δ_eig); a failed check is reported instead
of a time. CPU only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
from benchmarks._timing import machine_line, print_table  # noqa: E402
from effrank_fast.monitor import core, engines  # noqa: E402
from effrank_fast.ops.spectrum_rows import spectrum_rows, why_not_native  # noqa: E402

SHAPES = ((3, 64), (4, 128), (2, 256))
EPS = [1e-2, 1e-3, 1e-4]
U64 = 2.0**-53


def _inputs(layers: int, d: int) -> list[core.LayerInput]:
    gen = torch.Generator().manual_seed(d)
    x = torch.linspace(-1, 1, 2000, dtype=torch.float64)[:, None]
    phis = [torch.tanh(x * torch.randn(1, d, dtype=torch.float64, generator=gen) * 3).float() for _ in range(layers)]
    return core.from_features_many(phis, None, "mean", "auto")


def _check(inps: list[core.LayerInput], engine: engines.ExactEngine, python: list) -> bool:
    """The kernel's rows on the Python path's own spectrum equal that path's (counts, certificates
    and bounds exactly, floats to 8·d·u₆₄); the spectra it solves itself (one LAPACK call per matrix,
    single-threaded) equal torch's batched eigvalsh within δ_eig = 4·n·u₆₄·max|λ|, the eigensolver
    error every floor and certificate already allows for (at d ≥ 128 MKL's threaded reduction
    rounds differently)."""
    stacked = inps[0].stack[0]
    g = torch.stack([i.sp.gram_error for i in inps])
    eps = torch.tensor(EPS, dtype=torch.float64)
    lam_asc = torch.linalg.eigvalsh(stacked.double())
    rows, lam = spectrum_rows(stacked, lam_asc, g, eps, None, inps[0].sp.dim, U64, engine.topk)
    _, lam_inside = spectrum_rows(stacked, None, g, eps, None, inps[0].sp.dim, U64, engine.topk)
    n, d, n_int = stacked.shape[-1], inps[0].sp.dim, 4 * len(EPS)
    ok = torch.allclose(lam_inside, lam, rtol=0, atol=4 * n * U64 * float(lam.abs().max()))
    for k, (y, _) in enumerate(python):
        x = rows[k]
        ok = ok and torch.equal(x[:n_int], y[:n_int])
        ok = ok and torch.allclose(x[n_int:], y[n_int:], rtol=8 * d * U64, atol=1e-300, equal_nan=True)
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {machine_line()}, {torch.get_num_threads()} threads")
    engine = engines.ExactEngine(torch.tensor(EPS, dtype=torch.float64), None, 8, mode="mean", center=False)
    native_why = engines.spectrum_rows_why_not
    rows = []
    for layers, d in SHAPES:
        inps = _inputs(layers, d)
        if why_not_native(inps[0].stack[0]) is not None:
            rows.append({"L x d": f"{layers}x{d}", "check": f"skipped: {why_not_native(inps[0].stack[0])}"})
            continue

        def run(native: bool, inps=inps, layers=layers):
            engines.spectrum_rows_why_not = native_why if native else (lambda _: "python")
            try:
                return engine.record_many(list(range(layers)), inps, True)
            finally:
                engines.spectrum_rows_why_not = native_why

        ok = _check(inps, engine, run(False))
        if not ok:
            rows.append({"L x d": f"{layers}x{d}", "check": "FAILED (kernel != Python path)"})
            continue
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):
            for native in (True, False) if r % 2 == 0 else (False, True):
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    run(native)
                times[native].append((time.perf_counter() - t0) / args.calls * 1e6)
        nat, py = statistics.median(times[True]), statistics.median(times[False])
        rows.append(
            {"L x d": f"{layers}x{d}", "native us": nat, "python us": py, "python/native": py / nat, "check": "ok"}
        )
    print_table(rows, ["L x d", "native us", "python us", "python/native", "check"])


if __name__ == "__main__":
    main()
