#pragma once
// Argument checks of effrank_fast::inertia, shared by the CPU and CUDA kernels.
#include <tuple>

#include "common.h"

namespace effrank_fast {

// (counts, min_pivot_rel, growth, band_counts, error_bound, scale, max_abs_l), each [E]: see schema.py.
using InertiaOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

inline void check_inertia_args(const at::Tensor& gram, const at::Tensor& thresholds, int64_t block_size) {
  EFF_CHECK_SQUARE(gram, "gram");
  EFF_CHECK_FLOAT(gram, "gram");
  TORCH_CHECK(gram.size(0) > 0, "gram must not be empty (d = 0)");
  TORCH_CHECK(thresholds.dim() == 1, "thresholds must be 1-D [E], got ", thresholds.sizes());
  EFF_CHECK_FLOAT(thresholds, "thresholds");
  EFF_CHECK_SAME_DEVICE(gram, thresholds, "gram", "thresholds");
  TORCH_CHECK(block_size >= 0, "block_size must be >= 0 (0 = default), got ", block_size);
}

}  // namespace effrank_fast
