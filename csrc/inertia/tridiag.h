#pragma once
// Largest eigenpair of a small symmetric tridiagonal matrix T (the Lanczos matrix), written once for
// the host and the device so the CUDA op runs it in one thread without a host round trip.
//
// T has diagonal alpha[0..k) and off-diagonal beta[0..k-1). The eigenvalue comes from bisection on
// Sturm counts (exact to a few ulps), the eigenvector from inverse iteration with a tridiagonal LU
// with partial pivoting (LAPACK dgttrf/dgtts2).
#include <cfloat>
#include <cmath>

#include "host_device.h"

namespace effrank_fast {
namespace tridiag {

// Number of eigenvalues of T that are < x (Sturm sequence of the LDLᵀ pivots of T − xI).
EFF_HD inline int count_below(const double* alpha, const double* beta, int k, double x, double pivmin) {
  int count = 0;
  double q = alpha[0] - x;
  for (int i = 0;; ++i) {
    if (std::fabs(q) < pivmin) q = -pivmin;  // a zero pivot counts as negative (LAPACK dstebz)
    if (q < 0) ++count;
    if (i + 1 == k) break;
    q = (alpha[i + 1] - x) - beta[i] * beta[i] / q;
  }
  return count;
}

// theta = λ_max(T); y = its unit eigenvector (largest |y_i| made positive). work: 5k doubles.
EFF_HD inline void top_eigenpair(const double* alpha, const double* beta, int k, double* theta, double* y,
                                 double* work) {
  if (k == 1) {
    *theta = alpha[0];
    y[0] = 1.0;
    return;
  }
  // Gershgorin interval of T.
  double lo = alpha[0], hi = alpha[0], bmax = 0.0;
  for (int i = 0; i < k; ++i) {
    const double r = (i > 0 ? std::fabs(beta[i - 1]) : 0.0) + (i + 1 < k ? std::fabs(beta[i]) : 0.0);
    lo = std::fmin(lo, alpha[i] - r);
    hi = std::fmax(hi, alpha[i] + r);
    if (i + 1 < k) bmax = std::fmax(bmax, beta[i] * beta[i]);
  }
  const double scale = std::fmax(std::fabs(lo), std::fabs(hi));
  const double pivmin = DBL_MIN * std::fmax(1.0, bmax);
  hi += 4.0 * DBL_EPSILON * scale + pivmin;
  lo -= 4.0 * DBL_EPSILON * scale + pivmin;
  // Invariant: count_below(lo) ≤ k − 1 and count_below(hi) = k.
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (!(mid > lo && mid < hi)) break;
    if (hi - lo <= 2.0 * DBL_EPSILON * std::fmax(std::fabs(lo), std::fabs(hi)) + pivmin) break;
    if (count_below(alpha, beta, k, mid, pivmin) <= k - 1) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const double t = 0.5 * (lo + hi);
  *theta = t;

  // Inverse iteration on (T − tI): LU with partial pivoting of a tridiagonal matrix.
  double* dl = work;        // multipliers
  double* dd = work + k;    // diagonal of U
  double* du = work + 2 * k;   // first superdiagonal of U
  double* du2 = work + 3 * k;  // second superdiagonal of U (fill-in from row swaps)
  double* swapped = work + 4 * k;
  for (int i = 0; i < k; ++i) {
    dd[i] = alpha[i] - t;
    if (i + 1 < k) {
      dl[i] = beta[i];
      du[i] = beta[i];
    }
    du2[i] = 0.0;
    swapped[i] = 0.0;
  }
  for (int i = 0; i + 1 < k; ++i) {
    if (std::fabs(dd[i]) >= std::fabs(dl[i])) {
      if (dd[i] == 0.0) dd[i] = pivmin;
      const double fact = dl[i] / dd[i];
      dl[i] = fact;
      dd[i + 1] -= fact * du[i];
    } else {
      const double fact = dd[i] / dl[i];
      dd[i] = dl[i];
      dl[i] = fact;
      const double temp = du[i];
      du[i] = dd[i + 1];
      dd[i + 1] = temp - fact * dd[i + 1];
      if (i + 2 < k) {
        du2[i] = du[i + 1];
        du[i + 1] = -fact * du[i + 1];
      }
      swapped[i] = 1.0;
    }
  }
  const double tiny = std::fmax(pivmin, DBL_EPSILON * scale);
  for (int i = 0; i < k; ++i)
    if (std::fabs(dd[i]) < tiny) dd[i] = dd[i] < 0 ? -tiny : tiny;

  // Start vector with no special structure, so it is not orthogonal to the eigenvector.
  for (int i = 0; i < k; ++i) y[i] = 1.0 + 0.5 * std::sin(1.0 + 3.7 * i);
  for (int sweep = 0; sweep < 3; ++sweep) {
    for (int i = 0; i + 1 < k; ++i) {
      if (swapped[i] == 0.0) {
        y[i + 1] -= dl[i] * y[i];
      } else {
        const double temp = y[i];
        y[i] = y[i + 1];
        y[i + 1] = temp - dl[i] * y[i];
      }
    }
    y[k - 1] /= dd[k - 1];
    y[k - 2] = (y[k - 2] - du[k - 2] * y[k - 1]) / dd[k - 2];
    for (int i = k - 3; i >= 0; --i) y[i] = (y[i] - du[i] * y[i + 1] - du2[i] * y[i + 2]) / dd[i];
    double nrm = 0.0, big = 0.0;
    for (int i = 0; i < k; ++i) big = std::fmax(big, std::fabs(y[i]));
    if (!(big > 0.0) || !std::isfinite(big)) break;
    for (int i = 0; i < k; ++i) {
      y[i] /= big;  // rescale first: the solve can overflow-scale by 1/tiny
      nrm += y[i] * y[i];
    }
    nrm = std::sqrt(nrm);
    for (int i = 0; i < k; ++i) y[i] /= nrm;
  }
  int imax = 0;
  for (int i = 1; i < k; ++i)
    if (std::fabs(y[i]) > std::fabs(y[imax])) imax = i;
  if (y[imax] < 0)
    for (int i = 0; i < k; ++i) y[i] = -y[i];
}

}  // namespace tridiag
}  // namespace effrank_fast
