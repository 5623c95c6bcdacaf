// Include in a test file to print a backtrace when the test process dies of SIGSEGV, SIGBUS or
// SIGABRT (ctest then shows where, not only "SegFault"). Link the test with -rdynamic so the
// frames in the executable itself have names.
#pragma once

#include <dlfcn.h>
#include <execinfo.h>
#include <ucontext.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <initializer_list>

namespace ds::test {

inline void crash_print_address(const char* what, void* addr) {
  Dl_info info{};
  char line[512];
  if (addr != nullptr && ::dladdr(addr, &info) != 0) {
    std::snprintf(line, sizeof(line), "%s %p: %s (%s+%#lx)\n", what, addr, info.dli_fname ? info.dli_fname : "?",
                  info.dli_sname ? info.dli_sname : "?",
                  static_cast<unsigned long>(static_cast<char*>(addr) -
                                             static_cast<char*>(info.dli_sname ? info.dli_saddr : info.dli_fbase)));
  } else {
    std::snprintf(line, sizeof(line), "%s %p\n", what, addr);
  }
  [[maybe_unused]] const ssize_t w = ::write(2, line, std::strlen(line));
}

inline void crash_backtrace_handler(int sig, siginfo_t* info, void* context) {
  static const char kMsg[] = "\n*** fatal signal in the test process; backtrace:\n";
  [[maybe_unused]] const ssize_t w = ::write(2, kMsg, sizeof(kMsg) - 1);
  crash_print_address("fault address", info ? info->si_addr : nullptr);
#if defined(__x86_64__)
  // A call through a null or dangling function pointer leaves no frame to unwind: the faulting pc
  // and the return address on top of the stack say who called.
  const auto* uc = static_cast<const ucontext_t*>(context);
  void* pc = reinterpret_cast<void*>(uc->uc_mcontext.gregs[REG_RIP]);
  crash_print_address("pc", pc);
  void* const* sp = reinterpret_cast<void* const*>(uc->uc_mcontext.gregs[REG_RSP]);
  if (sp != nullptr) crash_print_address("return address on the stack", sp[0]);
#else
  (void)context;
#endif
  void* frames[64];
  const int n = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, n, 2);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

inline bool install_crash_backtrace() {
  struct sigaction sa {};
  sa.sa_sigaction = crash_backtrace_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT}) ::sigaction(sig, &sa, nullptr);
  return true;
}

[[maybe_unused]] inline const bool kCrashBacktraceInstalled = install_crash_backtrace();

}  // namespace ds::test
