#pragma once
// Host emulation of the CUDA constructs used by csrc/jacobi_eigh/jacobi_kernels.cuh, so that CI
// (no GPU) runs the kernels' own source: every thread of a block is a std::thread,
// __syncthreads() is a std::barrier, a warp shuffle goes through a slot array between two warp
// barriers, and grid barriers are block barriers of a one-block grid (the kernels' grid-stride
// loops then cover all the work). Global memory is host memory; __ldcg/__stcg are plain accesses
// (threads are ordered by the barriers). What this cannot check: races between blocks and the
// GPU memory model — those rest on the ownership of tiles by blocks and on ld.cg/st.cg.
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

struct EmuDim {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local EmuDim threadIdx, blockIdx;
inline EmuDim blockDim, gridDim;

struct EmuBlock {
  std::unique_ptr<std::barrier<>> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<double> slots;
  std::vector<unsigned char> dynamic_smem;
};
inline EmuBlock* g_emu = nullptr;

inline void __syncthreads() { g_emu->block->arrive_and_wait(); }

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
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }

template <typename T>
inline T __shfl_down_sync(unsigned, T v, int offset) {
  const unsigned tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
  g_emu->slots[tid] = static_cast<double>(v);
  g_emu->warps[warp]->arrive_and_wait();
  const T r = lane + offset < 32u ? static_cast<T>(g_emu->slots[tid + offset]) : v;
  g_emu->warps[warp]->arrive_and_wait();
  return r;
}

namespace cg {
struct grid_group {
  void sync() { __syncthreads(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cg

// Runs `body` (a call of the kernel) on blocks 0..grid−1, one block at a time, `threads` threads
// each (a multiple of 32). A kernel with grid barriers must be launched with grid = 1.
template <typename F>
void emu_launch(unsigned grid, unsigned threads, size_t dynamic_smem, F body) {
  gridDim.x = grid;
  blockDim.x = threads;
  for (unsigned b = 0; b < grid; ++b) {
    EmuBlock blk;
    blk.block = std::make_unique<std::barrier<>>(threads);
    for (unsigned w = 0; w < threads / 32; ++w) blk.warps.push_back(std::make_unique<std::barrier<>>(32));
    blk.slots.assign(threads, 0.0);
    blk.dynamic_smem.assign(dynamic_smem, 0);
    g_emu = &blk;
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&body, b, t] {
        blockIdx.x = b;
        threadIdx.x = t;
        body();
      });
    }
    for (auto& th : pool) th.join();
    g_emu = nullptr;
  }
}
