#pragma once
// The CUDA kernels of jacobi_eigh (see jacobi_core.h for the algorithm). Kept free of torch
// headers so that tests/cuda_emulation/ can compile them for the host with emulated threads and
// barriers (CI has no GPU); jacobi_eigh_cuda.cu launches them.
//
//  * jacobi_small_kernel: one thread block per matrix of a batch, the whole matrix and its
//    rotations in shared memory, the scalar parallel-order Jacobi.
//  * jacobi_blocked_kernel: one cooperative launch per matrix. In each round every pair
//    subproblem (2b×2b) is solved by one block in shared memory, a grid barrier follows, then all
//    blocks apply the rotations tile by tile (A ← QᵀAQ, V ← VQ), and another barrier. The working
//    matrices live in global memory (L2-resident at these sizes) and are read with ld.cg so that
//    no block sees a stale L1 line written by another block.
// Both decide convergence on the device: every block reads the same reduced off-diagonal mass
// after a barrier, so the loop exits uniformly and the host never waits.
#include <cstdint>

#include "jacobi_eigh/jacobi_core.h"

#ifdef __CUDACC__
#include <cooperative_groups.h>
namespace cg = cooperative_groups;
#define JE_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace effrank_fast {
namespace jacobi {

constexpr int kThreads = 256;  // threads per block (the kernels work for any multiple of 32)

// Sum over the block; the total is returned to every thread (two barriers inside, so every
// thread of the block must call it).
__device__ double block_sum(double v, double* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  const int nwarps = (blockDim.x + 31) >> 5;
  for (int w = 0; w < nwarps; ++w) total += scratch[w];
  return total;
}

// ------------------------------------------------------------------------------------------
// Small matrices: one block per matrix.
// ------------------------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(kThreads)
    jacobi_small_kernel(const T* __restrict__ in, int n, int npad, int max_sweeps, double tol, T* __restrict__ w_out,
                        T* __restrict__ v_out, double* __restrict__ off_out, int64_t* __restrict__ sweeps_out) {
  JE_DYNAMIC_SMEM(smem_raw);
  T* S = reinterpret_cast<T*>(smem_raw);
  T* U = S + npad * npad;
  T* cs = U + npad * npad;
  T* sn = cs + npad / 2;
  T* tn = sn + npad / 2;
  int* pi = reinterpret_cast<int*>(tn + npad / 2);
  int* qi = pi + npad / 2;
  __shared__ double scratch[32];
  const int tid = threadIdx.x, nthr = blockDim.x;
  const T* a = in + static_cast<int64_t>(blockIdx.x) * n * n;

  double fro_part = 0.0, off_part = 0.0;
  for (int w = tid; w < npad * npad; w += nthr) {
    const int i = w / npad, j = w % npad;
    T v = T(0);
    if (i < n && j < n) v = T(0.5) * (a[i * n + j] + a[j * n + i]);
    S[w] = v;
    U[w] = T(i == j);
    fro_part += double(v) * double(v);
    if (i != j) off_part += double(v) * double(v);
  }
  const double fro2 = block_sum(fro_part, scratch);
  double off2 = block_sum(off_part, scratch);
  const double tol2 = tol * tol * fro2;
  int sweeps = 0;
  for (int sweep = 0; sweep < max_sweeps && !(off2 <= tol2); ++sweep) {  // uniform; NaN keeps going
    for (int r = 0; r < npad - 1; ++r) {
      jacobi::round_rotations(S, npad, r, cs, sn, tn, pi, qi, tid, nthr);
      __syncthreads();
      jacobi::round_apply(S, U, npad, cs, sn, tn, pi, qi, tid, nthr);
      __syncthreads();
    }
    off2 = block_sum(jacobi::off_sq(S, npad, tid, nthr), scratch);
    sweeps = sweep + 1;
  }
  // Sort ascending: thread i places eigenvalue i and its vector.
  T* w_b = w_out + static_cast<int64_t>(blockIdx.x) * n;
  T* v_b = v_out + static_cast<int64_t>(blockIdx.x) * n * n;
  for (int i = tid; i < n; i += nthr) {
    const T di = S[i * npad + i];
    int r = 0;
    for (int j = 0; j < n; ++j) {
      const T dj = S[j * npad + j];
      r += (dj < di) || (dj == di && j < i);
    }
    w_b[r] = di;
    for (int row = 0; row < n; ++row) v_b[row * n + r] = U[row * npad + i];
  }
  if (tid == 0) {
    off_out[blockIdx.x] = fro2 == 0.0 ? 0.0 : sqrt(off2 / fro2);
    sweeps_out[blockIdx.x] = sweeps;
  }
}

// ------------------------------------------------------------------------------------------
// Larger matrices: cooperative blocked Jacobi, one launch per matrix.
// ------------------------------------------------------------------------------------------
template <typename T>
struct BlockedArgs {
  const T* in;
  T* A;          // [npad, npad] working matrix
  T* V;          // [npad, npad] accumulated rotations
  T* Q;          // [pairs, s, s] this round's subproblem rotations
  double* red;   // [2 + max_sweeps], zeroed: ‖A‖_F², off² of the input, off² after each sweep
  int* rank;     // [n]
  T* w_out;
  T* v_out;
  double* off_out;
  int64_t* sweeps_out;
  Layout L;
  int max_sweeps;
  double tol;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) jacobi_blocked_kernel(BlockedArgs<T> args) {
  cg::grid_group grid = cg::this_grid();
  const Layout L = args.L;
  const int s = L.s, npad = L.npad, n = L.n, b = L.b, m = L.m, pairs = L.pairs;
  constexpr int kSub = jacobi::kMaxSub;
  __shared__ __align__(16) unsigned char smem_raw[4 * kSub * kSub * sizeof(T)];
  T* S = reinterpret_cast<T*>(smem_raw);
  T* U = S + kSub * kSub;
  T* X = U + kSub * kSub;
  T* Y = X + kSub * kSub;
  __shared__ T cs[kSub / 2], sn[kSub / 2], tn[kSub / 2];
  __shared__ int pi[kSub / 2], qi[kSub / 2];
  __shared__ double scratch[32];
  const int tid = threadIdx.x, nthr = blockDim.x;
  const int64_t gtid = static_cast<int64_t>(blockIdx.x) * blockDim.x + tid;
  const int64_t gthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nn = static_cast<int64_t>(npad) * npad;

  double fro_part = 0.0, off_part = 0.0;
  for (int64_t idx = gtid; idx < nn; idx += gthreads) {
    const int i = static_cast<int>(idx / npad), j = static_cast<int>(idx % npad);
    T v = T(0);
    if (i < n && j < n) v = T(0.5) * (args.in[static_cast<int64_t>(i) * n + j] + args.in[static_cast<int64_t>(j) * n + i]);
    __stcg(&args.A[idx], v);
    __stcg(&args.V[idx], T(i == j));
    fro_part += double(v) * double(v);
    if (i != j) off_part += double(v) * double(v);
  }
  {
    const double f = block_sum(fro_part, scratch);
    const double o = block_sum(off_part, scratch);
    if (tid == 0) {
      atomicAdd(&args.red[0], f);
      atomicAdd(&args.red[1], o);
    }
  }
  grid.sync();
  const double fro2 = __ldcg(&args.red[0]);
  const double tol2 = args.tol * args.tol * fro2;
  double off2 = __ldcg(&args.red[1]);
  int sweeps = 0;

  for (int sweep = 0; sweep < args.max_sweeps && !(off2 <= tol2); ++sweep) {  // grid-uniform
    double* off_acc = &args.red[2 + sweep];
    for (int r = 0; r < m - 1; ++r) {
      const bool last_round = (r == m - 2);
      // Solve the pair subproblems of this round.
      for (int P = blockIdx.x; P < pairs; P += gridDim.x) {
        int I, J;
        jacobi::round_robin(m, r, P, &I, &J);
        for (int w = tid; w < s * s; w += nthr) {
          const int l1 = w / s, l2 = w % s;
          const int64_t g = static_cast<int64_t>(jacobi::pair_index(b, I, J, l1)) * npad + jacobi::pair_index(b, I, J, l2);
          S[w] = __ldcg(&args.A[g]);
          U[w] = T(l1 == l2);
        }
        __syncthreads();
        for (int ir = 0; ir < s - 1; ++ir) {
          jacobi::round_rotations(S, s, ir, cs, sn, tn, pi, qi, tid, nthr);
          __syncthreads();
          jacobi::round_apply(S, U, s, cs, sn, tn, pi, qi, tid, nthr);
          __syncthreads();
        }
        T* QP = args.Q + static_cast<int64_t>(P) * s * s;
        double part = 0.0;
        for (int w = tid; w < s * s; w += nthr) {
          const int l1 = w / s, l2 = w % s;
          const int64_t g = static_cast<int64_t>(jacobi::pair_index(b, I, J, l1)) * npad + jacobi::pair_index(b, I, J, l2);
          __stcg(&args.A[g], S[w]);
          __stcg(&QP[w], U[w]);
          if (l1 != l2) part += double(S[w]) * double(S[w]);
        }
        if (last_round) {
          const double t = block_sum(part, scratch);
          if (tid == 0) atomicAdd(off_acc, t);
        }
        __syncthreads();
      }
      grid.sync();
      // Apply: A tiles (P ≠ R) and V tiles (row chunk c, pair P).
      const int ntiles = pairs * pairs;
      for (int t = blockIdx.x; t < 2 * ntiles; t += gridDim.x) {
        if (t < ntiles) {
          const int P = t / pairs, R = t % pairs;
          if (P == R) continue;  // block-uniform
          int IP, JP, IR, JR;
          jacobi::round_robin(m, r, P, &IP, &JP);
          jacobi::round_robin(m, r, R, &IR, &JR);
          const T* QP = args.Q + static_cast<int64_t>(P) * s * s;
          const T* QR = args.Q + static_cast<int64_t>(R) * s * s;
          for (int w = tid; w < s * s; w += nthr) {
            const int l1 = w / s, l2 = w % s;
            const int64_t g =
                static_cast<int64_t>(jacobi::pair_index(b, IP, JP, l1)) * npad + jacobi::pair_index(b, IR, JR, l2);
            X[w] = __ldcg(&args.A[g]);
            S[w] = __ldcg(&QP[w]);
            U[w] = __ldcg(&QR[w]);
          }
          __syncthreads();
          jacobi::matmul_tn(S, X, Y, s, tid, nthr);  // Y = Q_Pᵀ X
          __syncthreads();
          jacobi::matmul_nn(Y, U, X, s, tid, nthr);  // X = Y Q_R
          __syncthreads();
          double part = 0.0;
          for (int w = tid; w < s * s; w += nthr) {
            const int l1 = w / s, l2 = w % s;
            const int64_t g =
                static_cast<int64_t>(jacobi::pair_index(b, IP, JP, l1)) * npad + jacobi::pair_index(b, IR, JR, l2);
            __stcg(&args.A[g], X[w]);
            part += double(X[w]) * double(X[w]);
          }
          if (last_round) {
            const double tot = block_sum(part, scratch);
            if (tid == 0) atomicAdd(off_acc, tot);
          }
          __syncthreads();
        } else {
          const int c = (t - ntiles) / pairs, P = (t - ntiles) % pairs;
          int IP, JP;
          jacobi::round_robin(m, r, P, &IP, &JP);
          const T* QP = args.Q + static_cast<int64_t>(P) * s * s;
          for (int w = tid; w < s * s; w += nthr) {
            const int rr = w / s, l = w % s;
            X[w] = __ldcg(&args.V[static_cast<int64_t>(c * s + rr) * npad + jacobi::pair_index(b, IP, JP, l)]);
            S[w] = __ldcg(&QP[w]);
          }
          __syncthreads();
          jacobi::matmul_nn(X, S, Y, s, tid, nthr);  // Y = V_tile Q_P
          __syncthreads();
          for (int w = tid; w < s * s; w += nthr) {
            const int rr = w / s, l = w % s;
            __stcg(&args.V[static_cast<int64_t>(c * s + rr) * npad + jacobi::pair_index(b, IP, JP, l)], Y[w]);
          }
          __syncthreads();
        }
      }
      grid.sync();
    }
    off2 = __ldcg(off_acc);
    sweeps = sweep + 1;
  }

  // Sort ascending and write the outputs.
  for (int64_t i = gtid; i < n; i += gthreads) {
    const T di = __ldcg(&args.A[i * npad + i]);
    int r = 0;
    for (int j = 0; j < n; ++j) {
      const T dj = __ldcg(&args.A[static_cast<int64_t>(j) * npad + j]);
      r += (dj < di) || (dj == di && j < i);
    }
    __stcg(&args.rank[i], r);
    args.w_out[r] = di;
  }
  grid.sync();
  const int64_t nsq = static_cast<int64_t>(n) * n;
  for (int64_t idx = gtid; idx < nsq; idx += gthreads) {
    const int64_t row = idx / n, i = idx % n;
    args.v_out[row * n + __ldcg(&args.rank[i])] = __ldcg(&args.V[row * npad + i]);
  }
  if (gtid == 0) {
    *args.off_out = fro2 == 0.0 ? 0.0 : sqrt(off2 / fro2);
    *args.sweeps_out = sweeps;
  }
}

}  // namespace jacobi
}  // namespace effrank_fast
