// Lookup of MKL's per-ISA sequential kernels (mkl_isa.h).
#include "mkl_isa.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

namespace effrank_fast {
namespace mkl_isa {

void* find_kernel(const char* name, bool (*self_test)(void* fn)) {
#if !(defined(__x86_64__) || defined(__i386__))
  (void)name;
  (void)self_test;
  return nullptr;  // MKL's per-ISA kernels exist only on x86
#else
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // The widest ISA this CPU runs first.
  const struct {
    bool ok;
    const char* prefix;
  } candidates[] = {{avx512, "mkl_blas_avx512_"}, {avx2, "mkl_blas_avx2_"}};
  for (const auto& c : candidates) {
    if (!c.ok) continue;
    void* sym = dlsym(RTLD_DEFAULT, (std::string(c.prefix) + name).c_str());
    if (sym != nullptr && self_test(sym)) return sym;
  }
  return nullptr;
#endif
}

namespace {

// C = A·Bᵀ − C for small integer matrices (every product and sum exact), through the kernel's
// column-major, transposed-B call: the layout the LDLᵀ trailing update uses.
bool dgemm_passes_self_test(void* sym) {
  auto fn = reinterpret_cast<DgemmFn>(sym);
  const double a[6] = {1, 2, -1, 3, 0, 2};     // column-major 2×3
  const double b[12] = {2, 1, 0, -1, 1, 3, 2, 0, -2, 1, 1, 4};  // column-major 4×3
  double c[8];
  for (int i = 0; i < 8; ++i) c[i] = i;  // column-major 2×4
  const int64_t m = 2, n = 4, k = 3, lda = 2, ldb = 4, ldc = 2;
  const double alpha = 1, beta = -1;
  fn("N", "T", &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double want = -static_cast<double>(i + j * ldc);
      for (int64_t l = 0; l < k; ++l) want += a[i + l * lda] * b[j + l * ldb];
      if (!(c[i + j * ldc] == want)) return false;
    }
  }
  return true;
}

}  // namespace

DgemmFn dgemm_kernel() {
  static const DgemmFn fn = [] {
    const char* force = std::getenv("EFFRANK_FAST_CPU_GEMM");
    if (force != nullptr && std::string(force) == "blas") return DgemmFn(nullptr);
    return reinterpret_cast<DgemmFn>(find_kernel("xdgemm", dgemm_passes_self_test));
  }();
  return fn;
}

}  // namespace mkl_isa
}  // namespace effrank_fast
