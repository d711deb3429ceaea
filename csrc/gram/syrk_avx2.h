// Single-threaded AVX2+FMA SYRK for small/medium widths (d up to ~768) and long K (many rows).
// Plain C++ (no torch headers): gram_cpu.cpp calls it per thread on a slice of the rows.
#pragma once

#include <cstdint>

namespace effrank_fast {

// True if this CPU can run the kernels (AVX2 and FMA, checked at run time).
bool syrk_avx2_available();

// C (row-major [d, d], leading dimension ldc >= d) lower triangle (i >= j) =
//   (accumulate ? C : 0) + Σ_r X[r, i] X[r, j]
// for a row-major X [rows, d] with row stride ldx >= d and unit column stride.
// accumulate = false never reads C (it may hold garbage/NaN). Entries strictly above the diagonal
// may be left with any value (the caller mirrors). Single-threaded; only call when
// syrk_avx2_available() is true.
void syrk_lower_avx2(const float* X, int64_t rows, int64_t d, int64_t ldx, float* C, int64_t ldc, bool accumulate);
void syrk_lower_avx2(const double* X, int64_t rows, int64_t d, int64_t ldx, double* C, int64_t ldc,
                     bool accumulate);

}  // namespace effrank_fast
