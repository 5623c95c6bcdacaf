// Who started this process, read from the environment only (pure, so it is tested without MPI).
//
// Rules, first match wins:
//  1. Open MPI's mpirun (also under dsrun's default `openmpi` launcher): OMPI_COMM_WORLD_RANK / SIZE /
//     LOCAL_RANK / LOCAL_SIZE.
//  2. A PMIx or PMI launcher (Slurm's `srun --mpi=pmix|pmi2`, MPICH's hydra): PMIX_RANK or PMI_RANK
//     is set. Slurm's SLURM_PROCID / SLURM_STEP_NUM_TASKS (or SLURM_NTASKS) / SLURM_LOCALID give rank,
//     size and local rank; without Slurm PMI_RANK / PMI_SIZE and MPI_LOCALRANKID; what is missing is
//     asked from MPI after MPI_Init (local rank: MPI_Comm_split_type by shared memory).
//  3. srun without PMI (SLURM_STEP_NUM_TASKS > 1 but no PMI variable): an error, because MPI_Init
//     would make every task a world of its own.
//  4. RANK / WORLD_SIZE without an MPI launcher (dsrun --launcher local, torchrun): WORLD_SIZE 1 is a
//     single process; more is an error. We decided not to bootstrap over MASTER_ADDR/PORT: every
//     rank needs MPI anyway (CPU gradients, the NCCL id exchange, MPI_Abort ending the job), and
//     dsrun's default launcher gives the same ranks through mpirun.
//  5. Nothing: a single process (world size 1, no MPI_Init).
// Every rule checks its numbers (integers, 0 <= rank < size, 0 <= local rank < local size).
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

namespace ds {

enum class Launcher { Standalone, OpenMpi, Slurm, Pmi };
const char* launcher_name(Launcher l);   // "standalone", "Open MPI mpirun", "Slurm srun", "PMI"

struct LaunchInfo {
  Launcher launcher = Launcher::Standalone;
  // -1: not in the environment; DistributedContext asks MPI after MPI_Init.
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  bool uses_mpi() const { return launcher != Launcher::Standalone; }
  std::string describe() const;   // "Open MPI mpirun: rank 1 of 4, local rank 1 of 4"
};

class LaunchError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using GetEnv = std::function<const char*(const char*)>;

// Throws LaunchError with what to do instead.
LaunchInfo detect_launch(const GetEnv& getenv);

}  // namespace ds
