#pragma once
// Host emulation of the CUDA constructs used by csrc/jacobi_eigh/jacobi_kernels.cuh, so that CI
// (no GPU) runs the kernels' own source. Every thread of a block is a fiber (ucontext) on the
// calling OS thread, and __syncthreads() switches to the next fiber round-robin: since every
// thread of a block passes the same sequence of barriers (CUDA's own rule), running each fiber up
// to its next barrier in turn *is* the barrier. A warp shuffle writes a slot array between two such
// barriers (a block-wide barrier is stronger than a warp's, and the kernels shuffle only in
// block-uniform code). Grid barriers are block barriers of a one-block grid (the kernels'
// grid-stride loops then cover all the work). Global memory is host memory; __ldcg/__stcg are
// plain accesses. Fibers instead of OS threads: a barrier costs a user-space context switch rather
// than ~threads futex wake-ups (50× faster on a 2-core machine), and the schedule is deterministic,
// so a missing barrier shows up every run as a read of data not yet written.
// What this cannot check: races between blocks and the GPU memory model — those rest on the
// ownership of tiles by blocks and on ld.cg/st.cg (multi-block emulation is out of scope).
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

struct EmuDim {
  unsigned x = 1, y = 1, z = 1;
};
inline EmuDim threadIdx, blockIdx, blockDim, gridDim;  // threadIdx: set on every fiber switch

struct EmuFiber {
  ucontext_t ctx{};
  std::unique_ptr<char[]> stack;
  bool done = false;
};

struct EmuBlock {
  std::vector<EmuFiber> fibers;
  ucontext_t main{};
  unsigned cur = 0;
  std::function<void()> body;
  std::vector<double> slots;
  std::vector<unsigned char> dynamic_smem;
};
inline EmuBlock* g_emu = nullptr;

// Run the next unfinished fiber up to its next barrier; back to the launcher once all are done.
inline void emu_switch() {
  EmuBlock& b = *g_emu;
  const unsigned n = static_cast<unsigned>(b.fibers.size()), from = b.cur;
  unsigned next = from;
  for (unsigned i = 1; i <= n; ++i) {
    if (!b.fibers[(from + i) % n].done) {
      next = (from + i) % n;
      break;
    }
  }
  if (b.fibers[next].done) {  // every fiber finished
    swapcontext(&b.fibers[from].ctx, &b.main);
    return;
  }
  if (next == from) return;  // a block of one thread
  b.cur = next;
  threadIdx.x = next;
  swapcontext(&b.fibers[from].ctx, &b.fibers[next].ctx);
  threadIdx.x = b.cur;  // resumed: whoever switched here set b.cur to this fiber
}

inline void emu_fiber_main() {
  g_emu->body();
  g_emu->fibers[g_emu->cur].done = true;
  emu_switch();  // never returns: nothing switches to a finished fiber
  std::abort();
}

inline void __syncthreads() { emu_switch(); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define JE_DYNAMIC_SMEM(name) unsigned char* name = g_emu->dynamic_smem.data()

template <typename T>
inline T __ldcg(const T* p) {
  return *p;
}
template <typename T>
inline void __stcg(T* p, T v) {
  *p = v;
}
inline double atomicAdd(double* p, double v) {  // one OS thread: a plain read-modify-write
  const double old = *p;
  *p = old + v;
  return old;
}

template <typename T>
inline T __shfl_down_sync(unsigned, T v, int offset) {
  const unsigned tid = threadIdx.x, lane = tid & 31u;
  g_emu->slots[tid] = static_cast<double>(v);
  __syncthreads();
  const T r = lane + offset < 32u ? static_cast<T>(g_emu->slots[tid + offset]) : v;
  __syncthreads();
  return r;
}

namespace cg {
struct grid_group {
  void sync() { __syncthreads(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cg

// getcontext returns twice: kept out of emu_launch so that no loop variable lives across it.
[[gnu::noinline]] inline void emu_make_fiber(EmuFiber& f, size_t stack_bytes) {
  f.stack = std::make_unique<char[]>(stack_bytes);
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack.get();
  f.ctx.uc_stack.ss_size = stack_bytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, emu_fiber_main, 0);
}

// Runs `body` (a call of the kernel) on blocks 0..grid−1, one block at a time, `threads` fibers
// each (a multiple of 32). A kernel with grid barriers must be launched with grid = 1.
template <typename F>
void emu_launch(unsigned grid, unsigned threads, size_t dynamic_smem, F body) {
  gridDim.x = grid;
  blockDim.x = threads;
  for (unsigned b = 0; b < grid; ++b) {
    EmuBlock blk;
    blk.body = body;
    blk.fibers = std::vector<EmuFiber>(threads);
    blk.slots.assign(threads, 0.0);
    blk.dynamic_smem.assign(dynamic_smem, 0);
    for (EmuFiber& f : blk.fibers) emu_make_fiber(f, 128 * 1024);
    g_emu = &blk;
    blockIdx.x = b;
    threadIdx.x = 0;
    swapcontext(&blk.main, &blk.fibers[0].ctx);  // back here once every fiber has finished
    g_emu = nullptr;
  }
}
