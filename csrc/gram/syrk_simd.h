// Single-threaded SYRK kernels for small/medium widths and long K (many rows), one body
// (syrk_simd.inc) built at two vector widths: syrk_avx2.cpp (256-bit) and syrk_avx512.cpp (512-bit).
// Plain C++ (no torch headers): gram_cpu.cpp calls them per thread on a slice of the rows.
#pragma once

#include <cstdint>

namespace effrank_fast {

// True if this CPU runs the build (checked at run time): AVX2 and FMA; AVX-512F as well.
bool syrk_avx2_available();
bool syrk_avx512_available();

// C (row-major [d, d], leading dimension ldc >= d) lower triangle (i >= j) =
//   (accumulate ? C : 0) + Σ_r X[r, i] X[r, j]
// for a row-major X [rows, d] with row stride ldx >= d and unit column stride.
// accumulate = false never reads C (it may hold garbage/NaN). Entries strictly above the diagonal
// may be left with any value (the caller mirrors). Single-threaded; only call the build whose
// *_available() is true.
void syrk_lower_avx2(const float* X, int64_t rows, int64_t d, int64_t ldx, float* C, int64_t ldc, bool accumulate);
void syrk_lower_avx2(const double* X, int64_t rows, int64_t d, int64_t ldx, double* C, int64_t ldc,
                     bool accumulate);
void syrk_lower_avx512(const float* X, int64_t rows, int64_t d, int64_t ldx, float* C, int64_t ldc, bool accumulate);
void syrk_lower_avx512(const double* X, int64_t rows, int64_t d, int64_t ldx, double* C, int64_t ldc,
                       bool accumulate);

}  // namespace effrank_fast
