#pragma once
// MKL's per-ISA sequential BLAS kernels (mkl_blas_avx512_xdgemm, mkl_blas_avx2_xssyrk, ...), as
// libtorch_cpu exports them. MKL's own dispatch takes its AVX2 code on AMD CPUs even where they run
// 512-bit FMAs at full rate (Zen 5: torch's fp64 GEMM 60 GFLOP/s a core, the AVX-512 kernel called
// directly 129), and its threaded drivers scale poorly on small problems; the kernels are
// single-threaded and take Fortran (column-major) arguments with 64-bit integers (torch's MKL is
// ILP64; values below 2³¹ read the same by an LP64 one on little-endian machines). They are
// undocumented, so each is looked up at run time, used only on a CPU with its ISA, and must pass
// the caller's self-test on exactly representable values before it is used.
#include <cstdint>

namespace effrank_fast {
namespace mkl_isa {

// The first of mkl_blas_avx512_<name> (on a CPU with AVX-512F/BW/DQ/VL) and mkl_blas_avx2_<name>
// (AVX2 and FMA) that this process exports and that passes `self_test`, or nullptr (also on
// non-x86 CPUs).
void* find_kernel(const char* name, bool (*self_test)(void* fn));

// dgemm's Fortran signature: C = α·op(A)·op(B) + β·C, column-major.
using DgemmFn = void (*)(const char* transa, const char* transb, const int64_t* m, const int64_t* n,
                         const int64_t* k, const double* alpha, const double* a, const int64_t* lda, const double* b,
                         const int64_t* ldb, const double* beta, double* c, const int64_t* ldc);

// MKL's sequential per-ISA dgemm on this CPU (self-tested once), or nullptr; nullptr as well when
// EFFRANK_FAST_CPU_GEMM=blas.
DgemmFn dgemm_kernel();

}  // namespace mkl_isa
}  // namespace effrank_fast
