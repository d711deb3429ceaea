"""The σ-based measures' own cost beside the one-liner users write (CPU, float32 features).

Times, interleaved round by round (median of ``--rounds``):
  one-liner   (torch.linalg.eigvalsh(phi.T @ phi / N) > eps).sum()
  entropy     ef.entropy_rank(phi) / ef.measures(phi, eps), default arguments
  gram        ef.gram(phi) (the core helper's part; for reference)
  eig64/eig32 eigvalsh of the float32 Gram in float64 (what eigenvalues_desc does) / in float32
  overhead    measures_from_eigenvalues + floor + promotion check on a given spectrum
Correctness first: entropy_rank within 1e-3 of the float64 reference, else nothing is reported.

    PYTHONPATH=$PWD python benchmarks/bench_spectrum.py --n 20000 --d 1024 --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import effrank_fast as ef
from effrank_fast.rank import formulas
from effrank_fast.rank.spectrum import PROMOTE_AT, measures_from_eigenvalues


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n, d = args.n, args.d
    torch.manual_seed(0)
    phi = torch.randn(n, d) * torch.logspace(0, -1, d)
    eps = 1e-3
    ref = float(ef.reference.entropy_rank(phi))
    got = float(ef.entropy_rank(phi))
    assert abs(got / ref - 1) <= 1e-3, (got, ref)
    m = ef.gram(phi)
    lam = ef.eigenvalues(gram=m)

    def overhead():
        floor = formulas.noise_floor(lam[0], d, torch.float32, diag_max=m.diagonal().max())
        fro = formulas.gram_error_frobenius_estimate(m.diagonal().double().sum(), torch.float32)
        v = formulas.entropy_rank_from_eigenvalues(lam, floor)
        bool(formulas.entropy_rank_sensitivity(lam, floor, fro) > PROMOTE_AT * v)
        measures_from_eigenvalues(
            lam,
            torch.tensor([eps], dtype=torch.float64),
            None,
            mode="mean",
            center=False,
            n=n,
            backend="x",
            floor=floor,
        )

    cases = {
        "one-liner": lambda: (torch.linalg.eigvalsh(phi.T @ phi / n) > eps).sum(),
        "entropy_rank": lambda: ef.entropy_rank(phi),
        "measures": lambda: ef.measures(phi, eps),
        "gram": lambda: ef.gram(phi),
        "eig64": lambda: torch.linalg.eigvalsh(m.double()),
        "eig32": lambda: torch.linalg.eigvalsh(m),
        "overhead": overhead,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for k, fn in cases.items():
            times[k].append(_time(fn))
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"# (N, d) = ({n}, {d}) float32, entropy_rank {got:.6f} vs reference {ref:.6f}")
    base = statistics.median(times["one-liner"])
    for k, v in times.items():
        med = statistics.median(v)
        print(f"{k:14s} {med:8.1f} ms  {med / base:5.2f}x one-liner")


if __name__ == "__main__":
    main()
