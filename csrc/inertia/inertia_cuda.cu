// Exact ε-counts by Sylvester's law of inertia, CUDA: a fused float64 blocked LDLᵀ of M − τI.
//
// The kernels and the launch sequence are in inertia_kernels.cuh; this file is the torch glue:
// argument checks, workspace, dtype dispatch, cuBLAS (DGEMM / DSYRKX run on the fp64 tensor cores).
// Everything stays on the current stream: no host synchronisation, no data-dependent host branch.
// EFFRANK_INERTIA_PANEL (default 256), EFFRANK_INERTIA_TRAILING (blocks | syrkx | gemm, default blocks)
// and EFFRANK_INERTIA_COLBLOCK (for blocks, default 1024) override the defaults for benchmarking.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublas_v2.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "common.h"

#define EFF_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()
#include "inertia/inertia_args.h"
#include "inertia/inertia_kernels.cuh"

namespace effrank_fast {
namespace {

using namespace inertia_kernels;

constexpr int64_t kDefaultPanel = 256;

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::max<int64_t>(1, std::atoll(v));
}

// Default: one DGEMM per 1024-wide block column of the lower triangle: the most tuned cuBLAS routine,
// ~3 % wasted flops (the upper halves of the diagonal blocks) at d = 16384. DSYRKX (no waste) and
// one full-square DGEMM (2× flops, one call) are the alternatives bench_inertia.py sweeps.
Trailing trailing_mode() {
  const char* v = std::getenv("EFFRANK_INERTIA_TRAILING");
  if (v != nullptr && std::strcmp(v, "gemm") == 0) return Trailing::kGemm;
  if (v != nullptr && std::strcmp(v, "syrkx") == 0) return Trailing::kSyrkx;
  return Trailing::kBlocks;
}

// C −= A·Bᵀ (and its lower-triangle variant) through cuBLAS, column-major, 32-bit dimensions.
struct CublasOps {
  cublasHandle_t handle;
  void gemm_nt(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
               double* c, int64_t ldc) {
    const double one = 1.0, minus_one = -1.0;
    TORCH_CUDABLAS_CHECK(cublasDgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(m), static_cast<int>(n),
                                     static_cast<int>(k), &minus_one, a, static_cast<int>(lda), b,
                                     static_cast<int>(ldb), &one, c, static_cast<int>(ldc)));
  }
  void syrkx_ln(int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
                int64_t ldc) {
    const double one = 1.0, minus_one = -1.0;
    TORCH_CUDABLAS_CHECK(cublasDsyrkx(handle, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(n),
                                      static_cast<int>(k), &minus_one, a, static_cast<int>(lda), b,
                                      static_cast<int>(ldb), &one, c, static_cast<int>(ldc)));
  }
};

InertiaOutputs inertia_cuda(const at::Tensor& gram, const at::Tensor& thresholds, int64_t block_size) {
  check_inertia_args(gram, thresholds, block_size);
  TORCH_CHECK(gram.size(0) < (int64_t(1) << 31), "gram is too large for cuBLAS 32-bit dimensions");
  const c10::cuda::CUDAGuard guard(gram.device());
  const int64_t d = gram.size(0), e = thresholds.size(0);
  int64_t panel = block_size > 0 ? block_size : env_int("EFFRANK_INERTIA_PANEL", kDefaultPanel);
  panel = ((panel + kLeaf - 1) / kLeaf) * kLeaf;
  const Plan plan{d, panel, env_int("EFFRANK_INERTIA_COLBLOCK", 1024), trailing_mode()};

  at::Tensor m = gram.contiguous();
  at::Tensor tau = thresholds.to(at::kDouble).contiguous();
  auto f64 = gram.options().dtype(at::kDouble);
  auto i64 = gram.options().dtype(at::kLong);
  at::Tensor counts = at::empty({e}, i64), band = at::empty({e}, i64);
  at::Tensor min_piv = at::empty({e}, f64), growth = at::empty({e}, f64), delta = at::empty({e}, f64);
  at::Tensor scale = at::zeros({e}, f64);  // ‖A‖_F² accumulated by shift_copy_kernel, then ‖A‖_F
  at::Tensor max_l = at::empty({e}, f64);
  if (e == 0) return {counts, min_piv, growth, band, delta, scale, max_l};

  at::Tensor work = at::empty({d * d}, f64);  // column-major A
  at::Tensor wbuf = at::empty({std::min(panel, d) * d}, f64);
  at::Tensor stats = at::empty({3 * d}, f64);  // piv | colsq | colmax bits
  double* piv = stats.data_ptr<double>();
  const Work ws{work.data_ptr<double>(), wbuf.data_ptr<double>(), piv, piv + d, reinterpret_cast<u64*>(piv + 2 * d)};
  double* scale_p = scale.data_ptr<double>();

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  CublasOps blas{at::cuda::getCurrentCUDABlasHandle()};
  // Per device and cheap (no synchronisation): allow the panel kernel its 73 KiB of shared memory.
  C10_CUDA_CHECK(cudaFuncSetAttribute(panel_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kPanelSmem)));
  for (int64_t t = 0; t < e; ++t) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "inertia_cuda", [&] {
      factor_threshold(blas, stream, plan, ws, m.data_ptr<scalar_t>(), tau.data_ptr<double>() + t, scale_p + t,
                       counts.data_ptr<int64_t>() + t, min_piv.data_ptr<double>() + t, growth.data_ptr<double>() + t,
                       band.data_ptr<int64_t>() + t, delta.data_ptr<double>() + t, max_l.data_ptr<double>() + t);
    });
  }
  return {counts, min_piv, growth, band, delta, scale, max_l};
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CUDA, m) { m.impl("inertia", &inertia_cuda); }

}  // namespace effrank_fast
