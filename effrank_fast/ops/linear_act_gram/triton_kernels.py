"""Triton kernel of ``linear_act_gram``: h = act(x Wᵀ + b) and Out (+)= hᵀ diag(w) h in one launch.

Each program owns one upper tile (I, J) of the d×d Gram matrix and a range of rows. Per block of
BR rows it forms the activation blocks h[:, I] and h[:, J] on the tensor cores (h[:, J] is h[:, I]
on diagonal tiles), rounds them as the unfused layer would (linear output and activation both
rounded to x's dtype) and adds h[:, I]ᵀ diag(w) h[:, J] on the tensor cores. A program covers one
promotion window of rows and adds its tile to the output with fp32 atomics, so the tensor-core
partial never grows past a window (see ops/gram/README.md) and one accumulator suffices. Programs
of several windows (huge N, deterministic mode) use ``_linear_act_gram_windows_kernel``, which
promotes each window into a second accumulator. h never goes to memory unless asked for. Off-diagonal tiles
recompute activation blocks: the linear work grows by d / BM, which is why the launcher fuses only
narrow layers.
"""

from __future__ import annotations

import triton
import triton.language as tl

from effrank_fast.ops.gram.triton_kernels import _dot_tn, _split_products, _store_upper_mirror


@triton.jit
def _tanh(z):
    """tanh from exp (the interpreter has no libdevice): odd series below 1/16, else (1 − e)/(1 + e).

    Relative error ≲ 20 fp32 ulps, far below the 16-bit rounding that follows.
    """
    az = tl.abs(z)
    e = tl.exp(-2.0 * az)
    t = (1.0 - e) / (1.0 + e)
    z2 = z * z
    series = z * (1.0 + z2 * (-1.0 / 3.0 + z2 * (2.0 / 15.0 + z2 * (-17.0 / 315.0))))
    return tl.where(az < 0.0625, series, tl.where(z < 0, -t, t))


@triton.jit
def _activation(z, ACT: tl.constexpr):
    """ACT: 0 identity, 1 tanh, 2 relu, 3 gelu (erf), 4 sin; fp32 in and out."""
    if ACT == 1:
        z = _tanh(z)
    if ACT == 2:
        z = tl.maximum(z, 0.0)
    if ACT == 3:
        z = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    if ACT == 4:
        z = tl.sin(z)
    return z


@triton.jit
def _dot_nn(a, b, acc, INTERPRET: tl.constexpr):
    """acc + a b for 16-bit a [BR, BKK], b [BKK, BC] (fp32 operands under the interpreter, see _dot_tn)."""
    if INTERPRET:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(a, b, acc)
    return out


@triton.jit
def _linear_act_tile(
    Xr, stride_xn, stride_xk, Wl, stride_wd, stride_wk, Bias,
    mr, cols, mc, K,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BR: tl.constexpr, BC: tl.constexpr, BKK: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """h[r0 + i, cols] = act(round(x W[cols]ᵀ + b[cols])) rounded to x's dtype, for the BR rows at Xr = x + r0·stride.

    Rows outside ``mr`` and columns outside ``mc`` come out 0. Offsets inside the tile are 32-bit
    (only the scalar row base is 64-bit): 64-bit pointer tiles would not fit in the registers.
    """
    offs_r = tl.arange(0, BR)
    offs_k = tl.arange(0, BKK)
    off_x = offs_r[:, None] * stride_xn + offs_k[None, :] * stride_xk
    off_w = cols[None, :] * stride_wd + offs_k[:, None] * stride_wk
    z = tl.zeros((BR, BC), dtype=tl.float32)
    for k0 in range(0, K, BKK):
        mk = (k0 + offs_k) < K
        xt = tl.load(Xr + off_x, mask=mr[:, None] & mk[None, :], other=0.0)
        wt = tl.load(Wl + off_w, mask=mk[:, None] & mc[None, :], other=0.0)
        z = _dot_nn(xt, wt, z, INTERPRET)
        Xr += BKK * stride_xk
        Wl += BKK * stride_wk
    if HAS_BIAS:
        z += tl.load(Bias + cols, mask=mc, other=0.0).to(tl.float32)[None, :]
    dt = Xr.dtype.element_ty
    h = _activation(z.to(dt).to(tl.float32), ACT)
    h = tl.where(mr[:, None] & mc[None, :], h, 0.0)
    return h.to(dt)


@triton.jit
def _lag_window(
    acc, X, stride_xn, stride_xk, Wl, stride_wd, stride_wk, Bias, H, stride_hn, stride_hd, SW,
    offs_m, offs_n, mask_m, mask_n, r_lo, r_hi, K,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_H: tl.constexpr, DIAG: tl.constexpr,
    W_MODE: tl.constexpr, PB: tl.constexpr,
    BM: tl.constexpr, BR: tl.constexpr, BKK: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """acc + h[r_lo:r_hi, I]ᵀ diag(w) h[r_lo:r_hi, J] on the tensor cores (no promotion inside)."""
    offs_r = tl.arange(0, BR)
    for i in range(0, tl.cdiv(r_hi - r_lo, BR)):
        r0 = r_lo + i * BR
        mr = (r0 + offs_r) < r_hi
        xr = X + r0.to(tl.int64) * stride_xn
        h_m = _linear_act_tile(
            xr, stride_xn, stride_xk, Wl, stride_wd, stride_wk, Bias, mr, offs_m, mask_m, K,
            ACT, HAS_BIAS, BR, BM, BKK, INTERPRET,
        )  # fmt: skip
        if DIAG:
            if STORE_H:
                p_h = H + r0.to(tl.int64) * stride_hn + offs_r[:, None] * stride_hn + offs_m[None, :] * stride_hd
                tl.store(p_h, h_m, mask=mr[:, None] & mask_m[None, :])
            h_n = h_m
        else:
            h_n = _linear_act_tile(
                xr, stride_xn, stride_xk, Wl, stride_wd, stride_wk, Bias, mr, offs_n, mask_n, K,
                ACT, HAS_BIAS, BR, BM, BKK, INTERPRET,
            )  # fmt: skip
        if W_MODE == 2:
            wr = tl.load(SW + r0 + offs_r, mask=mr, other=0.0).to(tl.float32)
            # w·h is not a 16-bit number: 3 bf16 pieces (PB = 3 when h is fp16, i.e. not bf16-exact).
            acc = _split_products(h_m.to(tl.float32) * wr[:, None], h_n.to(tl.float32), acc, 3, PB, INTERPRET)
        else:
            acc = _dot_tn(h_m, h_n, acc, INTERPRET)
    return acc


@triton.jit(do_not_specialize=["N", "n_per_split"])
def _linear_act_gram_kernel(
    X, stride_xn, stride_xk,  # x [N, K]
    Wl, stride_wd, stride_wk,  # layer weight [D, K]
    Bias,  # [D]
    H, stride_hn, stride_hd,  # activations [N, D], written when STORE_H
    SW,  # sample weights: SW[0] (W_MODE 1) or SW[n] (2)
    FLAG,  # int32 [1]: "sample weights are uniform" (guarded launches)
    OUT, stride_om, stride_on,
    N, K, D,
    n_per_split,  # rows per program: ≤ the promotion window, so the accumulator is the window's partial
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_H: tl.constexpr, DIAG: tl.constexpr,
    W_MODE: tl.constexpr, PB: tl.constexpr, GUARD: tl.constexpr, ATOMIC: tl.constexpr, ACCUMULATE: tl.constexpr,
    BM: tl.constexpr, BR: tl.constexpr, BKK: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """Out (+)= h[:, I]ᵀ diag(w) h[:, J] over this program's rows; DIAG: I = J (one activation block).

    Promotion happens across programs: each sums at most a promotion window of rows on the tensor
    cores and adds its tile to Out with round-to-nearest fp32 atomics (one accumulator, no spills).
    """
    if GUARD == 1:  # noqa: SIM102 (constexpr test, then a runtime one)
        if tl.load(FLAG) == 0:
            return
    if GUARD == 2:  # noqa: SIM102
        if tl.load(FLAG) != 0:
            return
    if DIAG:
        pid_m = tl.program_id(0)
        pid_n = pid_m
    else:
        nb = tl.cdiv(D, BM)
        pid_m = tl.program_id(0) // nb
        pid_n = tl.program_id(0) % nb
        if pid_n <= pid_m:
            return
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BM + tl.arange(0, BM)
    mask_m = offs_m < D
    mask_n = offs_n < D
    r_lo = tl.program_id(1) * n_per_split
    r_hi = tl.minimum(r_lo + n_per_split, N)
    acc = _lag_window(
        tl.zeros((BM, BM), dtype=tl.float32), X, stride_xn, stride_xk, Wl, stride_wd, stride_wk, Bias,
        H, stride_hn, stride_hd, SW, offs_m, offs_n, mask_m, mask_n, r_lo, r_hi, K,
        ACT, HAS_BIAS, STORE_H, DIAG, W_MODE, PB, BM, BR, BKK, INTERPRET,
    )  # fmt: skip
    if W_MODE == 1:
        acc = acc * tl.load(SW).to(tl.float32)
    _store_upper_mirror(OUT, stride_om, stride_on, acc, offs_m, offs_n, D, ATOMIC, ACCUMULATE)


@triton.jit(do_not_specialize=["N", "n_per_split", "rows_per_window"])
def _linear_act_gram_windows_kernel(
    X, stride_xn, stride_xk, Wl, stride_wd, stride_wk, Bias, H, stride_hn, stride_hd, SW, FLAG,
    OUT, stride_om, stride_on,
    N, K, D,
    n_per_split,  # rows per program: a multiple of rows_per_window
    rows_per_window,  # rows summed on the tensor cores before promotion
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_H: tl.constexpr, DIAG: tl.constexpr,
    W_MODE: tl.constexpr, PB: tl.constexpr, GUARD: tl.constexpr, ATOMIC: tl.constexpr, ACCUMULATE: tl.constexpr,
    BM: tl.constexpr, BR: tl.constexpr, BKK: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """``_linear_act_gram_kernel`` for programs of several windows (split capped, or deterministic).

    Promotion as in the SYRK: each window is summed on the tensor cores into a fresh partial, then
    added to a separate fp32 accumulator with round-to-nearest adds; one store (or atomic) at the end.
    A kernel of its own, prologue repeated: the window loop inside the one-window kernel kept the
    output pointers live across it and made the default (per-row weights) config spill.
    """
    if GUARD == 1:  # noqa: SIM102 (constexpr test, then a runtime one)
        if tl.load(FLAG) == 0:
            return
    if GUARD == 2:  # noqa: SIM102
        if tl.load(FLAG) != 0:
            return
    if DIAG:
        pid_m = tl.program_id(0)
        pid_n = pid_m
    else:
        nb = tl.cdiv(D, BM)
        pid_m = tl.program_id(0) // nb
        pid_n = tl.program_id(0) % nb
        if pid_n <= pid_m:
            return
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BM + tl.arange(0, BM)
    mask_m = offs_m < D
    mask_n = offs_n < D
    r_lo = tl.program_id(1) * n_per_split
    r_hi = tl.minimum(r_lo + n_per_split, N)
    acc = tl.zeros((BM, BM), dtype=tl.float32)
    for w_lo in range(r_lo, r_hi, rows_per_window):
        acc += _lag_window(
            tl.zeros((BM, BM), dtype=tl.float32), X, stride_xn, stride_xk, Wl, stride_wd, stride_wk, Bias,
            H, stride_hn, stride_hd, SW, offs_m, offs_n, mask_m, mask_n,
            w_lo, tl.minimum(w_lo + rows_per_window, r_hi), K,
            ACT, HAS_BIAS, STORE_H, DIAG, W_MODE, PB, BM, BR, BKK, INTERPRET,
        )  # fmt: skip
    if W_MODE == 1:
        acc = acc * tl.load(SW).to(tl.float32)
    _store_upper_mirror(OUT, stride_om, stride_on, acc, offs_m, offs_n, D, ATOMIC, ACCUMULATE)
