"""Triton Gram backend: SYRK with promoted fp32 (or fp64) accumulation, streaming, and the N×N kernel.

Ops (``torch.library.triton_op``, so ``torch.compile(fullgraph=True)`` traces into the launches):

- ``effrank_fast::gram_triton(phi[N, d], weights[N]?, center, acc_dtype) -> M[d, d]``
- ``effrank_fast::gram_triton_accumulate(phi[N, d], weights[N]?, center, out[d, d]!)``: out += M
- ``effrank_fast::kernel_triton(phi[N, d], weights[N]?, center, acc_dtype) -> K[N, N]``

with M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ) and K = diag(√w)(Φ − 1μᵀ)(Φ − 1μᵀ)ᵀdiag(√w). The error model
and the measured speed are in README.md beside this file; the kernels in ``triton_kernels.py``.

Reproducibility: with few output tiles the rows are split over several programs that add into the
output with atomics, whose order varies from run to run (the last bits of M do too). Under
``torch.use_deterministic_algorithms(True)`` every launch uses one program per tile: no atomics,
bitwise reproducible, slower when d is small. Tile configurations are fixed (``HOPPER_CONFIGS``)
unless ``EFFRANK_FAST_AUTOTUNE=1`` (``autotune.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.library import triton_op, wrap_triton

from effrank_fast.ops import validation
from effrank_fast.ops.gram import autograd, autotune
from effrank_fast.ops.gram.reference import weighted_mean
from effrank_fast.ops.gram.triton_kernels import _gram_syrk_kernel, _mirror_upper_kernel
from effrank_fast.ops.gram.triton_plan import (  # noqa: F401 (OVERRIDES, HOPPER_*: test and benchmark hooks)
    HOPPER_CANDIDATES,
    HOPPER_CONFIGS,
    OVERRIDES,
    SyrkConfig,
    _cdiv,
    _interpreting,
    _pick_config,
    _plan,
    _tunable,
    promotion_window_rows,
)

__all__ = ["gram_triton", "kernel_triton", "promotion_window_rows", "why_not"]

_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NATIVE16 = (torch.float16, torch.bfloat16)


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
    cfg: SyrkConfig | None = None,
) -> int:
    """One launch of the SYRK kernel over X[k, c] (strides given); returns the split factor used.

    ``pieces`` = (PA, PB): (0, 0) native 16-bit operands, else bf16 pieces per side (1 or 3).
    ``cfg`` forces a configuration (the autotuner's timing runs); else fixed or autotuned.
    """
    acc64 = out.dtype == torch.float64
    pa, pb = pieces
    if acc64:
        mode, n_mma = "acc64", 1
    else:
        mode = "native16" if pa == 0 else "split"
        n_mma = {0: 1, 1: 1, 3: 3}[pa] * (2 if pb == 3 and pa == 3 else 1)
    if cfg is None:
        cfg = _pick_config(mode, nc)
        candidates = _tunable(mode, nc)
        if candidates:
            kw = {"pieces": pieces, "w": w, "w_mode": w_mode, "mu": mu, "mu_mode": mu_mode}
            cfg = _autotuned(candidates, (x, stride_k, stride_c, nk, nc, out), n_mma, kw)
    p = _plan(cfg, nk, nc, n_mma, acc64, out.device)
    even_k = nk % (cfg.BK * p.win_steps) == 0
    even_c = nc % cfg.BM == 0 and nc % cfg.BN == 0
    wide = (cfg.BK - 1) * abs(stride_k) + (nc - 1) * abs(stride_c) >= 2**31
    dummy = out
    grid = (_cdiv(nc, cfg.BM) * _cdiv(nc, cfg.BN), p.split)
    wrap_triton(_gram_syrk_kernel)[grid](
        x, stride_k, stride_c, nk, nc,
        w if w is not None else dummy,
        mu if mu is not None else dummy,
        flag if flag is not None else dummy,
        out, out.stride(0), out.stride(1),
        p.k_per_split, p.win_steps,
        BM=cfg.BM, BN=cfg.BN, BK=cfg.BK, GROUP=cfg.GROUP,
        W_MODE=w_mode, MU_MODE=mu_mode, PA=pa, PB=pb,
        ACC64=acc64, EVEN_K=even_k, EVEN_C=even_c, WIDE=wide, GUARD=guard,
        ATOMIC=p.split > 1, ACCUMULATE=accumulate,
        FLATTEN=cfg.flatten, INTERPRET=_interpreting(),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return p.split


def _autotuned(candidates: tuple[SyrkConfig, ...], args: tuple, n_mma: int, kw: dict[str, Any]) -> SyrkConfig:
    """EFFRANK_FAST_AUTOTUNE=1: the fastest of ``candidates`` for this launch (autotune.py).

    Only candidates that keep the default's promotion window compete (the window is in the key).
    They are timed on the real work (no guard) into a scratch output: ``out`` may hold a running sum.
    """
    x, stride_k, stride_c, nk, nc, out = args
    acc64 = out.dtype == torch.float64
    window = _plan(candidates[0], nk, nc, n_mma, acc64, out.device).window
    same = [c for c in candidates if _plan(c, nk, nc, n_mma, acc64, out.device).window == window]
    key = (kw["pieces"], autotune.bucket(nc), autotune.bucket(nk), window, stride_c == 1, x.dtype, str(out.device))
    scratch: list[torch.Tensor] = []

    def run(c: SyrkConfig) -> None:
        if not scratch:
            scratch.append(torch.zeros_like(out))
        _launch_syrk(x, stride_k, stride_c, nk, nc, scratch[0], **kw, accumulate=False, cfg=c)

    return autotune.choose(key, same, run, autotune.can_time(out))


def _mirror(out: torch.Tensor) -> None:
    # Grid (nb, nb): CUDA's y-limit (65535 blocks of 64) would need n > 4·10⁶, a 70 TB matrix.
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
    # the shared checks (shape, dtype, empty; weights' shape, dtype, device), values not read
    validation.check_features(phi, name, check_finite=False)
    if weights is not None:
        validation.check_weights(weights, phi.shape[0], phi.device, check_values=False, against=name)


def _check_acc(acc_dtype: torch.dtype) -> None:
    validation.check_acc_dtype(acc_dtype)


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


autograd.register("effrank_fast::gram_triton", autograd.gram_backward)
autograd.register("effrank_fast::kernel_triton", autograd.kernel_backward)


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
        M [d, d] in ``acc_dtype`` (``out`` itself when given). With few tiles (small d) the rows are
        split over programs adding with atomics: the last bits vary from run to run unless
        ``torch.use_deterministic_algorithms(True)``, which takes one program per tile.

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
    autograd.refuse_grad("gram_triton(out=...)", phi, weights, out)
    torch.ops.effrank_fast.gram_triton_accumulate(phi, weights, bool(center), out)
    return out


def kernel_triton(
    phi: torch.Tensor,
    weights: torch.Tensor | None = None,
    center: bool = False,
    acc_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """K = diag(√w)(Φ − 1μᵀ)(Φ − 1μᵀ)ᵀdiag(√w) [N, N]: the N < d path (same non-zero spectrum as M).

    Args, accuracy and reproducibility as :func:`gram_triton`; the weights scale the output
    (epilogue), so any weights keep the single-MMA fast path for 16-bit input.
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
