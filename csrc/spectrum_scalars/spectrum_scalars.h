#pragma once
// One spectrum's scalar measures (ops/spectrum_scalars/README.md), shared by the spectrum_scalars
// and spectrum_rows kernels. The arithmetic is rank/formulas.py's PyTorch path, term by term; only the order of the
// sums differs (left to right here).
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace effrank_fast {
namespace spectrum {

// exp(−Σ p log p) of x ≥ 0 with p = x / Σx (0 when Σx = 0); also returns s = Σx (or 1) and Σ a_i p_i
// with a_i = −(log p_i + 1) (0 where p_i = 0), which the gradient needs. ``log_p`` (optional, [d])
// receives log p_i where p_i > 0.
struct Entropy {
  double erank, s, a_dot_p;
};

inline Entropy entropy_of(int64_t d, const double* x, double* log_p) {
  double total = 0.0;
  for (int64_t i = 0; i < d; ++i) total += x[i];
  const bool positive = total > 0.0;
  const double s = positive ? total : 1.0;
  double h = 0.0, a_dot_p = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double p = x[i] / s;
    if (p > 0.0) {
      const double lp = std::log(p);
      if (log_p != nullptr) log_p[i] = lp;
      h -= p * lp;
      a_dot_p += -(lp + 1.0) * p;
    }
  }
  return {positive ? std::exp(h) : 0.0, s, a_dot_p};
}

// ``scratch``: 2·d doubles of workspace (√λ of the live eigenvalues, then log p).
inline void one_spectrum(const double* lam, int64_t d, double floor, double error_fro, double* out,
                         double* scratch) {
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
  double* x = scratch;  // x_i = √λ_i on live eigenvalues (λ_i > δ), else 0
  double* log_p = scratch + d;
  for (int64_t i = 0; i < d; ++i) x[i] = lam[i] > floor ? std::sqrt(lam[i]) : 0.0;
  const Entropy e = entropy_of(d, x, log_p);
  // ‖∂erank/∂λ‖₂: ∂erank/∂λ_j = erank·(a_j − Σ a_i p_i)/s · 1/(2√λ_j) on live λ_j, else 0
  double grad_sq = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    if (!(lam[i] > floor)) continue;
    const double p = x[i] / e.s;
    const double a = p > 0.0 ? -(log_p[i] + 1.0) : 0.0;
    const double g = e.erank * (a - e.a_dot_p) / e.s * (0.5 / x[i]);
    grad_sq += g * g;
  }
  // every floored eigenvalue raised to δ: x_i = √δ there (δ > 0)
  const double raised_root = floor > 0.0 ? std::sqrt(floor) : 0.0;
  for (int64_t i = 0; i < d; ++i) x[i] = lam[i] > floor ? x[i] : raised_root;
  const Entropy raised = entropy_of(d, x, nullptr);
  const bool nonzero = lam_max > floor;
  out[0] = e.erank;
  out[1] = nonzero ? trace / lam_max : 0.0;
  out[2] = nonzero && sq > 0.0 ? trace * trace / sq : 0.0;
  out[3] = lam[0];
  out[4] = trace;
  out[5] = std::sqrt(grad_sq) * error_fro + std::abs(raised.erank - e.erank);
}

}  // namespace spectrum
}  // namespace effrank_fast
