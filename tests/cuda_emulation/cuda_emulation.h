#pragma once
// A CPU emulation of the CUDA execution model, enough to compile and run the kernels' own source
// (csrc/jacobi_eigh/jacobi_kernels.cuh, csrc/inertia/inertia_kernels.cuh) with g++ ≥ 12, -std=c++20,
// without a GPU. Harnesses: jacobi_emulated.cpp, inertia_emulated.cpp (tests/test_jacobi_eigh.py,
// tests/test_inertia_emulated.py build them).
//
// Use: include this header before the kernel header, and launch with
//   emu::launch(kernel, grid, block, smem)(args…)            for kernel<<<grid, block, smem>>>(args…)
//   EFF_LAUNCH(kernel, grid, block, smem, stream)(args…)    the same, the inertia kernels' hook
// (synchronous: the kernel has finished on return; streams are ignored). EFF_CHECK_LAUNCH(),
// EFF_DYNAMIC_SMEM(type, name) and JE_DYNAMIC_SMEM(name) are the other hooks the kernel headers
// expect from their includer.
//
// Model
//  * Blocks run one after another on the calling OS thread. Every CUDA thread of the running block
//    is a fiber (its own stack, a guard page below it) on that OS thread, scheduled cooperatively:
//    a fiber runs until it reaches a barrier or exits, then the next runnable fiber in schedule
//    order runs (round robin). Nothing preempts a fiber; a context switch costs a few nanoseconds
//    (hand-written on x86-64, ucontext elsewhere or with -DCUDA_EMU_UCONTEXT), so even 1024-thread
//    blocks with thousands of barriers are cheap, and every run is deterministic.
//  * __syncthreads() (and _count/_and/_or, cg::this_thread_block().sync()) is a real block barrier:
//    a fiber waits until all blockDim threads have arrived. __shfl_sync/_up/_down/_xor, __syncwarp
//    and the votes are a real warp barrier of the warp's 32 lanes (threads 32w … 32w+31 of the
//    linearised threadIdx, as on the GPU), with the values exchanged through a per-warp buffer.
//  * Errors are reported on stderr and abort(), never passed silently:
//      - deadlock: no fiber can run while some have not exited (a barrier or shuffle inside
//        divergent code, a thread that exits while others wait at a barrier);
//      - threads of a block waiting at *different* __syncthreads() call sites (undefined on the
//        GPU even where the counts happen to match), lanes of a warp in different warp intrinsics
//        or with different masks or widths, masks that leave out lanes of the warp;
//      - grid.sync() in a grid of more than one block; invalid launch configurations (more than
//        1024 threads, more than 227 KiB of dynamic shared memory); a launch inside a kernel.
//  * Schedule order: after every __syncthreads() the block's threads run one after another, each
//    up to its next barrier, in threadIdx order in one block and in reverse order in the next
//    (blocks counted over all launches of the process); after a warp barrier (a shuffle) the
//    lanes of that warp run on first, so a warp runs ahead of the others up to the next block
//    barrier. A missing barrier between a write and another thread's read then shows up as a read
//    of data not yet written: in the forward blocks where the reader has the lower index, in the
//    reverse ones where it has the higher, so a harness whose kernels run as several blocks or
//    launches sees both. CUDA_EMU_SCHEDULE=forward, reverse or shuffle[:seed] (a fixed
//    permutation per block) in the environment forces one order. Every order is deterministic.
//    A removed barrier that guarded only a thread's own data (i.e. was redundant) changes
//    nothing, and one whose race does not change the outputs passes; -fsanitize=thread (below)
//    is the order-independent check.
//  * Shared memory: __shared__ variables are function statics (one block runs at a time); dynamic
//    shared memory (JE_DYNAMIC_SMEM, EFF_DYNAMIC_SMEM) is a heap buffer of exactly the launch's
//    size (so AddressSanitizer sees overruns), filled with 0xFF bytes (NaN as float/double, −1 as
//    an integer) before every block, like uninitialised shared memory.
//  * Global memory is host memory; __ldcg/__stcg/__ldg are plain accesses, fences are no-ops;
//    atomics are relaxed std::atomic_ref operations (atomic with respect to each other).
//  * Sanitizers: -fsanitize=address works (fiber switches are annotated); -fsanitize=thread
//    treats every fiber as a thread that synchronises only through the emulated barriers, warp
//    intrinsics and atomics, so it reports a race inside a block (a missing __syncthreads or
//    __syncwarp) whichever the schedule order.
//
// What this cannot check
//  * Races between blocks, and the GPU memory model: blocks run one after another, each to
//    completion, so anything that one block writes is visible to the next. Correctness across
//    blocks (ownership of tiles, ld.cg/st.cg against stale L1 lines, __threadfence, atomics that
//    are only relaxed) rests on the argument in the kernel and on the GPU tests.
//  * Multi-block grid synchronisation: cooperative-groups grid.sync() is emulated for one-block
//    grids only (a kernel whose grid-stride loops then cover all the work); more blocks abort.
//    There it is a block barrier, so a grid.sync() needed only between blocks (one that follows
//    a __syncthreads()) can be removed without any effect here.
//  * Spin-waiting on another thread (a flag set by another warp or block) hangs: fibers are not
//    preempted. The test's timeout reports it.
//  * Hardware limits other than those above (registers, static shared memory, occupancy), timing,
//    and reads of __shared__ statics before any write (not poisoned; they keep the previous
//    block's values). Warp-synchronous code that relies on implicit lockstep instead of
//    __syncwarp is not assumed to work: an emulated warp is never in lockstep (nor, since Volta,
//    a real one), so such code goes wrong here.
#include "emu_runtime.h"

// ------------------------------------------------------------------------------------------
// CUDA keywords.
// ------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

constexpr int warpSize = 32;

using std::fabs;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::sqrt;

// ------------------------------------------------------------------------------------------
// Device functions.
// ------------------------------------------------------------------------------------------
inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  emu::block_barrier(emu::Site("__syncthreads()", loc), 0);
}
inline int __syncthreads_count(int pred, std::source_location loc = std::source_location::current()) {
  return emu::block_barrier(emu::Site("__syncthreads_count()", loc), pred);
}
inline int __syncthreads_and(int pred, std::source_location loc = std::source_location::current()) {
  return emu::block_barrier(emu::Site("__syncthreads_and()", loc), pred) == static_cast<int>(emu::active->nthreads);
}
inline int __syncthreads_or(int pred, std::source_location loc = std::source_location::current()) {
  return emu::block_barrier(emu::Site("__syncthreads_or()", loc), pred) != 0;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location loc = std::source_location::current()) {
  emu::warp_barrier(emu::Site("__syncwarp()", loc), mask, 32);
}

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize,
              std::source_location loc = std::source_location::current()) {
  return emu::shuffle(emu::Shfl::kIdx, emu::Site("__shfl_sync()", loc), mask, v, src_lane, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                 std::source_location loc = std::source_location::current()) {
  return emu::shuffle(emu::Shfl::kUp, emu::Site("__shfl_up_sync()", loc), mask, v, static_cast<int>(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                   std::source_location loc = std::source_location::current()) {
  return emu::shuffle(emu::Shfl::kDown, emu::Site("__shfl_down_sync()", loc), mask, v, static_cast<int>(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize,
                  std::source_location loc = std::source_location::current()) {
  return emu::shuffle(emu::Shfl::kXor, emu::Site("__shfl_xor_sync()", loc), mask, v, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return emu::ballot(emu::Site("__ballot_sync()", loc), mask, pred);
}
inline int __any_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return emu::ballot(emu::Site("__any_sync()", loc), mask, pred) != 0;
}
inline int __all_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  const unsigned lanes = emu::active->warps[emu::self().tid >> 5].lanes;
  return emu::ballot(emu::Site("__all_sync()", loc), mask, pred) == lanes;
}

// Atomics: relaxed, as on the GPU.
namespace emu {
template <class T, class Op>
T atomic_update(T* addr, Op op) {
  std::atomic_ref<T> a(*addr);
  T old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, op(old), std::memory_order_relaxed)) {
  }
  return old;
}
}  // namespace emu
// The overloads CUDA has (no templates: atomicMax(u64*, long long) must convert as it does there).
#define CUDA_EMU_ATOMIC(name, T, expr) \
  inline T name(T* addr, T v) {                                                                  \
    return emu::atomic_update(addr, [v]([[maybe_unused]] T old) { return static_cast<T>(expr); }); \
  }
CUDA_EMU_ATOMIC(atomicAdd, int, old + v)
CUDA_EMU_ATOMIC(atomicAdd, unsigned, old + v)
CUDA_EMU_ATOMIC(atomicAdd, unsigned long long, old + v)
CUDA_EMU_ATOMIC(atomicAdd, float, old + v)
CUDA_EMU_ATOMIC(atomicAdd, double, old + v)
CUDA_EMU_ATOMIC(atomicSub, int, old - v)
CUDA_EMU_ATOMIC(atomicSub, unsigned, old - v)
CUDA_EMU_ATOMIC(atomicMax, int, old < v ? v : old)
CUDA_EMU_ATOMIC(atomicMax, unsigned, old < v ? v : old)
CUDA_EMU_ATOMIC(atomicMax, long long, old < v ? v : old)
CUDA_EMU_ATOMIC(atomicMax, unsigned long long, old < v ? v : old)
CUDA_EMU_ATOMIC(atomicMin, int, v < old ? v : old)
CUDA_EMU_ATOMIC(atomicMin, unsigned, v < old ? v : old)
CUDA_EMU_ATOMIC(atomicMin, long long, v < old ? v : old)
CUDA_EMU_ATOMIC(atomicMin, unsigned long long, v < old ? v : old)
CUDA_EMU_ATOMIC(atomicExch, int, v)
CUDA_EMU_ATOMIC(atomicExch, unsigned, v)
CUDA_EMU_ATOMIC(atomicExch, unsigned long long, v)
CUDA_EMU_ATOMIC(atomicExch, float, v)
#undef CUDA_EMU_ATOMIC
#define CUDA_EMU_ATOMIC_CAS(T)                                                               \
  inline T atomicCAS(T* addr, T expected, T desired) {                                      \
    std::atomic_ref<T>(*addr).compare_exchange_strong(expected, desired, std::memory_order_relaxed); \
    return expected; /* the old value either way */                                         \
  }
CUDA_EMU_ATOMIC_CAS(int)
CUDA_EMU_ATOMIC_CAS(unsigned)
CUDA_EMU_ATOMIC_CAS(unsigned long long)
#undef CUDA_EMU_ATOMIC_CAS

inline void __threadfence() {}
inline void __threadfence_block() {}

inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }

template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcg(const T* p) {
  return *p;
}
template <class T>
void __stcg(T* p, T v) {
  *p = v;
}

// Cooperative groups: the block, and the grid of a one-block launch.
namespace cooperative_groups {
struct thread_block {
  void sync(std::source_location loc = std::source_location::current()) const {
    emu::block_barrier(emu::Site("thread_block::sync()", loc), 0);
  }
  unsigned long long thread_rank() const { return emu::self().tid; }
  unsigned long long size() const { return emu::active->nthreads; }
};
inline thread_block this_thread_block() { return {}; }
struct grid_group {
  void sync(std::source_location loc = std::source_location::current()) const {
    if (gridDim.x * gridDim.y * gridDim.z != 1)
      emu::fail("grid.sync() at %s:%u in a grid of (%u,%u,%u) blocks: only one-block grids are emulated",
                loc.file_name(), loc.line(), gridDim.x, gridDim.y, gridDim.z);
    emu::block_barrier(emu::Site("grid_group::sync()", loc), 0);
  }
  bool is_valid() const { return true; }
  unsigned long long size() const { return 1ull * emu::active->nthreads * gridDim.x * gridDim.y * gridDim.z; }
  unsigned long long thread_rank() const {
    const unsigned long long b = blockIdx.x + 1ull * gridDim.x * (blockIdx.y + 1ull * gridDim.y * blockIdx.z);
    return b * emu::active->nthreads + emu::self().tid;
  }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups
namespace cg = cooperative_groups;

// The kernels' launch and shared-memory hooks (nvcc spells them <<<…>>> and extern __shared__).
#define EFF_LAUNCH(kernel, grid, block, smem, stream) \
  ::emu::launch(kernel, dim3(grid), dim3(block), static_cast<size_t>(smem), (stream))
#define EFF_CHECK_LAUNCH() ((void)0)
#define EFF_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(::emu::dynamic_smem())
#define JE_DYNAMIC_SMEM(name) unsigned char* name = ::emu::dynamic_smem()
