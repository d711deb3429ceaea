// Every scalar measure of float64 spectra in one pass per spectrum, CPU (ops/spectrum_scalars/README.md).
//
// lam [rows, d] (each descending), floor [rows], error_fro [rows] -> out [rows, 6]:
// entropy rank, stable rank, participation ratio, λ_max, trace, the entropy rank's sensitivity.
// The arithmetic is the reference's (reference.py), term by term; only the order of the sums
// differs (left to right here), so results agree to a few units of float64 rounding.
#include <torch/library.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

#include "common.h"

namespace effrank_fast {
namespace {

// exp(−Σ p log p) of x ≥ 0 with p = x / Σx (0 when Σx = 0); also returns s = Σx (or 1) and Σ a_i p_i
// with a_i = −(log p_i + 1) (0 where p_i = 0), which the gradient needs.
struct Entropy {
  double erank, s, a_dot_p;
};

template <typename X>
Entropy entropy_of(int64_t d, X x) {
  double total = 0.0;
  for (int64_t i = 0; i < d; ++i) total += x(i);
  const bool positive = total > 0.0;
  const double s = positive ? total : 1.0;
  double h = 0.0, a_dot_p = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double p = x(i) / s;
    if (p > 0.0) {
      const double lp = std::log(p);
      h -= p * lp;
      a_dot_p += -(lp + 1.0) * p;
    }
  }
  return {positive ? std::exp(h) : 0.0, s, a_dot_p};
}

void one_spectrum(const double* lam, int64_t d, double floor, double error_fro, double* out) {
  double trace = 0.0, sq = 0.0, lam_max = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < d; ++i) {
    trace += lam[i];
    sq += lam[i] * lam[i];
    lam_max = lam[i] > lam_max ? lam[i] : lam_max;
  }
  if (std::isnan(trace)) {
    for (int k = 0; k < 6; ++k) out[k] = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  auto live = [&](int64_t i) { return lam[i] > floor; };
  auto x = [&](int64_t i) { return live(i) ? std::sqrt(lam[i]) : 0.0; };
  const Entropy e = entropy_of(d, x);
  // ‖∂erank/∂λ‖₂: ∂erank/∂λ_j = erank·(a_j − Σ a_i p_i)/s · 1/(2√λ_j) on live λ_j, else 0
  double grad_sq = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    if (!live(i)) continue;
    const double root = std::sqrt(lam[i]);
    const double p = root / e.s;
    const double a = p > 0.0 ? -(std::log(p) + 1.0) : 0.0;
    const double g = e.erank * (a - e.a_dot_p) / e.s * (0.5 / root);
    grad_sq += g * g;
  }
  const double raised_root = floor > 0.0 ? std::sqrt(floor) : 0.0;
  const Entropy raised = entropy_of(d, [&](int64_t i) { return live(i) ? std::sqrt(lam[i]) : raised_root; });
  const bool nonzero = lam_max > floor;
  out[0] = e.erank;
  out[1] = nonzero ? trace / lam_max : 0.0;
  out[2] = nonzero && sq > 0.0 ? trace * trace / sq : 0.0;
  out[3] = lam[0];
  out[4] = trace;
  out[5] = std::sqrt(grad_sq) * error_fro + std::abs(raised.erank - e.erank);
}

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
  // a few ns per eigenvalue: spread rows over threads only when there is real work
  const int64_t grain = std::max<int64_t>(1, 65536 / d);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) one_spectrum(lp + r * d, d, fp[r], ep[r], op + r * 6);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CPU, m) { m.impl("spectrum_scalars", &spectrum_scalars_cpu); }

}  // namespace effrank_fast
