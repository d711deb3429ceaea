#pragma once
// Fibers for the CUDA emulation (cuda_emulation.h): execution contexts with their own stacks on one
// OS thread, switched cooperatively by a hand-written x86-64 routine (ucontext elsewhere, or with
// -DCUDA_EMU_UCONTEXT), stacks mapped once with a guard page, and the annotations that keep
// -fsanitize=address and -fsanitize=thread working across switches. No CUDA here: emu_runtime.h
// schedules these fibers as the threads of a block.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <source_location>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) && !defined(CUDA_EMU_UCONTEXT)
#define CUDA_EMU_ASM_SWITCH 1
#else
#define CUDA_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

#if defined(__SANITIZE_THREAD__)
#define CUDA_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CUDA_EMU_TSAN 1
#endif
#endif
#ifndef CUDA_EMU_TSAN
#define CUDA_EMU_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif
#ifndef CUDA_EMU_ASAN
#define CUDA_EMU_ASAN 0
#endif
#if CUDA_EMU_TSAN
#include <sanitizer/tsan_interface.h>
// The scheduler's own bookkeeping is shared by all fibers; under ThreadSanitizer it is kept out of
// the race analysis (not instrumented), and happens-before comes only from the annotations below.
#define CUDA_EMU_NO_TSAN __attribute__((noinline, no_sanitize_thread))
#else
#define CUDA_EMU_NO_TSAN
#endif
#define CUDA_EMU_SCHED CUDA_EMU_NO_TSAN inline
#if CUDA_EMU_ASAN
#include <pthread.h>
#include <sanitizer/common_interface_defs.h>
#endif

#ifndef CUDA_EMU_STACK_BYTES
#define CUDA_EMU_STACK_BYTES (256 * 1024)  // per CUDA thread; touched pages only
#endif


namespace emu {


[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fail(const char* fmt, ...) {
  std::fflush(stdout);
  std::fputs("cuda_emulation: ", stderr);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::fflush(stderr);
  std::abort();
}


// An execution context: a fiber's stack, or the launching thread's.
struct Context {
  void* sp = nullptr;
#if !CUDA_EMU_ASM_SWITCH
  ucontext_t uc{};
#endif
  char* stack_lo = nullptr;  // lowest usable address (sanitizer annotations)
  size_t stack_size = 0;
  void* tsan = nullptr;  // ThreadSanitizer fiber
};


// ------------------------------------------------------------------------------------------
// Context switching.
// ------------------------------------------------------------------------------------------
#if CUDA_EMU_ASM_SWITCH
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save, and resumes the context whose stack pointer is `to`. Weak: the header
// may be included by several translation units.
asm(R"(
  .pushsection .text
  .weak cuda_emu_switch
  .type cuda_emu_switch, @function
  .p2align 4
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch
  .popsection
)");
extern "C" void cuda_emu_switch(void** save, void* to);
#endif

CUDA_EMU_SCHED void jump(Context& from, Context& to, bool sync, bool leaving) {
#if CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(leaving ? nullptr : &fake, to.stack_lo, to.stack_size);
#else
  (void)leaving;
#endif
#if CUDA_EMU_TSAN
  __tsan_switch_to_fiber(to.tsan, sync ? 0 : __tsan_switch_to_fiber_no_sync);
#else
  (void)sync;
#endif
#if CUDA_EMU_ASM_SWITCH
  cuda_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Stacks are mapped once (lazily committed, a PROT_NONE guard page below each) and reused.
struct StackPool {
  std::vector<char*> stacks;
  std::vector<void*> tsan;
  char* get(unsigned i) {
    const size_t page = 4096, bytes = (CUDA_EMU_STACK_BYTES + page - 1) / page * page;
    while (stacks.size() <= i) {
      void* p = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) fail("cannot map a fiber stack of %zu bytes", bytes);
      if (mprotect(p, page, PROT_NONE) != 0) fail("cannot protect a fiber stack's guard page");
      stacks.push_back(static_cast<char*>(p) + page);
#if CUDA_EMU_TSAN
      tsan.push_back(__tsan_create_fiber(0));
#endif
    }
    return stacks[i];
  }
  static size_t size() { return (CUDA_EMU_STACK_BYTES + 4095) / 4096 * 4096; }
};
inline StackPool stack_pool;

}  // namespace emu
