// Internal to ds_comm (includes <mpi.h>; public headers of engine/comm do not, so code using them
// needs no MPI include path).
#pragma once

// The C API only: Open MPI's (deprecated) C++ bindings would need libmpi_cxx.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <memory>
#include <string>

#include "engine/comm/communicator.h"

namespace ds::comm_detail {

// MPI_Init_thread / MPI_Finalize, owned by one object per process. DistributedContext holds it and
// every MPI communicator keeps a reference, so MPI_Finalize runs only after the last communicator
// is freed, whatever order the user's objects die in.
class MpiRuntime {
 public:
  // Initialises MPI (MPI_THREAD_MULTIPLE) on first use, or adopts an MPI that the program already
  // initialised (then it is not finalised here). Throws when MPI was already finalised.
  static std::shared_ptr<MpiRuntime> acquire();
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

 private:
  MpiRuntime() = default;
  bool owns_init_ = false;
};

// `MPI_Xxx failed on rank R of W: <MPI's text>`.
std::string mpi_error(int code, const char* call);

// A communicator over a duplicate of MPI_COMM_WORLD (its own context, so its messages never match
// anyone else's), served by its own communication thread.
std::shared_ptr<Communicator> make_mpi_communicator(std::shared_ptr<MpiRuntime> runtime);

}  // namespace ds::comm_detail
