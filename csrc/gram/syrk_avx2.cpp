// AVX2+FMA SYRK (lower triangle of XᵀX, row-major) for small/medium d and long K.
//
// Design (BLIS-like, one packed copy serving both operands):
//  * Rows are processed in K blocks of kc rows. Each block of X (kc × d) is packed once into
//    "strips" of W = 2 vectors of columns (16 floats / 8 doubles): strip s holds, for each row k
//    of the block, the W values X[k, sW .. sW+W) contiguously (one 64-byte line per k), zero padded
//    past d. Both roles read this one copy: the column operand (j) loads the strip's two vectors,
//    the row operand (i) broadcasts 4 consecutive values of a strip (offset 0, 4, 8 or 12).
//  * Micro-kernel: 4 rows (broadcasts) × 2 vectors (16 fp32 / 8 fp64 columns) = 8 accumulators.
//    On Zen 1 (one 256-bit FMA per cycle, 5-cycle latency) 8 independent accumulators hide the
//    latency, and 4 broadcasts + 2 loads per 8 FMAs leave the load pipes room; measured in L1 it
//    runs at ~98% of peak, as fast as 6×16 while needing only this single packed layout.
//  * For each pair of strips (si >= sj) the 4 micro-tiles of the W×W block run back to back on the
//    same two strips; sj is the outer loop, so the column strip is reused across all si while the
//    row strips stream from L2 (kc = 512: 32 KiB per strip, 512 KiB packed at d = 256). Smaller
//    kc (strips in L1) measured no faster: the kernel's L2 traffic is ~8 B/cycle, well within
//    Zen 1's L2 bandwidth, and larger blocks mean fewer passes over C.
//  * Only blocks touching the lower triangle are computed; on a diagonal block the two upper
//    micro-tiles only need the first vector of columns, so they use a 4×1-vector kernel.
//  * The first K block writes C (beta = 0: C never read), later blocks add. Edge tiles (past d)
//    go through a small buffer so nothing outside the d×d triangle's rows/columns is touched.
#include "syrk_avx2.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace effrank_fast {

bool syrk_avx2_available() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}

namespace {

#define EFF_AVX2 __attribute__((target("avx2,fma")))

// Vector traits: one 256-bit register of fp32 or fp64.
struct F32 {
  using T = float;
  using V = __m256;
  static constexpr int L = 8;
  EFF_AVX2 static V zero() { return _mm256_setzero_ps(); }
  EFF_AVX2 static V load(const T* p) { return _mm256_load_ps(p); }
  EFF_AVX2 static V loadu(const T* p) { return _mm256_loadu_ps(p); }
  EFF_AVX2 static void storeu(T* p, V v) { _mm256_storeu_ps(p, v); }
  EFF_AVX2 static V bcast(const T* p) { return _mm256_broadcast_ss(p); }
  EFF_AVX2 static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  EFF_AVX2 static V add(V a, V b) { return _mm256_add_ps(a, b); }
};
struct F64 {
  using T = double;
  using V = __m256d;
  static constexpr int L = 4;
  EFF_AVX2 static V zero() { return _mm256_setzero_pd(); }
  EFF_AVX2 static V load(const T* p) { return _mm256_load_pd(p); }
  EFF_AVX2 static V loadu(const T* p) { return _mm256_loadu_pd(p); }
  EFF_AVX2 static void storeu(T* p, V v) { _mm256_storeu_pd(p, v); }
  EFF_AVX2 static V bcast(const T* p) { return _mm256_broadcast_sd(p); }
  EFF_AVX2 static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  EFF_AVX2 static V add(V a, V b) { return _mm256_add_pd(a, b); }
};

constexpr int MR = 4;  // rows of a micro-tile (broadcast operand)

// Stores one accumulator vector into C row segment p (n valid lanes; n == L is the fast path).
template <class S>
EFF_AVX2 inline void put(typename S::T* p, typename S::V v, bool add, int n) {
  if (n >= S::L) {
    S::storeu(p, add ? S::add(S::loadu(p), v) : v);
    return;
  }
  alignas(32) typename S::T tmp[S::L];
  S::storeu(tmp, v);
  for (int t = 0; t < n; ++t) p[t] = add ? p[t] + tmp[t] : tmp[t];
}

// C[0:mr, 0:nr] (row stride ldc) (+)= Σ_k a[k*W + m] * b[k*W + n] for m < 4, n < NV*L.
// a: row strip + offset of the 4 rows; b: column strip (aligned). Named accumulators (not an
// array): gcc keeps an accumulator array in memory otherwise, halving the speed.
template <class S, int NV>
EFF_AVX2 __attribute__((noinline)) void micro(const typename S::T* __restrict a, const typename S::T* __restrict b,
                                              int64_t kc, typename S::T* c, int64_t ldc, bool add, int mr, int nr) {
  using V = typename S::V;
  constexpr int W = 2 * S::L;
  V c00 = S::zero(), c01 = S::zero(), c10 = S::zero(), c11 = S::zero();
  V c20 = S::zero(), c21 = S::zero(), c30 = S::zero(), c31 = S::zero();
  if constexpr (NV == 2) {
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
      const typename S::T* ak = a + k * W;
      const V b0 = S::load(b + k * W), b1 = S::load(b + k * W + S::L);
      V x = S::bcast(ak + 0);
      c00 = S::fma(x, b0, c00), c01 = S::fma(x, b1, c01);
      x = S::bcast(ak + 1);
      c10 = S::fma(x, b0, c10), c11 = S::fma(x, b1, c11);
      x = S::bcast(ak + 2);
      c20 = S::fma(x, b0, c20), c21 = S::fma(x, b1, c21);
      x = S::bcast(ak + 3);
      c30 = S::fma(x, b0, c30), c31 = S::fma(x, b1, c31);
    }
  } else {
    // One vector of columns: even and odd k go to separate accumulators (c?0 / c?1), so 8
    // independent FMA chains still cover the FMA latency; they are summed below.
    int64_t k = 0;
#pragma GCC unroll 2
    for (; k + 1 < kc; k += 2) {
      const typename S::T* ak = a + k * W;
      const V b0 = S::load(b + k * W), b1 = S::load(b + k * W + W);
      c00 = S::fma(S::bcast(ak + 0), b0, c00), c01 = S::fma(S::bcast(ak + W + 0), b1, c01);
      c10 = S::fma(S::bcast(ak + 1), b0, c10), c11 = S::fma(S::bcast(ak + W + 1), b1, c11);
      c20 = S::fma(S::bcast(ak + 2), b0, c20), c21 = S::fma(S::bcast(ak + W + 2), b1, c21);
      c30 = S::fma(S::bcast(ak + 3), b0, c30), c31 = S::fma(S::bcast(ak + W + 3), b1, c31);
    }
    if (k < kc) {
      const typename S::T* ak = a + k * W;
      const V b0 = S::load(b + k * W);
      c00 = S::fma(S::bcast(ak + 0), b0, c00), c10 = S::fma(S::bcast(ak + 1), b0, c10);
      c20 = S::fma(S::bcast(ak + 2), b0, c20), c30 = S::fma(S::bcast(ak + 3), b0, c30);
    }
    c00 = S::add(c00, c01), c10 = S::add(c10, c11), c20 = S::add(c20, c21), c30 = S::add(c30, c31);
  }
  const V acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
  for (int m = 0; m < mr; ++m) {
    typename S::T* row = c + m * ldc;
    for (int v = 0; v < NV; ++v) {
      const int n = nr - v * S::L;
      if (n > 0) put<S>(row + v * S::L, acc[m][v], add, n);
    }
  }
}

// Packs rows [0, kc) of X (row stride ldx, d columns) into strips of W columns (see the top).
template <class S>
EFF_AVX2 void pack(const typename S::T* X, int64_t kc, int64_t d, int64_t ldx, typename S::T* P) {
  using T = typename S::T;
  constexpr int W = 2 * S::L;
  const int64_t full = d / W, rem = d - full * W;
  for (int64_t k = 0; k < kc; ++k) {
    const T* src = X + k * ldx;
    T* dst = P + k * W;
    for (int64_t s = 0; s < full; ++s) {
      const T* q = src + s * W;
      T* o = dst + s * kc * W;
      S::storeu(o, S::loadu(q));
      S::storeu(o + S::L, S::loadu(q + S::L));
    }
    if (rem) {
      T* o = dst + full * kc * W;
      int64_t t = 0;
      for (; t < rem; ++t) o[t] = src[full * W + t];
      for (; t < W; ++t) o[t] = T(0);
    }
  }
}

// Rows of a K block. Measured on Zen 1: 256..768 rows are within noise of each other, 512 a little
// ahead (fewer passes over C, which matters most at small d). The packed block is kept under
// ~2 MiB for very wide d. Blocks are balanced so that the last one is not tiny.
template <class T>
int64_t pick_kc(int64_t rows, int64_t d_pad) {
  const int64_t budget = int64_t(2) << 20;  // bytes of packed block
  const int64_t kmax = std::max<int64_t>(128, std::min<int64_t>(512, budget / (d_pad * int64_t(sizeof(T)))));
  const int64_t nblk = (rows + kmax - 1) / kmax;
  return (rows + nblk - 1) / nblk;
}

// 64-byte aligned per-thread scratch, grown on demand and kept (the caller's threads reuse it).
struct Scratch {
  void* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > n) {
      std::free(p);
      n = (bytes + 4095) & ~size_t(4095);
      p = std::aligned_alloc(64, n);
      if (p == nullptr) {
        n = 0;
        throw std::bad_alloc();
      }
    }
    return p;
  }
};

template <class S>
void syrk_impl(const typename S::T* X, int64_t rows, int64_t d, int64_t ldx, typename S::T* C, int64_t ldc,
               bool accumulate) {
  using T = typename S::T;
  constexpr int W = 2 * S::L;
  if (d <= 0) return;
  if (rows <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < d; ++i) std::fill(C + i * ldc, C + i * ldc + i + 1, T(0));
    return;
  }
  const int64_t ns = (d + W - 1) / W;  // strips
  const int64_t kc_max = pick_kc<T>(rows, ns * W);
  thread_local Scratch scratch;
  T* P = static_cast<T*>(scratch.get(sizeof(T) * size_t(kc_max) * size_t(ns * W)));
  bool add = accumulate;
  for (int64_t r0 = 0; r0 < rows; r0 += kc_max) {
    const int64_t kc = std::min(kc_max, rows - r0);
    pack<S>(X + r0 * ldx, kc, d, ldx, P);
    for (int64_t sj = 0; sj < ns; ++sj) {
      const T* b = P + sj * kc * W;
      const int64_t j0 = sj * W;
      const int nr = int(std::min<int64_t>(W, d - j0));
      for (int64_t si = sj; si < ns; ++si) {
        const T* a = P + si * kc * W;
        for (int q = 0; q < W / MR; ++q) {
          const int64_t i0 = si * W + q * MR;
          if (i0 >= d) break;
          const int mr = int(std::min<int64_t>(MR, d - i0));
          T* c = C + i0 * ldc + j0;
          // On the diagonal block, rows i0 < j0 + L only reach the first vector of columns.
          if (si == sj && i0 + MR <= j0 + S::L)
            micro<S, 1>(a + q * MR, b, kc, c, ldc, add, mr, std::min(nr, S::L));
          else
            micro<S, 2>(a + q * MR, b, kc, c, ldc, add, mr, nr);
        }
      }
    }
    add = true;
  }
}

}  // namespace

void syrk_lower_avx2(const float* X, int64_t rows, int64_t d, int64_t ldx, float* C, int64_t ldc, bool accumulate) {
  syrk_impl<F32>(X, rows, d, ldx, C, ldc, accumulate);
}

void syrk_lower_avx2(const double* X, int64_t rows, int64_t d, int64_t ldx, double* C, int64_t ldc,
                     bool accumulate) {
  syrk_impl<F64>(X, rows, d, ldx, C, ldc, accumulate);
}

}  // namespace effrank_fast

#else  // not x86: no kernel; syrk_cpu.cpp then takes MKL's (if any) or the threaded BLAS.
#include <cstdlib>

namespace effrank_fast {
bool syrk_avx2_available() { return false; }
void syrk_lower_avx2(const float*, int64_t, int64_t, int64_t, float*, int64_t, bool) { std::abort(); }
void syrk_lower_avx2(const double*, int64_t, int64_t, int64_t, double*, int64_t, bool) { std::abort(); }
}  // namespace effrank_fast
#endif
