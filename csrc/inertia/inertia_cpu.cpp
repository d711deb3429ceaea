// Exact ε-counts by Sylvester's law of inertia, CPU (the path CI tests).
//
// For each threshold τ, factor A = M − τI = L D Lᵀ without pivoting, in float64, right-looking and
// blocked: the b×b diagonal block unblocked, the panel by a triangular solve (W = A21 L11⁻ᵀ,
// L21 = W D1⁻¹), and the trailing update A22 −= W L21ᵀ restricted to the lower triangle by one
// GEMM per block column. #{λ(M) > τ} = #{D_ii > 0}. Only the lower triangle of M is read, as in
// torch.linalg.eigvalsh. The diagnostics and the error bound δ are defined in inertia_common.h.
//
// Also the CPU kernel of tridiag_top (largest eigenpair of the Lanczos matrix, tridiag.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "common.h"
#include "inertia/inertia_args.h"
#include "inertia/inertia_common.h"
#include "inertia/tridiag.h"
#include "mkl_isa.h"

namespace effrank_fast {
namespace {

using inertia::sticky_max;

// 128: 1.78× (d = 1024) and 1.76× (2048) a 2-thread Cholesky for the two certificate ends side by
// side, against 1.86× and 1.92× at 64 (rank-64 trailing GEMMs run below peak); 192–256 no better.
constexpr int64_t kDefaultBlockCpu = 128;
constexpr int64_t kColumnBlock = 256;  // block-column width of the lower-triangle trailing update

struct Result {
  int64_t positive = 0;
  double min_pivot_rel = 0.0, growth = 0.0, error_bound = 0.0, scale = 0.0, max_abs_l = 1.0;
  int64_t band = 0;
};

// Unblocked LDLᵀ of the kb×kb block at `a` (row stride lda), in place on the lower triangle:
// afterwards a[i][j] (i > j) holds L_ij and a[j][j] holds D_jj. False on a zero or non-finite pivot.
bool ldlt_unblocked(double* a, int64_t lda, int64_t kb, double* colsq, double* colmax, double* w) {
  double* lcol = w + kb;  // column j of L, contiguous: the update's inner loop runs along rows
  for (int64_t j = 0; j < kb; ++j) {
    const double dj = a[j * lda + j];
    if (dj == 0.0 || !std::isfinite(dj)) return false;
    for (int64_t i = j + 1; i < kb; ++i) {
      w[i] = a[i * lda + j];  // = L_ij·D_j before rounding; the update uses it exactly
      const double lij = w[i] / dj;
      a[i * lda + j] = lij;
      lcol[i] = lij;
      colsq[j] += lij * lij;
      colmax[j] = sticky_max(colmax[j], std::abs(lij));
    }
    for (int64_t i = j + 1; i < kb; ++i) {
      const double wi = w[i];
      double* row = a + i * lda;
      for (int64_t l = j + 1; l <= i; ++l) row[l] -= wi * lcol[l];
    }
  }
  return true;
}

// C −= A·Bᵀ for row-major C [m, n] (unit column stride) and A [m, k], B [n, k] of any 2-D strides:
// MKL's per-ISA sequential dgemm where there is one (mkl_isa.h; the LDLᵀ runs one per thread, and
// on AMD CPUs torch's GEMM takes MKL's AVX2 code: half the AVX-512 kernel's rate on Zen 5), else
// addmm_. In column-major terms C is Cᵀ [n, m] = B·Aᵀ.
void sub_a_bt(at::Tensor& C, const at::Tensor& A, const at::Tensor& B) {
  const mkl_isa::DgemmFn fn = mkl_isa::dgemm_kernel();
  const int64_t m = C.size(0), n = C.size(1), k = A.size(1);
  // A column-major reading of X [r, c] with row stride s0, column stride s1: row-major (s1 == 1) is
  // Xᵀ with leading dimension s0; column-major (s0 == 1) is X with leading dimension s1.
  auto layout = [](const at::Tensor& x, bool& row_major, int64_t& ld) {
    if (x.stride(1) == 1 && x.stride(0) >= x.size(1)) {
      row_major = true, ld = x.stride(0);
      return true;
    }
    if (x.stride(0) == 1 && x.stride(1) >= x.size(0)) {
      row_major = false, ld = x.stride(1);
      return true;
    }
    return false;
  };
  bool a_rm = false, b_rm = false;
  int64_t lda = 0, ldb = 0;
  const bool ok = fn != nullptr && m > 0 && n > 0 && k > 0 && C.stride(1) == 1 && C.stride(0) >= n &&
                  layout(A, a_rm, lda) && layout(B, b_rm, ldb) && std::max({m, n, k, lda, ldb, C.stride(0)}) < INT32_MAX;
  if (!ok) {
    C.addmm_(A, B.t(), /*beta=*/1.0, /*alpha=*/-1.0);
    return;
  }
  // op(X) = B [n, k]: B's column-major reading is Bᵀ when B is row-major ("T"), B itself otherwise;
  // op(Y) = Aᵀ [k, m]: A's reading is Aᵀ when A is row-major ("N"), A otherwise ("T").
  const double alpha = -1.0, beta = 1.0;
  const int64_t ldc = C.stride(0);
  fn(b_rm ? "T" : "N", a_rm ? "N" : "T", &n, &m, &k, &alpha, B.data_ptr<double>(), &ldb, A.data_ptr<double>(), &lda,
     &beta, C.data_ptr<double>(), &ldc);
}

Result factor_count(at::Tensor A, int64_t block) {
  // A: d×d float64 contiguous, overwritten.
  const int64_t d = A.size(0);
  double* a = A.data_ptr<double>();
  // ‖A‖_F of the symmetric matrix whose lower triangle is A's (NaN input stays NaN). A plain loop:
  // small ATen reductions wake the OpenMP pool, which costs milliseconds on a loaded machine.
  double frob_sq = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double* row = a + i * d;
    double off = 0.0;
    for (int64_t j = 0; j < i; ++j) off += row[j] * row[j];
    frob_sq += 2.0 * off + row[i] * row[i];
  }
  const double norm = std::sqrt(frob_sq);
  const double norm_safe = std::max(norm, std::numeric_limits<double>::min());
  std::vector<double> colsq(d, 0.0), colmax(d, 1.0), pivots(d, 0.0), w(2 * block, 0.0);
  bool bad = false;

  for (int64_t k0 = 0; k0 < d && !bad; k0 += block) {
    const int64_t kb = std::min(block, d - k0);
    double* diag = a + k0 * d + k0;
    if (!ldlt_unblocked(diag, d, kb, colsq.data() + k0, colmax.data() + k0, w.data())) {
      bad = true;
      break;
    }
    for (int64_t j = 0; j < kb; ++j) pivots[k0 + j] = diag[j * d + j];
    const int64_t rest = d - k0 - kb;
    if (rest == 0) break;

    at::Tensor blk = A.narrow(0, k0, kb).narrow(1, k0, kb);
    at::Tensor L11 = blk.tril(-1) + at::eye(kb, A.options());
    at::Tensor D1 = blk.diagonal().clone();
    at::Tensor A21 = A.narrow(0, k0 + kb, rest).narrow(1, k0, kb);
    // W = A21 L11⁻ᵀ (L11 Wᵀ = A21ᵀ, a substitution-based TRSM), L21 = W D1⁻¹.
    at::Tensor W = at::linalg_solve_triangular(L11, A21.t(), /*upper=*/false, /*left=*/true,
                                               /*unitriangular=*/true)
                       .t();
    at::Tensor L21 = W / D1;
    A21.copy_(L21);
    at::Tensor sq = L21.square().sum(0).contiguous();
    at::Tensor mx = L21.abs().amax(0).contiguous();
    const double* sqp = sq.data_ptr<double>();
    const double* mxp = mx.data_ptr<double>();
    for (int64_t j = 0; j < kb; ++j) {
      colsq[k0 + j] += sqp[j];
      colmax[k0 + j] = sticky_max(colmax[k0 + j], mxp[j]);
    }
    // A22 −= W L21ᵀ (= L21 D1 L21ᵀ), lower triangle only: block column [c0, c0+cw) from row c0 down.
    const int64_t r0 = k0 + kb;
    const int64_t nblocks = (rest + kColumnBlock - 1) / kColumnBlock;
    auto update = [&](int64_t b) {
      const int64_t c0 = b * kColumnBlock, cw = std::min(kColumnBlock, rest - c0);
      at::Tensor C = A.narrow(0, r0 + c0, rest - c0).narrow(1, r0 + c0, cw);
      sub_a_bt(C, W.narrow(0, c0, rest - c0), L21.narrow(0, c0, cw));
    };
    const int64_t threads = at::get_num_threads();
    if (mkl_isa::dgemm_kernel() != nullptr && threads > 1 && nblocks > 1 && !at::in_parallel_region()) {
      // A lone factorisation: the single-threaded kernel on every thread, block columns dealt
      // round-robin (their heights fall with the column: contiguous ranges would be unbalanced).
      at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          for (int64_t b = t; b < nblocks; b += threads) update(b);
        }
      });
    } else {
      for (int64_t b = 0; b < nblocks; ++b) update(b);
    }
  }

  Result out;
  out.scale = norm;
  if (bad || !std::isfinite(norm)) {
    out.growth = out.error_bound = out.max_abs_l = std::numeric_limits<double>::infinity();
    out.band = d;  // δ = inf: every pivot is uncertain (counts is meaningless; the caller falls back)
    return out;
  }
  double min_pivot = std::numeric_limits<double>::infinity(), growth = 0.0, trace_ldl = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double p = pivots[i], ap = std::abs(p);
    if (p > 0) ++out.positive;
    min_pivot = std::min(min_pivot, ap);
    growth = sticky_max(growth, ap * colmax[i] * colmax[i]);
    out.max_abs_l = sticky_max(out.max_abs_l, colmax[i]);
    trace_ldl += ap * (1.0 + colsq[i]);
  }
  out.min_pivot_rel = min_pivot / norm_safe;
  out.growth = std::isfinite(growth) ? growth / norm_safe : std::numeric_limits<double>::infinity();
  const double delta = inertia::error_bound(d, trace_ldl, norm);
  out.error_bound = std::isfinite(delta) ? delta : std::numeric_limits<double>::infinity();
  // Pivots inside the uncertainty band: their sign is what a perturbation of size δ could change.
  for (int64_t i = 0; i < d; ++i) out.band += !(std::abs(pivots[i]) > out.error_bound);
  return out;
}

InertiaOutputs inertia_cpu(const at::Tensor& gram, const at::Tensor& thresholds, int64_t block_size) {
  check_inertia_args(gram, thresholds, block_size);
  const int64_t block = block_size > 0 ? block_size : kDefaultBlockCpu;
  const int64_t e = thresholds.size(0);
  at::Tensor M = gram.to(at::kDouble).contiguous();
  at::Tensor tau = thresholds.to(at::kDouble).contiguous();
  const double* tau_p = tau.data_ptr<double>();
  auto f64 = gram.options().dtype(at::kDouble);
  auto i64 = gram.options().dtype(at::kLong);
  at::Tensor counts = at::empty({e}, i64), band = at::empty({e}, i64);
  at::Tensor min_piv = at::empty({e}, f64), growth = at::empty({e}, f64), delta = at::empty({e}, f64);
  at::Tensor scale = at::empty({e}, f64), max_l = at::empty({e}, f64);
  std::vector<Result> results(e);
  auto factor_one = [&](int64_t t) {
    at::Tensor A = M.clone();
    A.diagonal().sub_(tau_p[t]);
    results[t] = factor_count(A, block);
  };
  // Several thresholds (the certificate's two ends, at least): one factorisation per thread, each
  // with sequential BLAS inside the parallel region. A single factorisation gains only ~1.5× from
  // a second core (its panels are serial), two side by side gain ~2×.
  if (e > 1 && at::get_num_threads() > 1 && !at::in_parallel_region()) {
    at::parallel_for(0, e, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) factor_one(t);
    });
  } else {
    for (int64_t t = 0; t < e; ++t) factor_one(t);
  }
  for (int64_t t = 0; t < e; ++t) {
    const Result& r = results[t];
    counts.data_ptr<int64_t>()[t] = r.positive;
    band.data_ptr<int64_t>()[t] = r.band;
    min_piv.data_ptr<double>()[t] = r.min_pivot_rel;
    growth.data_ptr<double>()[t] = r.growth;
    delta.data_ptr<double>()[t] = r.error_bound;
    scale.data_ptr<double>()[t] = r.scale;
    max_l.data_ptr<double>()[t] = r.max_abs_l;
  }
  return {counts, min_piv, growth, band, delta, scale, max_l};
}

std::tuple<at::Tensor, at::Tensor> tridiag_top_cpu(const at::Tensor& alpha, const at::Tensor& beta) {
  TORCH_CHECK(alpha.dim() == 1 && alpha.size(0) > 0, "alpha must be 1-D [k] with k >= 1, got ", alpha.sizes());
  TORCH_CHECK(beta.dim() == 1 && beta.size(0) == alpha.size(0) - 1, "beta must be 1-D [k - 1] = [",
              alpha.size(0) - 1, "], got ", beta.sizes());
  const int64_t k = alpha.size(0);
  at::Tensor a = alpha.to(at::kDouble).contiguous(), b = beta.to(at::kDouble).contiguous();
  auto f64 = alpha.options().dtype(at::kDouble);
  at::Tensor theta = at::empty({}, f64), y = at::empty({k}, f64);
  std::vector<double> work(5 * k);
  tridiag::top_eigenpair(a.data_ptr<double>(), b.data_ptr<double>(), static_cast<int>(k), theta.data_ptr<double>(),
                         y.data_ptr<double>(), work.data());
  return {theta, y};
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CPU, m) {
  m.impl("inertia", &inertia_cpu);
  m.impl("tridiag_top", &tridiag_top_cpu);
}

}  // namespace effrank_fast
