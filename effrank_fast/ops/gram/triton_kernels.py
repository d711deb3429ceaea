"""Triton kernels of the Gram op: SYRK with promoted accumulation, exact bf16 splits, mirror.

Notation. The kernels see one matrix X[k, c]: k runs over the *reduction* index (samples for the
Gram M = Φᵀ diag(w) Φ, features for the N×N kernel K = Φ Φᵀ) and c over the *output* index.
Out[c, c'] = Σ_k A[k, c] B[k, c'] with A = w ∘ V (weights folded into one side) and B = V, where
V = X − μ (centred) or X. Only output tiles that touch the upper triangle are computed; the
upper triangle is stored and mirrored, so the result is exactly symmetric.

Accuracy (see README.md in this folder):
- bf16/fp16 operands: products are exact in fp32; tensor cores then add them into an fp32
  accumulator with a one-signed (truncating) error. Each program therefore sums ``win_steps``
  k-blocks into a fresh partial and *promotes* it into a separate fp32 accumulator (round-to-
  nearest adds), which bounds the bias by the window length instead of N (ops/gram/README.md).
- values that are not exact 16-bit numbers (fp32 input, centred or per-row-weighted values) are
  split exactly into three bf16 pieces x = hi + mid + lo (8 + 8 + 8 significant bits) and the
  six products with combined order ≤ 2⁻¹⁶ are summed, smallest first: fp32-grade products on
  bf16 tensor cores.
- ``ACC64``: fp64 values and an fp64 accumulator (no promotion needed), CUDA-core FMAs.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _split3(x):
    """x (fp32) = hi + mid + lo exactly, each a bf16 (any rounding mode of the cast)."""
    hi = x.to(tl.bfloat16)
    r = x - hi.to(tl.float32)
    mid = r.to(tl.bfloat16)
    lo = (r - mid.to(tl.float32)).to(tl.bfloat16)
    return hi, mid, lo


@triton.jit
def _dot_tn(a, b, acc, INTERPRET: tl.constexpr):
    """acc + aᵀ b for 16-bit a [BK, BM], b [BK, BN], fp32 accumulation.

    Triton 3.8's interpreter multiplies bf16 tiles as raw uint16 bits, so there the operands are
    widened to fp32 first (bf16/fp16 products are exact in fp32: same result up to summation order).
    """
    if INTERPRET:
        out = tl.dot(tl.trans(a.to(tl.float32)), b.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(tl.trans(a), b, acc)
    return out


@triton.jit
def _dot64_tn(a, b, acc):
    """acc + aᵀ b in fp64 by a broadcast multiply-reduce (Triton 3.8's fp64 ``tl.dot`` fails to lower on sm90)."""
    return acc + tl.sum(a[:, :, None] * b[:, None, :], axis=0)


@triton.jit
def _split_products(a32, b32, acc, PA: tl.constexpr, PB: tl.constexpr, INTERPRET: tl.constexpr):
    """acc + a32ᵀ b32 to fp32-product accuracy on bf16 tensor cores (PA, PB ∈ {1, 3} pieces).

    PB = 1 means b32 holds exact bf16 values. Terms are added from the smallest up so that the
    partial sum is small while the small products go in.
    """
    if PA == 3:
        a_hi, a_mid, a_lo = _split3(a32)
    else:
        a_hi = a32.to(tl.bfloat16)
    if PB == 3:
        b_hi, b_mid, b_lo = _split3(b32)
        if PA == 3:
            acc = _dot_tn(a_lo, b_hi, acc, INTERPRET)
            acc = _dot_tn(a_hi, b_lo, acc, INTERPRET)
            acc = _dot_tn(a_mid, b_mid, acc, INTERPRET)
            acc = _dot_tn(a_mid, b_hi, acc, INTERPRET)
        else:
            acc = _dot_tn(a_hi, b_lo, acc, INTERPRET)
        acc = _dot_tn(a_hi, b_mid, acc, INTERPRET)
    else:
        b_hi = b32.to(tl.bfloat16)
        if PA == 3:
            acc = _dot_tn(a_lo, b_hi, acc, INTERPRET)
            acc = _dot_tn(a_mid, b_hi, acc, INTERPRET)
    acc = _dot_tn(a_hi, b_hi, acc, INTERPRET)
    return acc


@triton.jit
def _tile_coords(NC, BM: tl.constexpr, BN: tl.constexpr, GROUP: tl.constexpr):
    """(pid_m, pid_n) of this program in a grouped order (GROUP row blocks share column panels in L2)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(NC, BM)
    num_n = tl.cdiv(NC, BN)
    in_group = GROUP * num_n
    first_m = (pid // in_group) * GROUP
    gsize = tl.minimum(num_m - first_m, GROUP)
    pid_m = first_m + (pid % in_group) % gsize
    pid_n = (pid % in_group) // gsize
    return pid_m, pid_n


@triton.jit
def _store_upper_mirror(
    OUT, stride_om, stride_on, acc, offs_m, offs_n, NC, ATOMIC: tl.constexpr, ACCUMULATE: tl.constexpr
):
    """Write the upper-triangle part of a tile (and, unless ATOMIC, its mirror image).

    ATOMIC: add into the upper triangle only (several programs share the tile); a mirror pass
    follows. Otherwise this program owns the tile: Out[m, n] (m ≤ n) and Out[n, m] (m < n) get the
    same value, so Out stays exactly symmetric; with ACCUMULATE the old *upper* value is added.
    """
    inb = (offs_m[:, None] < NC) & (offs_n[None, :] < NC)
    upper = inb & (offs_m[:, None] <= offs_n[None, :])
    om = offs_m.to(tl.int64)
    on = offs_n.to(tl.int64)
    p_up = OUT + om[:, None] * stride_om + on[None, :] * stride_on
    if ATOMIC:
        tl.atomic_add(p_up, acc, mask=upper, sem="relaxed")
    else:
        if ACCUMULATE:
            acc += tl.load(p_up, mask=upper, other=0.0)
        tl.store(p_up, acc, mask=upper)
        strict = inb & (offs_m[:, None] < offs_n[None, :])
        p_lo = OUT + on[None, :] * stride_om + om[:, None] * stride_on
        tl.store(p_lo, acc, mask=strict)


@triton.jit(do_not_specialize=["NK", "k_per_split", "win_steps"])
def _gram_syrk_kernel(
    X,
    stride_xk,
    stride_xc,  # X[k, c]; NK reduction length, NC output size
    NK,
    NC,
    W,  # weights: W[0] (W_MODE 1), W[k] (2) or W[c] (3, the N×N kernel's √w scaling)
    MU,  # centre μ: MU[c] (MU_MODE 1) or MU[k] (2)
    FLAG,  # int32 [1]: "weights are uniform", read by guarded launches
    OUT,
    stride_om,
    stride_on,
    k_per_split,  # rows of the reduction per program along grid axis 1 (a multiple of BK·win_steps)
    win_steps,  # BK-blocks summed into a partial before it is promoted
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP: tl.constexpr,
    W_MODE: tl.constexpr,
    MU_MODE: tl.constexpr,
    PA: tl.constexpr,
    PB: tl.constexpr,  # 0 = native 16-bit operands; 1/3 = bf16 pieces (see _split_products)
    ACC64: tl.constexpr,
    EVEN_K: tl.constexpr,
    EVEN_C: tl.constexpr,
    WIDE: tl.constexpr,  # no row / column masks; 64-bit offsets
    GUARD: tl.constexpr,  # 0 always run; 1 only if FLAG[0] != 0; 2 only if FLAG[0] == 0
    ATOMIC: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    FLATTEN: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Out (+)= Σ_k A[k, :]ᵀ B[k, :] over this program's upper tile and reduction range."""
    if GUARD == 1:  # noqa: SIM102 (constexpr test, then a runtime one)
        if tl.load(FLAG) == 0:
            return
    if GUARD == 2:  # noqa: SIM102
        if tl.load(FLAG) != 0:
            return
    pid_m, pid_n = _tile_coords(NC, BM, BN, GROUP)
    if pid_n * BN + (BN - 1) < pid_m * BM:
        return  # entirely below the diagonal
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask_m = offs_m < NC
    mask_n = offs_n < NC
    offs_k = tl.arange(0, BK)
    # k_per_split is a multiple of BK·win_steps: saying so keeps the row base aligned when the
    # reduction index is the contiguous one (the N×N kernel), so loads vectorise and pipeline.
    k_lo = tl.multiple_of(tl.program_id(1) * k_per_split, BK)
    k_hi = tl.minimum(k_lo + k_per_split, NK)
    if ACC64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    if MU_MODE == 1:
        mu_m = tl.load(MU + offs_m, mask=mask_m, other=0.0).to(cdt)
        mu_n = tl.load(MU + offs_n, mask=mask_n, other=0.0).to(cdt)
    # A scalar 64-bit base pointer walks the rows (N·d may exceed 2³¹); the tile offsets stay
    # 32-bit unless the launcher says they cannot (WIDE). 64-bit pointer tiles would cost 128
    # registers on top of the two accumulators and spill.
    if WIDE:
        off_a = offs_k.to(tl.int64)[:, None] * stride_xk + offs_m.to(tl.int64)[None, :] * stride_xc
        off_b = offs_k.to(tl.int64)[:, None] * stride_xk + offs_n.to(tl.int64)[None, :] * stride_xc
    else:
        off_a = offs_k[:, None] * stride_xk + offs_m[None, :] * stride_xc
        off_b = offs_k[:, None] * stride_xk + offs_n[None, :] * stride_xc
    base = X + k_lo.to(tl.int64) * stride_xk
    acc = tl.zeros((BM, BN), dtype=cdt)
    n_win = tl.cdiv(k_hi - k_lo, BK * win_steps)
    for w in tl.range(0, n_win, flatten=FLATTEN):
        part = tl.zeros((BM, BN), dtype=cdt)
        for s in range(0, win_steps):
            rk = k_lo + (w * win_steps + s) * BK + offs_k
            mk = rk < k_hi
            if EVEN_K and EVEN_C:
                a = tl.load(base + off_a)
                b = tl.load(base + off_b)
            elif EVEN_K:  # column masks only: loads along the contiguous rows still vectorise
                a = tl.load(base + off_a, mask=mask_m[None, :], other=0.0)
                b = tl.load(base + off_b, mask=mask_n[None, :], other=0.0)
            else:
                a = tl.load(base + off_a, mask=mk[:, None] & mask_m[None, :], other=0.0)
                b = tl.load(base + off_b, mask=mk[:, None] & mask_n[None, :], other=0.0)
            base += BK * stride_xk
            if PA == 0:
                part = _dot_tn(a, b, part, INTERPRET)
            else:
                va = a.to(cdt)
                vb = b.to(cdt)
                if MU_MODE == 1:
                    va = tl.where(mk[:, None], va - mu_m[None, :], 0.0)
                    vb = tl.where(mk[:, None], vb - mu_n[None, :], 0.0)
                if MU_MODE == 2:
                    mu_k = tl.load(MU + rk, mask=mk, other=0.0).to(cdt)
                    va = tl.where(mask_m[None, :], va - mu_k[:, None], 0.0)
                    vb = tl.where(mask_n[None, :], vb - mu_k[:, None], 0.0)
                if W_MODE == 2:
                    va = va * tl.load(W + rk, mask=mk, other=0.0).to(cdt)[:, None]
                if ACC64:
                    part = _dot64_tn(va, vb, part)
                else:
                    part = _split_products(va, vb, part, PA, PB, INTERPRET)
        acc += part
    if W_MODE == 1:
        acc = acc * tl.load(W).to(cdt)
    if W_MODE == 3:
        s_m = tl.sqrt(tl.load(W + offs_m, mask=mask_m, other=0.0).to(cdt))
        s_n = tl.sqrt(tl.load(W + offs_n, mask=mask_n, other=0.0).to(cdt))
        acc = acc * s_m[:, None] * s_n[None, :]
    _store_upper_mirror(OUT, stride_om, stride_on, acc, offs_m, offs_n, NC, ATOMIC, ACCUMULATE)


@triton.jit
def _mirror_upper_kernel(OUT, stride_om, stride_on, NC, B: tl.constexpr):
    """Out[i, j] = Out[j, i] for i > j: completes a matrix whose upper triangle was accumulated."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_n > pid_m:
        return
    offs_m = pid_m * B + tl.arange(0, B)
    offs_n = pid_n * B + tl.arange(0, B)
    lower = (offs_m[:, None] < NC) & (offs_n[None, :] < NC) & (offs_m[:, None] > offs_n[None, :])
    # 64-bit offsets: an N×N kernel matrix passes 2³¹ elements at N = 46341.
    om = offs_m.to(tl.int64)
    on = offs_n.to(tl.int64)
    v = tl.load(OUT + on[None, :] * stride_om + om[:, None] * stride_on, mask=lower, other=0.0)
    tl.store(OUT + om[:, None] * stride_om + on[None, :] * stride_on, v, mask=lower)
