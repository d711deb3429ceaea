"""Triton ``linear_act_gram``: the activations of a Linear layer and their Gram matrix in one launch.

Ops (``torch.library.triton_op``):

- ``effrank_fast::linear_act_gram(x[N, k], weight[d, k], bias[d]?, act, weights[N]?, return_activations)
  -> (M[d, d] fp32, h[N, d] or [0])``
- ``effrank_fast::linear_act_gram_accumulate(..., gram_out[d, d]!, ...) -> h``: gram_out += M

Fusion is used for narrow layers (d ≤ ``FUSED_MAX_D`` = 128): there the whole d×d Gram is one
128×128 tile, h is formed once and never stored, and the unfused route's extra passes (write h,
read it for the activation, read it again for the Gram) disappear. A wider Gram needs several
tiles; an off-diagonal tile needs two activation blocks, so the linear work is recomputed d / 128
times (2× at d = 256, 4× at 512), and a single 256×256 fp32 accumulator would need the whole
register file of an SM. Wider layers, float32/float64 inputs and float64 accumulators take the
unfused route inside the same op: torch's linear and activation, then the Triton SYRK
(``gram_triton``). ``benchmarks/bench_linear_act_gram.py`` forces fusion at every width to measure
the crossover (benchmarks/RESULTS.md).

Rows: one program per promotion window and tile, each adding its tile to the output with fp32
atomics (the atomics promote), up to 16 waves of the GPU and CUDA's grid y-limit of 65535 programs
per tile along N. Past that, and under ``torch.use_deterministic_algorithms(True)`` (one program per
tile: no atomics, bitwise reproducible, slower), a program walks several windows and promotes each
into a second register accumulator (``_linear_act_gram_windows_kernel``), as the SYRK does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch.library import triton_op, wrap_triton

from effrank_fast.ops.gram import triton as gram_triton_mod
from effrank_fast.ops.gram import triton_plan as plan
from effrank_fast.ops.linear_act_gram.reference import ACTIVATIONS, apply_activation
from effrank_fast.ops.linear_act_gram.triton_kernels import _linear_act_gram_kernel, _linear_act_gram_windows_kernel

__all__ = ["FUSED_MAX_D", "fused_why_not", "linear_act_gram_triton"]

# Widest layer that takes the fused kernel: one Gram tile, no recomputed activations. Raise it
# only on measurements (bench_linear_act_gram.py times the fused kernel at 256 and 512 too).
FUSED_MAX_D = 128
_ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}


@dataclass(frozen=True)
class LagConfig:
    BM: int  # Gram tile (and activation block) width
    BR: int  # rows per step
    BKK: int  # k-block of the linear
    num_warps: int
    num_stages: int


HOPPER_CONFIG = LagConfig(BM=128, BR=64, BKK=64, num_warps=8, num_stages=3)
# Test/benchmark hooks (not API): "config", "window_rows", "split" (programs per tile), "max_d".
OVERRIDES: dict[str, object] = {}
MAX_GRID_Y = 65535  # CUDA's limit on grid dimension y (the split along N)
SPLIT_WAVES = 16  # programs per SM beyond which more programs per tile only add atomics


def _windows_config(cfg: LagConfig) -> LagConfig:
    """The multi-window kernel's config: its second (promoted) accumulator takes 64 more registers
    per thread at BM = 128, so it works in 32×32 blocks there (sm_90a, Triton 3.6 and 3.8: ≤ 242
    registers, no spills; with 64×64 blocks it spilled)."""
    return replace(cfg, BR=32, BKK=32) if cfg.BM == 128 and not plan._interpreting() else cfg


def _config(d: int) -> LagConfig:
    forced = OVERRIDES.get("config")
    if isinstance(forced, LagConfig):
        return forced
    bm = max(16, min(128, plan._next_pow2(d)))
    if plan._interpreting():
        return LagConfig(BM=min(bm, 64), BR=32, BKK=32, num_warps=4, num_stages=1)
    if bm <= 64:
        return LagConfig(BM=bm, BR=64, BKK=64, num_warps=4, num_stages=3)
    return HOPPER_CONFIG


def fused_why_not(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gram_dtype: torch.dtype
) -> str | None:
    """Why the fused kernel does not run for these inputs (the op then runs unfused), or None."""
    d = weight.shape[0]
    if x.dtype not in (torch.bfloat16, torch.float16):
        return f"x is {x.dtype}; the fused kernel takes 16-bit activations"
    if weight.dtype != x.dtype:
        return f"weight is {weight.dtype} but x is {x.dtype}"
    if gram_dtype != torch.float32:
        return f"the fused kernel accumulates in float32, not {gram_dtype}"
    if d > int(OVERRIDES.get("max_d", FUSED_MAX_D)):  # type: ignore[call-overload]
        return f"d = {d} > FUSED_MAX_D = {FUSED_MAX_D}: larger Grams recompute activation blocks d/128 times"
    return None


def _rows_plan(n: int, tiles: int, n_mma: int, cfg: LagConfig, device: torch.device) -> tuple[int, int]:
    """(rows per promotion window, rows per program): the latter a multiple of the former."""
    sms = plan._num_sms(device)
    forced = OVERRIDES.get("window_rows")
    if isinstance(forced, int):
        window = forced
    else:
        window = plan.promotion_window_rows(n, n_mma, compute_bound=False)
        # One program per window: halve the window until the programs fill the SMs.
        while window > cfg.BR and tiles * plan._cdiv(n, window) < 2 * sms:
            window //= 2
    window = max(cfg.BR, window // cfg.BR * cfg.BR)
    n_win = plan._cdiv(n, window)
    forced_split = OVERRIDES.get("split")
    if torch.are_deterministic_algorithms_enabled():
        split = 1  # atomics add in a run-dependent order; one program per tile does not
    elif isinstance(forced_split, int):
        split = max(1, min(forced_split, n_win, MAX_GRID_Y))
    else:
        split = max(1, min(n_win, plan._cdiv(SPLIT_WAVES * sms, tiles), MAX_GRID_Y))
    return window, plan._cdiv(n_win, split) * window


def _launch(x, weight, bias, act, out, h, *, sw, w_mode, pb, flag, guard, accumulate, store_h) -> int:
    """Diagonal tiles, then (d > BM) off-diagonal ones; returns the programs per tile along N (> 1: atomics)."""
    n, k = x.shape
    d = weight.shape[0]
    cfg = _config(d)
    nb = plan._cdiv(d, cfg.BM)
    n_mma = 1 if w_mode != 2 else (6 if pb == 3 else 3)
    window, n_per_split = _rows_plan(n, nb * (nb + 1) // 2, n_mma, cfg, x.device)
    split = plan._cdiv(n, n_per_split)
    rows: tuple[int, ...] = (n_per_split,)
    kernel = _linear_act_gram_kernel
    if n_per_split > window:  # several windows per program: promote in registers
        kernel, cfg, rows = _linear_act_gram_windows_kernel, _windows_config(cfg), (n_per_split, window)
    dummy = out
    for diag in (True, False) if nb > 1 else (True,):
        wrap_triton(kernel)[(nb if diag else nb * nb, split)](
            x, x.stride(0), x.stride(1),
            weight, weight.stride(0), weight.stride(1),
            bias if bias is not None else dummy,
            h if store_h else dummy, h.stride(0) if store_h else 0, h.stride(1) if store_h else 0,
            sw if sw is not None else dummy,
            flag if flag is not None else dummy,
            out, out.stride(0), out.stride(1),
            n, k, d, *rows,
            ACT=_ACT_CODE[act], HAS_BIAS=bias is not None, STORE_H=store_h, DIAG=diag,
            W_MODE=w_mode, PB=pb, GUARD=guard, ATOMIC=split > 1, ACCUMULATE=accumulate,
            BM=cfg.BM, BR=cfg.BR, BKK=cfg.BKK, INTERPRET=plan._interpreting(),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )  # fmt: skip
    return split


def _lag_into(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    act: str,
    weights: torch.Tensor | None,
    out: torch.Tensor,
    accumulate: bool,
    return_activations: bool,
) -> torch.Tensor:
    """out (+)= hᵀ diag(w) h; returns h [N, d] if asked for, else an empty tensor."""
    n = x.shape[0]
    d = weight.shape[0]
    if fused_why_not(x, weight, bias, out.dtype) is not None:
        h = apply_activation(F.linear(x, weight, bias), act)
        gram_triton_mod._gram_into(h, weights, False, out, accumulate)
        return h if return_activations else h.new_empty(0)
    h = torch.empty((n, d), dtype=x.dtype, device=x.device) if return_activations else x.new_empty(0)
    b = bias.contiguous() if bias is not None else None
    common: dict[str, Any] = {"accumulate": accumulate, "store_h": return_activations}
    if weights is None:
        splits = [_launch(x, weight, b, act, out, h, sw=None, w_mode=0, pb=1, flag=None, guard=0, **common)]
    else:
        w = weights.contiguous()
        flag = (w == w[:1]).all().to(torch.int32).reshape(1)
        pb = 1 if x.dtype == torch.bfloat16 else 3
        # Both launches store h when asked; only the one whose guard holds runs.
        splits = [
            _launch(x, weight, b, act, out, h, sw=w, w_mode=1, pb=pb, flag=flag, guard=1, **common),
            _launch(x, weight, b, act, out, h, sw=w, w_mode=2, pb=pb, flag=flag, guard=2, **common),
        ]
    if max(splits) > 1:
        gram_triton_mod._mirror(out)
    return h


@triton_op("effrank_fast::linear_act_gram", mutates_args={})
def _linear_act_gram_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    act: str,
    weights: torch.Tensor | None,
    return_activations: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    d = weight.shape[0]
    out = torch.zeros((d, d), dtype=torch.float32, device=x.device)
    h = _lag_into(x, weight, bias, act, weights, out, False, return_activations)
    return out, h


@triton_op("effrank_fast::linear_act_gram_accumulate", mutates_args={"gram_out"})
def _linear_act_gram_accumulate_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    act: str,
    gram_out: torch.Tensor,
    weights: torch.Tensor | None,
    return_activations: bool,
) -> torch.Tensor:
    return _lag_into(x, weight, bias, act, weights, gram_out, True, return_activations)


def linear_act_gram_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    act: str,
    gram_out: torch.Tensor | None,
    weights: torch.Tensor | None,
    return_activations: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(M or gram_out, h or None) through the Triton ops; inputs already validated."""
    if gram_out is None:
        m, h = torch.ops.effrank_fast.linear_act_gram(x, weight, bias, act, weights, return_activations)
    else:
        h = torch.ops.effrank_fast.linear_act_gram_accumulate(
            x, weight, bias, act, gram_out, weights, return_activations
        )
        m = gram_out
    return m, (h if return_activations else None)
