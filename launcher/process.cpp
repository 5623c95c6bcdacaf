#include "launcher/process.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>

#include "launcher/errors.h"

extern char** environ;

namespace ds::launcher {
namespace {

using Clock = std::chrono::steady_clock;

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// The result a discovery child writes into its pipe.
struct DiscoveryResult {
  int count = 0;
  char why_none[240] = {};
};

DiscoveryResult count_cuda_devices_here() {
  DiscoveryResult r;
  auto fail = [&r](const std::string& why) {
    std::snprintf(r.why_none, sizeof(r.why_none), "%s", why.c_str());
    return r;
  };
  void* lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return fail(std::string("no CUDA driver (") + ::dlerror() + ")");
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  auto init = reinterpret_cast<InitFn>(::dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<CountFn>(::dlsym(lib, "cuDeviceGetCount"));
  if (init == nullptr || count == nullptr) return fail("libcuda.so.1 lacks cuInit/cuDeviceGetCount");
  if (int rc = init(0); rc != 0) return fail("cuInit failed with CUresult " + std::to_string(rc));
  int n = 0;
  if (int rc = count(&n); rc != 0) return fail("cuDeviceGetCount failed with CUresult " + std::to_string(rc));
  r.count = n;
  if (n == 0) return fail("the CUDA driver reports no device");
  return r;
}

// execve's environment: dsrun's, with `overrides` replacing or adding names.
std::vector<std::string> merged_environment(const EnvList& overrides) {
  std::map<std::string, std::string> env;
  std::vector<std::string> order;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    std::string name = entry.substr(0, eq);
    if (env.emplace(name, entry.substr(eq + 1)).second) order.push_back(name);
  }
  for (const auto& [k, v] : overrides) {
    if (env.count(k) == 0) order.push_back(k);
    env[k] = v;
  }
  std::vector<std::string> out;
  for (const std::string& name : order) out.push_back(name + "=" + env[name]);
  return out;
}

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

std::string describe(int status) {
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
                                 ::strsignal(WTERMSIG(status)) + ")";
  return "exited with " + std::to_string(status_code(status));
}

}  // namespace

std::optional<std::string> find_program(const std::string& name, const char* path_env) {
  if (name.empty()) return std::nullopt;
  if (name.find('/') != std::string::npos) {
    if (is_executable_file(name)) return name;
    return std::nullopt;
  }
  std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= path.size()) {
    size_t end = path.find(':', begin);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(begin, end - begin);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (is_executable_file(candidate)) return candidate;
    begin = end + 1;
  }
  return std::nullopt;
}

LocalDevices discover_local_devices(std::string* why_none) {
  LocalDevices devices;
  if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES")) devices.cuda_visible_devices = cvd;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    if (why_none) *why_none = std::string("pipe: ") + std::strerror(errno);
    return devices;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    DiscoveryResult r = count_cuda_devices_here();
    ssize_t ignored = ::write(fds[1], &r, sizeof(r));
    (void)ignored;
    ::_exit(0);
  }
  ::close(fds[1]);
  DiscoveryResult r;
  bool ok = false;
  if (pid > 0) {
    // A wedged driver must not hang dsrun: give cuInit 60 s.
    pollfd pfd{fds[0], POLLIN, 0};
    if (::poll(&pfd, 1, 60'000) == 1) ok = ::read(fds[0], &r, sizeof(r)) == static_cast<ssize_t>(sizeof(r));
    if (!ok) ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  ::close(fds[0]);
  if (!ok) {
    if (why_none) *why_none = pid < 0 ? std::string("fork: ") + std::strerror(errno) : "GPU discovery did not answer";
    return devices;
  }
  devices.count = r.count;
  if (why_none) *why_none = r.why_none;
  return devices;
}

int run_commands(const std::vector<Command>& commands, const std::vector<std::string>& labels,
                 const SuperviseOptions& options) {
  // Prepare everything the children need before forking, so a child only calls
  // async-signal-safe functions between fork and exec.
  struct Prepared {
    std::string path;
    std::vector<std::string> argv, envp;
    std::vector<char*> argv_ptrs, envp_ptrs;
  };
  std::vector<Prepared> prepared(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    Prepared& p = prepared[i];
    p.envp = merged_environment(commands[i].env);
    const char* path_env = nullptr;
    for (const std::string& e : p.envp)
      if (e.compare(0, 5, "PATH=") == 0) path_env = e.c_str() + 5;
    std::optional<std::string> found = find_program(commands[i].argv.at(0), path_env);
    if (!found) throw UsageError("program '" + commands[i].argv[0] + "' not found (not an executable file, nor on PATH)");
    p.path = *found;
    p.argv = commands[i].argv;
    for (std::string& a : p.argv) p.argv_ptrs.push_back(a.data());
    p.argv_ptrs.push_back(nullptr);
    for (std::string& e : p.envp) p.envp_ptrs.push_back(e.data());
    p.envp_ptrs.push_back(nullptr);
  }

  // Signals are taken synchronously with sigtimedwait: block them here, unblock in the children.
  sigset_t wait_set, old_mask;
  sigemptyset(&wait_set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&wait_set, s);
  ::sigprocmask(SIG_BLOCK, &wait_set, &old_mask);
  const pid_t parent = ::getpid();

  std::map<pid_t, size_t> alive;
  int first_failure = -1;
  int interrupted_by = 0;
  // When to SIGKILL what is still alive; max(): no stop in progress.
  Clock::time_point kill_at = Clock::time_point::max();
  const bool groups = options.own_process_groups;
  std::vector<pid_t> started;
  auto signal_all = [&alive, groups](int sig) {
    for (const auto& [pid, index] : alive) ::kill(groups ? -pid : pid, sig);
  };
  // Stopping the job also reaches what ranks that already exited left behind in their groups
  // (a shell rank's children); an empty group just answers ESRCH.
  auto stop_all = [&](int sig) {
    if (!groups) return signal_all(sig);
    for (pid_t pid : started) ::kill(-pid, sig);
  };
  const bool stdin_is_tty = ::isatty(0) == 1;

  for (size_t i = 0; i < prepared.size(); ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      // A dsrun killed with SIGKILL cannot stop its children: let the kernel tell them.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(128 + SIGTERM);
      if (groups) {
        ::setpgid(0, 0);
        if (stdin_is_tty) {
          int null_fd = ::open("/dev/null", O_RDONLY);
          if (null_fd >= 0) ::dup2(null_fd, 0);
        }
      }
      ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
      ::execve(prepared[i].path.c_str(), prepared[i].argv_ptrs.data(), prepared[i].envp_ptrs.data());
      const char* msg = "dsrun: exec failed for ";
      ssize_t ignored = ::write(2, msg, std::strlen(msg));
      ignored = ::write(2, prepared[i].path.c_str(), prepared[i].path.size());
      ignored = ::write(2, "\n", 1);
      (void)ignored;
      ::_exit(127);
    }
    if (pid < 0) {
      std::cerr << "dsrun: fork failed: " << std::strerror(errno) << "; stopping the job\n";
      first_failure = 1;
      signal_all(SIGTERM);
      kill_at = Clock::now() + options.grace;
      break;
    }
    // Also here, so that a signal sent right after fork already reaches the whole group.
    if (groups) ::setpgid(pid, pid);
    alive.emplace(pid, i);
    started.push_back(pid);
  }

  while (!alive.empty()) {
    auto wait_for = std::chrono::milliseconds(200);
    if (kill_at != Clock::time_point::max()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(kill_at - Clock::now());
      wait_for = std::clamp(left, std::chrono::milliseconds(0), wait_for);
    }
    timespec ts{0, static_cast<long>(wait_for.count()) * 1'000'000L};
    siginfo_t info{};
    int sig = ::sigtimedwait(&wait_set, &info, &ts);
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
      if (interrupted_by == 0) {
        interrupted_by = sig;
        std::cerr << "dsrun: got signal " << sig << " (" << ::strsignal(sig) << "), stopping all ranks\n";
        stop_all(options.forward_as ? options.forward_as : sig);
        kill_at = std::min(kill_at, Clock::now() + options.grace);
      } else {
        std::cerr << "dsrun: second interrupt, killing all ranks\n";
        stop_all(SIGKILL);
      }
    }
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      auto it = alive.find(pid);
      if (it == alive.end()) continue;
      const std::string& label = labels.at(it->second);
      alive.erase(it);
      int code = status_code(status);
      if (code == 0 || first_failure >= 0 || interrupted_by != 0) continue;
      first_failure = code;
      if (options.stop_all_on_failure && !alive.empty()) {
        std::cerr << "dsrun: " << label << " " << describe(status) << "; stopping the other ranks\n";
        stop_all(SIGTERM);
        kill_at = Clock::now() + options.grace;
      } else {
        std::cerr << "dsrun: " << label << " " << describe(status) << "\n";
      }
    }
    if (Clock::now() >= kill_at && !alive.empty()) {
      std::cerr << "dsrun: " << alive.size() << " process(es) still running " << options.grace.count()
                << " ms after being told to stop, sending SIGKILL\n";
      stop_all(SIGKILL);
      kill_at = Clock::time_point::max();
    }
  }
  ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  if (first_failure >= 0) return first_failure;
  if (interrupted_by != 0) return 128 + interrupted_by;
  return 0;
}

}  // namespace ds::launcher
