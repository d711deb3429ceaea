// Sequential SYRK kernels (see syrk_cpu.h): our kernel (syrk_avx512.cpp on a CPU with AVX-512F, else
// syrk_avx2.cpp) for small widths, else
// MKL's per-ISA sequential kernels (mkl_isa.h: exported by libtorch_cpu but undocumented, looked up
// at run time, used only on a CPU with its ISA, and checked once against a small product with
// exactly representable values; any mismatch (a changed calling convention in another MKL)
// disables it and the threaded BLAS serves instead).
#include "gram/syrk_cpu.h"

#include "gram/syrk_simd.h"
#include "mkl_isa.h"


#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>

namespace effrank_fast {
namespace {

// Fortran calling convention; the integers are 64-bit (torch's MKL is ILP64; values < 2³¹ read
// the same by an LP64 one on little-endian machines).
template <typename T>
using SyrkFn = void (*)(const char*, const char*, const int64_t*, const int64_t*, const T*, const T*, const int64_t*,
                        const T*, T*, const int64_t*);

template <typename T>
bool passes_self_test(SyrkFn<T> fn) {
  // X [5, 3] row-major with small integers: every product and sum is exact in fp32.
  const T x[15] = {1, 2, 3, -1, 0, 2, 4, 1, -2, 0, 3, 1, 2, -1, 0};
  T c[9];
  for (T& v : c) v = std::nan("");
  const int64_t n = 3, k = 5, ld = 3;
  const T one = 1, zero = 0;
  fn("U", "N", &n, &k, &one, x, &ld, &zero, c, &ld);
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      T want = 0;
      for (int64_t r = 0; r < 5; ++r) want += x[r * 3 + i] * x[r * 3 + j];
      if (!(c[i * 3 + j] == want)) return false;
    }
  }
  return true;
}

// EFFRANK_FAST_CPU_SYRK: "blas" forces the threaded-BLAS path (tests, and a way out should a future
// MKL change its internals in a way the self-test does not catch); "avx2" keeps our kernel at
// 256-bit vectors on an AVX-512 CPU (tests, and cores whose 512-bit FMAs run at half rate).
const std::string& forced_path() {
  static const std::string force = [] {
    const char* v = std::getenv("EFFRANK_FAST_CPU_SYRK");
    return std::string(v == nullptr ? "auto" : v);
  }();
  return force;
}

bool forced_blas() { return forced_path() == "blas"; }

template <typename T>
bool syrk_self_test(void* sym) {
  return passes_self_test<T>(reinterpret_cast<SyrkFn<T>>(sym));
}

template <typename T>
SyrkFn<T> find_mkl_kernel() {
  if (forced_blas()) return nullptr;
  const char* name = std::is_same<T, double>::value ? "xdsyrk" : "xssyrk";
  return reinterpret_cast<SyrkFn<T>>(mkl_isa::find_kernel(name, &syrk_self_test<T>));
}

// MKL's sequential SYRK for T on this CPU, or nullptr.
template <typename T>
SyrkFn<T> mkl_kernel() {
  static const SyrkFn<T> fn = find_mkl_kernel<T>();
  return fn;
}

// Our kernel below these widths, MKL's above. Single-threaded, as first measured on the EPYC of CI:
// the AVX2 kernel is 0.52× a GEMM at d = 64…256 where MKL's is 0.94–0.96× (d = 64, 128) and
// unsteady at 256; from d = 384 they are within 4 %. On the Zen 5 EPYC with AVX-512, ours at
// 512-bit vectors (8-row tiles) against MKL's AVX-512 kernel, fp64 / fp32 GFLOP/s at 20000 rows:
// d = 64 86–93 / 155–169 vs 75 / 122, d = 128 92–108 / 197–216 vs 84 / 164, d = 256 100 / 197 vs
// 96 / 186, d = 320 104 / 209 vs 106 / 209, and MKL's ahead from d = 384 (108 / 206 vs 87 / 184).
// Ours serves every width where no MKL kernel is found.
constexpr int64_t kOwnKernelMaxDimAvx2 = 320;
constexpr int64_t kOwnKernelMaxDimAvx512 = 192;

bool own_kernel_usable() { return !forced_blas() && syrk_avx2_available(); }

// Our kernel at 512-bit vectors where the CPU has AVX-512F (twice the flops per cycle on cores
// with full-width FMA units), else at 256-bit.
bool own_kernel_avx512() {
  static const bool use = syrk_avx512_available() && forced_path() != "avx2";
  return use;
}

template <typename T>
bool use_own_kernel(int64_t d) {
  const int64_t max_dim = own_kernel_avx512() ? kOwnKernelMaxDimAvx512 : kOwnKernelMaxDimAvx2;
  return own_kernel_usable() && (d <= max_dim || mkl_kernel<T>() == nullptr);
}

template <typename T>
bool run(const T* x, int64_t rows, int64_t d, int64_t ldx, T* c, int64_t ldc, bool accumulate) {
  if (use_own_kernel<T>(d)) {
    if (own_kernel_avx512()) {
      syrk_lower_avx512(x, rows, d, ldx, c, ldc, accumulate);
    } else {
      syrk_lower_avx2(x, rows, d, ldx, c, ldc, accumulate);
    }
    return true;
  }
  const SyrkFn<T> fn = mkl_kernel<T>();
  if (fn == nullptr || rows > INT32_MAX || d > INT32_MAX || ldx > INT32_MAX || ldc > INT32_MAX) return false;
  // Read as column-major, x is the d×rows matrix A; the row-major lower triangle of C is the
  // column-major upper triangle of A·Aᵀ: SYRK("U", "N").
  const int64_t n = d, k_rows = rows;
  const T one = 1, beta = accumulate ? 1 : 0;
  fn("U", "N", &n, &k_rows, &one, x, &ldx, &beta, c, &ldc);
  return true;
}

}  // namespace

bool syrk_lower_sequential(const float* x, int64_t rows, int64_t d, int64_t ldx, float* c, int64_t ldc,
                           bool accumulate) {
  return run<float>(x, rows, d, ldx, c, ldc, accumulate);
}

bool syrk_lower_sequential(const double* x, int64_t rows, int64_t d, int64_t ldx, double* c, int64_t ldc,
                           bool accumulate) {
  return run<double>(x, rows, d, ldx, c, ldc, accumulate);
}

bool syrk_sequential_available(bool fp64) {
  return own_kernel_usable() || (fp64 ? mkl_kernel<double>() != nullptr : mkl_kernel<float>() != nullptr);
}

}  // namespace effrank_fast
