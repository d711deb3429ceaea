#pragma once
// Parallel-order Jacobi for a symmetric n×n matrix: the pieces shared by the CPU and the CUDA
// kernels, so that the CPU build (which CI runs) exercises the arithmetic, the rotation order and
// the convergence test the GPU runs; only the parallel scheduling, the barriers and the summation
// order of the off-diagonal norm (which only moves the stopping sweep at a tie) differ. Both pick
// the algorithm by the same rule: n ≤ kSmallMax, the scalar parallel-order Jacobi on the whole
// (even-padded) matrix, rounds of round_robin(npad) with round_rotations + round_apply (CUDA:
// one block per matrix); n > kSmallMax, the blocked algorithm below.
//
// Algorithm (one outer sweep):
//   The padded index range [0, npad) is cut into m (even) block columns of b indices. The m
//   blocks are paired by a round-robin tournament, m − 1 rounds per sweep, so every pair of
//   blocks meets once. In a round each pair P = (I, J) is an independent 2b×2b subproblem
//   S = A[I∪J, I∪J]: one inner sweep of the scalar parallel-order Jacobi on S gives an orthogonal
//   Q_P with Q_Pᵀ S Q_P nearly diagonal. Then A ← Qᵀ A Q and V ← V Q with Q = ⊕_P Q_P, applied
//   tile by tile: A[P, R] ← Q_Pᵀ A[P, R] Q_R (independent for every pair of pairs) and
//   V[rows, P] ← V[rows, P] Q_P. Convergence is tested on off(A) = ‖A − diag A‖_F after a sweep.
//
// Padding: indices n..npad−1 start as zero rows/columns. A rotation with a_pq = 0 is the identity,
// so by induction those rows/columns stay exactly zero and never mix with the real ones.
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define JE_HD __host__ __device__ __forceinline__
#else
#define JE_HD inline
#endif

namespace effrank_fast {
namespace jacobi {

// b for n > 2·kBlock. 2b = 32 keeps one subproblem (and one apply tile) at 32×32: 8 KB in float64.
constexpr int kBlock = 16;
constexpr int kMaxSub = 2 * kBlock;
// Largest n for the scalar (unblocked) algorithm: the whole matrix and U fit one block's shared
// memory on the GPU (2·64²·8 B = 64 KB in float64).
constexpr int kSmallMax = 64;

struct Layout {
  int n;      // matrix order
  int b;      // indices per block column
  int m;      // block columns (even, ≥ 2)
  int npad;   // m·b ≥ n
  int pairs;  // m / 2 subproblems per round; also the number of 2b-row chunks of V
  int s;      // 2b, the order of a subproblem
};

JE_HD Layout make_layout(int n) {
  Layout L;
  L.n = n;
  if (n <= kMaxSub) {
    L.b = n < 2 ? 1 : (n + 1) / 2;
    L.m = 2;
  } else {
    L.b = kBlock;
    L.m = (n + kBlock - 1) / kBlock;
    L.m += L.m % 2;
  }
  L.npad = L.m * L.b;
  L.pairs = L.m / 2;
  L.s = 2 * L.b;
  return L;
}

// Round-robin (circle method) pairing of `count` (even) items: in round r ∈ [0, count−1) slot k
// pairs (p, q); over all rounds every unordered pair occurs exactly once.
JE_HD void round_robin(int count, int round, int slot, int* p, int* q) {
  const int last = count - 1;
  if (slot == 0) {
    *p = last;
    *q = round;
  } else {
    *p = (round + slot) % last;
    *q = (round - slot + last) % last;
  }
}

// Global index of local index l ∈ [0, 2b) of the pair (I, J).
JE_HD int pair_index(int b, int I, int J, int l) { return l < b ? I * b + l : J * b + (l - b); }

// The symmetric 2×2 Schur rotation (Golub & Van Loan, Alg. 8.5.1): J = [[c, s], [−s, c]] on (p, q)
// makes Jᵀ [[app, apq], [apq, aqq]] J = diag(app − t·apq, aqq + t·apq). a_pq = 0 gives J = I.
template <typename T>
JE_HD void sym_schur2(T app, T aqq, T apq, T* c, T* s, T* t) {
  if (apq == T(0)) {
    *c = T(1);
    *s = T(0);
    *t = T(0);
    return;
  }
  const T tau = (aqq - app) / (T(2) * apq);
  const T atau = tau < T(0) ? -tau : tau;
  T tt;
  // For |τ| > 2^26 (float64) 1 + τ² rounds to τ², and τ² may overflow: t = 1/(2τ) is exact to u.
  if (atau > T(sizeof(T) == 8 ? 6.7e7 : 4.1e3)) {
    tt = T(0.5) / tau;
  } else {
    tt = (tau < T(0) ? T(-1) : T(1)) / (atau + sqrt(T(1) + tau * tau));
  }
  const T cc = T(1) / sqrt(T(1) + tt * tt);
  *c = cc;
  *s = tt * cc;
  *t = tt;
}

// --- one round of the scalar parallel-order Jacobi on an s×s matrix S (row-major, ld = s) ---
// Work item w of `nthr` workers (tid): a GPU block passes threadIdx/blockDim, the CPU 0/1.

// Phase 1: the s/2 rotations of round `round` from the current S, with their index pairs (so
// that phase 2 reads them instead of recomputing the pairing).
template <typename T>
JE_HD void round_rotations(const T* S, int s, int round, T* cs, T* sn, T* tn, int* pi, int* qi, int tid, int nthr) {
  for (int k = tid; k < s / 2; k += nthr) {
    int p, q;
    round_robin(s, round, k, &p, &q);
    pi[k] = p;
    qi[k] = q;
    sym_schur2(S[p * s + p], S[q * s + q], S[p * s + q], &cs[k], &sn[k], &tn[k]);
  }
}

// Phase 2: S ← Jᵀ S J and U ← U J for the round's block-diagonal J. Each 2×2 block of S (one pair
// of pairs) is read and written by one worker, so the items are independent.
template <typename T>
JE_HD void round_apply(T* S, T* U, int s, const T* cs, const T* sn, const T* tn, const int* pi, const int* qi,
                       int tid, int nthr) {
  const int h = s / 2;
  for (int w = tid; w < h * h; w += nthr) {
    const int a = w / h, e = w % h;
    const int p1 = pi[a], q1 = qi[a];
    if (a == e) {
      // The rotated 2×2 diagonal block is known exactly: diagonal, with these entries.
      const T apq = S[p1 * s + q1];
      S[p1 * s + p1] -= tn[a] * apq;
      S[q1 * s + q1] += tn[a] * apq;
      S[p1 * s + q1] = T(0);
      S[q1 * s + p1] = T(0);
      continue;
    }
    const int p2 = pi[e], q2 = qi[e];
    const T c1 = cs[a], s1 = sn[a], c2 = cs[e], s2 = sn[e];
    const T x11 = S[p1 * s + p2], x12 = S[p1 * s + q2], x21 = S[q1 * s + p2], x22 = S[q1 * s + q2];
    const T y11 = c2 * x11 - s2 * x12, y12 = s2 * x11 + c2 * x12;  // columns: X J2
    const T y21 = c2 * x21 - s2 * x22, y22 = s2 * x21 + c2 * x22;
    S[p1 * s + p2] = c1 * y11 - s1 * y21;  // rows: J1ᵀ Y
    S[p1 * s + q2] = c1 * y12 - s1 * y22;
    S[q1 * s + p2] = s1 * y11 + c1 * y21;
    S[q1 * s + q2] = s1 * y12 + c1 * y22;
  }
  for (int w = tid; w < s * h; w += nthr) {
    const int row = w / h, k = w % h;
    const int p = pi[k], q = qi[k];
    const T up = U[row * s + p], uq = U[row * s + q];
    U[row * s + p] = cs[k] * up - sn[k] * uq;
    U[row * s + q] = sn[k] * up + cs[k] * uq;
  }
}

// Sum of squares of the off-diagonal entries of an s×s matrix (this worker's share).
template <typename T>
JE_HD double off_sq(const T* S, int s, int tid, int nthr) {
  double acc = 0.0;
  for (int w = tid; w < s * s; w += nthr) {
    if (w / s != w % s) acc += double(S[w]) * double(S[w]);
  }
  return acc;
}

// out = Xᵀ Y (all s×s, row-major), this worker's share of the entries.
template <typename T>
JE_HD void matmul_tn(const T* X, const T* Y, T* out, int s, int tid, int nthr) {
  for (int w = tid; w < s * s; w += nthr) {
    const int i = w / s, j = w % s;
    T acc = T(0);
    for (int l = 0; l < s; ++l) acc += X[l * s + i] * Y[l * s + j];
    out[w] = acc;
  }
}

// out = X Y (all s×s, row-major), this worker's share of the entries.
template <typename T>
JE_HD void matmul_nn(const T* X, const T* Y, T* out, int s, int tid, int nthr) {
  for (int w = tid; w < s * s; w += nthr) {
    const int i = w / s, j = w % s;
    T acc = T(0);
    for (int l = 0; l < s; ++l) acc += X[i * s + l] * Y[l * s + j];
    out[w] = acc;
  }
}

// Position of eigenvalue i in ascending order among diag[0..n) (ties broken by index).
template <typename T>
JE_HD int ascending_rank(const T* diag, int n, int i) {
  const T di = diag[i];
  int r = 0;
  for (int j = 0; j < n; ++j) r += (diag[j] < di) || (diag[j] == di && j < i);
  return r;
}

}  // namespace jacobi
}  // namespace effrank_fast
