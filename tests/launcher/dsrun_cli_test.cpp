// The dsrun binary's user-facing contract without starting any rank: usage errors exit 2 with
// DeepSpeed's wording, --dry-run prints the plan and starts nothing, --help exits 0.
#include <gtest/gtest.h>

#include <filesystem>

#include "subprocess.h"

namespace ds::launcher::test {
namespace {

constexpr double kTimeoutSeconds = 60.0;

class DsrunCli : public ::testing::Test {
 protected:
  ProcessResult dsrun(std::vector<std::string> args) {
    ProcessSpec spec;
    spec.argv = {DSRUN_PATH};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.unset_env = {"DS_ENV_FILE", "CUDA_VISIBLE_DEVICES"};
    spec.set_env = {{"HOME", dir_.path()}};
    return run_process(spec, dir_.path(), kTimeoutSeconds);
  }
  // A new file per call: the cases below are all written before any of them runs.
  std::string hostfile(const std::string& text) {
    std::string path = dir_.path() + "/hostfile" + std::to_string(hostfiles_++);
    write_file(path, text);
    return path;
  }
  TempDir dir_;
  int hostfiles_ = 0;
};

TEST_F(DsrunCli, HelpExitsZero) {
  ProcessResult r = dsrun({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("Usage: dsrun [OPTIONS] PROGRAM [ARGS...]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--num_gpus"), std::string::npos);
}

TEST_F(DsrunCli, UsageErrorsExitTwoWithDeepSpeedWording) {
  const std::string good = hostfile("worker-0 slots=2\nworker-1 slots=2\n");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--num_procs", "2", "no-such-program-dsrun-test"}, "program 'no-such-program-dsrun-test' not found"},
      {{"-H", dir_.path() + "/missing", PROBE_PATH}, "Unable to find hostfile"},
      {{"-H", hostfile("worker-0 slots=2\nworker-1 gpus=2\n"), PROBE_PATH},
       "Hostfile contains a bad entry: worker-1 gpus=2, unable to proceed with launching"},
      {{"-H", hostfile("worker-0 slots=2\nworker-0 slots=4\n"), PROBE_PATH},
       "Hostfile contains multiple entries for worker-0, unable to proceed with launching"},
      {{"-H", hostfile("# nothing\n\n"), PROBE_PATH},
       "Hostfile is empty or not formatted correctly, unable to proceed with launching."},
      {{"-H", good, "-i", "worker-0", "-e", "worker-1", PROBE_PATH}, "include_str and exclude_str are mutually exclusive."},
      {{"-H", good, "-i", "worker-7", PROBE_PATH}, "Hostname 'worker-7' not found in hostfile"},
      {{"-H", good, "-e", "worker-1:5", PROBE_PATH}, "No slot '5' specified on host 'worker-1'"},
      {{"-H", good, "--num_gpus", "1", "-i", "worker-0", PROBE_PATH}, "Cannot specify num_nodes/gpus with include/exclude"},
      {{"--num_nodes", "2", PROBE_PATH}, "Num nodes is >1 but no extra nodes available via hostfile"},
      {{"--launcher", "pdsh", PROBE_PATH}, "Unknown launcher pdsh"},
      {{"--num_gpu", "2", PROBE_PATH}, "unrecognized arguments: --num_gpu"},
      {{"--num_procs", "2"}, "the following arguments are required: PROGRAM"},
      {{"--launcher_args=--mca 'x", PROBE_PATH}, "No closing quotation"},
  };
  for (const Case& c : cases) {
    ProcessResult r = dsrun(c.args);
    std::string joined;
    for (const std::string& a : c.args) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << joined << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
  }
}

TEST_F(DsrunCli, DryRunPrintsTheCommandAndStartsNothing) {
  const std::string out = dir_.path() + "/out";
  std::filesystem::create_directories(out);
  const std::string hf = hostfile("# two GPU hosts\nworker-0 slots=4\n\nworker-1 slots=4 max_slots=4\n");
  ProcessResult r = dsrun({"--dry-run", "-H", hf, "-i", "worker-0:1,3@worker-1", "--master_port", "1234", PROBE_PATH,
                           "env", out, "--deepspeed_config", "my config.json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("# dsrun --dry-run: openmpi, 6 rank(s) on 2 node(s); nothing was started"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("# node 0 worker-0: ranks 0-1, CUDA_VISIBLE_DEVICES=1,3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mpirun -n 6 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-H worker-0:2,worker-1:4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-x MASTER_ADDR=worker-0 -x MASTER_PORT=1234 -x WORLD_SIZE=6"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--node-devices 1,3 --node-devices 0,1,2,3 -- " + std::string(PROBE_PATH) + " env " + out +
                       " --deepspeed_config 'my config.json'"),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(std::filesystem::is_empty(out)) << "--dry-run started a rank";
}

TEST_F(DsrunCli, DryRunSlurmAndLocal) {
  ProcessResult slurm = dsrun({"--dry-run", "-H", hostfile("a slots=2\nb slots=2\n"), "--launcher", "SLURM", PROBE_PATH});
  ASSERT_EQ(slurm.exit_code, 0) << slurm.err;
  EXPECT_NE(slurm.out.find("srun -n 4 --nodes=2 --ntasks-per-node=2 --nodelist=a,b --export=ALL,MASTER_ADDR=a,"),
            std::string::npos)
      << slurm.out;
  ProcessResult local = dsrun({"--dry-run", "--launcher", "local", "--num_procs", "2", PROBE_PATH, "x y"});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  EXPECT_NE(local.out.find("RANK=1 LOCAL_RANK=1 LOCAL_SIZE=2 CROSS_RANK=0 CROSS_SIZE=1 " + std::string(PROBE_PATH) + " 'x y'"),
            std::string::npos)
      << local.out;
}

}  // namespace
}  // namespace ds::launcher::test
