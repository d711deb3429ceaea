// Exact ε-counts by Sylvester's law of inertia, CPU.
//
// For each threshold τ, factor A = M − τI = L D Lᵀ without pivoting, in float64, right-looking
// and blocked (b×b diagonal block unblocked, panel by triangular solve, trailing update by one
// BLAS GEMM). Then #{λ(M) > τ} = #{D_ii > 0}. Pivot-free LDLᵀ is backward stable only while the
// growth stays bounded, so the kernel also returns the diagnostics the caller uses to decide a
// fallback (research/algorithms.md §3.3):
//   min_pivot_rel = min_i |D_ii| / ‖A‖_max
//   growth        = max_j |D_jj| · max_i |L_ij|² / ‖A‖_max   (bounds the entries of |L||D||Lᵀ|)
//   band_count    = #{i : |D_ii| ≤ band_rel · ‖A‖_max}
// A zero pivot makes growth +inf, which always triggers the fallback.
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "common.h"

namespace effrank_fast {
namespace {

struct Diagnostics {
  int64_t positive = 0;
  double min_pivot = std::numeric_limits<double>::infinity();
  double growth = 0.0;
  int64_t band = 0;
};

// Unblocked LDLᵀ of the kb×kb block at `a` (row stride `lda`), in place on the lower triangle:
// afterwards a[i][j] (i > j) holds L_ij and a[j][j] holds D_jj. Returns false on a zero pivot.
bool ldlt_unblocked(double* a, int64_t lda, int64_t kb, double* col_max) {
  for (int64_t j = 0; j < kb; ++j) {
    const double dj = a[j * lda + j];
    if (dj == 0.0 || !std::isfinite(dj)) return false;
    for (int64_t i = j + 1; i < kb; ++i) {
      const double lij = a[i * lda + j] / dj;
      a[i * lda + j] = lij;
      col_max[j] = std::max(col_max[j], std::abs(lij));
    }
    for (int64_t i = j + 1; i < kb; ++i) {
      const double lij_dj = a[i * lda + j] * dj;
      for (int64_t l = j + 1; l <= i; ++l) a[i * lda + l] -= lij_dj * a[l * lda + j];
    }
  }
  return true;
}

Diagnostics factor_count(at::Tensor A, int64_t block, double band_rel) {
  // A: d×d float64 contiguous, overwritten.
  const int64_t d = A.size(0);
  double* a = A.data_ptr<double>();
  const double norm = std::max(A.abs().max().item<double>(), std::numeric_limits<double>::min());
  std::vector<double> col_max(d, 1.0);  // |L_jj| = 1
  std::vector<double> pivots(d, 0.0);
  Diagnostics out;

  for (int64_t k0 = 0; k0 < d; k0 += block) {
    const int64_t kb = std::min(block, d - k0);
    double* diag = a + k0 * d + k0;
    if (!ldlt_unblocked(diag, d, kb, col_max.data() + k0)) {
      out.growth = std::numeric_limits<double>::infinity();
      out.min_pivot = 0.0;
      return out;
    }
    for (int64_t j = 0; j < kb; ++j) pivots[k0 + j] = diag[j * d + j];
    const int64_t rest = d - k0 - kb;
    if (rest == 0) break;

    at::Tensor L11 = A.narrow(0, k0, kb).narrow(1, k0, kb).tril(-1) +
                     at::eye(kb, A.options());  // unit lower triangle
    at::Tensor D1 = A.narrow(0, k0, kb).narrow(1, k0, kb).diagonal().clone();
    at::Tensor A21 = A.narrow(0, k0 + kb, rest).narrow(1, k0, kb);
    // Y = A21 L11⁻ᵀ, i.e. L11 Yᵀ = A21ᵀ; then L21 = Y D1⁻¹.
    at::Tensor Y = at::linalg_solve_triangular(L11, A21.t(), /*upper=*/false, /*left=*/true,
                                               /*unitriangular=*/true)
                       .t();
    at::Tensor L21 = Y / D1;
    A21.copy_(L21);
    at::Tensor l21_colmax = L21.abs().amax(0).contiguous();
    const double* cm = l21_colmax.data_ptr<double>();
    for (int64_t j = 0; j < kb; ++j) col_max[k0 + j] = std::max(col_max[k0 + j], cm[j]);
    // A22 −= L21 D1 L21ᵀ = Y L21ᵀ (only the lower triangle is read later, but one GEMM is cheaper
    // than a triangle-restricted loop here).
    at::Tensor A22 = A.narrow(0, k0 + kb, rest).narrow(1, k0 + kb, rest);
    A22.addmm_(Y, L21.t(), /*beta=*/1.0, /*alpha=*/-1.0);
  }

  const double band_abs = band_rel * norm;
  for (int64_t i = 0; i < d; ++i) {
    const double p = pivots[i];
    if (p > 0) ++out.positive;
    out.min_pivot = std::min(out.min_pivot, std::abs(p));
    out.growth = std::max(out.growth, std::abs(p) * col_max[i] * col_max[i]);
    if (std::abs(p) <= band_abs) ++out.band;
  }
  out.min_pivot /= norm;
  out.growth /= norm;
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> inertia_cpu(const at::Tensor& gram,
                                                                       const at::Tensor& thresholds,
                                                                       double band_rel, int64_t block_size) {
  EFF_CHECK_SQUARE(gram, "gram");
  EFF_CHECK_FLOAT(gram, "gram");
  TORCH_CHECK(thresholds.dim() == 1, "thresholds must be 1-D [E], got ", thresholds.sizes());
  TORCH_CHECK(block_size > 0, "block_size must be positive, got ", block_size);
  TORCH_CHECK(band_rel >= 0, "band_rel must be non-negative, got ", band_rel);
  const int64_t e = thresholds.size(0), d = gram.size(0);
  at::Tensor M = gram.to(at::kDouble).contiguous();
  at::Tensor tau = thresholds.to(at::kDouble).contiguous();
  auto f64 = gram.options().dtype(at::kDouble);
  auto i64 = gram.options().dtype(at::kLong);
  at::Tensor counts = at::empty({e}, i64), min_piv = at::empty({e}, f64);
  at::Tensor growth = at::empty({e}, f64), band = at::empty({e}, i64);
  at::Tensor eye = at::eye(d, f64);
  for (int64_t t = 0; t < e; ++t) {
    at::Tensor A = M - tau[t].item<double>() * eye;
    Diagnostics diag = factor_count(A, block_size, band_rel);
    counts[t] = diag.positive;
    min_piv[t] = diag.min_pivot;
    growth[t] = diag.growth;
    band[t] = diag.band;
  }
  return {counts, min_piv, growth, band};
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CPU, m) { m.impl("inertia", &inertia_cpu); }

}  // namespace effrank_fast
