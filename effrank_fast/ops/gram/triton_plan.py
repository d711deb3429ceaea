"""Host-side planning of the Triton SYRK launches: configurations, promotion window, split.

Everything here is decided from shapes, dtypes and the device on the host, without reading
device data, so it is safe under ``torch.compile`` tracing. ``triton.py`` launches the kernels with
what it decides; ``linear_act_gram`` reuses the window and SM-count helpers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from effrank_fast.ops.gram import autotune


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
# What EFFRANK_FAST_AUTOTUNE=1 times for native 16-bit operands (and bench_gram.py --sweep): the
# default first, then the flattened loop nest, a 3-stage pipeline and 128-row k-blocks (whose
# window must stay the default's: candidates never change the promotion window).
_N16 = HOPPER_CONFIGS["native16"]
HOPPER_CANDIDATES: dict[str, tuple[SyrkConfig, ...]] = {
    "native16": (
        _N16,
        replace(_N16, flatten=True),
        replace(_N16, num_stages=3),
        replace(_N16, BK=128, num_stages=3),
        replace(_N16, BK=128, num_stages=3, flatten=True),
    ),
}
# The CPU interpreter: few, large programs are what keep numpy fast.
_INTERPRETER_CONFIG = SyrkConfig(BM=64, BN=64, BK=32, num_warps=4, num_stages=1)

# Test/benchmark hooks (not API): force a config, a split factor, a promotion window.
OVERRIDES: dict[str, object] = {}

MAX_WINDOW_ROWS = 2048
MAX_SPLIT = 16  # programs per tile along the reduction (CUDA's grid y-limit is 65535)


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
    products per k-block; H100, ops/gram/README.md), independently of N. An fp32 SIMT Gram over N
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
    Deterministic mode (``torch.use_deterministic_algorithms(True)``) forces 1: several programs add
    their partial sums with atomics, in an order (and so with last bits) that varies run to run.
    """
    if torch.are_deterministic_algorithms_enabled():
        return 1
    forced = OVERRIDES.get("split")
    if isinstance(forced, int):
        return max(1, min(forced, hard_cap or max_split, MAX_SPLIT))
    sms = _num_sms(device)
    if tiles >= sms:
        return 1
    best, best_cost = 1, float("inf")
    for s in range(1, max(1, max_split) + 1):
        cost = (-(-tiles * s // sms)) / s * (1 + atomic_cost * s)
        if cost < best_cost:
            best, best_cost = s, cost
    return best


def _tunable(mode: str, nc: int) -> tuple[SyrkConfig, ...]:
    """The candidates EFFRANK_FAST_AUTOTUNE=1 times for this launch, or () for the fixed config."""
    if not autotune.enabled() or "config" in OVERRIDES or mode not in HOPPER_CANDIDATES:
        return ()
    return () if mode == "native16" and nc <= 64 else HOPPER_CANDIDATES[mode]


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


@dataclass(frozen=True)
class _Plan:
    """How one SYRK launch covers the reduction."""

    window: int  # rows summed on the tensor cores before promotion (fp64: a program's whole range)
    split: int  # programs per tile along the reduction (> 1: atomics, then a mirror pass)
    k_per_split: int  # rows per program, a multiple of BK·win_steps
    win_steps: int  # BK-blocks per window


def _plan(cfg: SyrkConfig, nk: int, nc: int, n_mma: int, acc64: bool, device: torch.device) -> _Plan:
    nb_m, nb_n = _cdiv(nc, cfg.BM), _cdiv(nc, cfg.BN)
    # Tiles touching the upper triangle: in row block i, column blocks j ≥ ⌊i·BM/BN⌋.
    tiles = sum(nb_n - (i * cfg.BM) // cfg.BN for i in range(nb_m))
    if acc64:  # fp64 values and accumulator: nothing to promote, one window per program
        split = _pick_split(tiles, min(MAX_SPLIT, _cdiv(nk, 4096)), device, hard_cap=_cdiv(nk, cfg.BK))
        k_per_split = _cdiv(_cdiv(nk, split), cfg.BK) * cfg.BK
        return _Plan(k_per_split, _cdiv(nk, k_per_split), k_per_split, k_per_split // cfg.BK)
    forced_window = OVERRIDES.get("window_rows")
    if isinstance(forced_window, int):
        window = forced_window
    else:
        window = promotion_window_rows(nk, n_mma, compute_bound=tiles >= _num_sms(device))
    window = max(cfg.BK, window // cfg.BK * cfg.BK)
    split = _pick_split(tiles, min(MAX_SPLIT, _cdiv(nk, window)), device)
    k_per_split = _cdiv(_cdiv(nk, split), window) * window
    return _Plan(window, _cdiv(nk, k_per_split), k_per_split, window // cfg.BK)
