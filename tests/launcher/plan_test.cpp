#include "launcher/plan.h"

#include "launcher/rank_wrapper.h"
#include "test_helpers.h"

namespace ds::launcher {
namespace {

using Words = std::vector<std::string>;

World gpu_world() {
  World w;
  w.from_hostfile = true;
  w.nodes = {{"worker-0", 2, {"1", "3"}}, {"worker-1", 2, {"0", "1"}}};
  return w;
}

World cpu_local(int procs) {
  World w;
  w.nodes = {{"localhost", procs, {}}};
  return w;
}

PlanInputs inputs(Backend backend, World world) {
  PlanInputs in;
  in.backend = backend;
  in.world = std::move(world);
  in.master_addr = default_master_addr(in.world, "node7");
  in.master_port = 29500;
  in.inherited = {{"NCCL_DEBUG", "INFO"}};
  in.env_files = {{"MY_VAR", "x y"}};
  in.program = {"./train", "--deepspeed_config", "my ds.json"};
  in.self_exe = "/opt/bin/dsrun";
  in.this_host = "node7";
  return in;
}

TEST(Backend, NamesCaseInsensitive) {
  EXPECT_EQ(parse_backend("OpenMPI"), Backend::openmpi);
  EXPECT_EQ(parse_backend("slurm"), Backend::slurm);
  EXPECT_EQ(parse_backend("LOCAL"), Backend::local);
  EXPECT_USAGE_ERROR(parse_backend("pdsh"), "Unknown launcher pdsh");
}

TEST(MasterAddr, Defaults) {
  EXPECT_EQ(default_master_addr(cpu_local(2), "node7"), "127.0.0.1");
  EXPECT_EQ(default_master_addr(gpu_world(), "node7"), "worker-0");
  World w = gpu_world();
  w.nodes[0].host = "localhost";  // other nodes cannot reach "localhost"
  EXPECT_EQ(default_master_addr(w, "node7"), "node7");
  w.nodes = {{"node7.cluster", 2, {"0", "1"}}};
  EXPECT_EQ(default_master_addr(w, "node7"), "127.0.0.1");
  w.nodes = {{"worker-3", 2, {"0", "1"}}};
  EXPECT_EQ(default_master_addr(w, "node7"), "worker-3");
}

TEST(ThisHost, LoopbackAndOwnNames) {
  EXPECT_TRUE(is_this_host("localhost", "n1"));
  EXPECT_TRUE(is_this_host("127.0.0.1", "n1"));
  EXPECT_TRUE(is_this_host("n1", "n1"));
  EXPECT_TRUE(is_this_host("n1.cluster", "n1"));
  EXPECT_FALSE(is_this_host("n2", "n1"));
}

TEST(OpenMpiPlan, MultiNodeGpuCommand) {
  PlanInputs in = inputs(Backend::openmpi, gpu_world());
  LaunchPlan plan = build_plan(in);
  ASSERT_EQ(plan.commands.size(), 1u);
  EXPECT_TRUE(plan.commands[0].env.empty());
  EXPECT_EQ(plan.commands[0].argv,
            (Words{"mpirun", "-n", "4", "-H", "worker-0:2,worker-1:2", "--map-by", "slot", "--bind-to", "none", "--mca",
                   "btl", "^openib", "-x", "MASTER_ADDR=worker-0", "-x", "MASTER_PORT=29500", "-x", "WORLD_SIZE=4", "-x",
                   "NCCL_DEBUG=INFO", "-x", "MY_VAR=x y", "/opt/bin/dsrun", "--rank-wrapper", "--from", "ompi",
                   "--node-procs", "2,2", "--node-devices", "1,3", "--node-devices", "0,1", "--", "./train",
                   "--deepspeed_config", "my ds.json"}));
  EXPECT_EQ(plan.summary, (Words{"node 0 worker-0: ranks 0-1, CUDA_VISIBLE_DEVICES=1,3",
                                 "node 1 worker-1: ranks 2-3, CUDA_VISIBLE_DEVICES=0,1"}));
}

TEST(OpenMpiPlan, SingleNodeCpuAsRootWithLauncherArgs) {
  PlanInputs in = inputs(Backend::openmpi, cpu_local(2));
  in.as_root = true;
  in.launcher_args = {"--oversubscribe", "--bind-to", "core", "--mca", "btl", "tcp,self"};
  in.inherited.clear();
  in.env_files.clear();
  LaunchPlan plan = build_plan(in);
  // The user's --bind-to and --mca btl replace ours; --map-by slot stays.
  EXPECT_EQ(plan.commands[0].argv,
            (Words{"mpirun", "-n", "2", "--allow-run-as-root", "-H", "localhost:2", "--map-by", "slot",
                   "--oversubscribe", "--bind-to", "core", "--mca", "btl", "tcp,self", "-x", "MASTER_ADDR=127.0.0.1",
                   "-x", "MASTER_PORT=29500", "-x", "WORLD_SIZE=2", "/opt/bin/dsrun", "--rank-wrapper", "--from",
                   "ompi", "--node-procs", "2", "--", "./train", "--deepspeed_config", "my ds.json"}));
}

TEST(OpenMpiPlan, DryRunText) {
  PlanInputs in = inputs(Backend::openmpi, cpu_local(2));
  in.inherited.clear();
  in.env_files = {{"Q", "it's"}};
  EXPECT_EQ(format_dry_run(build_plan(in)),
            "# dsrun --dry-run: openmpi, 2 rank(s) on 1 node(s); nothing was started\n"
            "# node 0 localhost: ranks 0-1, CPU\n"
            "# per rank, dsrun --rank-wrapper sets RANK, LOCAL_RANK, LOCAL_SIZE, CROSS_RANK, CROSS_SIZE\n"
            "mpirun -n 2 -H localhost:2 --map-by slot --bind-to none --mca btl '^openib' -x MASTER_ADDR=127.0.0.1 "
            "-x MASTER_PORT=29500 -x WORLD_SIZE=2 -x 'Q=it'\"'\"'s' /opt/bin/dsrun --rank-wrapper --from ompi "
            "--node-procs 2 -- ./train --deepspeed_config 'my ds.json'\n");
}

TEST(SlurmPlan, MultiNodeCommand) {
  PlanInputs in = inputs(Backend::slurm, gpu_world());
  in.launcher_args = {"--mpi=pmix"};
  in.env_files = {{"MY_VAR", "x y"}, {"LIST", "a,b"}};
  LaunchPlan plan = build_plan(in);
  ASSERT_EQ(plan.commands.size(), 1u);
  EXPECT_EQ(plan.commands[0].argv,
            (Words{"srun", "-n", "4", "--nodes=2", "--ntasks-per-node=2", "--nodelist=worker-0,worker-1", "--mpi=pmix",
                   "--export=ALL,MASTER_ADDR=worker-0,MASTER_PORT=29500,WORLD_SIZE=4,NCCL_DEBUG=INFO,MY_VAR=x y",
                   "/opt/bin/dsrun", "--rank-wrapper", "--from", "slurm", "--node-procs", "2,2", "--node-devices",
                   "1,3", "--node-devices", "0,1", "--node-hosts", "worker-0,worker-1", "--", "./train",
                   "--deepspeed_config", "my ds.json"}));
  // srun would split a value with a comma: it travels in srun's environment instead.
  EXPECT_EQ(plan.commands[0].env, (EnvList{{"LIST", "a,b"}}));
  EXPECT_EQ(format_command(plan.commands[0]).substr(0, 15), "LIST=a,b srun -");
}

TEST(SlurmPlan, SingleNodeWithoutHostfileHasNoNodelist) {
  PlanInputs in = inputs(Backend::slurm, cpu_local(3));
  in.inherited.clear();
  in.env_files.clear();
  EXPECT_EQ(build_plan(in).commands[0].argv,
            (Words{"srun", "-n", "3", "--nodes=1", "--ntasks-per-node=3",
                   "--export=ALL,MASTER_ADDR=127.0.0.1,MASTER_PORT=29500,WORLD_SIZE=3", "/opt/bin/dsrun",
                   "--rank-wrapper", "--from", "slurm", "--node-procs", "3", "--", "./train", "--deepspeed_config",
                   "my ds.json"}));
}

TEST(SlurmPlan, UnequalRanksPerNodeIsAnError) {
  World w = gpu_world();
  w.nodes[1] = {"worker-1", 1, {"0"}};
  EXPECT_USAGE_ERROR(build_plan(inputs(Backend::slurm, w)),
                     "the slurm launcher needs the same number of ranks on every node (srun --ntasks-per-node), got "
                     "worker-0:2, worker-1:1");
}

TEST(LocalPlan, OneCommandPerRankWithItsEnvironment) {
  World w;
  w.nodes = {{"localhost", 2, {"2", "3"}}};
  PlanInputs in = inputs(Backend::local, w);
  LaunchPlan plan = build_plan(in);
  ASSERT_EQ(plan.commands.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(plan.commands[r].argv, in.program);
    // NCCL_DEBUG is inherited from dsrun's environment, not set again.
    EXPECT_EQ(plan.commands[r].env, (EnvList{{"MASTER_ADDR", "127.0.0.1"},
                                             {"MASTER_PORT", "29500"},
                                             {"WORLD_SIZE", "2"},
                                             {"MY_VAR", "x y"},
                                             {"RANK", std::to_string(r)},
                                             {"LOCAL_RANK", std::to_string(r)},
                                             {"LOCAL_SIZE", "2"},
                                             {"CROSS_RANK", "0"},
                                             {"CROSS_SIZE", "1"},
                                             {"CUDA_VISIBLE_DEVICES", "2,3"}}));
  }
  EXPECT_EQ(format_dry_run(plan),
            "# dsrun --dry-run: local, 2 rank(s) on 1 node(s); nothing was started\n"
            "# node 0 localhost: ranks 0-1, CUDA_VISIBLE_DEVICES=2,3\n"
            "MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 MY_VAR='x y' RANK=0 LOCAL_RANK=0 LOCAL_SIZE=2 "
            "CROSS_RANK=0 CROSS_SIZE=1 CUDA_VISIBLE_DEVICES=2,3 ./train --deepspeed_config 'my ds.json'\n"
            "MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 MY_VAR='x y' RANK=1 LOCAL_RANK=1 LOCAL_SIZE=2 "
            "CROSS_RANK=0 CROSS_SIZE=1 CUDA_VISIBLE_DEVICES=2,3 ./train --deepspeed_config 'my ds.json'\n");
}

TEST(LocalPlan, OtherHostsAreAnError) {
  EXPECT_USAGE_ERROR(build_plan(inputs(Backend::local, gpu_world())),
                     "the local launcher starts ranks on this machine only, but the job uses worker-0, worker-1");
  World remote;
  remote.from_hostfile = true;
  remote.nodes = {{"worker-5", 1, {"0"}}};
  EXPECT_USAGE_ERROR(build_plan(inputs(Backend::local, remote)), "this machine only");
  World own;
  own.from_hostfile = true;
  own.nodes = {{"node7", 1, {"0"}}};
  EXPECT_EQ(build_plan(inputs(Backend::local, own)).commands.size(), 1u);
}

TEST(Plan, NoProgramIsAnError) {
  PlanInputs in = inputs(Backend::openmpi, cpu_local(1));
  in.program.clear();
  EXPECT_USAGE_ERROR(build_plan(in), "PROGRAM");
}

}  // namespace
}  // namespace ds::launcher
