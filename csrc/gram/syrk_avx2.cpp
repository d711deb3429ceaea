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
//    row strips stream from L2 (kc = 128 since the error estimate rests on short sums, see pick_kc;
//    first 512: 32 KiB per strip, 512 KiB packed at d = 256). Smaller
//    kc (strips in L1) measured no faster: the kernel's L2 traffic is ~8 B/cycle, well within
//    Zen 1's L2 bandwidth, and larger blocks mean fewer passes over C.
//  * Only blocks touching the lower triangle are computed; on a diagonal block the two upper
//    micro-tiles only need the first vector of columns, so they use a 4×1-vector kernel.
//  * The first K block writes C (beta = 0: C never read), later blocks add. Edge tiles (past d)
//    go through a small buffer so nothing outside the d×d triangle's rows/columns is touched.
#include "syrk_simd.h"

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
#define EFF_SIMD EFF_AVX2

// Vector traits: one 256-bit register of fp32 or fp64.
struct F32 {
  using T = float;
  using V = __m256;
  static constexpr int L = 8;
  static constexpr int MR = 4;
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
  static constexpr int MR = 4;
  EFF_AVX2 static V zero() { return _mm256_setzero_pd(); }
  EFF_AVX2 static V load(const T* p) { return _mm256_load_pd(p); }
  EFF_AVX2 static V loadu(const T* p) { return _mm256_loadu_pd(p); }
  EFF_AVX2 static void storeu(T* p, V v) { _mm256_storeu_pd(p, v); }
  EFF_AVX2 static V bcast(const T* p) { return _mm256_broadcast_sd(p); }
  EFF_AVX2 static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  EFF_AVX2 static V add(V a, V b) { return _mm256_add_pd(a, b); }
};

#include "gram/syrk_simd.inc"

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
