// The ranks of this job: who started the process, MPI's lifetime, the device, communicators, and
// how a failure on one rank ends the whole job.
//
//   int main(int argc, char** argv) {
//     return ds::run_distributed([&](ds::DistributedContext& ctx) {
//       auto cfg = ds::load_config(path, ctx.world_size());
//       ds::EngineOptions opts;
//       opts.device = ctx.device();                                  // cuda:LOCAL_RANK, or CPU
//       opts.reducer = ds::make_gradient_reducer(ctx, cfg, *opts.device);
//       ds::Engine engine(model, cfg, opts);                         // broadcasts rank 0's weights
//       ...
//       return 0;
//     });
//   }
//
// - A process started by mpirun, srun (with PMI) or dsrun (openmpi / slurm launchers) initialises MPI
//   (MPI_THREAD_MULTIPLE) and takes rank, world size and local rank from the launcher (rules in
//   launch_env.h). A process started alone is rank 0 of 1 and never calls MPI_Init. `dsrun
//   --launcher local` ranks get a LaunchError saying to use the openmpi launcher.
// - RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_SIZE are exported when the launcher did not set them
//   (as DeepSpeed does for mpirun), so code that reads them (the Engine's default device) agrees.
// - MPI is finalised when the context and every communicator made from it are gone.
// - Failures: run_distributed() catches whatever escapes the body, prints it with the rank, and
//   with more than one rank ends the whole job with MPI_Abort (mpirun then stops every rank, exit
//   code non-zero); a body returning non-zero on some rank does the same. With more than one rank
//   the context also installs a std::terminate handler doing the same for exceptions that escape
//   elsewhere (other threads, destructors). Without these a failed rank would leave the others
//   blocked in a collective, or in MPI_Finalize, forever.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>

#include "engine/comm/communicator.h"
#include "engine/comm/launch_env.h"
#include "engine/config/ds_config.h"
#include "engine/grad_reducer.h"

namespace ds {

namespace comm_detail {
class MpiRuntime;
}

class DistributedContext {
 public:
  DistributedContext();                           // detect_launch(std::getenv)
  explicit DistributedContext(LaunchInfo launch);
  ~DistributedContext();
  DistributedContext(const DistributedContext&) = delete;
  DistributedContext& operator=(const DistributedContext&) = delete;

  int rank() const { return launch_.rank; }
  int world_size() const { return launch_.world_size; }
  int local_rank() const { return launch_.local_rank; }
  int local_size() const { return launch_.local_size; }
  const LaunchInfo& launch() const { return launch_; }
  bool uses_mpi() const { return mpi_ != nullptr; }

  // cuda:local_rank() when this build has CUDA and a device is visible, else CPU. Throws when
  // local_rank() is not below the number of visible devices.
  at::Device device() const;

  // For CPU tensors: MPI over the world (world size > 1) or the self backend. Shared, made once;
  // it also bootstraps NCCL communicators.
  std::shared_ptr<Communicator> world_communicator();
  // A new communicator for tensors on `device`: NCCL for CUDA devices, MPI (its own duplicate of
  // the world) for the CPU, self at world size 1 on the CPU. Collective: every rank calls it.
  std::shared_ptr<Communicator> make_communicator(at::Device device);

 private:
  LaunchInfo launch_;
  std::shared_ptr<comm_detail::MpiRuntime> mpi_;
  std::shared_ptr<Communicator> world_;
};

// Ends this process and, when MPI is running, the whole job (MPI_Abort) with `code`.
[[noreturn]] void abort_job(int code) noexcept;

// Builds a DistributedContext and runs body(ctx); see the header comment for what happens on
// failure. Returns body's exit code (0 on every rank for a clean run).
int run_distributed(const std::function<int(DistributedContext&)>& body);

// The gradient reducer for an Engine on `device`: SingleProcessReducer at world size 1, else a
// DataParallelReducer (data_parallel_reducer.h) over make_communicator(device), configured from
// `config` (data_parallel, prescale_gradients, gradient_predivide_factor, communication_data_type).
std::shared_ptr<GradientReducer> make_gradient_reducer(DistributedContext& ctx, const DeepSpeedConfig& config,
                                                       at::Device device);

}  // namespace ds
