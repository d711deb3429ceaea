"""Compile the Triton Gram kernels for sm_90a without a GPU and report what ptxas made of them.

    python benchmarks/sm90_static_report.py

For each Hopper configuration: registers per thread, spill bytes, shared memory, and whether the
main loop uses wgmma (tensor cores) and cp.async (a software pipeline). Needs only Triton (its
bundled ptxas); the figures are those of the *installed* Triton, which may differ from the GPU
machine's. A config that spills or lost its pipeline is wrong before it is ever timed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402
from _timing import print_table  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from effrank_fast.ops.gram.triton import HOPPER_CONFIGS  # noqa: E402
from effrank_fast.ops.gram.triton_kernels import _gram_syrk_kernel  # noqa: E402
from effrank_fast.ops.linear_act_gram.triton import HOPPER_CONFIG as LAG_CONFIG  # noqa: E402
from effrank_fast.ops.linear_act_gram.triton_kernels import (  # noqa: E402
    _linear_act_gram_kernel,
    _linear_act_gram_windows_kernel,
)

# do_not_specialize ints (N and the per-program row counts) get no divisibility hint; d does (d % 16 == 0).
NO_HINT = {"NK", "N", "k_per_split", "n_per_split", "rows_per_window"}


def compile_sm90(fn, types: dict[str, str], consts: dict[str, object], num_warps: int, num_stages: int):
    names = fn.arg_names
    sig, cx, attrs = {}, {}, {}
    for i, name in enumerate(names):
        if name in consts:
            sig[name] = "constexpr"
            cx[(i,)] = consts[name]
        else:
            sig[name] = types.get(name, "i32")
            if name not in NO_HINT:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=cx, attrs=attrs)
    opts = {"num_warps": num_warps, "num_stages": num_stages}
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)


def ptxas_report(kernel) -> dict:
    ptxas = get_ptxas(90)
    path = ptxas.path if hasattr(ptxas, "path") else ptxas[0]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(kernel.asm["ptx"])
    res = subprocess.run([path, "-v", "--gpu-name=sm_90a", f.name, "-o", "/dev/null"], capture_output=True, text=True)
    out: dict = {}
    for line in res.stderr.splitlines():
        if "Used" in line and "registers" in line:
            out["regs"] = int(line.split("Used")[1].split("registers")[0])
        if "spill stores" in line:
            out["spill_bytes"] = int(line.split("bytes spill stores")[0].split(",")[-1])
    ptx = kernel.asm["ptx"]
    out.update(
        smem_kib=kernel.metadata.shared // 1024,
        wgmma=ptx.count("wgmma.mma_async"),
        cp_async=ptx.count("cp.async.cg") + ptx.count("cp.async.ca") > 0,
    )
    return out


def gram_cases():
    ptr = {"X": "*bf16", "W": "*fp32", "MU": "*fp32", "FLAG": "*i32", "OUT": "*fp32"}
    base = {
        "GROUP": 8,
        "W_MODE": 0,
        "MU_MODE": 0,
        "PA": 0,
        "PB": 0,
        "ACC64": False,
        "GUARD": 0,
        "ATOMIC": False,
        "ACCUMULATE": False,
    }
    base.update(EVEN_K=True, EVEN_C=True, WIDE=False, INTERPRET=False, stride_xc=1, stride_on=1)
    nat, spl, a64 = HOPPER_CONFIGS["native16"], HOPPER_CONFIGS["split"], HOPPER_CONFIGS["acc64"]

    def cfg(c, **kw):
        return {**base, "BM": c.BM, "BN": c.BN, "BK": c.BK, "FLATTEN": c.flatten, **kw}

    yield "native16 (default)", ptr, cfg(nat), nat.num_warps, nat.num_stages
    yield "native16 flatten", ptr, cfg(nat, FLATTEN=True), nat.num_warps, nat.num_stages
    yield "native16 BK=128 s3", ptr, cfg(nat, BK=128), nat.num_warps, 3
    yield "native16 BN=256 s3", ptr, cfg(nat, BN=256), nat.num_warps, 3
    masked = cfg(nat, EVEN_K=False, EVEN_C=False, ATOMIC=True)
    yield "native16 masked+atomic", ptr, masked, nat.num_warps, nat.num_stages
    yield "split bf16, per-row w (3 MMA)", ptr, cfg(spl, PA=3, PB=1, W_MODE=2), spl.num_warps, spl.num_stages
    fp32 = {**ptr, "X": "*fp32"}
    yield "split fp32 centred w (6 MMA)", fp32, cfg(spl, PA=3, PB=3, W_MODE=2, MU_MODE=1), spl.num_warps, spl.num_stages
    f64 = {**ptr, "OUT": "*fp64", "MU": "*fp64"}
    yield "acc64 (fp64 FMA)", f64, cfg(a64, ACC64=True, PA=1, PB=1), a64.num_warps, a64.num_stages


def lag_cases():
    ptr = dict.fromkeys(("X", "Wl", "Bias", "H"), "*bf16")
    ptr.update(SW="*fp32", FLAG="*i32", OUT="*fp32")
    c = LAG_CONFIG
    base = {
        "ACT": 1,
        "HAS_BIAS": True,
        "STORE_H": False,
        "DIAG": True,
        "W_MODE": 0,
        "PB": 1,
        "GUARD": 0,
        "ATOMIC": True,
    }
    base.update(ACCUMULATE=True, BM=c.BM, BR=c.BR, BKK=c.BKK, INTERPRET=False)
    base.update(stride_xk=1, stride_wk=1, stride_on=1, stride_hd=1)
    yield "linear_act_gram diag tanh", ptr, base, c.num_warps, c.num_stages
    yield "linear_act_gram off-diag tanh", ptr, {**base, "DIAG": False}, c.num_warps, c.num_stages
    yield "linear_act_gram diag, per-row w", ptr, {**base, "W_MODE": 2}, c.num_warps, c.num_stages


def lag_windows_cases():
    """The several-windows-per-program variant (capped split at huge N, or deterministic mode)."""
    for name, ptr, consts, nw, ns in lag_cases():
        yield name.replace("linear_act_gram", "lag windows"), ptr, consts, nw, ns
    for _name, ptr, consts, nw, ns in list(lag_cases())[:1]:
        yield "lag windows diag, store (deterministic)", ptr, {**consts, "ATOMIC": False}, nw, ns


def main() -> None:
    rows = []
    kernels = (
        (_gram_syrk_kernel, gram_cases()),
        (_linear_act_gram_kernel, lag_cases()),
        (_linear_act_gram_windows_kernel, lag_windows_cases()),
    )
    for fn, cases in kernels:
        for name, types, consts, nw, ns in cases:
            try:
                report = ptxas_report(compile_sm90(fn, types, consts, nw, ns))
                rows.append({"kernel": name, "warps": nw, "stages": ns, **report})
            except Exception as exc:
                rows.append({"kernel": name, "error": f"{type(exc).__name__}: {str(exc)[:120]}"})
    print(f"triton {triton.__version__}, target sm_90a (compiled without a GPU)")
    print_table(rows, ["kernel", "warps", "stages", "regs", "spill_bytes", "smem_kib", "wgmma", "cp_async", "error"])


if __name__ == "__main__":
    main()
