// A rank that fails ends the whole job with a non-zero exit within seconds instead of leaving the
// other ranks waiting in an all-reduce. Runs engine_dp_fail_main under `mpirun -np 2` (this test is
// a plain process itself; label mpi) with a hard timeout, and checks exit code, time and log.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct JobResult {
  int exit_code = -1;      // mpirun's exit code; 128 + signal when it was killed
  bool timed_out = false;
  double seconds = 0;
  std::string log;
};

// A job that takes longer than this hangs (a clean run takes ~2 s on the 2-core CI machine).
constexpr double kTimeoutSeconds = 60;
// What "within seconds" means: mpirun start-up, 3 training steps and the abort.
constexpr double kEndsWithinSeconds = 20;

JobResult run_job(const std::string& mode) {
  const std::string log_path = ::testing::TempDir() + "dp_fail_" + mode + "_" + std::to_string(::getpid()) + ".log";
  std::vector<std::string> args{DS_MPIEXEC, "-n", "2", "--oversubscribe"};
  if (::geteuid() == 0) args.push_back("--allow-run-as-root");
  args.insert(args.end(), {DS_FAIL_MAIN, mode});
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);   // its own process group: a timeout kills mpirun and the ranks together
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  JobResult r;
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (done == pid) break;
    if (r.seconds > kTimeoutSeconds) {
      r.timed_out = true;
      ::kill(pid, SIGTERM);   // mpirun stops its ranks on SIGTERM
      for (int i = 0; i < 250 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(log_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.log = ss.str();
  ::unlink(log_path.c_str());
  return r;
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

TEST(DataParallelJob, CleanJobFinishesOnEveryRankWithExitZero) {
  const JobResult r = run_job("ok");
  ASSERT_FALSE(r.timed_out) << r.log;
  EXPECT_EQ(r.exit_code, 0) << r.log;
  EXPECT_TRUE(contains(r.log, "rank 0 finished")) << r.log;
  EXPECT_TRUE(contains(r.log, "rank 1 finished")) << r.log;
}

class DataParallelFailure : public ::testing::TestWithParam<std::string> {};

TEST_P(DataParallelFailure, OneFailingRankEndsTheJobNonZeroWithinSeconds) {
  const std::string mode = GetParam();
  const JobResult r = run_job(mode);
  ASSERT_FALSE(r.timed_out) << "the job hung for " << kTimeoutSeconds << " s:\n" << r.log;
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_LT(r.seconds, kEndsWithinSeconds) << r.log;
  EXPECT_FALSE(contains(r.log, "rank 0 finished")) << "rank 0 should have been stopped:\n" << r.log;
  if (mode == "throw") {
    EXPECT_TRUE(contains(r.log, "rank 1: error: injected failure on rank 1")) << r.log;
  }
  if (mode == "exit") {
    EXPECT_TRUE(contains(r.log, "rank 1: exit code 3")) << r.log;
  }
  if (mode == "thread") {
    EXPECT_TRUE(contains(r.log, "rank 1: fatal: injected failure in a helper thread")) << r.log;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, DataParallelFailure, ::testing::Values("throw", "exit", "kill", "thread"));

}  // namespace
