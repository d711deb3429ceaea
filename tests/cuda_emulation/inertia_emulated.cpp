// Runs the CUDA kernels of csrc/inertia/inertia_kernels.cuh on the CPU (cuda_emulation.h), with a
// naive column-major BLAS standing in for cuBLAS. Used by tests/test_inertia_emulated.py.
//
// Input (binary, native endianness): int64 d, int64 E, int64 dtype (0 = float64, 1 = float32),
// int64 panel, int64 trailing (0 syrkx, 1 gemm, 2 blocks), int64 col_block, float64 τ[E], then
// M[d·d] row-major in the given dtype.
// Output (text), one line per threshold: count min_pivot_rel growth band error_bound scale max_abs_l.
#include <cstdio>
#include <vector>

#include "cuda_emulation.h"
#include "inertia/inertia_kernels.cuh"

using effrank_fast::inertia_kernels::factor_threshold;
using effrank_fast::inertia_kernels::kLeaf;
using effrank_fast::inertia_kernels::Plan;
using effrank_fast::inertia_kernels::Trailing;
using effrank_fast::inertia_kernels::u64;
using effrank_fast::inertia_kernels::Work;

// C −= A·Bᵀ and lower(C) −= lower(A·Bᵀ), column-major: what the cuBLAS calls compute.
struct NaiveBlas {
  void gemm_nt(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
               double* c, int64_t ldc) {
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < m; ++i) {
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p) s += a[i + p * lda] * b[j + p * ldb];
        c[i + j * ldc] -= s;
      }
  }
  void syrkx_ln(int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
                int64_t ldc) {
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = j; i < n; ++i) {
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p) s += a[i + p * lda] * b[j + p * ldb];
        c[i + j * ldc] -= s;
      }
  }
};

template <class T>
bool read(std::FILE* f, T* p, size_t n) {
  return std::fread(p, sizeof(T), n, f) == n;
}

template <typename scalar_t>
int run(std::FILE* in, int64_t d, int64_t e, const Plan& plan) {
  std::vector<double> tau(e);
  std::vector<scalar_t> m(d * d);
  if (!read(in, tau.data(), e) || !read(in, m.data(), d * d)) return 2;
  // The GPU workspace is uninitialised memory: poison it so reads of unwritten entries show up.
  std::vector<double> a(d * d, std::nan("")), w(std::min(plan.panel, d) * d, std::nan(""));
  std::vector<double> stats(3 * d, std::nan(""));
  Work ws{a.data(), w.data(), stats.data(), stats.data() + d, reinterpret_cast<u64*>(stats.data() + 2 * d)};
  NaiveBlas blas;
  for (int64_t t = 0; t < e; ++t) {
    double scale = 0.0, min_piv = 0.0, growth = 0.0, delta = 0.0, max_l = 0.0;
    int64_t count = -1, band = -1;
    factor_threshold(blas, nullptr, plan, ws, m.data(), &tau[t], &scale, &count, &min_piv, &growth, &band, &delta,
                     &max_l);
    std::printf("%lld %.17g %.17g %lld %.17g %.17g %.17g\n", static_cast<long long>(count), min_piv, growth,
                static_cast<long long>(band), delta, scale, max_l);
  }
  return 0;
}

int main(int argc, char** argv) {
  std::FILE* in = argc > 1 ? std::fopen(argv[1], "rb") : stdin;
  if (in == nullptr) return 2;
  int64_t hdr[6];
  if (!read(in, hdr, 6)) return 2;
  const int64_t d = hdr[0], e = hdr[1], dtype = hdr[2];
  const int64_t panel = ((hdr[3] + kLeaf - 1) / kLeaf) * kLeaf;
  const Trailing modes[] = {Trailing::kSyrkx, Trailing::kGemm, Trailing::kBlocks};
  const Plan plan{d, panel, hdr[5], modes[hdr[4]]};
  return dtype == 0 ? run<double>(in, d, e, plan) : run<float>(in, d, e, plan);
}
