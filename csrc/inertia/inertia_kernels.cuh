#pragma once
// The CUDA kernels of effrank_fast::inertia and the launch sequence of one factorisation.
//
// Kept apart from the torch glue (inertia_cuda.cu) so that the same source also compiles on the
// CPU under tests/cuda_emulation/, which emulates CUDA threads, barriers, shuffles and atomics and
// checks these kernels without a GPU. The includer defines EFF_CHECK_LAUNCH() (and, for the
// emulation, EFF_LAUNCH / EFF_DYNAMIC_SMEM); nothing here depends on torch.
//
// Data layout: the work matrix A is column-major with leading dimension d, lower triangle used
// (A(i, j) = A[i + j·d]); it is filled from the row-major lower triangle of M, the triangle
// torch.linalg.eigvalsh and the CPU kernel read. Per threshold, with 64-column leaves inside panels of
// width P:
//   for each panel [k0, k0+P):
//     for each leaf [j0, j0+64) of the panel:
//       leaf_kernel    (1 CTA)    unblocked LDLᵀ of the 64×64 diagonal block in shared memory
//       panel_kernel   (⌈m/64⌉)   W = A21 L11⁻ᵀ by substitution in registers, L21 = W D⁻¹
//       gemm_nt                   rank-64 update of the rest of the panel's columns
//     trailing_update             rank-P update of the trailing lower triangle (DGEMM per block column,
//                                 or DSYRKX, on the fp64 tensor cores)
//   finalize_kernel (1 CTA)       count, diagnostics, ‖A‖_F and the error bound δ (inertia_common.h)
#include <algorithm>
#include <cstdint>

#include "inertia/inertia_common.h"

#ifndef EFF_LAUNCH
#define EFF_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif
#ifndef EFF_DYNAMIC_SMEM
#define EFF_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif

namespace effrank_fast {
namespace inertia_kernels {

using inertia::sticky_max;

constexpr int kLeaf = 64;         // leaf (diagonal block) size
constexpr int kLds = kLeaf + 1;   // padded shared-memory column stride (no bank conflicts)
constexpr int kThreads = 256;

typedef unsigned long long u64;

// max of non-negative doubles through their bit patterns (monotone for +0 … +inf, NaN above inf).
__device__ inline void atomic_max_nonneg(u64* addr, double v) { atomicMax(addr, __double_as_longlong(fabs(v))); }

__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) v = sticky_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// A(i, j) = M[i][j] − τ·[i = j] for i ≥ j (row-major M → column-major A, through a shared tile so
// both sides are coalesced); also ‖A‖_F² of the symmetric A read from its lower triangle.
// Grid (⌈d/32⌉, ⌈d/32⌉), block 32×8.
template <typename scalar_t>
__global__ void shift_copy_kernel(const scalar_t* __restrict__ m, int64_t d, const double* __restrict__ tau,
                                  double* __restrict__ a, double* __restrict__ frob_sq) {
  __shared__ double tile[32][33];
  __shared__ double red[8];
  const int64_t ti = blockIdx.y, tj = blockIdx.x;  // tile row / column of M
  if (ti < tj) return;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const double t = *tau;
  for (int r = ty; r < 32; r += 8) {
    const int64_t i = ti * 32 + r, j = tj * 32 + tx;
    double v = 0.0;
    if (i < d && j < d) {
      v = static_cast<double>(m[i * d + j]);
      if (i == j) v -= t;
    }
    tile[r][tx] = v;
  }
  __syncthreads();
  double sq = 0.0;
  for (int c = ty; c < 32; c += 8) {
    const int64_t i = ti * 32 + tx, j = tj * 32 + c;
    if (i < d && j < d && i >= j) {
      const double v = tile[tx][c];
      a[i + j * d] = v;
      sq += (i == j ? 1.0 : 2.0) * v * v;
    }
  }
  sq = warp_sum(sq);
  const int warp = (ty * 32 + tx) >> 5, lane = tx & 31;
  if (lane == 0) red[warp] = sq;
  __syncthreads();
  if (ty == 0 && tx == 0) {
    double b = 0.0;
    for (int w = 0; w < 8; ++w) b += red[w];
    atomicAdd(frob_sq, b);
  }
}

// Unblocked LDLᵀ of the jb×jb diagonal block at (j0, j0), in shared memory. Writes L (strict lower)
// and D back into A, D into piv, and starts the column statistics of L (Σ L_ij², max |L_ij|) that the
// panel kernel completes with atomics. A zero pivot gives inf/NaN, which finalize_kernel reports.
__global__ void __launch_bounds__(kThreads) leaf_kernel(double* __restrict__ a, int64_t lda, int64_t j0, int jb,
                                                        double* __restrict__ piv, double* __restrict__ colsq,
                                                        u64* __restrict__ colmax) {
  __shared__ double s[kLeaf * kLds];  // s[j*kLds + i] = A(j0+i, j0+j)
  __shared__ double w[kLeaf];
  const int tid = threadIdx.x;
  for (int idx = tid; idx < kLeaf * kLeaf; idx += kThreads) {
    const int i = idx % kLeaf, j = idx / kLeaf;
    double v = (i == j) ? 1.0 : 0.0;
    if (i < jb && j < jb && i >= j) v = a[(j0 + i) + (j0 + j) * lda];
    s[j * kLds + i] = v;
  }
  __syncthreads();
  const int row = tid & (kLeaf - 1), group = tid >> 6;  // 4 groups of 64 threads
  for (int j = 0; j < jb; ++j) {
    if (tid < kLeaf && tid > j && tid < jb) {
      const double wi = s[j * kLds + tid];
      w[tid] = wi;
      s[j * kLds + tid] = wi / s[j * kLds + j];
    }
    __syncthreads();
    if (row > j && row < jb) {
      const double wi = w[row];
      for (int l = j + 1 + group; l <= row; l += 4) s[l * kLds + row] -= wi * s[j * kLds + l];
    }
    __syncthreads();
  }
  for (int idx = tid; idx < kLeaf * kLeaf; idx += kThreads) {
    const int i = idx % kLeaf, j = idx / kLeaf;
    if (i < jb && j < i) a[(j0 + i) + (j0 + j) * lda] = s[j * kLds + i];
  }
  if (tid < jb) {
    piv[j0 + tid] = s[tid * kLds + tid];
    double sq = 0.0, mx = 1.0;
    for (int i = tid + 1; i < jb; ++i) {
      const double l = s[tid * kLds + i];
      sq += l * l;
      mx = sticky_max(mx, fabs(l));
    }
    colsq[j0 + tid] = sq;
    colmax[j0 + tid] = static_cast<u64>(__double_as_longlong(mx));
  }
}

// Rows [row0, row0+m) of the leaf's block column: W = A21 L11⁻ᵀ by forward substitution (each row
// independent; thread (r, g) of a CTA holds row r's columns g, g+4, …, g+60 in registers and the
// owner of column c broadcasts W(r, c) by a shuffle), then L21 = W D⁻¹. W goes to the panel buffer
// (for the GEMM updates), L21 back into A. One CTA per 64 rows.
constexpr size_t kPanelSmem = 2 * kLeaf * kLds * sizeof(double) + 2 * 8 * kLeaf * sizeof(double);

__global__ void __launch_bounds__(kThreads) panel_kernel(double* __restrict__ a, int64_t lda, int64_t j0, int jb,
                                                         int64_t row0, int64_t m, const double* __restrict__ piv,
                                                         double* __restrict__ wbuf, int64_t ldw, int64_t wcol,
                                                         double* __restrict__ colsq, u64* __restrict__ colmax) {
  EFF_DYNAMIC_SMEM(double, smem);
  double* sl = smem;                    // sl[c*kLds + c'] = L11(c', c)
  double* sa = sl + kLeaf * kLds;       // sa[c*kLds + r]  = A21(r, c), later W(r, c) / L21(r, c)
  double* rsum = sa + kLeaf * kLds;     // [8 warps][64 columns]
  double* rmax = rsum + 8 * kLeaf;
  const int tid = threadIdx.x;
  const int64_t rbase = row0 + static_cast<int64_t>(blockIdx.x) * kLeaf;
  const int64_t rows = std::min<int64_t>(kLeaf, row0 + m - rbase);
  for (int idx = tid; idx < kLeaf * kLeaf; idx += kThreads) {
    const int i = idx % kLeaf, c = idx / kLeaf;
    sl[c * kLds + i] = (i < jb && c < jb && i > c) ? a[(j0 + i) + (j0 + c) * lda] : 0.0;
    sa[c * kLds + i] = (i < rows && c < jb) ? a[(rbase + i) + (j0 + c) * lda] : 0.0;
  }
  __syncthreads();

  const int r = tid >> 2, g = tid & 3, lane = tid & 31;
  double x[16];
#pragma unroll
  for (int q = 0; q < 16; ++q) x[q] = sa[(g + 4 * q) * kLds + r];
#pragma unroll
  for (int c = 0; c < kLeaf; ++c) {
    // x[c >> 2] of the lane that owns column c (g == c & 3) is final: broadcast it to the row's lanes.
    const double wc = __shfl_sync(0xffffffffu, x[c >> 2], (lane & ~3) | (c & 3));
    if (c < jb) {
#pragma unroll
      for (int q = c >> 2; q < 16; ++q) {
        const int cc = g + 4 * q;
        if (cc > c) x[q] -= wc * sl[c * kLds + cc];
      }
    }
  }
  __syncthreads();  // everyone has read sa
#pragma unroll
  for (int q = 0; q < 16; ++q) sa[(g + 4 * q) * kLds + r] = x[q];
  __syncthreads();

  // Write W and L21 coalesced; accumulate column statistics of L21.
  const int rr = tid & (kLeaf - 1), cg = tid >> 6;  // row rr, columns cg, cg+4, ...
#pragma unroll
  for (int q = 0; q < 16; ++q) {
    const int c = cg + 4 * q;
    if (c < jb && rr < rows) {
      const double wv = sa[c * kLds + rr];
      const double l = wv / piv[j0 + c];
      wbuf[(rbase + rr) + (wcol + c) * ldw] = wv;
      a[(rbase + rr) + (j0 + c) * lda] = l;
      sa[c * kLds + rr] = l;
    }
  }
  __syncthreads();
  // Column reductions: warp w of the CTA covers rows 32·(w&1)..+32 of columns (w>>1) + 4q.
  const int warp = tid >> 5, half = warp & 1;
#pragma unroll
  for (int q = 0; q < 16; ++q) {
    const int c = cg + 4 * q;
    const int ri = half * 32 + lane;
    const double l = (c < jb && ri < rows) ? sa[c * kLds + ri] : 0.0;
    const double s2 = warp_sum(l * l);
    const double mx = warp_max(fabs(l));
    if (lane == 0) {
      rsum[warp * kLeaf + c] = s2;
      rmax[warp * kLeaf + c] = mx;
    }
  }
  __syncthreads();
  if (tid < jb) {
    // column tid was reduced by warps 2·(tid & 3) and 2·(tid & 3) + 1
    const int w0 = 2 * (tid & 3);
    const double s2 = rsum[w0 * kLeaf + tid] + rsum[(w0 + 1) * kLeaf + tid];
    const double mx = sticky_max(rmax[w0 * kLeaf + tid], rmax[(w0 + 1) * kLeaf + tid]);
    atomicAdd(colsq + j0 + tid, s2);
    atomic_max_nonneg(colmax + j0 + tid, mx);
  }
}

// Count, diagnostics and δ from the pivots and column statistics (one CTA of 1024 threads); then,
// with δ known, the pivots inside the uncertainty band |D_ii| ≤ δ (a second pass over D).
__global__ void finalize_kernel(const double* __restrict__ piv, const double* __restrict__ colsq,
                                const u64* __restrict__ colmax, int64_t d, double* __restrict__ scale,
                                int64_t* __restrict__ counts, double* __restrict__ min_piv_rel,
                                double* __restrict__ growth_out, int64_t* __restrict__ band_out,
                                double* __restrict__ delta_out, double* __restrict__ max_l_out) {
  __shared__ double s_min[32], s_growth[32], s_trace[32], s_maxl[32], s_delta;
  __shared__ long long s_pos[32], s_bad[32];
  const double norm = sqrt(*scale);  // ‖A‖_F (scale holds ‖A‖_F² until the end of this kernel)
  double mn = INFINITY, gr = 0.0, tr = 0.0, ml = 1.0;
  long long pos = 0, bad = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const double p = piv[i], ap = fabs(p);
    const double cm = __longlong_as_double(static_cast<long long>(colmax[i]));
    if (!(ap > 0.0) || !isfinite(p) || !isfinite(cm) || !isfinite(colsq[i])) bad = 1;
    pos += p > 0.0;
    mn = fmin(mn, ap);
    gr = sticky_max(gr, ap * cm * cm);
    ml = sticky_max(ml, cm);
    tr += ap * (1.0 + colsq[i]);
  }
  for (int o = 16; o > 0; o >>= 1) {
    mn = fmin(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    gr = sticky_max(gr, __shfl_xor_sync(0xffffffffu, gr, o));
    ml = sticky_max(ml, __shfl_xor_sync(0xffffffffu, ml, o));
    tr += __shfl_xor_sync(0xffffffffu, tr, o);
    pos += __shfl_xor_sync(0xffffffffu, pos, o);
    bad |= __shfl_xor_sync(0xffffffffu, bad, o);
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    s_min[warp] = mn;
    s_growth[warp] = gr;
    s_maxl[warp] = ml;
    s_trace[warp] = tr;
    s_pos[warp] = pos;
    s_bad[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < nwarps; ++w) {
      mn = fmin(mn, s_min[w]);
      gr = sticky_max(gr, s_growth[w]);
      ml = sticky_max(ml, s_maxl[w]);
      tr += s_trace[w];
      pos += s_pos[w];
      bad |= s_bad[w];
    }
    *scale = norm;
    const double norm_safe = fmax(norm, 2.2250738585072014e-308);
    const bool ok = !bad && isfinite(norm) && isfinite(gr) && isfinite(tr);
    *counts = pos;  // meaningless when δ = inf (the caller falls back)
    *min_piv_rel = ok ? mn / norm_safe : 0.0;
    *growth_out = ok ? gr / norm_safe : INFINITY;
    *max_l_out = ok ? ml : INFINITY;
    const double delta = inertia::error_bound(d, tr, norm);
    s_delta = (ok && isfinite(delta)) ? delta : INFINITY;
    *delta_out = s_delta;
  }
  __syncthreads();
  const double delta = s_delta;
  long long band = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) band += !(fabs(piv[i]) > delta);
  for (int o = 16; o > 0; o >>= 1) band += __shfl_xor_sync(0xffffffffu, band, o);
  if (lane == 0) s_pos[warp] = band;  // s_pos is free again: thread 0 read it before the barrier
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < nwarps; ++w) band += s_pos[w];
    *band_out = band;
  }
}

enum class Trailing { kSyrkx, kGemm, kBlocks };

// C(n2×n2, lower) −= W(n2×pw) · L(n2×pw)ᵀ, all column-major with leading dimension ld.
template <class Blas>
void trailing_update(Blas& blas, Trailing mode, int64_t n2, int64_t pw, const double* w, const double* l, double* c,
                     int64_t ld, int64_t col_block) {
  if (mode == Trailing::kSyrkx) {
    blas.syrkx_ln(n2, pw, w, ld, l, ld, c, ld);
    return;
  }
  // kGemm: the whole square (twice the flops, one call); kBlocks: one GEMM per block column of the
  // lower triangle (rows from the block's diagonal down).
  const int64_t cb = mode == Trailing::kGemm ? n2 : col_block;
  for (int64_t c0 = 0; c0 < n2; c0 += cb) {
    const int64_t nc = std::min(cb, n2 - c0);
    blas.gemm_nt(n2 - c0, nc, pw, w + c0, ld, l + c0, ld, c + c0 + c0 * ld, ld);
  }
}


// Workspace of one factorisation (device pointers); colmax holds doubles as bit patterns.
struct Work {
  double* a;      // column-major d×d, lower triangle
  double* w;      // W = L·D of the current panel, d × panel, column-major
  double* piv;    // D [d]
  double* colsq;  // Σ_i L_ij² [d]
  u64* colmax;    // max_i |L_ij| [d]
};

struct Plan {
  int64_t d, panel, col_block;
  Trailing trailing;
};

// One threshold: copy/shift, factor, finalize. All launches and BLAS calls on `stream`; `blas`
// provides gemm_nt (C −= A·Bᵀ) and syrkx_ln (lower(C) −= lower(A·Bᵀ)), column-major.
template <class Blas, typename scalar_t>
void factor_threshold(Blas& blas, cudaStream_t stream, const Plan& plan, const Work& ws, const scalar_t* m,
                      const double* tau, double* scale, int64_t* count, double* min_piv, double* growth,
                      int64_t* band, double* delta, double* max_l) {
  const int64_t d = plan.d;
  const dim3 copy_grid(static_cast<unsigned>((d + 31) / 32), static_cast<unsigned>((d + 31) / 32));
  const dim3 copy_block(32, 8);
  EFF_LAUNCH(shift_copy_kernel<scalar_t>, copy_grid, copy_block, 0, stream)(m, d, tau, ws.a, scale);
  EFF_CHECK_LAUNCH();
  for (int64_t k0 = 0; k0 < d; k0 += plan.panel) {
    const int64_t pw = std::min(plan.panel, d - k0);
    for (int64_t j0 = k0; j0 < k0 + pw; j0 += kLeaf) {
      const int jb = static_cast<int>(std::min<int64_t>(kLeaf, k0 + pw - j0));
      EFF_LAUNCH(leaf_kernel, 1, kThreads, 0, stream)(ws.a, d, j0, jb, ws.piv, ws.colsq, ws.colmax);
      EFF_CHECK_LAUNCH();
      const int64_t row0 = j0 + jb, rows = d - row0;
      if (rows == 0) break;
      const unsigned grid = static_cast<unsigned>((rows + kLeaf - 1) / kLeaf);
      EFF_LAUNCH(panel_kernel, grid, kThreads, kPanelSmem, stream)
      (ws.a, d, j0, jb, row0, rows, ws.piv, ws.w, d, j0 - k0, ws.colsq, ws.colmax);
      EFF_CHECK_LAUNCH();
      const int64_t ncols = k0 + pw - row0;  // columns of this panel right of the leaf
      if (ncols > 0) {
        // A[row0:, row0:k0+pw] −= W[row0:, leaf] · L[row0:k0+pw, leaf]ᵀ
        blas.gemm_nt(rows, ncols, jb, ws.w + row0 + (j0 - k0) * d, d, ws.a + row0 + j0 * d, d,
                     ws.a + row0 + row0 * d, d);
      }
    }
    const int64_t r2 = k0 + pw, n2 = d - r2;
    if (n2 > 0) {
      // Trailing lower triangle: A[r2:, r2:] −= W[r2:, panel] · L[r2:, panel]ᵀ (= L D Lᵀ, symmetric).
      trailing_update(blas, plan.trailing, n2, pw, ws.w + r2, ws.a + r2 + k0 * d, ws.a + r2 + r2 * d, d,
                      plan.col_block);
    }
  }
  EFF_LAUNCH(finalize_kernel, 1, 1024, 0, stream)
  (ws.piv, ws.colsq, ws.colmax, d, scale, count, min_piv, growth, band, delta, max_l);
  EFF_CHECK_LAUNCH();
}

}  // namespace inertia_kernels
}  // namespace effrank_fast
