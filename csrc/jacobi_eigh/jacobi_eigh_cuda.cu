// Symmetric eigensolver by blocked parallel-order Jacobi, CUDA launchers (kernels:
// jacobi_kernels.cuh, algorithm: jacobi_core.h). n ≤ kSmallMax: one block per matrix of a batch;
// larger n: one cooperative launch per matrix. Nothing here waits for the device.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>
#include <tuple>
#include <vector>

#include "common.h"
#include "jacobi_eigh/jacobi_kernels.cuh"
#include "jacobi_eigh/jacobi_outputs.h"

namespace effrank_fast {
namespace {

using jacobi::BlockedArgs;
using jacobi::Layout;
using jacobi::jacobi_blocked_kernel;
using jacobi::jacobi_small_kernel;

using jacobi::kSmallMax;
using jacobi::kThreads;

template <typename T>
void launch_small(const at::Tensor& a3, int n, int max_sweeps, double tol, at::Tensor& w, at::Tensor& v,
                  at::Tensor& off, at::Tensor& sweeps, cudaStream_t stream) {
  const int npad = n + n % 2;
  const size_t smem = (2 * static_cast<size_t>(npad) * npad + 3 * (npad / 2)) * sizeof(T) + 2 * (npad / 2) * sizeof(int);
  auto kernel = jacobi_small_kernel<T>;
  if (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const int64_t B = a3.size(0);
  kernel<<<static_cast<unsigned>(B), kThreads, smem, stream>>>(a3.data_ptr<T>(), n, npad, max_sweeps, tol,
                                                             w.data_ptr<T>(), v.data_ptr<T>(), off.data_ptr<double>(),
                                                             sweeps.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void launch_blocked(const at::Tensor& a3, int n, int max_sweeps, double tol, at::Tensor& w, at::Tensor& v,
                    at::Tensor& off, at::Tensor& sweeps, cudaStream_t stream) {
  const Layout L = jacobi::make_layout(n);
  const int64_t B = a3.size(0);
  auto opts = a3.options();
  at::Tensor A = at::empty({L.npad, L.npad}, opts);
  at::Tensor V = at::empty({L.npad, L.npad}, opts);
  at::Tensor Q = at::empty({L.pairs, L.s, L.s}, opts);
  at::Tensor rank = at::empty({n}, opts.dtype(at::kInt));
  at::Tensor red = at::empty({B, 2 + max_sweeps}, opts.dtype(at::kDouble));
  C10_CUDA_CHECK(cudaMemsetAsync(red.data_ptr<double>(), 0, red.numel() * sizeof(double), stream));

  auto kernel = jacobi_blocked_kernel<T>;
  int device = 0, sms = 0, per_sm = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  TORCH_CHECK(per_sm > 0, "jacobi_eigh: the blocked kernel cannot be resident on this device");
  const int want = std::max(L.pairs, 2 * L.pairs * L.pairs);
  const int grid = std::min(want, per_sm * sms);

  for (int64_t bi = 0; bi < B; ++bi) {
    BlockedArgs<T> args;
    args.in = a3.data_ptr<T>() + bi * n * n;
    args.A = A.data_ptr<T>();
    args.V = V.data_ptr<T>();
    args.Q = Q.data_ptr<T>();
    args.red = red.data_ptr<double>() + bi * (2 + max_sweeps);
    args.rank = rank.data_ptr<int>();
    args.w_out = w.data_ptr<T>() + bi * n;
    args.v_out = v.data_ptr<T>() + bi * n * n;
    args.off_out = off.data_ptr<double>() + bi;
    args.sweeps_out = sweeps.data_ptr<int64_t>() + bi;
    args.L = L;
    args.max_sweeps = max_sweeps;
    args.tol = tol;
    void* params[] = {&args};
    C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), dim3(grid), dim3(kThreads), params, 0,
                                               stream));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> jacobi_eigh_cuda(const at::Tensor& a, int64_t max_sweeps,
                                                                            double tol) {
  TORCH_CHECK(a.dim() >= 2 && a.size(-1) == a.size(-2), "a must be [..., n, n], got ", a.sizes());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "a must be float32 or float64, got ", a.scalar_type());
  TORCH_CHECK(max_sweeps >= 0 && max_sweeps <= 1000, "max_sweeps must be in [0, 1000], got ", max_sweeps);
  TORCH_CHECK(tol >= 0, "tol must be non-negative, got ", tol);
  const int64_t n = a.size(-1);
  TORCH_CHECK(n <= 16384, "jacobi_eigh on CUDA supports n ≤ 16384, got n = ", n);
  const c10::cuda::CUDAGuard guard(a.device());
  const JacobiOutputs outs = make_jacobi_outputs(a);
  at::Tensor a3 = outs.a3, w = outs.w, v = outs.v, off = outs.off, sweeps = outs.sweeps;
  if (n == 0 || a3.size(0) == 0) return {w, v, off, sweeps};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "jacobi_eigh_cuda", [&] {
    if (n <= kSmallMax) {
      launch_small<scalar_t>(a3, static_cast<int>(n), static_cast<int>(max_sweeps), tol, w, v, off, sweeps, stream);
    } else {
      launch_blocked<scalar_t>(a3, static_cast<int>(n), static_cast<int>(max_sweeps), tol, w, v, off, sweeps, stream);
    }
  });
  return {w, v, off, sweeps};
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CUDA, m) { m.impl("jacobi_eigh", &jacobi_eigh_cuda); }

}  // namespace effrank_fast
