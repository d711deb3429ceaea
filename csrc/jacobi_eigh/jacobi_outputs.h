#pragma once
// Output tensors of effrank_fast::jacobi_eigh, shared by the CPU and CUDA kernels.
#include <limits>
#include <vector>

#include "common.h"

namespace effrank_fast {

struct JacobiOutputs {
  at::Tensor a3;      // the input as a contiguous batch [B, n, n]
  at::Tensor w, v;    // eigenvalues [..., n] and eigenvectors [..., n, n]
  at::Tensor off;     // leftover off-diagonal size [...]
  at::Tensor sweeps;  // sweeps taken [...]
};

// NaN-poisoned: a NaN input leaves ranks ambiguous, and the unwritten slots then say so.
inline JacobiOutputs make_jacobi_outputs(const at::Tensor& a) {
  const int64_t n = a.size(-1);
  auto batch_shape = a.sizes().slice(0, a.dim() - 2).vec();
  std::vector<int64_t> w_shape = batch_shape, v_shape = batch_shape;
  w_shape.push_back(n);
  v_shape.push_back(n);
  v_shape.push_back(n);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  return {a.reshape({-1, n, n}).contiguous(), at::full(w_shape, nan, a.options()),
          at::full(v_shape, nan, a.options()), at::zeros(batch_shape, a.options().dtype(at::kDouble)),
          at::zeros(batch_shape, a.options().dtype(at::kLong))};
}

}  // namespace effrank_fast
