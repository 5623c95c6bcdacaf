// Test helper: run a command (dsrun) with a changed environment and working directory, capture
// its output, time it, and never let it outlive the test (it leads its own process group, which
// is killed on timeout).
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace ds::launcher::test {

struct ProcessSpec {
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> set_env;
  std::vector<std::string> unset_env;
  std::string cwd;  // empty: the test's own
};

struct ProcessResult {
  int exit_code = -1;  // 128+signal when killed
  double seconds = 0;
  bool timed_out = false;
  std::string out, err;
};

// A fresh directory under $TMPDIR (or /tmp), removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class Process {
 public:
  // Starts the command; stdout/stderr go to files in `scratch`.
  Process(const ProcessSpec& spec, const std::string& scratch);
  ~Process();  // kills the process group if still running
  pid_t pid() const { return pid_; }
  // Waits at most timeout_s; on timeout kills the group and sets timed_out.
  ProcessResult wait(double timeout_s);

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string out_path_, err_path_;
  double started_ = 0;
};

ProcessResult run_process(const ProcessSpec& spec, const std::string& scratch, double timeout_s);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);
// True when `pid` no longer runs (gone, or a zombie waiting for its new parent to reap it).
bool process_gone(pid_t pid);
double now_seconds();

}  // namespace ds::launcher::test
