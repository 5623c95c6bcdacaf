// detect_launch: the environment each launcher sets, and the errors for launches that cannot work.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "engine/comm/launch_env.h"

namespace {

using Env = std::map<std::string, std::string>;

ds::LaunchInfo detect(const Env& env) {
  return ds::detect_launch([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const Env& env) {
  try {
    detect(env);
  } catch (const ds::LaunchError& e) {
    return e.what();
  }
  return "";
}

TEST(LaunchEnv, NothingSetIsOneStandaloneProcessWithoutMpi) {
  const auto info = detect({});
  EXPECT_EQ(info.launcher, ds::Launcher::Standalone);
  EXPECT_FALSE(info.uses_mpi());
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.local_rank, 0);
}

TEST(LaunchEnv, StandaloneHonoursLocalRankForTheDevice) {
  const auto info = detect({{"LOCAL_RANK", "3"}, {"WORLD_SIZE", "1"}, {"RANK", "0"}});
  EXPECT_FALSE(info.uses_mpi());
  EXPECT_EQ(info.local_rank, 3);
  EXPECT_EQ(info.local_size, 4);
}

TEST(LaunchEnv, OpenMpiMpirun) {
  const auto info = detect({{"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_RANK", "5"},
                            {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                            // dsrun's rank wrapper adds these; mpirun's own variables win
                            {"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}});
  EXPECT_EQ(info.launcher, ds::Launcher::OpenMpi);
  EXPECT_TRUE(info.uses_mpi());
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_size, 4);
  EXPECT_EQ(info.describe(), "Open MPI mpirun: rank 5 of 8, local rank 1 of 4");
}

TEST(LaunchEnv, SlurmSrunWithPmix) {
  const auto info = detect({{"PMIX_RANK", "6"}, {"SLURM_PROCID", "6"}, {"SLURM_STEP_NUM_TASKS", "16"},
                            {"SLURM_NTASKS", "32"}, {"SLURM_LOCALID", "2"}, {"SLURM_STEP_ID", "0"}});
  EXPECT_EQ(info.launcher, ds::Launcher::Slurm);
  EXPECT_EQ(info.rank, 6);
  EXPECT_EQ(info.world_size, 16);   // the step's tasks, not the allocation's
  EXPECT_EQ(info.local_rank, 2);
  EXPECT_EQ(info.local_size, -1);   // asked from MPI after MPI_Init
}

TEST(LaunchEnv, PlainPmiLauncherLeavesTheRestToMpi) {
  const auto info = detect({{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}});
  EXPECT_EQ(info.launcher, ds::Launcher::Pmi);
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.local_rank, -1);
}

TEST(LaunchEnv, SrunWithoutPmiIsAnErrorThatNamesTheFix) {
  const std::string e = error_of({{"SLURM_PROCID", "1"}, {"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_LOCALID", "1"}});
  EXPECT_NE(e.find("srun started 4 tasks"), std::string::npos) << e;
  EXPECT_NE(e.find("--mpi=pmix"), std::string::npos) << e;
}

TEST(LaunchEnv, SlurmBatchScriptWithoutStepIsStandalone) {
  // sbatch scripts see SLURM_PROCID / SLURM_NTASKS of the allocation but are one process.
  const auto info = detect({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}});
  EXPECT_EQ(info.launcher, ds::Launcher::Standalone);
  EXPECT_EQ(info.world_size, 1);
}

TEST(LaunchEnv, DsrunLocalLauncherRanksAreToldToUseOpenMpi) {
  const std::string e = error_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"},
                                  {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}});
  EXPECT_NE(e.find("WORLD_SIZE=2"), std::string::npos) << e;
  EXPECT_NE(e.find("--launcher local"), std::string::npos) << e;
  EXPECT_NE(e.find("--launcher openmpi"), std::string::npos) << e;
}

TEST(LaunchEnv, BadNumbersAreErrorsNamingTheVariable) {
  EXPECT_NE(error_of({{"OMPI_COMM_WORLD_SIZE", "two"}, {"OMPI_COMM_WORLD_RANK", "0"}}).find("OMPI_COMM_WORLD_SIZE='two'"),
            std::string::npos);
  EXPECT_NE(error_of({{"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "2"}}).find("is not below"),
            std::string::npos);
  EXPECT_NE(error_of({{"OMPI_COMM_WORLD_SIZE", "2"}}).find("OMPI_COMM_WORLD_RANK is missing"), std::string::npos);
  EXPECT_NE(error_of({{"RANK", "1"}}).find("a single process is rank 0"), std::string::npos);
  EXPECT_NE(error_of({{"LOCAL_RANK", "-1"}}).find("LOCAL_RANK='-1'"), std::string::npos);
}

}  // namespace
