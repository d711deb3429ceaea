#pragma once
// The runtime behind cuda_emulation.h: every CUDA thread of a block is a fiber (emu_fiber.h) on the
// launching OS thread, scheduled cooperatively at block and warp barriers. The model, the schedule
// order and the limits are documented in cuda_emulation.h; this file is the machinery: the
// scheduler with its deadlock and divergence checks, the barrier and warp-exchange primitives, and
// the launch.
#include "emu_fiber.h"

// ------------------------------------------------------------------------------------------
// CUDA vocabulary.
// ------------------------------------------------------------------------------------------
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}  // NOLINT
};
typedef void* cudaStream_t;

// Set by the scheduler before a fiber runs.
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {

// Where a fiber waits: the intrinsic and its call site.
struct Site {
  const char* what = "";
  const char* file = "";
  unsigned line = 0, column = 0;
  Site() = default;
  Site(const char* w, const std::source_location& l)
      : what(w), file(l.file_name()), line(l.line()), column(l.column()) {}
  CUDA_EMU_NO_TSAN bool operator==(const Site& o) const {
    return line == o.line && column == o.column && (what == o.what || std::strcmp(what, o.what) == 0) &&
           (file == o.file || std::strcmp(file, o.file) == 0);
  }
};



enum class Wait : unsigned char { kNone, kBlock, kWarp, kDone };

struct Fiber {
  Context ctx;
  unsigned tid = 0;  // linear thread index in the block
  dim3 idx;          // threadIdx
  Wait wait = Wait::kNone;
  unsigned wait_gen = 0;  // generation of the barrier it waits at
  Site site;
};

struct Warp {
  unsigned size = 32, lanes = ~0u;  // lanes in this warp, and their mask
  unsigned arrived = 0, gen = 0;
  unsigned first = 0;  // schedule position of its first lane
  Site site;  // the intrinsic, mask and width of the generation's first arrival
  unsigned mask = 0;
  int width = 0;
  uint64_t buf[2][32];  // shuffle values, double-buffered by generation parity
  char token[2];        // ThreadSanitizer sync addresses, by generation parity
};

// The launch in progress.
struct Grid {
  dim3 grid, block;
  unsigned nthreads = 0;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  Fiber* fibers = nullptr;  // [nthreads], in schedule order
  Warp* warps = nullptr;    // [⌈nthreads/32⌉]
  unsigned* order = nullptr;  // [nthreads]: position in the schedule → linear thread index
  unsigned cur = 0, ndone = 0;
  unsigned bar_arrived = 0, bar_gen = 0;
  Site bar_site;
  int bar_acc = 0, bar_result = 0;
  char bar_token[2], start_token, exit_token;
  Context main;
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
};

inline Grid* active = nullptr;

inline Fiber& self() { return active->fibers[active->cur]; }
inline unsigned char* dynamic_smem() { return active->smem; }

// ------------------------------------------------------------------------------------------
// Scheduler.
// ------------------------------------------------------------------------------------------
CUDA_EMU_SCHED bool runnable(const Grid& g, const Fiber& f) {
  switch (f.wait) {
    case Wait::kNone:
      return true;
    case Wait::kBlock:
      return f.wait_gen != g.bar_gen;
    case Wait::kWarp:
      return f.wait_gen != g.warps[f.tid >> 5].gen;
    default:
      return false;
  }
}

[[noreturn]] CUDA_EMU_SCHED void deadlock(const Grid& g) {
  std::fflush(stdout);
  std::fprintf(stderr,
               "cuda_emulation: deadlock in block (%u,%u,%u) of a %u-thread block: no thread can run "
               "(a barrier or warp intrinsic in divergent code, or a thread exited while others wait)\n",
               blockIdx.x, blockIdx.y, blockIdx.z, g.nthreads);
  std::vector<bool> seen(g.nthreads);
  for (size_t i = 0; i < g.nthreads; ++i) {
    if (seen[i]) continue;
    const Fiber& f = g.fibers[i];
    unsigned count = 0;
    for (size_t j = i; j < g.nthreads; ++j) {
      const Fiber& h = g.fibers[j];
      if (!seen[j] && h.wait == f.wait && (f.wait == Wait::kDone || h.site == f.site)) {
        seen[j] = true;
        ++count;
      }
    }
    if (f.wait == Wait::kDone)
      std::fprintf(stderr, "  %u thread(s) exited, e.g. threadIdx (%u,%u,%u)\n", count, f.idx.x, f.idx.y, f.idx.z);
    else
      std::fprintf(stderr, "  %u thread(s) wait at %s (%s:%u:%u), e.g. threadIdx (%u,%u,%u)\n", count, f.site.what,
                   f.site.file, f.site.line, f.site.column, f.idx.x, f.idx.y, f.idx.z);
  }
  std::fflush(stderr);
  std::abort();
}

// Runs the first runnable fiber at or after schedule position `from` (round robin); returns when
// the current fiber is runnable and scheduled again.
CUDA_EMU_SCHED void schedule(unsigned from) {
  Grid& g = *active;
  const unsigned n = g.nthreads, me = g.cur;
  unsigned p = from < n ? from : 0;
  for (unsigned k = 0; k < n; ++k, p = p + 1 == n ? 0 : p + 1) {
    if (runnable(g, g.fibers[p])) {
      if (p != me) {
        g.cur = p;
        threadIdx = g.fibers[p].idx;
        jump(g.fibers[me].ctx, g.fibers[p].ctx, false, false);
      }
      g.fibers[me].wait = Wait::kNone;
      return;
    }
  }
  deadlock(g);
}

[[noreturn]] CUDA_EMU_SCHED void fiber_main() {
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  Grid& g = *active;
#if CUDA_EMU_TSAN
  __tsan_acquire(&g.start_token);
#endif
  g.body(g.body_arg);
#if CUDA_EMU_TSAN
  __tsan_release(&g.exit_token);
#endif
  const unsigned me = g.cur, n = g.nthreads;
  g.fibers[me].wait = Wait::kDone;
  ++g.ndone;
  unsigned p = me;
  for (unsigned k = 1; k < n; ++k) {
    if (++p == n) p = 0;
    if (runnable(g, g.fibers[p])) {
      g.cur = p;
      threadIdx = g.fibers[p].idx;
      jump(g.fibers[me].ctx, g.fibers[p].ctx, false, true);
      fail("an exited thread was resumed");
    }
  }
  if (g.ndone != n) deadlock(g);
  jump(g.fibers[me].ctx, g.main, true, true);
  fail("an exited thread was resumed");
}

CUDA_EMU_SCHED void init_fiber(Fiber& f, unsigned slot) {
  char* lo = stack_pool.get(slot);
  const size_t size = StackPool::size();
  f.ctx.stack_lo = lo;
  f.ctx.stack_size = size;
#if CUDA_EMU_TSAN
  f.ctx.tsan = stack_pool.tsan[slot];
#endif
#if CUDA_EMU_ASM_SWITCH
  // The frame cuda_emu_switch pops: MXCSR/x87 control word, r15 … rbp, then `ret` into
  // fiber_main with the stack aligned as after a call (a null return address above it).
  uint64_t* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(lo + size) & ~uintptr_t(15));
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  top[-1] = 0;
  top[-2] = reinterpret_cast<uint64_t>(&fiber_main);
  for (int r = 3; r <= 8; ++r) top[-r] = 0;  // rbp, rbx, r12, r13, r14, r15
  top[-9] = uint64_t(mxcsr) | (uint64_t(fpucw) << 32);
  f.ctx.sp = top - 9;
#else
  getcontext(&f.ctx.uc);
  f.ctx.uc.uc_stack.ss_sp = lo;
  f.ctx.uc.uc_stack.ss_size = size;
  f.ctx.uc.uc_link = nullptr;
  makecontext(&f.ctx.uc, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
}

// Schedule order (CUDA_EMU_SCHEDULE): forward, reverse, shuffle[:seed] (a permutation per block),
// or alternate (the default: forward and reverse by turns, block after block over the process).
struct Schedule {
  enum Kind { kAlternate, kForward, kReverse, kShuffle } kind = kAlternate;
  uint64_t seed = 1;
};
inline const Schedule& schedule_mode() {
  static const Schedule mode = [] {
    Schedule m;
    const char* env = std::getenv("CUDA_EMU_SCHEDULE");
    const std::string s = env ? env : "alternate";
    if (s == "forward") {
      m.kind = Schedule::kForward;
    } else if (s == "reverse") {
      m.kind = Schedule::kReverse;
    } else if (s == "shuffle" || s.rfind("shuffle:", 0) == 0) {
      m.kind = Schedule::kShuffle;
      if (s.size() > 8) m.seed = std::strtoull(s.c_str() + 8, nullptr, 10);
    } else if (s != "alternate") {
      fail("CUDA_EMU_SCHEDULE=%s: expected alternate, forward, reverse or shuffle[:seed]", s.c_str());
    }
    return m;
  }();
  return mode;
}
inline uint64_t blocks_run = 0;  // blocks of all launches so far

// Position → linear thread index for the next block.
CUDA_EMU_SCHED void schedule_order(unsigned* order, unsigned n) {
  const Schedule& m = schedule_mode();
  const uint64_t k = blocks_run++;
  const bool reverse = m.kind == Schedule::kReverse || (m.kind == Schedule::kAlternate && (k & 1));
  for (unsigned i = 0; i < n; ++i) order[i] = reverse ? n - 1 - i : i;
  if (m.kind == Schedule::kShuffle) {
    uint64_t x = m.seed ^ (k * 0xd1b54a32d192ed03ull);
    for (unsigned i = n; i > 1; --i) {  // Fisher–Yates with splitmix64
      x += 0x9e3779b97f4a7c15ull;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      std::swap(order[i - 1], order[z % i]);
    }
  }
}

// Runs every block of the launch set up in g, blocks in order (x fastest), each to completion.
CUDA_EMU_SCHED void run_blocks(Grid& g) {
  for (unsigned bz = 0; bz < g.grid.z; ++bz)
    for (unsigned by = 0; by < g.grid.y; ++by)
      for (unsigned bx = 0; bx < g.grid.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        schedule_order(g.order, g.nthreads);
        for (unsigned p = 0; p < g.nthreads; ++p) {
          Fiber& f = g.fibers[p];
          const unsigned t = g.order[p];
          f.tid = t;
          f.idx = dim3(t % g.block.x, (t / g.block.x) % g.block.y, t / (g.block.x * g.block.y));
          f.wait = Wait::kNone;
          init_fiber(f, p);
        }
        for (unsigned w = 0; w < (g.nthreads + 31) / 32; ++w) {
          g.warps[w].arrived = 0;
          g.warps[w].first = g.nthreads;
        }
        for (unsigned p = 0; p < g.nthreads; ++p) {
          Warp& w = g.warps[g.order[p] >> 5];
          w.first = std::min(w.first, p);
        }
        g.bar_arrived = 0;
        g.bar_acc = 0;
        g.ndone = 0;
        if (g.smem_bytes) std::memset(g.smem, 0xFF, g.smem_bytes);  // uninitialised: NaN, −1
        g.cur = 0;
        threadIdx = g.fibers[0].idx;
#if CUDA_EMU_TSAN
        __tsan_release(&g.start_token);
#endif
        jump(g.main, g.fibers[0].ctx, true, false);  // back here once every thread has exited
#if CUDA_EMU_TSAN
        __tsan_acquire(&g.exit_token);
#endif
      }
}

// Runs body() as every thread of every block of the grid (the emulated `kernel<<<grid, block,
// smem>>>`): blocks in order, x fastest, each to completion.
template <class F>
void run_grid(dim3 grid, dim3 block, size_t smem, F& body) {
  if (active != nullptr) fail("a kernel launch inside a kernel (dynamic parallelism) is not emulated");
  const unsigned long long nthreads = 1ull * block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    fail("invalid block (%u,%u,%u): at most 1024 threads, z at most 64", block.x, block.y, block.z);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    fail("invalid grid (%u,%u,%u)", grid.x, grid.y, grid.z);
  if (smem > 232448) fail("%zu bytes of dynamic shared memory: at most 227 KiB per block", smem);

  Grid g;
  g.grid = grid;
  g.block = block;
  g.nthreads = static_cast<unsigned>(nthreads);
  g.body = [](void* p) { (*static_cast<F*>(p))(); };
  g.body_arg = &body;
  std::vector<Fiber> fibers(g.nthreads);
  std::vector<Warp> warps((g.nthreads + 31) / 32);
  g.fibers = fibers.data();
  g.warps = warps.data();
  std::vector<unsigned> order(g.nthreads);
  g.order = order.data();
  (void)schedule_mode();  // a bad CUDA_EMU_SCHEDULE fails here, on the launching thread
  for (unsigned w = 0; w < warps.size(); ++w) {
    g.warps[w].size = std::min(32u, g.nthreads - 32 * w);
    g.warps[w].lanes = g.warps[w].size == 32 ? ~0u : (1u << g.warps[w].size) - 1;
  }
  struct SmemBuf {  // exactly `smem` bytes, so that AddressSanitizer sees overruns
    unsigned char* p;
    ~SmemBuf() {
      if (p) ::operator delete[](p, std::align_val_t(128));
    }
  } smem_buf{smem ? new (std::align_val_t(128)) unsigned char[smem] : nullptr};
  g.smem = smem_buf.p;
  g.smem_bytes = smem;
#if CUDA_EMU_TSAN
  g.main.tsan = __tsan_get_current_fiber();
#endif
#if CUDA_EMU_ASAN
  {
    pthread_attr_t attr;
    void* addr = nullptr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &addr, &size);
      pthread_attr_destroy(&attr);
    }
    g.main.stack_lo = static_cast<char*>(addr);
    g.main.stack_size = size;
  }
#endif
  gridDim = grid;
  blockDim = block;
  active = &g;
  run_blocks(g);
  active = nullptr;
}

// ------------------------------------------------------------------------------------------
// Barriers and warp intrinsics.
// ------------------------------------------------------------------------------------------
// Block barrier; returns the count of threads with pred ≠ 0 (for __syncthreads_count/and/or).
CUDA_EMU_SCHED int block_barrier(const Site& site, int pred) {
  Grid& g = *active;
  Fiber& f = g.fibers[g.cur];
  if (g.bar_arrived == 0) {
    g.bar_site = site;
  } else if (!(g.bar_site == site)) {
    fail("divergent barrier in block (%u,%u,%u): threadIdx (%u,%u,%u) reached %s at %s:%u:%u while other threads wait "
         "at %s at %s:%u:%u",
         blockIdx.x, blockIdx.y, blockIdx.z, f.idx.x, f.idx.y, f.idx.z, site.what, site.file, site.line, site.column,
         g.bar_site.what, g.bar_site.file, g.bar_site.line, g.bar_site.column);
  }
  const unsigned gen = g.bar_gen;
#if CUDA_EMU_TSAN
  __tsan_release(&g.bar_token[gen & 1]);
#endif
  g.bar_acc += pred != 0;
  f.wait = Wait::kBlock;
  f.wait_gen = gen;
  f.site = site;
  unsigned next = g.cur + 1;
  if (++g.bar_arrived == g.nthreads) {  // release: the block starts over in schedule order
    g.bar_arrived = 0;
    g.bar_result = g.bar_acc;
    g.bar_acc = 0;
    ++g.bar_gen;
    next = 0;
  }
  schedule(next);
#if CUDA_EMU_TSAN
  __tsan_acquire(&g.bar_token[gen & 1]);
#endif
  return g.bar_result;  // not overwritten before every thread of this generation has read it
}

// Warp barrier of the calling thread's warp; returns the generation (the shuffle buffer parity).
CUDA_EMU_SCHED unsigned warp_barrier(const Site& site, unsigned mask, int width) {
  Grid& g = *active;
  Fiber& f = g.fibers[g.cur];
  Warp& w = g.warps[f.tid >> 5];
  if ((mask & w.lanes) != w.lanes)
    fail("%s at %s:%u with mask 0x%08x: masks that leave out lanes of the warp (0x%08x) are not emulated", site.what,
         site.file, site.line, mask, w.lanes);
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail("%s at %s:%u: width %d is not a power of two ≤ 32", site.what, site.file, site.line, width);
  if (w.arrived == 0) {
    w.site = site;
    w.mask = mask;
    w.width = width;
  } else if ((w.site.what != site.what && std::strcmp(w.site.what, site.what) != 0) || w.mask != mask ||
             w.width != width) {
    fail("divergent warp intrinsics in warp %u of block (%u,%u,%u): threadIdx (%u,%u,%u) reached %s (mask 0x%08x, "
         "width %d) at %s:%u while other lanes wait in %s (mask 0x%08x, width %d) at %s:%u",
         f.tid >> 5, blockIdx.x, blockIdx.y, blockIdx.z, f.idx.x, f.idx.y, f.idx.z, site.what, mask, width, site.file,
         site.line, w.site.what, w.mask, w.width, w.site.file, w.site.line);
  }
  const unsigned gen = w.gen;
#if CUDA_EMU_TSAN
  __tsan_release(&w.token[gen & 1]);
#endif
  f.wait = Wait::kWarp;
  f.wait_gen = gen;
  f.site = site;
  unsigned next = g.cur + 1;
  if (++w.arrived == w.size) {  // release: this warp runs on first, ahead of the others
    w.arrived = 0;
    ++w.gen;
    next = w.first;
  }
  schedule(next);
#if CUDA_EMU_TSAN
  __tsan_acquire(&w.token[gen & 1]);
#endif
  return gen;
}

enum class Shfl { kIdx, kUp, kDown, kXor };

// The value of `v` in the source lane (CUDA's rules for lanes outside the width segment). A
// buffer of generation parity p is rewritten only two generations later, after every lane has
// passed the barrier in between, i.e. after every lane has read it.
template <class T>
T shuffle(Shfl kind, const Site& site, unsigned mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of at most 8 bytes");
  Fiber& f = self();
  Warp& w = active->warps[f.tid >> 5];
  const unsigned lane = f.tid & 31;
  const unsigned parity = w.gen & 1;
  std::memcpy(&w.buf[parity][lane], &v, sizeof(T));
  warp_barrier(site, mask, width);
  const unsigned wd = static_cast<unsigned>(width), seg = lane & ~(wd - 1), in_seg = lane & (wd - 1);
  unsigned src = lane;
  switch (kind) {
    case Shfl::kIdx:
      src = seg | (static_cast<unsigned>(arg) & (wd - 1));
      break;
    case Shfl::kUp:
      src = in_seg >= static_cast<unsigned>(arg) ? lane - arg : lane;
      break;
    case Shfl::kDown:
      src = in_seg + static_cast<unsigned>(arg) < wd ? lane + arg : lane;
      break;
    case Shfl::kXor:
      src = lane ^ static_cast<unsigned>(arg);
      if (src >= seg + wd) src = lane;
      break;
  }
  if (src >= w.size)
    fail("%s at %s:%u: lane %u reads lane %u, which does not exist in a warp of %u threads", site.what, site.file,
         site.line, lane, src, w.size);
  T r;
  std::memcpy(&r, &w.buf[parity][src], sizeof(T));
  return r;
}

// The warp's predicate bits (lane i → bit i).
inline unsigned ballot(const Site& site, unsigned mask, int pred) {
  Fiber& f = self();
  Warp& w = active->warps[f.tid >> 5];
  const unsigned parity = w.gen & 1;
  w.buf[parity][f.tid & 31] = pred != 0;
  warp_barrier(site, mask, 32);
  unsigned bits = 0;
  for (unsigned l = 0; l < w.size; ++l) bits |= static_cast<unsigned>(w.buf[parity][l] != 0) << l;
  return bits;
}

// kernel(args…) as the emulated launch kernel<<<grid, block, smem>>>(args…): the arguments are
// converted to the parameter types once, as the runtime does, and every thread gets its copy.
template <class... Params>
struct KernelLaunch {
  void (*kernel)(Params...);
  dim3 grid, block;
  size_t smem;
  template <class... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "wrong number of kernel arguments");
    const std::tuple<std::decay_t<Params>...> params(static_cast<Params>(std::forward<Args>(args))...);
    auto body = [&] { std::apply([&](const auto&... p) { kernel(p...); }, params); };
    run_grid(grid, block, smem, body);
  }
};

template <class... Params>
KernelLaunch<Params...> launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem = 0,
                               cudaStream_t = nullptr) {
  return KernelLaunch<Params...>{kernel, grid, block, smem};
}

}  // namespace emu
