"""Benchmark: every scalar measure of L spectra, native kernel against the PyTorch reference.

    PYTHONPATH=$PWD python benchmarks/bench_spectrum_scalars.py [--rounds 7] [--json out.json]

What the rank monitor calls once per measured step for its solved layers (L spectra of size d):
``spectrum_scalars(lam, floor, error_fro)`` with backend "native" (one C++ pass per spectrum) and
"torch" (~50 small PyTorch ops). Interleaved rounds, median µs per call; each shape's outputs
are checked against each other in the same run (8·d·u₆₄ relative, tests/test_spectrum_scalars.py)
and a failed check is reported instead of a time. CPU only (the native kernel is CPU-only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
from benchmarks._timing import machine_line, print_table, write_json  # noqa: E402
from effrank_fast.ops.spectrum_scalars import why_not_native  # noqa: E402
from effrank_fast.rank.formulas import spectrum_scalars  # noqa: E402

SHAPES = ((3, 64), (1, 512), (1, 2048), (4, 4096))


def _inputs(layers: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(d)
    i = torch.arange(1, d + 1, dtype=torch.float64)
    lam = (i**-1.5) * (1 + 0.1 * torch.rand(layers, d, dtype=torch.float64, generator=gen))
    lam = lam.sort(-1, descending=True).values
    return lam, torch.full((layers,), 1e-12, dtype=torch.float64), torch.full((layers,), 1e-14, dtype=torch.float64)


def _per_call_us(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=200, help="calls per variant per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {machine_line()}, {torch.get_num_threads()} threads")
    rows = []
    for layers, d in SHAPES:
        lam, floor, fro = _inputs(layers, d)
        why = why_not_native(lam)
        if why is not None:
            rows.append({"L x d": f"{layers}x{d}", "check": f"skipped: {why}"})
            continue
        native = spectrum_scalars(lam, floor, fro, backend="native")
        ref = spectrum_scalars(lam, floor, fro, backend="torch")
        tol = 8 * d * torch.finfo(torch.float64).eps / 2
        ok = torch.allclose(native, ref, rtol=tol, atol=tol * float(ref.abs().max()))
        if not ok:
            rows.append({"L x d": f"{layers}x{d}", "check": "FAILED (native != reference)"})
            continue
        times: dict[str, list[float]] = {"native": [], "torch": []}
        for r in range(args.rounds):
            order = ("native", "torch") if r % 2 == 0 else ("torch", "native")
            for name in order:
                times[name].append(
                    _per_call_us(lambda name=name, a=(lam, floor, fro): spectrum_scalars(*a, backend=name), args.calls)
                )
        nat, ref_us = statistics.median(times["native"]), statistics.median(times["torch"])
        rows.append(
            {
                "L x d": f"{layers}x{d}",
                "native us": nat,
                "torch us": ref_us,
                "torch/native": ref_us / nat,
                "check": "ok",
            }
        )
    print_table(rows, ["L x d", "native us", "torch us", "torch/native", "check"])
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
