#include "engine/comm/launch_env.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <optional>

namespace ds {
namespace {

// nullopt when unset; throws when set but not a non-negative integer.
std::optional<int> read_int(const GetEnv& getenv, const char* name) {
  const char* v = getenv(name);
  if (!v) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || errno != 0 || x < 0 || x > INT_MAX) {
    throw LaunchError(std::string(name) + "='" + v + "' is not a non-negative integer; the launcher that set it "
                      "is misconfigured, or unset it when starting a single process");
  }
  return static_cast<int>(x);
}

int require_int(const GetEnv& getenv, const char* name, const char* launcher) {
  if (auto v = read_int(getenv, name)) return *v;
  throw LaunchError(std::string(launcher) + " variables are set but " + name +
                    " is missing; start the program with the launcher itself (mpirun / srun / dsrun), not with a "
                    "partial copy of its environment");
}

void check_range(const LaunchInfo& info, const char* rank_name, const char* size_name) {
  if (info.world_size == 0) throw LaunchError(std::string(size_name) + " is 0; a job needs at least one rank");
  if (info.rank >= 0 && info.world_size > 0 && info.rank >= info.world_size) {
    throw LaunchError(std::string(rank_name) + "=" + std::to_string(info.rank) + " is not below " + size_name + "=" +
                      std::to_string(info.world_size));
  }
  if (info.local_rank >= 0 && info.local_size > 0 && info.local_rank >= info.local_size) {
    throw LaunchError("local rank " + std::to_string(info.local_rank) + " is not below the local size " +
                      std::to_string(info.local_size));
  }
}

const char* first_set(const GetEnv& getenv, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (getenv(n)) return n;
  }
  return nullptr;
}

}  // namespace

const char* launcher_name(Launcher l) {
  switch (l) {
    case Launcher::Standalone: return "standalone";
    case Launcher::OpenMpi: return "Open MPI mpirun";
    case Launcher::Slurm: return "Slurm srun";
    case Launcher::Pmi: return "PMI";
  }
  return "?";
}

std::string LaunchInfo::describe() const {
  auto num = [](int v) { return v < 0 ? std::string("?") : std::to_string(v); };
  return std::string(launcher_name(launcher)) + ": rank " + num(rank) + " of " + num(world_size) + ", local rank " +
         num(local_rank) + " of " + num(local_size);
}

LaunchInfo detect_launch(const GetEnv& getenv) {
  LaunchInfo info;
  if (getenv("OMPI_COMM_WORLD_SIZE")) {
    info.launcher = Launcher::OpenMpi;
    info.world_size = require_int(getenv, "OMPI_COMM_WORLD_SIZE", "Open MPI");
    info.rank = require_int(getenv, "OMPI_COMM_WORLD_RANK", "Open MPI");
    info.local_rank = read_int(getenv, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(-1);
    info.local_size = read_int(getenv, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(-1);
    check_range(info, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
    return info;
  }

  const bool pmi = first_set(getenv, {"PMIX_RANK", "PMI_RANK"}) != nullptr;
  const bool slurm_step = getenv("SLURM_PROCID") && first_set(getenv, {"SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID"});
  if (pmi) {
    if (slurm_step) {
      info.launcher = Launcher::Slurm;
      info.rank = require_int(getenv, "SLURM_PROCID", "Slurm");
      const char* size_name = getenv("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
      info.world_size = read_int(getenv, size_name).value_or(-1);
      info.local_rank = read_int(getenv, "SLURM_LOCALID").value_or(-1);
      info.local_size = -1;   // SLURM_STEP_TASKS_PER_NODE is a compressed list; MPI tells us
      check_range(info, "SLURM_PROCID", size_name);
    } else {
      info.launcher = Launcher::Pmi;
      info.rank = getenv("PMI_RANK") ? require_int(getenv, "PMI_RANK", "PMI") : read_int(getenv, "PMIX_RANK").value_or(-1);
      info.world_size = read_int(getenv, "PMI_SIZE").value_or(-1);
      info.local_rank = read_int(getenv, "MPI_LOCALRANKID").value_or(-1);
      info.local_size = read_int(getenv, "MPI_LOCALNRANKS").value_or(-1);
      check_range(info, "PMI_RANK", "PMI_SIZE");
    }
    return info;
  }

  if (slurm_step) {
    const auto tasks = read_int(getenv, "SLURM_STEP_NUM_TASKS");
    if (tasks && *tasks > 1) {
      throw LaunchError("srun started " + std::to_string(*tasks) +
                        " tasks but gave them no PMI (no PMIX_RANK / PMI_RANK), so MPI_Init would make every task "
                        "a world of its own; run `srun --mpi=pmix ...` (`srun --mpi=list` shows what this cluster "
                        "has), or `dsrun --launcher slurm --launcher_args \"--mpi=pmix\" ...`, or mpirun");
    }
  }

  const auto world = read_int(getenv, "WORLD_SIZE");
  if (world && *world > 1) {
    throw LaunchError("WORLD_SIZE=" + std::string(getenv("WORLD_SIZE")) +
                      " but no MPI launcher started this process (no OMPI_COMM_WORLD_* / PMI variables), so its "
                      "ranks cannot find each other: `dsrun --launcher local` and torchrun start ranks that share "
                      "no MPI world. Use dsrun's default launcher (`dsrun --launcher openmpi`), `mpirun -np N`, or "
                      "`srun --mpi=pmix`");
  }
  if (const auto r = read_int(getenv, "RANK"); r && *r != 0) {
    throw LaunchError("RANK=" + std::to_string(*r) + " but WORLD_SIZE is " +
                      (world ? std::to_string(*world) : std::string("unset")) +
                      "; a single process is rank 0 (unset RANK, or start the job with mpirun / dsrun)");
  }
  // Standalone: rank 0 of 1; LOCAL_RANK still picks the GPU, as the engine reads it.
  if (const auto lr = read_int(getenv, "LOCAL_RANK")) {
    info.local_rank = *lr;
    info.local_size = read_int(getenv, "LOCAL_SIZE").value_or(*lr + 1);
    check_range(info, "RANK", "WORLD_SIZE");
  }
  return info;
}

}  // namespace ds
