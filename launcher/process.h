// The impure half of dsrun: finding programs on PATH, counting GPUs, and running the commands of a
// LaunchPlan until the job ends.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "launcher/plan.h"
#include "launcher/resources.h"

namespace ds::launcher {

// `name` as execvp would find it: a name with '/' as is, else the first executable regular file
// of that name in PATH. nullopt when there is none.
std::optional<std::string> find_program(const std::string& name, const char* path_env);

// Counts CUDA devices without linking CUDA: dlopen("libcuda.so.1"), cuInit, cuDeviceGetCount
// (CUDA applies CUDA_VISIBLE_DEVICES itself). It runs in a forked child so that the driver, its
// threads and open device files never live in dsrun, which stays up for the whole job and forks
// the ranks. No driver or an error: 0 devices, and `why_none` says why.
LocalDevices discover_local_devices(std::string* why_none);

struct SuperviseOptions {
  // local launcher: when one rank fails, dsrun stops the others (mpirun and srun do it themselves).
  bool stop_all_on_failure = true;
  // local launcher: each rank leads its own process group and is signalled as a group, so the
  // processes a rank started (a shell's children, data loaders) stop with it, as OpenMPI does for
  // its ranks. A rank in a background group stops on reading the terminal, so such ranks read
  // /dev/null when dsrun's stdin is a terminal.
  bool own_process_groups = false;
  // The signal sent on to the children when dsrun gets SIGINT/SIGTERM/SIGHUP (0: the same one).
  // srun only prints a status on one SIGINT, so slurm forwards SIGTERM.
  int forward_as = 0;
  // After stopping children with a signal, how long before SIGKILL. DeepSpeed's launch.py waits
  // for its children without bound; a few seconds let ranks flush logs yet never hang the job.
  std::chrono::milliseconds grace{5000};
};

// Starts every command (env on top of dsrun's environment) and waits for all of them. Returns
// the job's status: the first failing child's exit code (128+signal when it was killed), or
// 128+signal when dsrun itself was interrupted first, else 0. `labels` name the children in
// messages ("rank 1", "mpirun").
int run_commands(const std::vector<Command>& commands, const std::vector<std::string>& labels,
                 const SuperviseOptions& options);

}  // namespace ds::launcher
