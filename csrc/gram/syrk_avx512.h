// Single-threaded AVX-512 SYRK: syrk_avx2.h's kernel with 512-bit vectors (the same packed layout,
// micro-tiles and blocking; strips of 32 floats / 16 doubles). Plain C++ (no torch headers).
#pragma once

#include <cstdint>

namespace effrank_fast {

// True if this CPU runs AVX-512F (checked at run time).
bool syrk_avx512_available();

// The contract of syrk_lower_avx2 (syrk_avx2.h); only call when syrk_avx512_available() is true.
void syrk_lower_avx512(const float* X, int64_t rows, int64_t d, int64_t ldx, float* C, int64_t ldc, bool accumulate);
void syrk_lower_avx512(const double* X, int64_t rows, int64_t d, int64_t ldx, double* C, int64_t ldc,
                       bool accumulate);

}  // namespace effrank_fast
