// `dsrun --rank-wrapper`: the small per-rank step between mpirun/srun and the user's program.
//
// mpirun and srun start the same command everywhere; DeepSpeed's per-rank variables (RANK,
// LOCAL_RANK, LOCAL_SIZE, CROSS_RANK, CROSS_SIZE, WORLD_SIZE) and each node's own
// CUDA_VISIBLE_DEVICES differ per rank, so dsrun starts itself in this mode, which reads the rank
// the backend gives (OMPI_COMM_WORLD_* or SLURM_*), sets those variables and execs the program.
// The layout (ranks per node, devices per node) travels on the command line from the launcher.
//
// The encoding and the rank-to-environment mapping are pure functions; wrapper_main execs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "launcher/environment.h"

namespace ds::launcher {

enum class RankSource { ompi, slurm };

struct WrapperSpec {
  RankSource source = RankSource::ompi;
  std::vector<int> node_procs;            // ranks of each node, rank order
  std::vector<std::string> node_devices;  // per node "0,1"; empty for CPU ranks
  std::vector<std::string> node_hosts;    // slurm: node names, matched against SLURMD_NODENAME
};

inline constexpr const char* kWrapperFlag = "--rank-wrapper";

// Arguments after kWrapperFlag, up to (not including) the "--" before the program.
std::vector<std::string> encode_wrapper_args(const WrapperSpec& spec);
// Parses what encode_wrapper_args wrote; throws UsageError.
WrapperSpec decode_wrapper_args(const std::vector<std::string>& args);

// The variables this rank gets, from the backend's variables read through `getenv`. Throws
// UsageError when the backend's variables are missing or disagree with the layout (for example a
// --map-by in --launcher_args that placed ranks differently).
EnvList rank_environment(const WrapperSpec& spec, const std::function<const char*(const char*)>& getenv);

// argv[1] == kWrapperFlag: sets the variables and execs the program; returns only on failure
// (2: bad layout or environment, 127: the program could not be started).
int wrapper_main(int argc, char** argv);

}  // namespace ds::launcher
