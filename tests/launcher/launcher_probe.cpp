// A stand-in training program for the dsrun end-to-end tests. Modes:
//   env OUTDIR ARGS...  write OUTDIR/rank<RANK>.txt: the launcher variables, then every argument
//   fail CODE [OUTDIR]  rank 1 exits with CODE after 0.2 s; the other ranks wait to be stopped.
//                       With OUTDIR the other ranks ignore SIGTERM and SIGINT (only SIGKILL ends
//                       them), and rank 1 first starts a child that outlives it; all write pids
//                       as in `sleep`
//   killself SIGNAL     rank 1 kills itself with SIGNAL after 0.2 s; the others wait
//   sleep OUTDIR        fork a child; both write their pid to OUTDIR/pid<RANK>_{self,child}, then
//                       wait to be stopped (60 s at most, so a broken launcher cannot leak forever);
//                       the rank itself records a SIGTERM in OUTDIR/term<RANK> before exiting
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

namespace {

const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

int rank() { return std::atoi(env_or("RANK", "-1")); }

// One line per value: backslash and newline escaped, so empty and odd arguments survive.
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void wait_to_be_stopped() {
  for (int i = 0; i < 600; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

// Where the SIGTERM handler records the signal; filled before the handler is installed.
char g_term_path[4096];

void on_sigterm(int) {
  int fd = ::open(g_term_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) ::close(fd);
  ::_exit(128 + SIGTERM);
}

void write_pid(const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name;
  std::ofstream(path + ".tmp") << ::getpid() << "\n";
  std::rename((path + ".tmp").c_str(), path.c_str());  // readers never see a half-written file
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: launcher_probe env|fail|killself|sleep ARG...\n");
    return 64;
  }
  const std::string mode = argv[1];
  if (mode == "env") {
    static const char* kNames[] = {"RANK",        "LOCAL_RANK",  "WORLD_SIZE",           "LOCAL_SIZE",
                                   "CROSS_RANK",  "CROSS_SIZE",  "MASTER_ADDR",          "MASTER_PORT",
                                   "CUDA_VISIBLE_DEVICES", "NCCL_DSRUN_TEST", "DSRUN_HOME_VAR",
                                   "DSRUN_CWD_VAR", "DSRUN_SHARED_VAR"};
    std::ofstream out(std::string(argv[2]) + "/rank" + env_or("RANK", "unset") + ".txt");
    for (const char* name : kNames) out << name << "=" << escape(env_or(name, "<unset>")) << "\n";
    out << "argc=" << argc - 3 << "\n";
    for (int i = 3; i < argc; ++i) out << "arg=" << escape(argv[i]) << "\n";
    return out ? 0 : 1;
  }
  if (mode == "fail" && argc > 3) {
    const std::string dir = argv[3];
    const std::string tag = "pid" + std::to_string(rank());
    if (rank() == 1) {
      pid_t child = ::fork();
      if (child == 0) {
        write_pid(dir, tag + "_child");
        wait_to_be_stopped();
        return 0;
      }
      write_pid(dir, tag + "_self");
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      return std::atoi(argv[2]);
    }
    ::signal(SIGTERM, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);
    write_pid(dir, tag + "_self");
    wait_to_be_stopped();
    return 0;
  }
  if (mode == "fail" || mode == "killself") {
    if (rank() == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (mode == "fail") return std::atoi(argv[2]);
      ::kill(::getpid(), std::atoi(argv[2]));
    }
    wait_to_be_stopped();
    return 0;
  }
  if (mode == "sleep") {
    const std::string dir = argv[2];
    const std::string tag = "pid" + std::to_string(rank());
    pid_t child = ::fork();
    if (child == 0) {
      write_pid(dir, tag + "_child");
      wait_to_be_stopped();
      return 0;
    }
    std::snprintf(g_term_path, sizeof(g_term_path), "%s/term%d", dir.c_str(), rank());
    ::signal(SIGTERM, on_sigterm);
    write_pid(dir, tag + "_self");
    wait_to_be_stopped();
    return 0;
  }
  std::fprintf(stderr, "launcher_probe: unknown mode %s\n", mode.c_str());
  return 64;
}
