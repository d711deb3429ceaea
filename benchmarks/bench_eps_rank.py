"""CPU benchmark of the count path against what users run today, side by side in one process.

    python benchmarks/bench_eps_rank.py [--rounds 5] [--shapes 20000x256,20000x1024] [--json PATH]
    python benchmarks/bench_eps_rank.py --targets [--alphas 0.8,1.2,2.0] [--dims 256,1024,2048]
        [--epss 1e-2,1e-3,1e-4] [--rounds 3]

``--targets`` (issue 18's grid): power-law features λ_i = i^-α under a random rotation, N = 20000,
fp32; per (α, d, ε) eps_rank (default arguments) and the one-liner in interleaved rounds, both
checked against the float64 count in the same run, with whether eps_rank promoted.

Same fp32 features for every provider (a power-law spectrum with a gap at ε = 1e-3); the rounds
are interleaved (every provider once per round, in turn) and the median is reported, so a machine
shared with other jobs slows all of them alike. A timing is printed only if the provider's answer
passed its correctness check in the same run:

  one_liner       (torch.linalg.eigvalsh(phi.T @ phi / N) > eps).sum()     count = float64 reference
  svdvals         (torch.linalg.svdvals(phi)² / N > eps).sum()             count = float64 reference
  eps_rank        effrank_fast.eps_rank(phi, eps), default arguments       count = float64 reference
  eps_rank_nochk  the same, check=False                                    count = float64 reference
  eps_rank_promo  eps_rank at ε = 1e-6 (every eigenvalue ≥ 3e-5 lies above it: certified, unpromoted)
  one_liner_promo the one-liner at ε = 1e-6                                count = float64 reference
  torch_gemm      phi.T @ phi                                              ‖M − M₆₄‖ ≤ δ_G
  gram / gram_nochk  effrank_fast.gram(phi) with check=True / False        ‖M − M₆₄‖ ≤ δ_G
  entropy_rank, measures  effrank_fast (default arguments)                 within 1e-3 of the reference
  reptrix_rankme  reptrix.rankme.get_rankme (if installed)                 within 1e-3 of itself on fp64
  monai_erank     monai's _effective_rank_score (if installed)             within 1e-3 of its formula on
                                                                           the float64 reference σ
and, on a float64 Gram [d, d] (d = 1024, 2048): eps_rank(gram=M) against cholesky_ex(M); and what
a promotion costs where it fires (promotion_rows: the issue's rank-20 + 1e-7-noise case at ε = 1e-8).
The float64 reference is an SVD-free float64 Gram of the upcast values plus eigvalsh (at these
sizes as exact as the SVD, and 5× cheaper), checked for the gap at ε.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effrank_fast as ef  # noqa: E402
from effrank_fast.ops.gram.error import gram_error_bound  # noqa: E402
from effrank_fast.rank import (
    eps_rank_result,  # noqa: E402
    reference,
)
from effrank_fast.testing import (  # noqa: E402
    features_with_spectrum,
    gapped_spectrum,
    random_orthogonal,
    rotated_features,
)

EPS = 1e-3
EPS_PROMO = 1e-6  # every eigenvalue of the d = 256/1024 power law (≥ 3e-5) lies above it


def machine_line() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def _peers(phi: torch.Tensor, lam_c: torch.Tensor) -> dict[str, tuple[Callable[[], object], Callable[[object], bool]]]:
    out: dict[str, tuple[Callable[[], object], Callable[[object], bool]]] = {}
    try:
        from reptrix.rankme import get_rankme

        want_r = float(get_rankme(phi.double()))
        out["reptrix_rankme"] = (lambda: get_rankme(phi), lambda v: abs(float(v) - want_r) <= 1e-3 * want_r)
    except Exception:  # not installed
        pass
    try:
        from monai.metrics.embedding_collapse import _effective_rank_score

        sv = lam_c.clamp(min=0).sqrt() * phi.shape[0] ** 0.5
        p = sv / sv.sum()
        erank = float(torch.exp(-(p * p.clamp_min(1e-300).log()).sum()))
        want_m = 1 - erank / min(phi.shape[0] - 1, phi.shape[1])
        out["monai_erank"] = (lambda: _effective_rank_score(phi), lambda v: abs(float(v) - want_m) <= 1e-3)
    except Exception:
        pass
    return out


def feature_rows(n: int, d: int, rounds: int) -> list[dict]:
    lam, _ = gapped_spectrum("powerlaw", d, EPS, gap=0.3, generator=torch.Generator().manual_seed(d))
    phi = features_with_spectrum(lam, n, generator=torch.Generator().manual_seed(n + d)).float()
    m64 = reference.gram(phi)  # float64 Gram of the given (fp32) values
    ref = torch.linalg.eigvalsh(m64).flip(0)
    want = int((ref > EPS).sum())
    want_promo = int((ref > EPS_PROMO).sum())
    assert float((ref - EPS).abs().min()) > 1e-9 * float(ref[0]) and float(ref[-1]) > 2 * EPS_PROMO
    ref_c = torch.linalg.eigvalsh(reference.gram(phi, center=True)).flip(0)
    want_erank = float(reference.entropy_rank(phi))
    delta = gram_error_bound(
        ef.gram(phi).diagonal(), n, torch.float32, input_dtype=phi.dtype, backend="native", post_scale=1 / n
    )

    def gram_ok(m: object, scale: float = 1.0) -> bool:
        assert isinstance(m, torch.Tensor)
        return float(torch.linalg.matrix_norm(m.double() * scale - m64, 2)) <= float(delta)

    providers: dict[str, tuple[Callable[[], object], Callable[[object], bool]]] = {
        "one_liner": (lambda: (torch.linalg.eigvalsh(phi.T @ phi / n) > EPS).sum(), lambda c: int(c) == want),
        "svdvals": (lambda: (torch.linalg.svdvals(phi).square() / n > EPS).sum(), lambda c: int(c) == want),
        "eps_rank": (lambda: ef.eps_rank(phi, EPS), lambda c: int(c) == want),
        "eps_rank_nochk": (lambda: ef.eps_rank(phi, EPS, check=False), lambda c: int(c) == want),
        "eps_rank_promo": (lambda: ef.eps_rank(phi, EPS_PROMO), lambda c: int(c) == want_promo),
        "one_liner_promo": (
            lambda: (torch.linalg.eigvalsh(phi.T @ phi / n) > EPS_PROMO).sum(),
            lambda c: int(c) == want_promo,
        ),
        "torch_gemm": (lambda: phi.T @ phi, lambda m: gram_ok(m, 1 / n)),
        "gram": (lambda: ef.gram(phi), gram_ok),
        "gram_nochk": (lambda: ef.gram(phi, check=False), gram_ok),
        "entropy_rank": (lambda: ef.entropy_rank(phi), lambda v: abs(float(v) - want_erank) <= 1e-3 * want_erank),
        "measures": (
            lambda: ef.measures(phi, eps=EPS),
            lambda r: int(r.eps_rank[0]) == want and abs(float(r.entropy_rank) - want_erank) <= 1e-3 * want_erank,  # type: ignore[attr-defined]
        ),
        **_peers(phi, ref_c),
    }
    promoted = eps_rank_result(phi, EPS_PROMO).promoted
    not_promoted = not eps_rank_result(phi, EPS).promoted
    measures_not_promoted = not ef.measures(phi, eps=EPS).promoted
    ok = {name: bool(check(fn())) for name, (fn, check) in providers.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in providers}
    for _ in range(rounds):
        for name, (fn, _check) in providers.items():
            times[name].append(timed(fn))
    rows = []
    base = statistics.median(times["one_liner"])
    gemm = statistics.median(times["torch_gemm"])
    for name in providers:
        med = statistics.median(times[name])
        rows.append(
            {
                "shape": f"{n}x{d}",
                "provider": name,
                "ok": ok[name],
                "ms": med if ok[name] else None,
                "vs_one_liner": med / base if ok[name] else None,
                "vs_gemm": med / gemm if ok[name] else None,
                "rounds": rounds,
                "note": "promoted" if name == "eps_rank_promo" and promoted else "",
            }
        )
    rows.append({"shape": f"{n}x{d}", "provider": "eps_rank at ε=1e-3 not promoted", "ok": not_promoted})
    rows.append({"shape": f"{n}x{d}", "provider": "measures not promoted", "ok": measures_not_promoted})
    return rows


def given_gram_rows(d: int, rounds: int) -> list[dict]:
    lam, want = gapped_spectrum("powerlaw", d, EPS, gap=0.3, generator=torch.Generator().manual_seed(d))
    q = random_orthogonal(d, generator=torch.Generator().manual_seed(7))
    m = (q * lam) @ q.T
    m = 0.5 * (m + m.T)
    ok = int(ef.eps_rank(gram=m, eps=EPS)) == want
    providers = {
        "eps_rank(gram=M64)": lambda: ef.eps_rank(gram=m, eps=EPS),
        "cholesky_ex(M64)": lambda: torch.linalg.cholesky_ex(m),
        "eigvalsh(M64)": lambda: torch.linalg.eigvalsh(m),
    }
    times: dict[str, list[float]] = {k: [] for k in providers}
    for fn in providers.values():
        fn()
    for _ in range(rounds):
        for name, fn in providers.items():
            times[name].append(timed(fn))
    chol = statistics.median(times["cholesky_ex(M64)"])
    return [
        {
            "shape": f"d={d}",
            "provider": name,
            "ok": ok or name != "eps_rank(gram=M64)",
            "ms": statistics.median(t),
            "vs_cholesky": statistics.median(t) / chol,
            "rounds": rounds,
        }
        for name, t in times.items()
    ]


def promotion_rows(rounds: int) -> list[dict]:
    """What a promotion costs when it fires: the issue's case (N = 4096, d = 256, rank 20 with
    λᵢ = 1/i plus 1e-7 noise, fp32). At ε = 1e-8 the fp32 Gram's δ_G covers τ, so eps_rank forms a
    float64 Gram and counts again; at ε = 1e-3 the certificate passes without promotion."""
    n, d, r = 4096, 256, 20
    g = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(n, r, dtype=torch.float64, generator=g))[0] * n**0.5
    v = torch.linalg.qr(torch.randn(d, r, dtype=torch.float64, generator=g))[0]
    s = (1.0 / torch.arange(1, r + 1, dtype=torch.float64)).sqrt()
    phi = ((u * s) @ v.T + 1e-7 * torch.randn(n, d, dtype=torch.float64, generator=g)).float()
    ref = torch.linalg.eigvalsh(reference.gram(phi))
    want = {e: int((ref > e).sum()) for e in (1e-3, 1e-8)}
    promoted = {e: eps_rank_result(phi, e).promoted for e in (1e-3, 1e-8)}
    providers: dict[str, tuple[Callable[[], object], Callable[[object], bool]]] = {
        "eps_rank(1e-3), not promoted": (lambda: ef.eps_rank(phi, 1e-3), lambda c: int(c) == want[1e-3]),
        "eps_rank(1e-8), promoted": (lambda: ef.eps_rank(phi, 1e-8), lambda c: int(c) == want[1e-8]),
        "gram fp32": (lambda: ef.gram(phi), lambda m: True),
        "gram acc_dtype=float64": (lambda: ef.gram(phi, acc_dtype=torch.float64), lambda m: True),
        "one_liner(1e-8)": (
            lambda: (torch.linalg.eigvalsh(phi.T @ phi / n) > 1e-8).sum(),
            lambda c: int(c) == want[1e-8],
        ),
    }
    ok = {name: bool(check(fn())) for name, (fn, check) in providers.items()}
    ok["eps_rank(1e-3), not promoted"] &= not promoted[1e-3]
    ok["eps_rank(1e-8), promoted"] &= promoted[1e-8]
    times: dict[str, list[float]] = {name: [] for name in providers}
    for _ in range(rounds):
        for name, (fn, _check) in providers.items():
            times[name].append(timed(fn))
    base = statistics.median(times["eps_rank(1e-3), not promoted"])
    return [
        {
            "shape": f"{n}x{d} rank {r}",
            "provider": name,
            "ok": ok[name],
            "ms": statistics.median(t) if ok[name] else None,
            "vs_unpromoted": statistics.median(t) / base if ok[name] else None,
            "rounds": rounds,
        }
        for name, t in times.items()
    ]


def target_rows(alphas: list[float], dims: list[int], epss: list[float], rounds: int, n: int = 20000) -> list[dict]:
    """Issue 18's grid (module docstring): one row per (α, d, ε)."""
    rows = []
    for d in dims:
        for alpha in alphas:
            lam = torch.arange(1, d + 1, dtype=torch.float64) ** -alpha
            phi = rotated_features(lam, n, torch.Generator().manual_seed(0)).float().contiguous()
            lam_ref = torch.linalg.eigvalsh(ef.gram(phi, acc_dtype=torch.float64))
            for eps in epss:
                want = int((lam_ref > eps).sum())
                res = eps_rank_result(phi, eps)
                cells = {
                    "eps_rank": lambda eps=eps, phi=phi: ef.eps_rank(phi, eps),
                    "one_liner": lambda eps=eps, phi=phi: (torch.linalg.eigvalsh(phi.T @ phi / n) > eps).sum(),
                }
                ok = {k: int(f()) == want for k, f in cells.items()}
                times: dict[str, list[float]] = {k: [] for k in cells}
                for _ in range(rounds):
                    for k, f in cells.items():
                        times[k].append(timed(f))
                med = {k: statistics.median(v) for k, v in times.items()}
                rows.append(
                    {
                        "shape": f"{n}x{d}",
                        "alpha": alpha,
                        "eps": eps,
                        "ok": ok["eps_rank"] and ok["one_liner"],
                        "eps_rank_ms": med["eps_rank"],
                        "one_liner_ms": med["one_liner"],
                        "ratio": med["eps_rank"] / med["one_liner"],
                        "promoted": res.promoted,
                        "certified": bool(res.certified.all()),
                        "nearest_gap_rel_max": float((lam_ref - eps).abs().min() / lam_ref[-1]),
                        "rounds": rounds,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shapes", default="20000x256,20000x1024")
    parser.add_argument("--gram-dims", default="1024,2048")
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-promotion", action="store_true", help="skip the promotion-cost rows")
    parser.add_argument("--targets", action="store_true", help="issue 18's power-law grid only")
    parser.add_argument("--alphas", default="0.8,1.2,2.0")
    parser.add_argument("--dims", default="256,1024,2048")
    parser.add_argument("--epss", default="1e-2,1e-3,1e-4")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    if args.targets:
        grid: list[dict] = []
        for d in args.dims.split(","):
            for alpha in args.alphas.split(","):
                for r in target_rows([float(alpha)], [int(d)], [float(e) for e in args.epss.split(",")], args.rounds):
                    grid.append(r)
                    print(
                        "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()),
                        flush=True,
                    )
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine_line(), "rows": grid}, indent=1))
        return
    rows: list[dict] = []
    cols = ["shape", "provider", "ok", "ms", "vs_one_liner", "vs_gemm", "vs_cholesky", "vs_unpromoted", "rounds"]
    cols.append("note")

    def report(new: list[dict]) -> None:  # as each shape finishes: a long run keeps what it measured
        rows.extend(new)
        for r in new:
            cells = (f"{c}={r[c]:.4g}" if isinstance(r[c], float) else f"{c}={r[c]}" for c in cols if c in r)
            print("  ".join(cells), flush=True)

    for shape in args.shapes.split(","):
        if shape:
            n, d = (int(v) for v in shape.split("x"))
            report(feature_rows(n, d, args.rounds))
    for d in args.gram_dims.split(","):
        if d:
            report(given_gram_rows(int(d), args.rounds))
    if not args.no_promotion:
        report(promotion_rows(args.rounds))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
