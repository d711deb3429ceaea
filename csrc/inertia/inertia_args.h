#pragma once
// Argument checks of effrank_fast::inertia, shared by the CPU and CUDA kernels.
#include "common.h"

namespace effrank_fast {

inline void check_inertia_args(const at::Tensor& gram, const at::Tensor& thresholds, double band_rel,
                               int64_t block_size) {
  EFF_CHECK_SQUARE(gram, "gram");
  EFF_CHECK_FLOAT(gram, "gram");
  TORCH_CHECK(gram.size(0) > 0, "gram must not be empty (d = 0)");
  TORCH_CHECK(thresholds.dim() == 1, "thresholds must be 1-D [E], got ", thresholds.sizes());
  EFF_CHECK_FLOAT(thresholds, "thresholds");
  EFF_CHECK_SAME_DEVICE(gram, thresholds, "gram", "thresholds");
  TORCH_CHECK(block_size >= 0, "block_size must be >= 0 (0 = default), got ", block_size);
  TORCH_CHECK(band_rel >= 0, "band_rel must be non-negative, got ", band_rel);
}

}  // namespace effrank_fast
