// The exact engine's row of each of L solved spectra in one pass, CPU (ops/spectrum_rows/README.md).
//
// matrices [L, n, n] (their diagonals), lam [L, n] ascending (eigvalsh), gram_error δ_G [L], eps [E]
// -> rows [L, 4E + 7 + topk] = (counts, certified, lower, upper per ε; the six spectrum_scalars;
//    spectrum_solved = 1; λ_1..λ_topk, NaN past dim) and lam_desc [L, dim] (descending, d − n zeros).
// It mirrors the monitor's Python path term by term (monitor/core.solve_many: the noise floor of
// rank/formulas.noise_floor and gram_error_frobenius_estimate; rank/certified._eigh_result: the
// certified eigh count), which is its reference; only the order of the sums differs.
#include <torch/library.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common.h"
#include "spectrum_scalars/spectrum_scalars.h"

namespace effrank_fast {
namespace {

constexpr double kU64 = 1.1102230246251565e-16;  // 2^-53
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// max with NaN propagation (as torch.amax)
inline double nan_max(double a, double b) { return (std::isnan(a) || a > b) ? a : (std::isnan(b) ? b : b); }

struct Args {
  int64_t n, dim, E, topk, relative, width;
  double acc_u;
  const double* eps;
};

template <typename scalar_t>
void one_row(const Args& a, const scalar_t* m, int64_t s_row, int64_t s_col, const double* lam_asc, double g,
             double* row, double* lam_desc) {
  const int64_t n = a.n, dim = a.dim;
  for (int64_t i = 0; i < n; ++i) lam_desc[i] = lam_asc[n - 1 - i];
  for (int64_t i = n; i < dim; ++i) lam_desc[i] = 0.0;
  // the matrix's diagonal: max M_ii and tr M (solve_many, _eigh_result's trace)
  double dmax = -std::numeric_limits<double>::infinity(), trace = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(m[i * (s_row + s_col)]);
    dmax = nan_max(d, dmax);
    trace += d;
  }
  // formulas.noise_floor(λ_1, n, acc, diag_max=max M_ii) and gram_error_frobenius_estimate(tr M, acc)
  const double lam1 = lam_desc[0];
  const double floor = 6.0 * std::sqrt(static_cast<double>(n)) * a.acc_u * std::abs(dmax) +
                       4.0 * static_cast<double>(n) * kU64 * std::abs(lam1);
  const double fro = 8.0 * a.acc_u * std::abs(trace);
  double* scal = row + 4 * a.E;
  std::vector<double> scratch(2 * dim);
  spectrum::one_spectrum(lam_desc, dim, floor, fro, scal, scratch.data());
  scal[6] = 1.0;  // spectrum_solved
  // certified._eigh_result: δ = δ_G + 4·n·u·max|λ|, counts at τ, at lo − δ and hi + δ
  double top = 0.0;
  for (int64_t i = 0; i < dim; ++i) top = nan_max(std::abs(lam_desc[i]), top);
  const double delta = g + 4.0 * static_cast<double>(n) * kU64 * top;
  const bool finite_delta = std::isfinite(delta);
  for (int64_t e = 0; e < a.E; ++e) {
    const double eps = a.eps[e];
    double tau = eps, lo = eps, hi = eps;
    if (a.relative == 1) {
      tau = eps * lam1;
      lo = eps * (lam1 - delta);
      hi = eps * (lam1 + delta);
    } else if (a.relative == 2) {
      tau = eps * trace;
      const double spread = eps * static_cast<double>(dim) * g;
      lo = tau - spread;
      hi = tau + spread;
    }
    const double t_up = lo - delta, t_low = hi + delta;
    int64_t count = 0, upper = 0, lower = 0;
    for (int64_t i = 0; i < dim; ++i) {
      const double l = lam_desc[i];
      count += l > tau;
      upper += l > t_up;
      lower += l > t_low;
    }
    row[e] = static_cast<double>(count);
    row[a.E + e] = (finite_delta && upper == lower) ? 1.0 : 0.0;
    row[2 * a.E + e] = static_cast<double>(lower);
    row[3 * a.E + e] = static_cast<double>(upper);
  }
  double* top_k = row + 4 * a.E + 7;
  for (int64_t k = 0; k < a.topk; ++k) top_k[k] = k < dim ? lam_desc[k] : kNaN;
}

std::tuple<at::Tensor, at::Tensor> spectrum_rows_cpu(const at::Tensor& matrices, const at::Tensor& lam,
                                                     const at::Tensor& gram_error, const at::Tensor& eps,
                                                     int64_t relative, int64_t dim, double acc_unit_roundoff,
                                                     int64_t topk) {
  TORCH_CHECK(matrices.dim() == 3 && matrices.size(1) == matrices.size(2),
              "matrices must be [L, n, n], got ", matrices.sizes());
  TORCH_CHECK(matrices.scalar_type() == at::kDouble || matrices.scalar_type() == at::kFloat,
              "matrices must be float32 or float64, got ", matrices.scalar_type());
  const int64_t L = matrices.size(0), n = matrices.size(1);
  TORCH_CHECK(n >= 1, "matrices must not be empty");
  TORCH_CHECK(lam.numel() == 0 || (lam.dim() == 2 && lam.size(0) == L && lam.size(1) == n),
              "lam must be [L, n] = [", L, ", ", n, "] (or empty: solved here), got ", lam.sizes());
  TORCH_CHECK(lam.scalar_type() == at::kDouble, "lam must be float64, got ", lam.scalar_type());
  TORCH_CHECK(gram_error.dim() == 1 && gram_error.size(0) == L && gram_error.scalar_type() == at::kDouble,
              "gram_error must be float64 [L] = [", L, "], got ", gram_error.sizes());
  TORCH_CHECK(eps.dim() == 1 && eps.scalar_type() == at::kDouble, "eps must be float64 [E], got ", eps.sizes());
  TORCH_CHECK(relative >= 0 && relative <= 2, "relative must be 0 (absolute), 1 (max) or 2 (trace), got ", relative);
  TORCH_CHECK(dim >= n, "dim must be at least n = ", n, ", got ", dim);
  TORCH_CHECK(topk >= 0, "topk must be >= 0, got ", topk);
  // lam [0] (numel 0): solve here, one LAPACK call per matrix spread over the threads (torch's
  // batched eigvalsh solves them one after another)
  at::Tensor l;
  if (lam.numel() == 0) {
    l = at::empty({L, n}, matrices.options().dtype(at::kDouble));
    const auto m64 = matrices.to(at::kDouble);
    at::parallel_for(0, L, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) l.select(0, r).copy_(at::linalg_eigvalsh(m64.select(0, r)));
    });
  } else {
    l = lam.contiguous();
  }
  const auto g = gram_error.contiguous();
  const auto e = eps.contiguous();
  Args a{n, dim, e.size(0), topk, relative, 4 * e.size(0) + 7 + topk, acc_unit_roundoff, e.data_ptr<double>()};
  auto rows = at::empty({L, a.width}, l.options());
  auto lam_desc = at::empty({L, dim}, l.options());
  const double* lp = l.data_ptr<double>();
  const double* gp = g.data_ptr<double>();
  double* rp = rows.data_ptr<double>();
  double* dp = lam_desc.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(matrices.scalar_type(), "spectrum_rows_cpu", [&] {
    const scalar_t* mp = matrices.data_ptr<scalar_t>();
    const int64_t s0 = matrices.stride(0), s1 = matrices.stride(1), s2 = matrices.stride(2);
    const int64_t grain = std::max<int64_t>(1, 65536 / dim);
    at::parallel_for(0, L, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        one_row<scalar_t>(a, mp + r * s0, s1, s2, lp + r * n, gp[r], rp + r * a.width, dp + r * dim);
    });
  });
  return {rows, lam_desc};
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CPU, m) { m.impl("spectrum_rows", &spectrum_rows_cpu); }

}  // namespace effrank_fast
