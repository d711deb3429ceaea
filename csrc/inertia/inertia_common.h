#pragma once
// What the CPU and CUDA inertia kernels report, computed by the same formulas.
//
// The kernels factor A = M − τI = L D Lᵀ (L unit lower triangular, D diagonal, no pivoting) in
// float64 and count the positive pivots: by Sylvester's law of inertia that is #{λ(M) > τ}.
// The computed factors are the exact factors of A + E with (Higham, Accuracy and Stability of
// Numerical Algorithms, 2nd ed., Thm 9.3 and §13.3, for LU with substitution-based triangular solves
// and conventional GEMM; U = D Lᵀ here)
//     |E| ≤ γ_{3d} |L||D||Lᵀ|,   γ_n = n·u / (1 − n·u),  u = 2⁻⁵³,
// and |L||D||Lᵀ| = B Bᵀ with B = |L||D|^{1/2} is positive semidefinite, so
//     ‖E‖₂ ≤ γ_{3d} · trace(|L||D||Lᵀ|) = γ_{3d} · Σ_k |D_k| (1 + Σ_{i>k} L_ik²)  =: δ_fact.
// Adding the rounding of the shift (≤ u·|A_ii| ≤ u·‖A‖_F on the diagonal), Weyl's theorem gives
//     #{λ(M) > τ + δ} ≤ count ≤ #{λ(M) > τ − δ},   δ = δ_fact + u·‖A‖_F,
// i.e. the count is exact whenever no eigenvalue of M lies within δ of τ. δ is a rigorous bound
// (up to the O(u²) terms of the analysis), computed from quantities the factorisation has anyway.
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace effrank_fast {
namespace inertia {

constexpr double kUnitRoundoff = DBL_EPSILON / 2;  // u = 2⁻⁵³

EFF_HD inline double gamma_n(double n) {
  const double nu = n * kUnitRoundoff;
  return nu < 0.5 ? nu / (1.0 - nu) : INFINITY;
}

// δ = γ_{3d}·T + u·‖A‖_F with T = Σ_k |D_k|(1 + Σ_i L_ik²).
// The relative diagnostics (min |D|, growth, the band) are relative to ‖A‖_F ≥ ‖A‖₂: a cheap stand-in
// for the spectral scale (for a Gram matrix with a decaying spectrum ‖A‖_F is within a small factor
// of λ_max, whereas max |A_ij| can be d times smaller).
EFF_HD inline double error_bound(int64_t d, double trace_ldl, double norm) {
  return gamma_n(3.0 * static_cast<double>(d)) * trace_ldl + kUnitRoundoff * norm;
}

// max(a, b) that keeps a NaN once it has seen one (fmax would drop it).
EFF_HD inline double sticky_max(double a, double b) { return (b > a || b != b) ? b : a; }

}  // namespace inertia
}  // namespace effrank_fast
