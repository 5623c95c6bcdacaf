// Command building: from the resolved world (resources.h), the forwarded environment
// (environment.h) and the program, the exact commands dsrun runs for each backend. Pure.
//
//  openmpi: one `mpirun -n W -H host:procs,... --map-by slot --bind-to none --mca btl ^openib
//           <launcher_args> -x NAME=VALUE... dsrun --rank-wrapper ... -- PROGRAM ARGS`;
//  slurm:   one `srun -n W --nodes=N --ntasks-per-node=P [--nodelist=...] <launcher_args>
//           --export=ALL,NAME=VALUE,... dsrun --rank-wrapper ... -- PROGRAM ARGS`;
//  local:   one command per rank, PROGRAM ARGS with the rank's variables, forked by dsrun.
// RANK-independent variables travel on the backend's command line; RANK, LOCAL_RANK, LOCAL_SIZE,
// CROSS_RANK, CROSS_SIZE and CUDA_VISIBLE_DEVICES are set per rank by the wrapper (rank_wrapper.h).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "launcher/environment.h"
#include "launcher/resources.h"

namespace ds::launcher {

enum class Backend { openmpi, slurm, local };

// Case-insensitive, like DeepSpeed; unknown names throw UsageError("Unknown launcher NAME").
Backend parse_backend(std::string_view name);
const char* backend_name(Backend backend);
// The executable a backend needs on PATH ("mpirun", "srun"), or "" for local.
const char* backend_program(Backend backend);

// DeepSpeed's TORCH_DISTRIBUTED_DEFAULT_PORT.
inline constexpr int kDefaultMasterPort = 29500;

struct Command {
  std::vector<std::string> argv;
  EnvList env;  // set on top of dsrun's own environment
};

struct LaunchPlan {
  Backend backend = Backend::openmpi;
  int world_size = 0;
  int num_nodes = 0;
  bool uses_gpus = false;
  std::vector<Command> commands;     // openmpi/slurm: one; local: one per rank
  std::vector<std::string> summary;  // one line per node, for the log and --dry-run
};

struct PlanInputs {
  Backend backend = Backend::openmpi;
  World world;
  std::string master_addr;
  int master_port = kDefaultMasterPort;
  EnvList inherited;   // forwarded from dsrun's environment (NCCL*, ...); local ranks inherit them anyway
  EnvList env_files;   // from .deepspeed_env files
  std::vector<std::string> launcher_args;  // already split
  std::vector<std::string> program;        // PROGRAM ARGS, passed through untouched
  std::string self_exe;                    // this dsrun, started again as the rank wrapper
  std::string this_host;                   // gethostname() of the machine dsrun runs on
  bool as_root = false;                    // euid 0: mpirun refuses root without --allow-run-as-root
};

// True for names that mean the machine dsrun runs on.
bool is_this_host(std::string_view host, std::string_view this_host);

// MASTER_ADDR when --master_addr is not given: 127.0.0.1 for a job on one node of this machine or
// from no hostfile (all ranks share the node), else the first host's name (this machine's name when
// that host is a loopback name). DeepSpeed runs `ssh HOST hostname -I` instead.
std::string default_master_addr(const World& world, const std::string& this_host);

// Throws UsageError for a layout the backend cannot start (local: other hosts; slurm: unequal
// ranks per node).
LaunchPlan build_plan(const PlanInputs& in);

// --dry-run: '#' summary lines, then each command as one shell line (NAME=VALUE words first).
std::string format_dry_run(const LaunchPlan& plan);
// One command as a shell line.
std::string format_command(const Command& command);

}  // namespace ds::launcher
