// The NCCL backend of Communicator (nccl_communicator_cuda.cpp, compiled only with DS_WITH_CUDA).
//
//  - Creation is collective: rank 0 of `bootstrap` makes the ncclUniqueId and broadcasts it over
//    `bootstrap` (a CPU communicator: MPI, or self at world size 1); every rank then joins with
//    ncclCommInitRank on `device`. Ranks and world size are bootstrap's.
//  - Operations run on the communicator's own CUDA stream (high priority, from Torch's pool). Each
//    one first waits for an event recorded on the caller's current stream, so it sees everything the
//    caller queued before; wait() makes the caller's current stream wait for its completion event.
//    Tensors are recorded with Torch's caching allocator on the NCCL stream, so memory freed by the
//    caller is not reused while NCCL still reads it.
//  - ncclResult_t errors become exceptions with NCCL's name for the error, ncclGetLastError's text,
//    the call and the rank; after an error the communicator is aborted (ncclCommAbort) and every
//    later call throws. The destructor destroys it (aborts it after an error).
//  - Multicast / NVLink SHARP is left to NCCL's environment: we never enable it (NCCL_NVLS_ENABLE
//    is the user's; our scripts set it to 0).
#pragma once

#include <memory>

#include "engine/comm/communicator.h"

namespace ds {

bool nccl_built();   // this build has the NCCL backend (CUDA build)

std::shared_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, at::Device device);

}  // namespace ds
