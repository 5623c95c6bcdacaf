// Include in a test file to print a backtrace when the test process dies of SIGSEGV, SIGBUS or
// SIGABRT (ctest then shows where, not only "SegFault"). Link the test with -rdynamic so the
// frames in the executable itself have names.
#pragma once

#include <execinfo.h>
#include <unistd.h>

#include <csignal>

namespace ds::test {

inline void crash_backtrace_handler(int sig) {
  void* frames[64];
  const int n = ::backtrace(frames, 64);
  static const char kMsg[] = "\n*** fatal signal in the test process; backtrace:\n";
  [[maybe_unused]] const ssize_t w = ::write(2, kMsg, sizeof(kMsg) - 1);
  ::backtrace_symbols_fd(frames, n, 2);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

inline bool install_crash_backtrace() {
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT}) std::signal(sig, crash_backtrace_handler);
  return true;
}

[[maybe_unused]] inline const bool kCrashBacktraceInstalled = install_crash_backtrace();

}  // namespace ds::test
