// Collective communication between the ranks of a job, one interface over three backends:
//   "self"  world size 1 (no MPI, no NCCL): every collective is the identity (a copy for all_gather)
//   "mpi"   CPU tensors, Open MPI; the calls run on one communication thread per communicator, so
//           the caller overlaps them with its own work (see mpi_communicator.cpp)
//   "nccl"  CUDA tensors, NCCL on its own CUDA stream, ordered against the caller's current stream
//           with events (see nccl_communicator_cuda.cpp; CUDA builds only)
//
// Contract, for every backend:
//  - Tensors are contiguous, on device(), and are reduced / overwritten in place. The communicator
//    keeps them alive until the operation has finished.
//  - Every rank issues the same collectives, with the same sizes and dtypes, in the same order (as
//    with MPI and NCCL themselves); a rank that does not deadlocks the others.
//  - Errors are exceptions naming the operation, the backend's message and the rank.
//  - CommWork::wait() orders the result before the caller's later work: MPI / self block until it is
//    there; NCCL makes the caller's current CUDA stream wait and returns at once.
//    CommWork::synchronize() blocks the host until the result is there (NCCL: polling, so a failed
//    peer or the DS_COMM_TIMEOUT_S timeout becomes an exception instead of a hang).
//  - Communicators are RAII: destroying one frees its MPI communicator / NCCL communicator (NCCL:
//    aborted instead when an error was seen).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

namespace ds {

enum class ReduceOp { Sum, Avg, Max };
const char* reduce_op_name(ReduceOp op);   // "sum", "avg", "max"

class CommWork {
 public:
  virtual ~CommWork() = default;
  virtual void wait() = 0;
  virtual void synchronize() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;     // "self", "mpi", "nccl"
  virtual at::Device device() const = 0;       // where its tensors live (CPU, or cuda:N for NCCL)

  // All-reduce in place. Avg needs a floating dtype.
  virtual std::shared_ptr<CommWork> all_reduce_async(const at::Tensor& tensor, ReduceOp op) = 0;
  // Overwrites `tensor` with root's values.
  virtual std::shared_ptr<CommWork> broadcast_async(const at::Tensor& tensor, int root) = 0;
  // out: world_size() * in.numel() elements of in's dtype; rank r's `in` lands at [r * n, (r + 1) * n).
  virtual std::shared_ptr<CommWork> all_gather_async(const at::Tensor& in, const at::Tensor& out) = 0;
  // Returns when every rank has entered it (the host blocks on every backend).
  virtual void barrier() = 0;
  // After an error: stop communicating for good so no rank waits forever. NCCL aborts its
  // communicator (later calls throw); MPI ends the whole job (MPI_Abort), which is what ends the
  // other ranks when one fails.
  virtual void abort() noexcept = 0;

  void all_reduce(const at::Tensor& tensor, ReduceOp op) { all_reduce_async(tensor, op)->wait(); }
  void broadcast(const at::Tensor& tensor, int root) { broadcast_async(tensor, root)->wait(); }
  void all_gather(const at::Tensor& in, const at::Tensor& out) { all_gather_async(in, out)->wait(); }
};

// World size 1 on `device` (any device): collectives are identities, nothing is started.
std::shared_ptr<Communicator> make_self_communicator(at::Device device);

// A CommWork that is already complete (what the self backend returns).
std::shared_ptr<CommWork> completed_work();

namespace comm_detail {
// Throws std::invalid_argument unless `t` is defined, contiguous and on `device`; `what` names the
// call ("all_reduce", ...), `backend` the communicator.
void check_tensor(const at::Tensor& t, at::Device device, const char* backend, const char* what, const char* name);
void check_root(int root, int world_size, const char* backend);
void check_all_gather(const at::Tensor& in, const at::Tensor& out, int world_size, const char* backend);
void check_avg_dtype(const at::Tensor& t, ReduceOp op, const char* backend);
}  // namespace comm_detail

}  // namespace ds
