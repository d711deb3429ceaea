// Every scalar measure of float64 spectra in one pass per spectrum, CPU (ops/spectrum_scalars/README.md).
//
// lam [rows, d] (each descending), floor [rows], error_fro [rows] -> out [rows, 6]:
// entropy rank, stable rank, participation ratio, λ_max, trace, the entropy rank's sensitivity.
// The arithmetic is the PyTorch path's (rank/formulas.py, spectrum_scalars), term by term; only the order of the sums
// differs (left to right here), so results agree to a few units of float64 rounding.
#include <torch/library.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "common.h"
#include "spectrum_scalars/spectrum_scalars.h"

namespace effrank_fast {
namespace {

at::Tensor spectrum_scalars_cpu(const at::Tensor& lam, const at::Tensor& floor, const at::Tensor& error_fro) {
  TORCH_CHECK(lam.dim() >= 1 && lam.size(-1) >= 1, "lam must be [..., d] with d >= 1, got ", lam.sizes());
  TORCH_CHECK(lam.scalar_type() == at::kDouble, "lam must be float64, got ", lam.scalar_type());
  const auto batch = lam.sizes().slice(0, lam.dim() - 1);
  TORCH_CHECK(floor.sizes() == batch, "floor must have lam's batch shape ", batch, ", got ", floor.sizes());
  TORCH_CHECK(error_fro.sizes() == batch, "error_fro must have lam's batch shape ", batch, ", got ", error_fro.sizes());
  TORCH_CHECK(floor.scalar_type() == at::kDouble && error_fro.scalar_type() == at::kDouble,
              "floor and error_fro must be float64");
  const auto l = lam.contiguous();
  const auto f = floor.contiguous();
  const auto ef = error_fro.contiguous();
  const int64_t d = l.size(-1);
  const int64_t rows = d ? l.numel() / d : 0;
  std::vector<int64_t> out_shape(batch.begin(), batch.end());
  out_shape.push_back(6);
  auto out = at::empty(out_shape, l.options());
  const double* lp = l.data_ptr<double>();
  const double* fp = f.data_ptr<double>();
  const double* ep = ef.data_ptr<double>();
  double* op = out.data_ptr<double>();
  // ~20 ns per eigenvalue (a square root and two logs): rows spread over threads from d ≈ 2048 on
  const int64_t grain = std::max<int64_t>(1, 4096 / d);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<double> scratch(2 * d);
    for (int64_t r = r0; r < r1; ++r) spectrum::one_spectrum(lp + r * d, d, fp[r], ep[r], op + r * 6, scratch.data());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CPU, m) { m.impl("spectrum_scalars", &spectrum_scalars_cpu); }

}  // namespace effrank_fast
