"""Is a wrong ε-count ever certified? ``eps_rank_result`` with default arguments over feature
families, input dtypes and thresholds placed where counts are hardest, against the float64 count
of the same stored values.

    python benchmarks/bench_eps_rank_certificate.py [--n 20000] [--dims 256,1024] [--seeds 2]
        [--json PATH]

Families (population spectrum under a random rotation, scaled inside fp16's range):
``power0.8``/``power1.2``/``power2`` (λ_i = i^-α), ``clustered`` (four 2-decade-spaced clusters of
width 1e-3), ``lowrank_noise`` (12 directions at 1, the rest at 1e-6), ``decades12`` (log-uniform
over 12 decades). Dtypes: float32, bfloat16, float16. Thresholds per case: 17 absolute ε from
1e-1 to 1e-9, and ε on, and 1e-7 relative beside, eigenvalues 2, 5, 12 and d/10 of the reference
(where a count is decided by rounding). ``relative="max"`` is swept on the same ε.

Per case the table gives how many counts were certified, how many were wrong, and how many
were wrong *and* certified (the number that must be 0), and whether a float64 Gram was formed.
The reference is the float64 Gram of the upcast stored values and ``eigvalsh``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effrank_fast as ef  # noqa: E402
from effrank_fast.rank import eps_rank_result  # noqa: E402
from effrank_fast.testing import FAMILIES, family_features  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def thresholds(lam_ref: torch.Tensor) -> list[float]:
    """Absolute ε: a grid, and on / beside chosen eigenvalues of the reference (descending λ)."""
    d = lam_ref.numel()
    at = lam_ref[[1, 4, 11, d // 10]]
    eps = torch.cat([torch.logspace(-1, -9, 17, dtype=torch.float64), at, at * (1 + 1e-7), at * (1 - 1e-7)])
    return [e for e in eps.tolist() if e > 0]


def case(family: str, dtype: str, n: int, d: int, seed: int) -> dict:
    phi = family_features(family, n, d, seed).to(DTYPES[dtype])
    m64 = ef.gram(phi.double(), acc_dtype=torch.float64)
    lam_ref = torch.linalg.eigvalsh(m64).flip(0)
    eps = thresholds(lam_ref)
    out = {"family": family, "dtype": dtype, "n": n, "d": d, "seed": seed, "checked": 0, "certified": 0}
    out.update(wrong=0, wrong_certified=0, promoted=False, seconds=0.0)
    t0 = time.perf_counter()
    for relative in (None, "max"):
        # "max": ε = τ/λ_max, so that τ = ε·λ_max lands where the absolute sweep put it
        scale = float(lam_ref[0]) if relative == "max" else 1.0
        rel_eps = [e / scale for e in eps]
        want = [int((lam_ref > e * lam_ref[0] if relative == "max" else lam_ref > e).sum()) for e in rel_eps]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # InertiaFallbackWarning: recorded in the result
            res = eps_rank_result(phi, rel_eps, relative=relative)
        got, cert = res.counts.tolist(), res.certified.tolist()
        for w, c, ok in zip(want, got, cert, strict=True):
            out["checked"] += 1
            out["certified"] += ok
            out["wrong"] += c != w
            out["wrong_certified"] += ok and c != w
        out["promoted"] = out["promoted"] or res.promoted
    out["seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--dims", default="256,1024")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"# {machine}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    print("| family | dtype | d | seed | checked | certified | wrong | wrong and certified | promoted |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for d in (int(x) for x in args.dims.split(",")):
        for family in args.families.split(","):
            for dtype in args.dtypes.split(","):
                for seed in range(args.seeds):
                    r = case(family, dtype, args.n, d, seed)
                    rows.append(r)
                    print(
                        f"| {family} | {dtype} | {d} | {seed} | {r['checked']} | {r['certified']} | {r['wrong']} "
                        f"| **{r['wrong_certified']}** | {'yes' if r['promoted'] else 'no'} |",
                        flush=True,
                    )
    total = {k: sum(r[k] for r in rows) for k in ("checked", "certified", "wrong", "wrong_certified")}
    print(f"\ntotal: {json.dumps(total)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows, "total": total}, indent=1))


if __name__ == "__main__":
    main()
