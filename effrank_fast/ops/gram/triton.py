"""Triton Gram backend: SYRK with promoted fp32 (or fp64) accumulation, streaming, and the N×N kernel.

Ops (``torch.library.triton_op``, so ``torch.compile(fullgraph=True)`` traces into the launches):

- ``effrank_fast::gram_triton(phi[N, d], weights[N]?, center, acc_dtype) -> M[d, d]``
- ``effrank_fast::gram_triton_accumulate(phi[N, d], weights[N]?, center, out[d, d]!)``: out += M
- ``effrank_fast::kernel_triton(phi[N, d], weights[N]?, center, acc_dtype) -> K[N, N]``

with M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ) and K = diag(√w)(Φ − 1μᵀ)(Φ − 1μᵀ)ᵀdiag(√w). The error model
and the measured speed are in README.md beside this file; the kernels in ``triton_kernels.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.library import triton_op, wrap_triton

from effrank_fast.ops.gram.reference import weighted_mean
from effrank_fast.ops.gram.triton_kernels import _gram_syrk_kernel, _mirror_upper_kernel

__all__ = ["gram_triton", "kernel_triton", "promotion_window_rows", "why_not"]

_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NATIVE16 = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class SyrkConfig:
    """Tile shape and launch parameters of ``_gram_syrk_kernel``."""

    BM: int
    BN: int
    BK: int
    num_warps: int
    num_stages: int
    GROUP: int = 8
    flatten: bool = False


# Hopper (sm90) configurations. Native 16-bit operands: 128×128 tiles, 64-row k-blocks and a
# 4-deep cp.async pipeline (4 × 32 KiB of shared memory); two fp32 accumulators (partial and
# promoted) of 64 registers each fit 8 warps without spilling, which rules out 128×256 tiles.
# Split operands hold fp32 values and 3 bf16 pieces per tile, hence the shorter k-block.
HOPPER_CONFIGS: dict[str, SyrkConfig] = {
    "native16": SyrkConfig(BM=128, BN=128, BK=64, num_warps=8, num_stages=4),
    "native16_small": SyrkConfig(BM=64, BN=64, BK=64, num_warps=4, num_stages=4),
    "split": SyrkConfig(BM=128, BN=128, BK=32, num_warps=8, num_stages=3),
    "acc64": SyrkConfig(BM=32, BN=32, BK=8, num_warps=4, num_stages=2),
}
# The CPU interpreter: few, large programs are what keep numpy fast.
_INTERPRETER_CONFIG = SyrkConfig(BM=64, BN=64, BK=32, num_warps=4, num_stages=1)

# Test/benchmark hooks (not API): force a config, a split factor, a promotion window.
OVERRIDES: dict[str, object] = {}

MAX_WINDOW_ROWS = 2048


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_SM_COUNT: dict[int, int] = {}


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def _next_pow2(x: int) -> int:
    p = 1
    while p < x:
        p *= 2
    return p


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def promotion_window_rows(n: int, n_mma: int = 1, compute_bound: bool = True) -> int:
    """Rows summed on the tensor cores before the partial is promoted into the fp32 accumulator.

    A window of R rows biases the promoted sum by ≈ −2.3e-9·R·n_mma (relative; n_mma tensor-core
    products per k-block; H100, algorithms.md §2.4), independently of N. An fp32 SIMT Gram over N
    rows errs by ≈ 2e-8·√N when it sums each entry in one pass, less when cuBLAS splits K.

    - compute_bound (the tiles fill the GPU, d ≳ 1500): R·n_mma ≤ 8√N, R ≤ 2048. Promotion costs
      throughput here, and an fp32 SIMT GEMM of such a shape measured ±2e-5 (§2.4), 4× above the
      −5e-6 of R = 2048.
    - otherwise (few tiles, the kernel waits on memory and hides the extra adds): R·n_mma ≤ 2√N,
      R ≤ 512, which keeps within 2× even of a split-K SIMT reference.
    """
    factor, cap = (8, MAX_WINDOW_ROWS) if compute_bound else (2, MAX_WINDOW_ROWS // 4)
    rows = 64
    while rows < cap and (2 * rows * n_mma) ** 2 <= factor * factor * n:
        rows *= 2
    return rows


def _pick_split(tiles: int, max_split: int, device: torch.device, atomic_cost: float = 0.03, hard_cap: int = 0) -> int:
    """Programs per tile along the reduction: fill the SMs when there are few tiles.

    Time ∝ waves / split, times (1 + atomic_cost·split) for the atomics and the partial windows.
    """
    forced = OVERRIDES.get("split")
    if isinstance(forced, int):
        return max(1, min(forced, hard_cap or max_split))
    sms = _num_sms(device)
    if tiles >= sms:
        return 1
    best, best_cost = 1, float("inf")
    for s in range(1, max(1, max_split) + 1):
        cost = (-(-tiles * s // sms)) / s * (1 + atomic_cost * s)
        if cost < best_cost:
            best, best_cost = s, cost
    return best


def _pick_config(mode: str, nc: int) -> SyrkConfig:
    forced = OVERRIDES.get("config")
    if isinstance(forced, SyrkConfig):
        return forced
    if _interpreting():
        b = max(16, min(64, _next_pow2(nc)))
        return replace(_INTERPRETER_CONFIG, BM=b, BN=b)
    if mode == "native16" and nc <= 64:
        return HOPPER_CONFIGS["native16_small"]
    return HOPPER_CONFIGS[mode]


def _launch_syrk(
    x: torch.Tensor,
    stride_k: int,
    stride_c: int,
    nk: int,
    nc: int,
    out: torch.Tensor,
    *,
    pieces: tuple[int, int],
    w: torch.Tensor | None = None,
    w_mode: int = 0,
    mu: torch.Tensor | None = None,
    mu_mode: int = 0,
    flag: torch.Tensor | None = None,
    guard: int = 0,
    accumulate: bool,
) -> int:
    """One launch of the SYRK kernel over X[k, c] (strides given); returns the split factor used.

    ``pieces`` = (PA, PB): (0, 0) native 16-bit operands, else bf16 pieces per side (1 or 3).
    """
    acc64 = out.dtype == torch.float64
    pa, pb = pieces
    if acc64:
        mode = "acc64"
        n_mma = 1
    else:
        mode = "native16" if pa == 0 else "split"
        n_mma = {0: 1, 1: 1, 3: 3}[pa] * (2 if pb == 3 and pa == 3 else 1)
    cfg = _pick_config(mode, nc)
    nb_m = -(-nc // cfg.BM)
    nb_n = -(-nc // cfg.BN)
    # Tiles touching the upper triangle: in row block i, column blocks j ≥ ⌊i·BM/BN⌋.
    tiles = sum(nb_n - (i * cfg.BM) // cfg.BN for i in range(nb_m))
    if acc64:
        window = -(-max(nk, 1) // cfg.BK) * cfg.BK
        split = _pick_split(tiles, min(16, -(-nk // 4096)), out.device, hard_cap=-(-nk // cfg.BK))
        k_per_split = _cdiv(_cdiv(nk, split), cfg.BK) * cfg.BK
        win_steps = k_per_split // cfg.BK
    else:
        forced_window = OVERRIDES.get("window_rows")
        if isinstance(forced_window, int):
            window = forced_window
        else:
            window = promotion_window_rows(nk, n_mma, compute_bound=tiles >= _num_sms(out.device))
        window = max(cfg.BK, window // cfg.BK * cfg.BK)
        split = _pick_split(tiles, min(16, -(-nk // window)), out.device)
        k_per_split = _cdiv(_cdiv(nk, split), window) * window
        win_steps = window // cfg.BK
    split = -(-nk // k_per_split)
    even_k = nk % (cfg.BK * win_steps) == 0
    even_c = nc % cfg.BM == 0 and nc % cfg.BN == 0
    wide = (cfg.BK - 1) * abs(stride_k) + (nc - 1) * abs(stride_c) >= 2**31
    dummy = out
    grid = (nb_m * nb_n, split)
    wrap_triton(_gram_syrk_kernel)[grid](
        x, stride_k, stride_c, nk, nc,
        w if w is not None else dummy,
        mu if mu is not None else dummy,
        flag if flag is not None else dummy,
        out, out.stride(0), out.stride(1),
        k_per_split, win_steps,
        BM=cfg.BM, BN=cfg.BN, BK=cfg.BK, GROUP=cfg.GROUP,
        W_MODE=w_mode, MU_MODE=mu_mode, PA=pa, PB=pb,
        ACC64=acc64, EVEN_K=even_k, EVEN_C=even_c, WIDE=wide, GUARD=guard,
        ATOMIC=split > 1, ACCUMULATE=accumulate,
        FLATTEN=cfg.flatten, INTERPRET=_interpreting(),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return split


def _mirror(out: torch.Tensor) -> None:
    n = out.shape[0]
    b = 32 if _interpreting() else 64
    nb = -(-n // b)
    wrap_triton(_mirror_upper_kernel)[(nb, nb)](out, out.stride(0), out.stride(1), n, B=b, num_warps=4)


def _gram_into(phi: torch.Tensor, weights: torch.Tensor | None, center: bool, out: torch.Tensor, accumulate: bool):
    """out (+)= (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ). ``out`` must be zeroed when atomics may be used."""
    n, d = phi.shape
    acc64 = out.dtype == torch.float64
    mu = weighted_mean(phi, weights, out.dtype).contiguous() if center else None
    mu_mode = 1 if center else 0
    exact16 = phi.dtype in _NATIVE16 and not center
    base = (0, 0) if exact16 else (3, 3)
    if acc64:
        base = (1, 1)
    common: dict[str, Any] = {"mu": mu, "mu_mode": mu_mode, "accumulate": accumulate}
    args = (phi, phi.stride(0), phi.stride(1), n, d, out)
    if weights is None:
        splits = [_launch_syrk(*args, pieces=base, **common)]
    elif acc64:
        splits = [_launch_syrk(*args, pieces=base, w=weights.contiguous(), w_mode=2, **common)]
    else:
        # Uniform weights (mode="mean": w = 1/N) factor out of the sum: scale in the epilogue and
        # keep exact 16-bit operands. Otherwise w·v is not a 16-bit number and goes in 3 pieces.
        # Which case holds is decided on the device: both kernels launch, one exits at once.
        w = weights.contiguous()
        flag = (w == w[:1]).all().to(torch.int32).reshape(1)
        per_row = (3, 1 if phi.dtype == torch.bfloat16 and not center else 3)
        s1 = _launch_syrk(*args, pieces=base, w=w, w_mode=1, flag=flag, guard=1, **common)
        s2 = _launch_syrk(*args, pieces=per_row, w=w, w_mode=2, flag=flag, guard=2, **common)
        splits = [s1, s2]
    if max(splits) > 1:
        _mirror(out)


def _check_inputs(phi: torch.Tensor, weights: torch.Tensor | None, name: str = "phi") -> None:
    if not isinstance(phi, torch.Tensor) or phi.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor [N, d], got {getattr(phi, 'shape', type(phi))}")
    if phi.dtype not in _INPUT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {phi.dtype}")
    if phi.shape[0] == 0 or phi.shape[1] == 0:
        raise ValueError(f"{name} must have N ≥ 1 rows and d ≥ 1 columns, got {tuple(phi.shape)}")
    if weights is not None:
        if not isinstance(weights, torch.Tensor) or weights.shape != (phi.shape[0],):
            raise ValueError(f"weights must be a tensor of shape [N] = [{phi.shape[0]}]")
        if not weights.is_floating_point():
            raise TypeError(f"weights must be floating point, got {weights.dtype}")
        if weights.device != phi.device:
            raise ValueError(f"weights is on {weights.device} but {name} is on {phi.device}")


def _check_acc(acc_dtype: torch.dtype) -> None:
    if acc_dtype not in (torch.float32, torch.float64):
        raise TypeError(f"acc_dtype must be torch.float32 or torch.float64, got {acc_dtype}")


@triton_op("effrank_fast::gram_triton", mutates_args={})
def _gram_triton_op(
    phi: torch.Tensor, weights: torch.Tensor | None, center: bool, acc_dtype: torch.dtype
) -> torch.Tensor:
    d = phi.shape[1]
    out = torch.zeros((d, d), dtype=acc_dtype, device=phi.device)
    _gram_into(phi, weights, center, out, accumulate=False)
    return out


@triton_op("effrank_fast::gram_triton_accumulate", mutates_args={"out"})
def _gram_triton_accumulate_op(
    phi: torch.Tensor, weights: torch.Tensor | None, center: bool, out: torch.Tensor
) -> None:
    _gram_into(phi, weights, center, out, accumulate=True)


@triton_op("effrank_fast::kernel_triton", mutates_args={})
def _kernel_triton_op(
    phi: torch.Tensor, weights: torch.Tensor | None, center: bool, acc_dtype: torch.dtype
) -> torch.Tensor:
    n, d = phi.shape
    out = torch.zeros((n, n), dtype=acc_dtype, device=phi.device)
    mu = weighted_mean(phi, weights, acc_dtype).contiguous() if center else None
    if acc_dtype == torch.float64:
        pieces = (1, 1)
    else:
        pieces = (0, 0) if phi.dtype in _NATIVE16 and not center else (3, 3)
    # X[k, c] = Φ[c, k]: the reduction runs over the d features, the output over the N samples;
    # √w_c √w_c' factors out of the sum and is applied in the epilogue.
    split = _launch_syrk(
        phi, phi.stride(1), phi.stride(0), d, n, out,
        pieces=pieces,
        w=weights.contiguous() if weights is not None else None, w_mode=3 if weights is not None else 0,
        mu=mu, mu_mode=2 if center else 0, accumulate=False,
    )  # fmt: skip
    if split > 1:
        _mirror(out)
    return out


def gram_triton(
    phi: torch.Tensor,
    weights: torch.Tensor | None = None,
    center: bool = False,
    acc_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ) [d, d] by a Triton SYRK (upper tiles, mirrored: exactly symmetric).

    Args:
        phi: features [N, d]: float16, bfloat16 (fast path), float32 or float64; any strides.
        weights: resolved weights [N] (None = unit weights; uniform weights such as 1/N cost
            nothing extra, other weights triple the tensor-core work, see README.md).
        center: subtract the w-weighted mean μ [d] in the kernel prologue (exact, 6× the work).
        acc_dtype: float32 (promoted tensor-core accumulation) or float64; default: ``out.dtype``
            if given, else float64 for float64 input and float32 otherwise.
        out: streaming accumulator [d, d] (float32/float64), updated in place: out += M. Its upper
            triangle is read and both triangles are written, so a symmetric ``out`` stays exactly
            symmetric. EMA: ``out.mul_(β); gram_triton(phi, (1 − β)·w, out=out)``.

    Returns:
        M [d, d] in ``acc_dtype`` (``out`` itself when given).

    Example:
        >>> M = gram_triton(torch.randn(65536, 1024, device="cuda", dtype=torch.bfloat16))
    """
    _check_inputs(phi, weights)
    if out is None:
        acc = acc_dtype if acc_dtype is not None else (torch.float64 if phi.dtype == torch.float64 else torch.float32)
        _check_acc(acc)
        return torch.ops.effrank_fast.gram_triton(phi, weights, bool(center), acc)
    d = phi.shape[1]
    if not isinstance(out, torch.Tensor) or out.shape != (d, d):
        raise ValueError(f"out must be a [d, d] = [{d}, {d}] tensor, got {getattr(out, 'shape', type(out))}")
    _check_acc(out.dtype)
    if acc_dtype is not None and acc_dtype != out.dtype:
        raise TypeError(f"acc_dtype={acc_dtype} disagrees with out.dtype={out.dtype}")
    if out.device != phi.device:
        raise ValueError(f"out is on {out.device} but phi is on {phi.device}")
    torch.ops.effrank_fast.gram_triton_accumulate(phi, weights, bool(center), out)
    return out


def kernel_triton(
    phi: torch.Tensor,
    weights: torch.Tensor | None = None,
    center: bool = False,
    acc_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """K = diag(√w)(Φ − 1μᵀ)(Φ − 1μᵀ)ᵀdiag(√w) [N, N]: the N < d path (same non-zero spectrum as M).

    Args and accuracy as :func:`gram_triton`; the weights scale the output (epilogue), so any
    weights keep the single-MMA fast path for 16-bit input.
    """
    _check_inputs(phi, weights)
    _check_acc(acc_dtype)
    return torch.ops.effrank_fast.kernel_triton(phi, weights, bool(center), acc_dtype)


def why_not(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the Triton Gram cannot serve (device, dtype), or None."""
    if dtype not in _INPUT_DTYPES:
        return f"dtype {dtype} is not supported (float16, bfloat16, float32, float64)"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"needs compute capability ≥ 8.0 for bf16 tensor cores, got {major}.{minor}"
    return None
