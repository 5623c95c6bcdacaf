#include "launcher/rank_wrapper.h"

#include <map>

#include "test_helpers.h"

namespace ds::launcher {
namespace {

// A fake process environment for rank_environment.
struct FakeEnv {
  std::map<std::string, std::string> vars;
  const char* operator()(const char* name) const {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  }
};

FakeEnv ompi(int rank, int local, int size) {
  return {{{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
           {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(local)},
           {"OMPI_COMM_WORLD_SIZE", std::to_string(size)}}};
}

WrapperSpec two_gpu_nodes(RankSource source) {
  WrapperSpec spec;
  spec.source = source;
  spec.node_procs = {2, 3};
  spec.node_devices = {"1,3", "0,1,2"};
  return spec;
}

TEST(RankWrapper, EncodeDecodeRoundTrip) {
  WrapperSpec spec = two_gpu_nodes(RankSource::slurm);
  spec.node_hosts = {"a", "b"};
  std::vector<std::string> args = encode_wrapper_args(spec);
  EXPECT_EQ(args, (std::vector<std::string>{"--from", "slurm", "--node-procs", "2,3", "--node-devices", "1,3",
                                            "--node-devices", "0,1,2", "--node-hosts", "a,b"}));
  WrapperSpec back = decode_wrapper_args(args);
  EXPECT_EQ(back.source, RankSource::slurm);
  EXPECT_EQ(back.node_procs, spec.node_procs);
  EXPECT_EQ(back.node_devices, spec.node_devices);
  EXPECT_EQ(back.node_hosts, spec.node_hosts);
  EXPECT_USAGE_ERROR(decode_wrapper_args({"--from", "pbs", "--node-procs", "1"}), "--from");
  EXPECT_USAGE_ERROR(decode_wrapper_args({"--from", "ompi", "--node-procs", "1,1", "--node-devices", "0"}),
                     "1 --node-devices for 2 nodes");
}

TEST(RankWrapper, OpenMpiRankOnSecondNode) {
  EnvList env = rank_environment(two_gpu_nodes(RankSource::ompi), ompi(3, 1, 5));
  EXPECT_EQ(env, (EnvList{{"RANK", "3"},
                          {"LOCAL_RANK", "1"},
                          {"WORLD_SIZE", "5"},
                          {"LOCAL_SIZE", "3"},
                          {"CROSS_RANK", "1"},
                          {"CROSS_SIZE", "2"},
                          {"CUDA_VISIBLE_DEVICES", "0,1,2"}}));
  env = rank_environment(two_gpu_nodes(RankSource::ompi), ompi(1, 1, 5));
  EXPECT_EQ(*env_get(env, "CUDA_VISIBLE_DEVICES"), "1,3");
  EXPECT_EQ(*env_get(env, "CROSS_RANK"), "0");
}

TEST(RankWrapper, CpuRanksLeaveCudaVisibleDevicesAlone) {
  WrapperSpec spec;
  spec.node_procs = {2};
  EnvList env = rank_environment(spec, ompi(1, 1, 2));
  EXPECT_EQ(env_get(env, "CUDA_VISIBLE_DEVICES"), nullptr);
  EXPECT_EQ(*env_get(env, "RANK"), "1");
}

TEST(RankWrapper, OpenMpiDisagreementsAreErrors) {
  EXPECT_USAGE_ERROR(rank_environment(two_gpu_nodes(RankSource::ompi), ompi(3, 0, 5)),
                     "OpenMPI placed rank 3 as local rank 0 but dsrun expected local rank 1 of node 1");
  EXPECT_USAGE_ERROR(rank_environment(two_gpu_nodes(RankSource::ompi), ompi(0, 0, 4)),
                     "mpirun started 4 ranks but dsrun planned 5");
  FakeEnv missing = ompi(0, 0, 5);
  missing.vars.erase("OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_USAGE_ERROR(rank_environment(two_gpu_nodes(RankSource::ompi), missing), "OMPI_COMM_WORLD_LOCAL_RANK is not set");
  FakeEnv bad = ompi(0, 0, 5);
  bad.vars["OMPI_COMM_WORLD_RANK"] = "x";
  EXPECT_USAGE_ERROR(rank_environment(two_gpu_nodes(RankSource::ompi), bad), "OMPI_COMM_WORLD_RANK='x'");
}

TEST(RankWrapper, SlurmFindsTheNodeByName) {
  WrapperSpec spec = two_gpu_nodes(RankSource::slurm);
  spec.node_procs = {2, 2};
  spec.node_devices = {"1,3", "0,2"};
  spec.node_hosts = {"b.cluster", "a"};
  // Slurm ranks node "a" first (its own order), though the hostfile lists it second.
  FakeEnv env{{{"SLURM_PROCID", "1"}, {"SLURM_LOCALID", "1"}, {"SLURM_NTASKS", "4"}, {"SLURMD_NODENAME", "a"}}};
  EnvList got = rank_environment(spec, env);
  EXPECT_EQ(*env_get(got, "RANK"), "1");
  EXPECT_EQ(*env_get(got, "CROSS_RANK"), "1");
  EXPECT_EQ(*env_get(got, "CUDA_VISIBLE_DEVICES"), "0,2");
  env.vars["SLURMD_NODENAME"] = "b";  // short name of b.cluster
  EXPECT_EQ(*env_get(rank_environment(spec, env), "CUDA_VISIBLE_DEVICES"), "1,3");
  env.vars["SLURMD_NODENAME"] = "c";
  EXPECT_USAGE_ERROR(rank_environment(spec, env), "srun ran rank 1 on node 'c', which is not one of the hostfile's hosts");
  env.vars["SLURMD_NODENAME"] = "a";
  env.vars["SLURM_LOCALID"] = "2";
  EXPECT_USAGE_ERROR(rank_environment(spec, env), "local rank 2 but node 1 has 2 ranks");
}

TEST(RankWrapper, SlurmSingleNodeNeedsNoName) {
  WrapperSpec spec;
  spec.source = RankSource::slurm;
  spec.node_procs = {2};
  FakeEnv env{{{"SLURM_PROCID", "0"}, {"SLURM_LOCALID", "0"}, {"SLURM_NTASKS", "2"}}};
  EXPECT_EQ(*env_get(rank_environment(spec, env), "LOCAL_SIZE"), "2");
  // The step's task count wins over the allocation's.
  env.vars["SLURM_NTASKS"] = "8";
  env.vars["SLURM_STEP_NUM_TASKS"] = "2";
  EXPECT_EQ(*env_get(rank_environment(spec, env), "WORLD_SIZE"), "2");
  env.vars["SLURM_STEP_NUM_TASKS"] = "3";
  EXPECT_USAGE_ERROR(rank_environment(spec, env), "srun started 3 ranks but dsrun planned 2");
}

}  // namespace
}  // namespace ds::launcher
