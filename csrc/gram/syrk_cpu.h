#pragma once
// Single-threaded SYRK kernels for the CPU Gram: the caller splits the rows over threads (one
// private accumulator each) because MKL's own threaded SYRK scales poorly (measured on a 2-core
// EPYC: 1.45× from the second core at d = 1024, where the sequential kernel reaches GEMM speed).
#include <cstdint>

namespace effrank_fast {

// C (row-major [d, d], leading dimension ldc) lower triangle (i ≥ j) = [C +] Σ_r X[r, i] X[r, j]
// for a row-major X [rows, d] (row stride ldx ≥ d even for one row, unit column stride). Without `accumulate` C
// is not read. Entries above the diagonal are unspecified. Returns false (C untouched) when no
// sequential kernel is usable here; the caller then falls back to the threaded BLAS.
bool syrk_lower_sequential(const float* x, int64_t rows, int64_t d, int64_t ldx, float* c, int64_t ldc,
                           bool accumulate);
bool syrk_lower_sequential(const double* x, int64_t rows, int64_t d, int64_t ldx, double* c, int64_t ldc,
                           bool accumulate);

// Whether syrk_lower_sequential has a kernel for this precision on this CPU.
bool syrk_sequential_available(bool fp64);

}  // namespace effrank_fast
