"""Triton SYRK Gram against cuBLAS ``phi.T @ phi`` (bf16 in, fp32 out), with accuracy and bias.

    python benchmarks/bench_gram.py [--sweep] [--quick] [--json PATH]

Reports median ms (CUDA events, triton.testing.do_bench), the SYRK rate N·d²/t in TFLOP/s and the
floor N·d²/800 TFLOP/s (the H100's measured bf16 GEMM rate), the relative error vs a float64 Gram and the mean
relative diagonal bias. ``--sweep`` also times the Hopper config candidates (``HOPPER_CANDIDATES``),
the unpromoted kernel (the cost of promotion), split factors and the opt-in autotuner's pick.
Needs a CUDA device; the baseline needs ``torch.mm(..., out_dtype=)`` (else a row says it is absent).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import bench_ms, machine_line, print_table, write_json  # noqa: E402

from effrank_fast.ops.gram import autotune  # noqa: E402
from effrank_fast.ops.gram import triton as gt  # noqa: E402

SHAPES = [(65536, 4096), (16384, 8192), (65536, 1024)]
PEAK = 800e12  # this H100 kind's measured bf16 GEMM rate (an 8192³ GEMM)


def cublas_gram(phi: torch.Tensor) -> torch.Tensor:
    """The baseline: one cuBLAS bf16 GEMM writing fp32 (``torch.mm(..., out_dtype=)``, torch ≥ 2.8)."""
    return torch.mm(phi.T, phi, out_dtype=torch.float32)


def cublas_baseline(phi: torch.Tensor) -> tuple[str, Callable[[], torch.Tensor]]:
    """("cublas", the baseline); where this torch has no ``out_dtype``, a bf16-output GEMM under a
    name that says it is not the baseline (M rounded to bf16; no speed-up is taken against it)."""
    try:
        cublas_gram(phi[:16, :16])
        return "cublas", lambda: cublas_gram(phi)
    except (TypeError, RuntimeError, NotImplementedError):
        print("torch.mm(out_dtype=) is unavailable: the bf16-output GEMM is NOT the baseline", flush=True)
        return "cublas_bf16out_not_baseline", lambda: (phi.T @ phi).float()


CANDIDATE_NAMES = ("default", "flatten", "stages3", "bk128_s3", "flat_bk128_s3")  # HOPPER_CANDIDATES order


def variants(n: int, d: int) -> dict[str, tuple[gt.SyrkConfig, int | None, int | None]]:
    """name -> (config, promotion window in rows or None, forced split or None).

    The config candidates are those EFFRANK_FAST_AUTOTUNE=1 chooses from (``HOPPER_CANDIDATES``).
    """
    cands = dict(zip(CANDIDATE_NAMES, gt.HOPPER_CANDIDATES["native16"], strict=True))
    base = cands.pop("default")
    out = {name: (cfg, None, None) for name, cfg in cands.items()}
    out["unpromoted"] = (base, n, None)
    out["unpromoted_flat"] = (replace(base, flatten=True), n, None)
    if d <= 2048:  # few tiles: the split along N matters
        for s in (1, 4, 12):
            out[f"split{s}"] = (base, None, s)
    return out


def accuracy(m: torch.Tensor, ref: torch.Tensor | None, diag64: torch.Tensor) -> dict:
    out = {"diag_bias": float(((m.diagonal().double() - diag64) / diag64).mean())}
    if ref is not None:
        out["relerr"] = float((m.double() - ref).norm() / ref.norm())
    return out


def run_shape(n: int, d: int, sweep: bool, budget_end: float) -> list[dict]:
    g = torch.Generator(device="cuda").manual_seed(0)
    phi = (torch.randn(n, d, device="cuda", generator=g) * (1 + torch.rand(d, device="cuda", generator=g))).bfloat16()
    diag64 = phi.double().square().sum(0)
    ref = None
    if n * d <= 65536 * 4096:
        p64 = phi.double()
        ref = p64.T @ p64
        del p64
    floor_ms = n * d * d / PEAK * 1e3
    rows = []

    def record(name, fn, cfg=None, window=None, split=None, scale=1.0):
        gt.OVERRIDES.clear()
        if cfg is not None:
            gt.OVERRIDES["config"] = cfg
        if window is not None:
            gt.OVERRIDES["window_rows"] = window
        if split is not None:
            gt.OVERRIDES["split"] = split
        try:
            t = bench_ms(fn)
            m = fn() / scale
            row = {"N": n, "d": d, "variant": name, "ms": t, "tflops": n * d * d / t / 1e9, "floor_ms": floor_ms}
            row.update(accuracy(m, ref, diag64))
        except Exception as exc:  # a config that does not compile on this Triton: report, go on
            row = {"N": n, "d": d, "variant": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        finally:
            gt.OVERRIDES.clear()
        rows.append(row)
        print(row, flush=True)

    record(*cublas_baseline(phi))
    record("triton", lambda: gt.gram_triton(phi))
    w = torch.full((n,), 1.0 / n, device="cuda")
    record("triton_mean_w", lambda: gt.gram_triton(phi, w), scale=1.0 / n)
    torch.use_deterministic_algorithms(True)  # one program per tile: the price of reproducibility
    try:
        record("triton_deterministic", lambda: gt.gram_triton(phi))
    finally:
        torch.use_deterministic_algorithms(False)
    if sweep:
        for name, (cfg, window, split) in variants(n, d).items():
            if time.time() > budget_end:
                break
            record(name, lambda: gt.gram_triton(phi), cfg, window, split)
        # The opt-in autotuner: its first call (in the warm-up) times the candidates above.
        autotune.CHOICES.clear()
        os.environ[autotune.ENV_AUTOTUNE] = "1"
        try:
            record("autotuned", lambda: gt.gram_triton(phi))
        finally:
            del os.environ[autotune.ENV_AUTOTUNE]
        chosen = dict(zip(gt.HOPPER_CANDIDATES["native16"], CANDIDATE_NAMES, strict=True))
        rows[-1]["chose"] = ",".join(chosen.get(c, str(c)) for c in autotune.CHOICES.values())
    base = next((r["ms"] for r in rows if r["variant"] == "cublas" and "ms" in r), None)
    for r in rows:
        if "ms" in r and base is not None:
            r["speedup_vs_cublas"] = base / r["ms"]
    return rows


def run_paths(budget_end: float) -> list[dict]:
    """Slower exact paths at (65536, 1024): random weights, centring, fp32 input, fp64 accumulation."""
    n, d = 65536, 1024
    g = torch.Generator(device="cuda").manual_seed(1)
    phi32 = torch.randn(n, d, device="cuda", generator=g) + 0.5
    phi = phi32.bfloat16()
    w = torch.rand(n, device="cuda", generator=g)
    cases = {
        "bf16_random_w": lambda: gt.gram_triton(phi, w),
        "bf16_centred": lambda: gt.gram_triton(phi, None, True),
        "fp32_input": lambda: gt.gram_triton(phi32),
        "fp32_simt_torch": lambda: phi32.T @ phi32,
        "fp64_acc": lambda: gt.gram_triton(phi, acc_dtype=torch.float64),
        "fp64_torch": lambda: phi.double().T @ phi.double(),
    }
    rows = []
    torch.backends.cuda.matmul.allow_tf32 = False
    for name, fn in cases.items():
        if time.time() > budget_end:
            break
        gt.OVERRIDES.clear()
        try:
            rows.append({"N": n, "d": d, "variant": name, "ms": bench_ms(fn, 10, 50)})
        except Exception as exc:
            rows.append({"N": n, "d": d, "variant": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        gt.OVERRIDES.clear()
        print(rows[-1], flush=True)
    return rows


def _bias_rows(n: int, d: int) -> list[dict]:
    g = torch.Generator(device="cuda").manual_seed(2)
    phi = (torch.randn(n, d, device="cuda", generator=g) * (1 + torch.rand(d, device="cuda", generator=g))).bfloat16()
    diag64 = phi.double().square().sum(0)
    rows = []
    blas_name, blas = cublas_baseline(phi)
    for name, m in ((blas_name, blas()), ("triton", gt.gram_triton(phi))):
        rows.append({"N": n, "d": d, "variant": name, **accuracy(m, None, diag64)})
        print(rows[-1], flush=True)
    return rows


def run_bias() -> list[dict]:
    """Mean relative diagonal bias at two N: unpromoted tensor cores grow ∝ N, promoted must not."""
    return _bias_rows(65536, 1024) + _bias_rows(262144, 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true", help="also time the config candidates")
    ap.add_argument("--quick", action="store_true", help="first shape only")
    ap.add_argument("--budget-s", type=float, default=240, help="stop sweeping after this many seconds")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gram needs a CUDA device")
    end = time.time() + args.budget_s
    rows = []
    for n, d in SHAPES[:1] if args.quick else SHAPES:
        rows += run_shape(n, d, args.sweep, end)
        torch.cuda.empty_cache()
    rows += run_bias()
    rows += run_paths(end)
    write_json(args.json, rows)
    print(machine_line())
    print_table(
        rows,
        ["N", "d", "variant", "ms", "tflops", "floor_ms", "speedup_vs_cublas", "relerr", "diag_bias", "chose", "error"],
    )


if __name__ == "__main__":
    main()
