// Symmetric eigensolver by parallel-order Jacobi, CPU (see jacobi_core.h).
//
// The CPU runs the same algorithm as the CUDA kernels, serially, chosen by the same size rule, so
// that CI covers the arithmetic, the ordering and the convergence test the GPU uses: for
// n ≤ kSmallMax the scalar parallel-order Jacobi on the whole matrix (CUDA: jacobi_small_kernel,
// one block per matrix), above it the blocked algorithm (CUDA: jacobi_blocked_kernel). Batched
// input [..., n, n] is solved matrix by matrix (OpenMP over the batch).
#include <torch/library.h>
#include <ATen/Parallel.h>

#include <limits>
#include <tuple>
#include <vector>

#include "common.h"
#include "jacobi_eigh/jacobi_core.h"
#include "jacobi_eigh/jacobi_outputs.h"

namespace effrank_fast {
namespace {

using jacobi::Layout;

template <typename T>
struct Outputs {
  T* w;             // [n] ascending
  T* v;             // [n, n] row-major, columns are eigenvectors
  double* off;      // ‖A − diag A‖_F / ‖A‖_F after the last sweep
  int64_t* sweeps;  // sweeps run
};

// Eigenvalues ascending and the matching columns of V (diagonal of the npad×npad working A).
template <typename T>
void write_sorted(const std::vector<T>& A, const std::vector<T>& V, int n, int npad, Outputs<T> out) {
  std::vector<T> diag(n);
  for (int i = 0; i < n; ++i) diag[i] = A[static_cast<size_t>(i) * npad + i];
  std::vector<int> rank(n);
  for (int i = 0; i < n; ++i) rank[i] = jacobi::ascending_rank(diag.data(), n, i);
  for (int i = 0; i < n; ++i) out.w[rank[i]] = diag[i];
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < n; ++i) out.v[static_cast<size_t>(r) * n + rank[i]] = V[static_cast<size_t>(r) * npad + i];
}

// n ≤ kSmallMax: jacobi_small_kernel's algorithm with one worker (same rounds, same rotations).
template <typename T>
void solve_small(const T* in, int n, int64_t max_sweeps, double tol, Outputs<T> out) {
  const int npad = n + n % 2, h = npad / 2;
  std::vector<T> S(static_cast<size_t>(npad) * npad, T(0)), U(static_cast<size_t>(npad) * npad, T(0));
  double fro2 = 0.0, off2 = 0.0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      const T v = T(0.5) * (in[i * n + j] + in[j * n + i]);
      S[static_cast<size_t>(i) * npad + j] = v;
      fro2 += double(v) * double(v);
      if (i != j) off2 += double(v) * double(v);
    }
  }
  for (int i = 0; i < npad; ++i) U[static_cast<size_t>(i) * npad + i] = T(1);
  std::vector<T> cs(h), sn(h), tn(h);
  std::vector<int> pi(h), qi(h);
  const double tol2 = tol * tol * fro2;
  int64_t sweeps = 0;
  for (int64_t sweep = 0; sweep < max_sweeps && !(off2 <= tol2); ++sweep) {  // NaN keeps going
    for (int r = 0; r < npad - 1; ++r) {
      jacobi::round_rotations(S.data(), npad, r, cs.data(), sn.data(), tn.data(), pi.data(), qi.data(), 0, 1);
      jacobi::round_apply(S.data(), U.data(), npad, cs.data(), sn.data(), tn.data(), pi.data(), qi.data(), 0, 1);
    }
    off2 = jacobi::off_sq(S.data(), npad, 0, 1);
    sweeps = sweep + 1;
  }
  write_sorted(S, U, n, npad, out);
  *out.off = fro2 == 0.0 ? 0.0 : std::sqrt(off2 / fro2);  // NaN input gives NaN
  *out.sweeps = sweeps;
}

// n > kSmallMax: the blocked algorithm of jacobi_core.h (jacobi_blocked_kernel's, serially).
template <typename T>
void solve_blocked(const T* in, const Layout& L, int64_t max_sweeps, double tol, Outputs<T> out) {
  const int n = L.n, npad = L.npad, b = L.b, s = L.s, m = L.m;
  std::vector<T> A(static_cast<size_t>(npad) * npad, T(0)), V(static_cast<size_t>(npad) * npad, T(0));
  double fro2 = 0.0, off2 = 0.0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      const T v = T(0.5) * (in[i * n + j] + in[j * n + i]);
      A[static_cast<size_t>(i) * npad + j] = v;
      fro2 += double(v) * double(v);
      if (i != j) off2 += double(v) * double(v);
    }
  }
  for (int i = 0; i < npad; ++i) V[static_cast<size_t>(i) * npad + i] = T(1);

  std::vector<T> S(s * s), U(s * s), Qs(static_cast<size_t>(L.pairs) * s * s), tile(s * s), tmp(s * s);
  std::vector<T> cs(s / 2), sn(s / 2), tn(s / 2);
  std::vector<int> pi(s / 2), qi(s / 2);
  const double tol2 = tol * tol * fro2;
  int64_t sweeps = 0;
  // Convergence is tested before each sweep, on the off-diagonal mass the previous one left.
  for (int64_t sweep = 0; sweep < max_sweeps && !(off2 <= tol2); ++sweep) {  // NaN keeps going
    off2 = 0.0;
    for (int r = 0; r < m - 1; ++r) {
      const bool last_round = (r == m - 2);
      // Solve: one inner sweep per subproblem, Q_P accumulated in U.
      for (int P = 0; P < L.pairs; ++P) {
        int I, J;
        jacobi::round_robin(m, r, P, &I, &J);
        for (int l1 = 0; l1 < s; ++l1) {
          const int g1 = jacobi::pair_index(b, I, J, l1);
          for (int l2 = 0; l2 < s; ++l2) {
            S[l1 * s + l2] = A[static_cast<size_t>(g1) * npad + jacobi::pair_index(b, I, J, l2)];
            U[l1 * s + l2] = T(l1 == l2);
          }
        }
        for (int ir = 0; ir < s - 1; ++ir) {
          jacobi::round_rotations(S.data(), s, ir, cs.data(), sn.data(), tn.data(), pi.data(), qi.data(), 0, 1);
          jacobi::round_apply(S.data(), U.data(), s, cs.data(), sn.data(), tn.data(), pi.data(), qi.data(), 0, 1);
        }
        for (int l1 = 0; l1 < s; ++l1) {
          const int g1 = jacobi::pair_index(b, I, J, l1);
          for (int l2 = 0; l2 < s; ++l2)
            A[static_cast<size_t>(g1) * npad + jacobi::pair_index(b, I, J, l2)] = S[l1 * s + l2];
        }
        std::copy(U.begin(), U.end(), Qs.begin() + static_cast<size_t>(P) * s * s);
        if (last_round) off2 += jacobi::off_sq(S.data(), s, 0, 1);
      }
      // Apply: A[P, R] ← Q_Pᵀ A[P, R] Q_R for P ≠ R, and V[rows, P] ← V[rows, P] Q_P.
      for (int P = 0; P < L.pairs; ++P) {
        int IP, JP;
        jacobi::round_robin(m, r, P, &IP, &JP);
        const T* QP = Qs.data() + static_cast<size_t>(P) * s * s;
        for (int R = 0; R < L.pairs; ++R) {
          if (R == P) continue;
          int IR, JR;
          jacobi::round_robin(m, r, R, &IR, &JR);
          const T* QR = Qs.data() + static_cast<size_t>(R) * s * s;
          for (int l1 = 0; l1 < s; ++l1) {
            const int g1 = jacobi::pair_index(b, IP, JP, l1);
            for (int l2 = 0; l2 < s; ++l2)
              tile[l1 * s + l2] = A[static_cast<size_t>(g1) * npad + jacobi::pair_index(b, IR, JR, l2)];
          }
          jacobi::matmul_tn(QP, tile.data(), tmp.data(), s, 0, 1);
          jacobi::matmul_nn(tmp.data(), QR, tile.data(), s, 0, 1);
          for (int l1 = 0; l1 < s; ++l1) {
            const int g1 = jacobi::pair_index(b, IP, JP, l1);
            for (int l2 = 0; l2 < s; ++l2) {
              const T x = tile[l1 * s + l2];
              A[static_cast<size_t>(g1) * npad + jacobi::pair_index(b, IR, JR, l2)] = x;
              if (last_round) off2 += double(x) * double(x);
            }
          }
        }
        for (int c = 0; c < L.pairs; ++c) {  // 2b-row chunk c of V
          for (int rr = 0; rr < s; ++rr)
            for (int l = 0; l < s; ++l)
              tile[rr * s + l] = V[static_cast<size_t>(c * s + rr) * npad + jacobi::pair_index(b, IP, JP, l)];
          jacobi::matmul_nn(tile.data(), QP, tmp.data(), s, 0, 1);
          for (int rr = 0; rr < s; ++rr)
            for (int l = 0; l < s; ++l)
              V[static_cast<size_t>(c * s + rr) * npad + jacobi::pair_index(b, IP, JP, l)] = tmp[rr * s + l];
        }
      }
    }
    sweeps = sweep + 1;
  }

  write_sorted(A, V, n, npad, out);
  *out.off = fro2 == 0.0 ? 0.0 : std::sqrt(off2 / fro2);  // NaN input gives NaN
  *out.sweeps = sweeps;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> jacobi_eigh_cpu(const at::Tensor& a, int64_t max_sweeps,
                                                                           double tol) {
  TORCH_CHECK(a.dim() >= 2 && a.size(-1) == a.size(-2), "a must be [..., n, n], got ", a.sizes());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "a must be float32 or float64, got ", a.scalar_type());
  TORCH_CHECK(max_sweeps >= 0, "max_sweeps must be non-negative, got ", max_sweeps);
  TORCH_CHECK(tol >= 0, "tol must be non-negative, got ", tol);
  const int64_t n = a.size(-1);
  TORCH_CHECK(n <= (int64_t(1) << 20), "a is too large for the Jacobi solver: n = ", n);
  const JacobiOutputs outs = make_jacobi_outputs(a);
  at::Tensor a3 = outs.a3, w = outs.w, v = outs.v, off = outs.off, sweeps = outs.sweeps;
  const int64_t B = a3.size(0);
  if (n == 0 || B == 0) return {w, v, off, sweeps};
  const Layout L = jacobi::make_layout(static_cast<int>(n));
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "jacobi_eigh_cpu", [&] {
    const scalar_t* in = a3.data_ptr<scalar_t>();
    scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* vp = v.data_ptr<scalar_t>();
    double* op = off.data_ptr<double>();
    int64_t* sp = sweeps.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const Outputs<scalar_t> o{wp + i * n, vp + i * n * n, op + i, sp + i};
        if (n <= jacobi::kSmallMax) {
          solve_small<scalar_t>(in + i * n * n, static_cast<int>(n), max_sweeps, tol, o);
        } else {
          solve_blocked<scalar_t>(in + i * n * n, L, max_sweeps, tol, o);
        }
      }
    });
  });
  return {w, v, off, sweeps};
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CPU, m) { m.impl("jacobi_eigh", &jacobi_eigh_cpu); }

}  // namespace effrank_fast
