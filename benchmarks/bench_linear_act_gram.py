"""Fused ``linear_act_gram`` against the unfused layer + activation + Gram.

    python benchmarks/bench_linear_act_gram.py [--json PATH]

At N = 65536 and d = k ∈ {128, 256, 512} (bf16, tanh): the unfused path is what a monitor does
without fusion (cuBLAS linear, torch tanh, then the Triton SYRK Gram of h); the fused one forms
h on the tensor cores and accumulates hᵀh in the same launch (forced on at every d here, whatever
``FUSED_MAX_D`` says), also under ``torch.use_deterministic_algorithms(True)`` (one program per
tile, no atomics). Median ms by CUDA events. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import bench_ms, machine_line, print_table, write_json  # noqa: E402

from effrank_fast.ops.gram.triton import gram_triton  # noqa: E402
from effrank_fast.ops.linear_act_gram import linear_act_gram  # noqa: E402
from effrank_fast.ops.linear_act_gram import triton as lt  # noqa: E402

RATIOS = ["fused_speedup", "fused_relerr", "error"]


def run_dim(n: int, d: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(d)
    x = torch.randn(n, d, device="cuda", generator=g).bfloat16()
    w = (torch.randn(d, d, device="cuda", generator=g) / d**0.5).bfloat16()
    b = (0.1 * torch.randn(d, device="cuda", generator=g)).bfloat16()
    acc = torch.zeros(d, d, device="cuda")

    def unfused():
        h = torch.tanh(F.linear(x, w, b))
        return gram_triton(h, out=acc)

    def fused():
        return linear_act_gram(x, w, b, "tanh", gram_out=acc)

    row: dict = {"N": n, "d": d, "k": d}
    row["unfused_ms"] = bench_ms(unfused)
    row["linear_act_ms"] = bench_ms(lambda: torch.tanh(F.linear(x, w, b)))
    lt.OVERRIDES["max_d"] = 1 << 30
    try:
        row["fused_ms"] = bench_ms(fused)
        torch.use_deterministic_algorithms(True)  # one program per tile, windows promoted in registers
        try:
            row["fused_deterministic_ms"] = bench_ms(fused)
        finally:
            torch.use_deterministic_algorithms(False)
        # accuracy of the fused Gram against the float64 Gram of its own h
        m, h = linear_act_gram(x, w, b, "tanh", return_activations=True)
        h64 = h.double()
        ref = h64.T @ h64
        row["fused_relerr"] = float((m.double() - ref).norm() / ref.norm())
        row["fused_speedup"] = row["unfused_ms"] / row["fused_ms"]
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        lt.OVERRIDES.clear()
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_linear_act_gram needs a CUDA device")
    rows = [run_dim(args.n, d) for d in args.dims]
    write_json(args.json, rows)
    print(machine_line())
    print_table(rows, ["N", "d", "k", "unfused_ms", "linear_act_ms", "fused_ms", "fused_deterministic_ms"] + RATIOS)


if __name__ == "__main__":
    main()
