// End-to-end: real dsrun runs real ranks (launcher_probe) through mpirun and through its own
// local launcher, on CPU (--num_procs 2). Registered with label mpi but without ds_add_test's
// `mpirun -np 2` wrapping: the test starts mpirun itself (via dsrun), and an mpirun inside an
// MPI rank inherits that rank's OMPI_* environment and misbehaves; two copies would also race.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include "subprocess.h"

namespace ds::launcher::test {
namespace {

// A rank failure must end the job quickly; the bound is 30 s.
constexpr double kFailBoundSeconds = 30.0;
constexpr double kJobTimeoutSeconds = 90.0;

std::map<std::string, std::string> read_rank_file(const std::string& path, std::vector<std::string>* args) {
  std::map<std::string, std::string> vars;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq);
    if (key == "arg") {
      args->push_back(line.substr(eq + 1));
    } else {
      vars[key] = line.substr(eq + 1);
    }
  }
  return vars;
}

class DsrunEndToEnd : public ::testing::TestWithParam<std::string> {
 protected:
  // dsrun with this test's launcher, 2 CPU ranks, a fixed port, the environment made
  // deterministic: a fake HOME and working directory, each with a .deepspeed_env.
  ProcessSpec dsrun(const std::vector<std::string>& program) {
    ProcessSpec spec;
    spec.argv = {DSRUN_PATH, "--launcher", GetParam(), "--num_procs", "2", "--master_port", "29617"};
    // Exercises --launcher_args; with -H localhost:2 OpenMPI needs no oversubscription, but a
    // 1-core CI machine would.
    if (GetParam() == "openmpi") spec.argv.push_back("--launcher_args=--oversubscribe");
    spec.argv.insert(spec.argv.end(), program.begin(), program.end());
    std::filesystem::create_directories(home());
    std::filesystem::create_directories(work());
    write_file(home() + "/.deepspeed_env", "DSRUN_HOME_VAR=from home\nDSRUN_SHARED_VAR=home\n");
    write_file(work() + "/.deepspeed_env", "# cwd file\n\nDSRUN_CWD_VAR=a=b \"c\"\r\nDSRUN_SHARED_VAR=cwd\n");
    spec.set_env = {{"HOME", home()}, {"NCCL_DSRUN_TEST", "nccl value"}};
    spec.unset_env = {"DS_ENV_FILE", "CUDA_VISIBLE_DEVICES", "RANK", "LOCAL_RANK", "WORLD_SIZE"};
    spec.cwd = work();
    return spec;
  }
  std::string home() const { return dir_.path() + "/home"; }
  std::string work() const { return dir_.path() + "/work"; }
  std::string out() const { return dir_.path() + "/out"; }

  TempDir dir_;
};

TEST_P(DsrunEndToEnd, EveryRankGetsItsEnvironmentAndArguments) {
  std::filesystem::create_directories(out());
  const std::vector<std::string> args = {"a b", "it's", "\"quoted\"", "", "--deepspeed_config", "x y.json", "$HOME", "*"};
  std::vector<std::string> program = {PROBE_PATH, "env", out()};
  program.insert(program.end(), args.begin(), args.end());
  ProcessResult r = run_process(dsrun(program), dir_.path(), kJobTimeoutSeconds);
  ASSERT_FALSE(r.timed_out) << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    std::vector<std::string> got_args;
    auto vars = read_rank_file(out() + "/rank" + std::to_string(rank) + ".txt", &got_args);
    ASSERT_FALSE(vars.empty()) << "rank file missing; dsrun stderr:\n" << r.err;
    EXPECT_EQ(vars["RANK"], std::to_string(rank));
    EXPECT_EQ(vars["LOCAL_RANK"], std::to_string(rank));
    EXPECT_EQ(vars["WORLD_SIZE"], "2");
    EXPECT_EQ(vars["LOCAL_SIZE"], "2");
    EXPECT_EQ(vars["CROSS_RANK"], "0");
    EXPECT_EQ(vars["CROSS_SIZE"], "1");
    EXPECT_EQ(vars["MASTER_ADDR"], "127.0.0.1");
    EXPECT_EQ(vars["MASTER_PORT"], "29617");
    EXPECT_EQ(vars["CUDA_VISIBLE_DEVICES"], "<unset>");  // CPU ranks: left alone
    EXPECT_EQ(vars["NCCL_DSRUN_TEST"], "nccl value");
    EXPECT_EQ(vars["DSRUN_HOME_VAR"], "from home");
    EXPECT_EQ(vars["DSRUN_CWD_VAR"], "a=b \"c\"");
    EXPECT_EQ(vars["DSRUN_SHARED_VAR"], "cwd");  // ./.deepspeed_env wins over ~/.deepspeed_env
    EXPECT_EQ(vars["argc"], std::to_string(args.size()));
    EXPECT_EQ(got_args, args);
  }
}

TEST_P(DsrunEndToEnd, RankExitCodeEndsTheJob) {
  ProcessResult r = run_process(dsrun({PROBE_PATH, "fail", "3"}), dir_.path(), kJobTimeoutSeconds);
  ASSERT_FALSE(r.timed_out) << r.err;
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_LT(r.seconds, kFailBoundSeconds);
}

TEST_P(DsrunEndToEnd, RankFailureStopsRanksThatIgnoreSigtermAndLeftovers) {
  std::filesystem::create_directories(out());
  ProcessResult r = run_process(dsrun({PROBE_PATH, "fail", "5", out()}), dir_.path(), kJobTimeoutSeconds);
  ASSERT_FALSE(r.timed_out) << r.err;
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_LT(r.seconds, kFailBoundSeconds);
  // The failed rank's own child: the local launcher kills the rank's process group; OpenMPI
  // does not look for what an exited rank left behind (README, "Differences").
  const bool child_is_stopped = GetParam() == "local";
  const double stop = now_seconds();
  for (const std::string name : {"pid0_self", "pid1_self", "pid1_child"}) {
    std::string text = read_file(out() + "/" + name);
    ASSERT_FALSE(text.empty()) << name << " was not written";
    pid_t pid = static_cast<pid_t>(std::stol(text));
    if (name == std::string("pid1_child") && !child_is_stopped) {
      ::kill(pid, SIGKILL);
      continue;
    }
    while (!process_gone(pid) && now_seconds() - stop < 10.0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(process_gone(pid)) << name << " (pid " << pid << ") still runs after the job failed";
    if (!process_gone(pid)) ::kill(pid, SIGKILL);
  }
}

TEST_P(DsrunEndToEnd, KilledRankEndsTheJobWith128PlusSignal) {
  ProcessResult r = run_process(dsrun({PROBE_PATH, "killself", std::to_string(SIGKILL)}), dir_.path(), kJobTimeoutSeconds);
  ASSERT_FALSE(r.timed_out) << r.err;
  EXPECT_EQ(r.exit_code, 128 + SIGKILL) << r.err;
  EXPECT_LT(r.seconds, kFailBoundSeconds);
}

TEST_P(DsrunEndToEnd, SigtermStopsEveryRankAndItsChildren) {
  std::filesystem::create_directories(out());
  Process p(dsrun({PROBE_PATH, "sleep", out()}), dir_.path());
  const std::vector<std::string> names = {"pid0_self", "pid0_child", "pid1_self", "pid1_child"};
  std::vector<pid_t> pids;
  const double start = now_seconds();
  while (pids.size() < names.size() && now_seconds() - start < kJobTimeoutSeconds) {
    pids.clear();
    for (const std::string& n : names) {
      std::string text = read_file(out() + "/" + n);
      if (!text.empty()) pids.push_back(static_cast<pid_t>(std::stol(text)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(pids.size(), names.size()) << "ranks did not start";
  ASSERT_EQ(::kill(p.pid(), SIGTERM), 0);
  ProcessResult r = p.wait(kFailBoundSeconds);
  ASSERT_FALSE(r.timed_out) << r.err;
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.err;
  // The ranks are gone by the time dsrun returns, or moments later (OpenMPI's last kill); a
  // process only waiting for its new parent to reap it counts as gone.
  const double stop = now_seconds();
  for (pid_t pid : pids) {
    while (!process_gone(pid) && now_seconds() - stop < 10.0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(process_gone(pid)) << "pid " << pid << " still runs after dsrun got SIGTERM";
    if (!process_gone(pid)) ::kill(pid, SIGKILL);
  }
  // Stopped by the forwarded SIGTERM (a chance to clean up), not only by a later SIGKILL.
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_TRUE(std::filesystem::exists(out() + "/term" + std::to_string(rank))) << "rank " << rank << " got no SIGTERM";
  }
}

INSTANTIATE_TEST_SUITE_P(Launchers, DsrunEndToEnd, ::testing::Values("openmpi", "local"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace ds::launcher::test
