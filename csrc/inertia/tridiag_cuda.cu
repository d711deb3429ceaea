// CUDA kernel of effrank_fast::tridiag_top: the largest eigenpair of the Lanczos tridiagonal matrix,
// computed by one thread (tridiag.h) so that lambda_max_bounds needs no host round trip.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "common.h"
#include "inertia/tridiag.h"

namespace effrank_fast {
namespace {

__global__ void tridiag_top_kernel(const double* alpha, const double* beta, int k, double* theta, double* y,
                                   double* work) {
  tridiag::top_eigenpair(alpha, beta, k, theta, y, work);
}

std::tuple<at::Tensor, at::Tensor> tridiag_top_cuda(const at::Tensor& alpha, const at::Tensor& beta) {
  TORCH_CHECK(alpha.dim() == 1 && alpha.size(0) > 0, "alpha must be 1-D [k] with k >= 1, got ", alpha.sizes());
  TORCH_CHECK(beta.dim() == 1 && beta.size(0) == alpha.size(0) - 1, "beta must be 1-D [k - 1] = [",
              alpha.size(0) - 1, "], got ", beta.sizes());
  EFF_CHECK_SAME_DEVICE(alpha, beta, "alpha", "beta");
  const c10::cuda::CUDAGuard guard(alpha.device());
  const int64_t k = alpha.size(0);
  at::Tensor a = alpha.to(at::kDouble).contiguous(), b = beta.to(at::kDouble).contiguous();
  auto f64 = alpha.options().dtype(at::kDouble);
  at::Tensor theta = at::empty({}, f64), y = at::empty({k}, f64), work = at::empty({5 * k}, f64);
  tridiag_top_kernel<<<1, 1, 0, at::cuda::getCurrentCUDAStream()>>>(
      a.data_ptr<double>(), b.numel() ? b.data_ptr<double>() : nullptr, static_cast<int>(k),
      theta.data_ptr<double>(), y.data_ptr<double>(), work.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {theta, y};
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CUDA, m) { m.impl("tridiag_top", &tridiag_top_cuda); }

}  // namespace effrank_fast
