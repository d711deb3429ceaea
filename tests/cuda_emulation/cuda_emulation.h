#pragma once
// A CPU emulation of the CUDA execution model, just enough to run csrc/inertia/inertia_kernels.cuh
// unmodified: every CUDA thread of a block is a std::thread, __syncthreads is a block barrier, warp
// shuffles exchange through a per-warp buffer between two warp barriers, atomics take a lock,
// __shared__ variables are function statics (blocks run one after another). Divergent barriers or
// shuffles deadlock here instead of being undefined behaviour on the GPU; the test runs with a timeout.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}  // NOLINT
};
typedef void* cudaStream_t;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using std::fabs;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::sqrt;

namespace emu {

struct Warp {
  std::barrier<> bar{32};
  alignas(8) unsigned char buf[32][8];
};

struct Block {
  explicit Block(unsigned n) : bar(n) {
    for (unsigned w = 0; w < n / 32; ++w) warps.emplace_back(std::make_unique<Warp>());
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* tl_block = nullptr;
inline thread_local unsigned tl_lane = 0;
inline std::mutex atomic_mutex;

template <class T>
T shuffle(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  Warp& w = *tl_block->warps[tl_lane >> 5];
  const unsigned lane = tl_lane & 31;
  std::memcpy(w.buf[lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T r;
  std::memcpy(&r, w.buf[src & 31], sizeof(T));
  w.bar.arrive_and_wait();
  return r;
}

}  // namespace emu

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

inline void __syncthreads() { emu::tl_block->bar.arrive_and_wait(); }

template <class T>
T __shfl_sync(unsigned, T v, int src) {
  return emu::shuffle(v, src);
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  return emu::shuffle(v, static_cast<int>(emu::tl_lane & 31) ^ lane_mask);
}

inline double atomicAdd(double* addr, double v) {
  std::lock_guard<std::mutex> g(emu::atomic_mutex);
  const double old = *addr;
  *addr = old + v;
  return old;
}
inline unsigned long long atomicMax(unsigned long long* addr, unsigned long long v) {
  std::lock_guard<std::mutex> g(emu::atomic_mutex);
  const unsigned long long old = *addr;
  if (v > old) *addr = v;
  return old;
}
inline long long __double_as_longlong(double x) {
  long long r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
inline double __longlong_as_double(long long x) {
  double r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}

namespace emu {

template <class... Params>
struct Launcher {
  void (*kernel)(Params...);
  dim3 grid, block;
  template <class... Args>
  void operator()(Args... args) const {
    const unsigned n = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          Block ctx(n);
          std::vector<std::thread> threads;
          threads.reserve(n);
          for (unsigned t = 0; t < n; ++t) {
            threads.emplace_back([&, t] {
              tl_block = &ctx;
              tl_lane = t;
              threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
              blockIdx = dim3(bx, by, bz);
              blockDim = block;
              gridDim = grid;
              kernel(static_cast<Params>(args)...);
            });
          }
          for (auto& th : threads) th.join();
        }
  }
};

template <class... Params>
Launcher<Params...> launch(void (*kernel)(Params...), dim3 grid, dim3 block) {
  return Launcher<Params...>{kernel, grid, block};
}

}  // namespace emu

#define EFF_LAUNCH(kernel, grid, block, smem, stream) emu::launch(kernel, dim3(grid), dim3(block))
#define EFF_DYNAMIC_SMEM(type, name) static type name[16384]
#define EFF_CHECK_LAUNCH() ((void)0)
