// Exact ε-counts by Sylvester's law of inertia, CUDA: a fused float64 blocked LDLᵀ of M − τI.
//
// Data layout: the work matrix A is column-major with leading dimension d, lower triangle used
// (A(i, j) = A[i + j·d]); it is filled from the row-major lower triangle of M, the triangle
// torch.linalg.eigvalsh and the CPU kernel read. Per threshold, with 64-column leaves inside panels of
// width P (block_size, default 256):
//   for each panel [k0, k0+P):
//     for each leaf [j0, j0+64) of the panel:
//       leaf_kernel    (1 CTA)    unblocked LDLᵀ of the 64×64 diagonal block in shared memory
//       panel_kernel   (⌈m/64⌉)   W = A21 L11⁻ᵀ by substitution in registers, L21 = W D⁻¹
//       cublasDgemm               rank-64 update of the rest of the panel's columns
//     cublasDsyrkx                rank-P update of the trailing lower triangle (fp64 tensor cores)
//   finalize_kernel (1 CTA)       count, diagnostics, ‖A‖_F and the error bound δ (inertia_common.h)
// Everything stays on the current stream: no host synchronisation, no data-dependent host branch.
// EFFRANK_INERTIA_PANEL, EFFRANK_INERTIA_TRAILING (syrkx | gemm | blocks) and EFFRANK_INERTIA_COLBLOCK
// override the defaults for benchmarking.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublas_v2.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "common.h"
#include "inertia/inertia_common.h"

namespace effrank_fast {
namespace {

using inertia::sticky_max;

constexpr int kLeaf = 64;         // leaf (diagonal block) size
constexpr int kLds = kLeaf + 1;   // padded shared-memory column stride (no bank conflicts)
constexpr int kThreads = 256;
constexpr int64_t kDefaultPanel = 256;

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
  extern __shared__ double smem[];
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

// Count, diagnostics and δ from the pivots and column statistics (one CTA of 1024 threads).
__global__ void finalize_kernel(const double* __restrict__ piv, const double* __restrict__ colsq,
                                const u64* __restrict__ colmax, int64_t d, double* __restrict__ scale,
                                double band_rel, int64_t* __restrict__ counts, double* __restrict__ min_piv_rel,
                                double* __restrict__ growth_out, int64_t* __restrict__ band_out,
                                double* __restrict__ delta_out) {
  __shared__ double s_min[32], s_growth[32], s_trace[32];
  __shared__ long long s_pos[32], s_band[32], s_bad[32];
  const double norm = sqrt(*scale);  // ‖A‖_F (scale holds ‖A‖_F² until the end of this kernel)
  const double band_abs = band_rel * norm;
  double mn = INFINITY, gr = 0.0, tr = 0.0;
  long long pos = 0, band = 0, bad = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const double p = piv[i], ap = fabs(p);
    const double cm = __longlong_as_double(static_cast<long long>(colmax[i]));
    if (!(ap > 0.0) || !isfinite(p) || !isfinite(cm) || !isfinite(colsq[i])) bad = 1;
    pos += p > 0.0;
    band += ap <= band_abs;
    mn = fmin(mn, ap);
    gr = sticky_max(gr, ap * cm * cm);
    tr += ap * (1.0 + colsq[i]);
  }
  for (int o = 16; o > 0; o >>= 1) {
    mn = fmin(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    gr = sticky_max(gr, __shfl_xor_sync(0xffffffffu, gr, o));
    tr += __shfl_xor_sync(0xffffffffu, tr, o);
    pos += __shfl_xor_sync(0xffffffffu, pos, o);
    band += __shfl_xor_sync(0xffffffffu, band, o);
    bad |= __shfl_xor_sync(0xffffffffu, bad, o);
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    s_min[warp] = mn;
    s_growth[warp] = gr;
    s_trace[warp] = tr;
    s_pos[warp] = pos;
    s_band[warp] = band;
    s_bad[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < nwarps; ++w) {
      mn = fmin(mn, s_min[w]);
      gr = sticky_max(gr, s_growth[w]);
      tr += s_trace[w];
      pos += s_pos[w];
      band += s_band[w];
      bad |= s_bad[w];
    }
    *scale = norm;
    const double norm_safe = fmax(norm, 2.2250738585072014e-308);
    const bool ok = !bad && isfinite(norm) && isfinite(gr) && isfinite(tr);
    *counts = pos;
    *band_out = band;
    *min_piv_rel = ok ? mn / norm_safe : 0.0;
    *growth_out = ok ? gr / norm_safe : INFINITY;
    const double delta = inertia::error_bound(d, tr, norm);
    *delta_out = (ok && isfinite(delta)) ? delta : INFINITY;
  }
}

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::max<int64_t>(1, std::atoll(v));
}

enum class Trailing { kSyrkx, kGemm, kBlocks };

Trailing trailing_mode() {
  const char* v = std::getenv("EFFRANK_INERTIA_TRAILING");
  if (v != nullptr && std::strcmp(v, "gemm") == 0) return Trailing::kGemm;
  if (v != nullptr && std::strcmp(v, "blocks") == 0) return Trailing::kBlocks;
  return Trailing::kSyrkx;
}

// C(n2×n2, lower) −= W(n2×pw) · L(n2×pw)ᵀ, all column-major with leading dimension ld.
void trailing_update(cublasHandle_t h, Trailing mode, int64_t n2, int64_t pw, const double* w, const double* l,
                     double* c, int64_t ld, int64_t col_block) {
  const double one = 1.0, minus_one = -1.0;
  const int ldi = static_cast<int>(ld);
  if (mode == Trailing::kSyrkx) {
    TORCH_CUDABLAS_CHECK(cublasDsyrkx(h, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(n2),
                                      static_cast<int>(pw), &minus_one, w, ldi, l, ldi, &one, c, ldi));
    return;
  }
  // kGemm: the whole square (twice the flops, one call); kBlocks: one GEMM per block column of the
  // lower triangle (rows from the block's diagonal down).
  const int64_t cb = mode == Trailing::kGemm ? n2 : col_block;
  for (int64_t c0 = 0; c0 < n2; c0 += cb) {
    const int64_t nc = std::min(cb, n2 - c0);
    TORCH_CUDABLAS_CHECK(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n2 - c0), static_cast<int>(nc),
                                     static_cast<int>(pw), &minus_one, w + c0, ldi, l + c0, ldi, &one,
                                     c + c0 + c0 * ld, ldi));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> inertia_cuda(const at::Tensor& gram,
                                                                                    const at::Tensor& thresholds,
                                                                                    double band_rel,
                                                                                    int64_t block_size) {
  EFF_CHECK_SQUARE(gram, "gram");
  EFF_CHECK_FLOAT(gram, "gram");
  TORCH_CHECK(gram.size(0) > 0, "gram must not be empty (d = 0)");
  TORCH_CHECK(thresholds.dim() == 1, "thresholds must be 1-D [E], got ", thresholds.sizes());
  EFF_CHECK_FLOAT(thresholds, "thresholds");
  EFF_CHECK_SAME_DEVICE(gram, thresholds, "gram", "thresholds");
  TORCH_CHECK(block_size >= 0, "block_size must be >= 0 (0 = default), got ", block_size);
  TORCH_CHECK(band_rel >= 0, "band_rel must be non-negative, got ", band_rel);
  TORCH_CHECK(gram.size(0) < (int64_t(1) << 31), "gram is too large for cuBLAS 32-bit dimensions");
  const c10::cuda::CUDAGuard guard(gram.device());
  const int64_t d = gram.size(0), e = thresholds.size(0);
  int64_t panel = block_size > 0 ? block_size : env_int("EFFRANK_INERTIA_PANEL", kDefaultPanel);
  panel = ((panel + kLeaf - 1) / kLeaf) * kLeaf;
  const Trailing trailing = trailing_mode();
  const int64_t col_block = env_int("EFFRANK_INERTIA_COLBLOCK", 1024);

  at::Tensor m = gram.contiguous();
  at::Tensor tau = thresholds.to(at::kDouble).contiguous();
  auto f64 = gram.options().dtype(at::kDouble);
  auto i64 = gram.options().dtype(at::kLong);
  at::Tensor counts = at::empty({e}, i64), band = at::empty({e}, i64);
  at::Tensor min_piv = at::empty({e}, f64), growth = at::empty({e}, f64), delta = at::empty({e}, f64);
  at::Tensor scale = at::zeros({e}, f64);  // ‖A‖_F² accumulated by shift_copy_kernel, then ‖A‖_F
  if (e == 0) return {counts, min_piv, growth, band, delta, scale};

  at::Tensor work = at::empty({d * d}, f64);  // column-major A
  at::Tensor wbuf = at::empty({std::min(panel, d) * d}, f64);
  at::Tensor stats = at::empty({3 * d}, f64);  // piv | colsq | colmax bits
  double* a = work.data_ptr<double>();
  double* w = wbuf.data_ptr<double>();
  double* piv = stats.data_ptr<double>();
  double* colsq = piv + d;
  u64* colmax = reinterpret_cast<u64*>(piv + 2 * d);
  double* scale_p = scale.data_ptr<double>();

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  // Per device and cheap (no synchronisation): allow the panel kernel its 73 KiB of shared memory.
  C10_CUDA_CHECK(cudaFuncSetAttribute(panel_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kPanelSmem)));
  const double one = 1.0, minus_one = -1.0;
  const dim3 copy_grid(static_cast<unsigned>((d + 31) / 32), static_cast<unsigned>((d + 31) / 32));
  const dim3 copy_block(32, 8);

  for (int64_t t = 0; t < e; ++t) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "inertia_shift_copy", [&] {
      shift_copy_kernel<scalar_t><<<copy_grid, copy_block, 0, stream>>>(
          m.data_ptr<scalar_t>(), d, tau.data_ptr<double>() + t, a, scale_p + t);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    for (int64_t k0 = 0; k0 < d; k0 += panel) {
      const int64_t pw = std::min(panel, d - k0);
      for (int64_t j0 = k0; j0 < k0 + pw; j0 += kLeaf) {
        const int jb = static_cast<int>(std::min<int64_t>(kLeaf, k0 + pw - j0));
        leaf_kernel<<<1, kThreads, 0, stream>>>(a, d, j0, jb, piv, colsq, colmax);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const int64_t row0 = j0 + jb, rows = d - row0;
        if (rows == 0) break;
        const unsigned grid = static_cast<unsigned>((rows + kLeaf - 1) / kLeaf);
        panel_kernel<<<grid, kThreads, kPanelSmem, stream>>>(a, d, j0, jb, row0, rows, piv, w, d, j0 - k0, colsq,
                                                              colmax);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const int64_t ncols = k0 + pw - row0;  // columns of this panel right of the leaf
        if (ncols > 0) {
          // A[row0:, row0:k0+pw] −= W[row0:, leaf] · L[row0:k0+pw, leaf]ᵀ
          TORCH_CUDABLAS_CHECK(cublasDgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(rows),
                                           static_cast<int>(ncols), jb, &minus_one, w + row0 + (j0 - k0) * d,
                                           static_cast<int>(d), a + row0 + j0 * d, static_cast<int>(d), &one,
                                           a + row0 + row0 * d, static_cast<int>(d)));
        }
      }
      const int64_t r2 = k0 + pw, n2 = d - r2;
      if (n2 > 0) {
        // Trailing lower triangle: A[r2:, r2:] −= W[r2:, panel] · L[r2:, panel]ᵀ (= L D Lᵀ, symmetric).
        trailing_update(handle, trailing, n2, pw, w + r2, a + r2 + k0 * d, a + r2 + r2 * d, d, col_block);
      }
    }
    finalize_kernel<<<1, 1024, 0, stream>>>(piv, colsq, colmax, d, scale_p + t, band_rel,
                                            counts.data_ptr<int64_t>() + t, min_piv.data_ptr<double>() + t,
                                            growth.data_ptr<double>() + t, band.data_ptr<int64_t>() + t,
                                            delta.data_ptr<double>() + t);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {counts, min_piv, growth, band, delta, scale};
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CUDA, m) { m.impl("inertia", &inertia_cuda); }

}  // namespace effrank_fast
