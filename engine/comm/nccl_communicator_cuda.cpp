// The NCCL backend of Communicator (CUDA builds only). Contract: nccl_communicator.h.
#include "engine/comm/nccl_communicator.h"

// Debian's CPU-only LibTorch ships the c10/cuda headers without their generated
// cuda_cmake_macros.h; CI syntax-checks this file against them (kernel_check_boundaries). A CUDA
// LibTorch has the file, and then nothing changes.
#if !defined(C10_CUDA_NO_CMAKE_CONFIGURE_FILE) && !__has_include(<c10/cuda/impl/cuda_cmake_macros.h>)
#define C10_CUDA_NO_CMAKE_CONFIGURE_FILE
#endif
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "ops/common/cuda_check.h"

namespace ds {
namespace {

// How long synchronize() waits before it declares the job stuck (DS_COMM_TIMEOUT_S, seconds).
double comm_timeout_seconds() {
  if (const char* v = std::getenv("DS_COMM_TIMEOUT_S")) {
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    if (end != v && *end == '\0' && s > 0) return s;
    throw std::invalid_argument(std::string("DS_COMM_TIMEOUT_S='") + v + "' is not a positive number of seconds");
  }
  return 1800.0;   // torch.distributed's default timeout
}

// The NCCL communicator itself; shared by the communicator and the works still in flight.
struct NcclShared {
  ncclComm_t comm = nullptr;
  int rank = 0, world = 1;
  c10::DeviceIndex device = 0;
  std::atomic<bool> aborted{false};
  std::mutex mu;   // one NCCL call at a time (hooks on autograd threads and the training thread)

  std::string where() const {
    return "rank " + std::to_string(rank) + " of " + std::to_string(world) + " (cuda:" + std::to_string(device) + ")";
  }

  void abort() noexcept {
    bool expected = false;
    if (aborted.compare_exchange_strong(expected, true) && comm) ncclCommAbort(comm);
  }

  // Aborts (so no later call waits on a broken communicator) and throws.
  [[noreturn]] void fail(ncclResult_t r, const char* call, const char* file, int line) {
    std::string msg = std::string("NCCL error ") + ncclGetErrorString(r) + " from `" + call + "` on " + where() +
                      " at " + file + ":" + std::to_string(line);
    const char* last = ncclGetLastError(comm);
    if (last && *last) msg += ": " + std::string(last);
    if (r == ncclRemoteError || r == ncclSystemError) msg += "; another rank probably failed or exited first (see its log)";
    if (r == ncclInvalidUsage) msg += "; the ranks probably issued different collectives (sizes, dtypes or order)";
    abort();
    throw std::runtime_error(msg);
  }

  ~NcclShared() {
    if (!comm || aborted) return;
    try {
      const c10::cuda::CUDAGuard guard(device);
      if (std::uncaught_exceptions() > 0) {
        ncclCommAbort(comm);   // unwinding after an error: do not wait for peers
      } else {
        ncclCommDestroy(comm);
      }
    } catch (...) {
      ncclCommAbort(comm);
    }
  }
};

#define DS_NCCL_CHECK(shared, call)                                                    \
  do {                                                                                 \
    ncclResult_t ds_nccl_rc_ = (call);                                                 \
    if (ds_nccl_rc_ != ncclSuccess) (shared).fail(ds_nccl_rc_, #call, __FILE__, __LINE__); \
  } while (0)

class CudaEvent {
 public:
  CudaEvent() { DS_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~CudaEvent() { cudaEventDestroy(event_); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

class NcclWork final : public CommWork {
 public:
  explicit NcclWork(std::shared_ptr<NcclShared> shared) : shared_(std::move(shared)) {}
  CudaEvent& done() { return done_; }

  void wait() override {
    const c10::cuda::CUDAGuard guard(shared_->device);
    const cudaStream_t current = c10::cuda::getCurrentCUDAStream(shared_->device).stream();
    DS_CUDA_CHECK(cudaStreamWaitEvent(current, done_.get(), 0));
  }

  void synchronize() override {
    const c10::cuda::CUDAGuard guard(shared_->device);
    const double timeout = comm_timeout_seconds();
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t e = cudaEventQuery(done_.get());
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) ::ds::throw_cuda_error(e, "cudaEventQuery(nccl work)", __FILE__, __LINE__);
      ncclResult_t async = ncclSuccess;
      if (!shared_->aborted) DS_NCCL_CHECK(*shared_, ncclCommGetAsyncError(shared_->comm, &async));
      if (async != ncclSuccess && async != ncclInProgress) shared_->fail(async, "ncclCommGetAsyncError", __FILE__, __LINE__);
      if (shared_->aborted) {
        throw std::runtime_error("NCCL communicator on " + shared_->where() +
                                 " was aborted while an operation was in flight");
      }
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout) {
        shared_->abort();
        throw std::runtime_error("NCCL operation on " + shared_->where() + " did not finish within " +
                                 std::to_string(timeout) +
                                 " s (DS_COMM_TIMEOUT_S): another rank is stuck or gone; the communicator is aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

 private:
  std::shared_ptr<NcclShared> shared_;
  CudaEvent done_;
};

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kChar: return ncclInt8;
    case at::kByte: return ncclUint8;
    default:
      throw std::invalid_argument(std::string("nccl all_reduce: dtype ") + c10::toString(t) +
                                  " is not supported (float32/64, float16, bfloat16, int8/32/64, uint8 are)");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, at::Device device)
      : shared_(std::make_shared<NcclShared>()),
        device_(device),
        stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index())) {
    if (bootstrap.device() != at::Device(at::kCPU)) {
      throw std::invalid_argument("make_nccl_communicator: the bootstrap communicator (" + bootstrap.backend() +
                                  ") must work on CPU tensors; pass DistributedContext::world_communicator()");
    }
    shared_->rank = bootstrap.rank();
    shared_->world = bootstrap.world_size();
    shared_->device = device.index();

    // Rank 0 makes the id; everyone gets it over the bootstrap communicator.
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (shared_->rank == 0) DS_NCCL_CHECK(*shared_, ncclGetUniqueId(&id));
    const at::Tensor buf = at::empty({static_cast<int64_t>(sizeof(id))}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(buf.data_ptr(), &id, sizeof(id));
    bootstrap.broadcast(buf, 0);
    std::memcpy(&id, buf.data_ptr(), sizeof(id));

    const c10::cuda::CUDAGuard guard(shared_->device);
    ncclComm_t comm = nullptr;
    DS_NCCL_CHECK(*shared_, ncclCommInitRank(&comm, shared_->world, id, shared_->rank));
    shared_->comm = comm;
  }

  int rank() const override { return shared_->rank; }
  int world_size() const override { return shared_->world; }
  std::string backend() const override { return "nccl"; }
  at::Device device() const override { return device_; }

  std::shared_ptr<CommWork> all_reduce_async(const at::Tensor& t, ReduceOp op) override {
    comm_detail::check_tensor(t, device_, "nccl", "all_reduce", "tensor");
    comm_detail::check_avg_dtype(t, op, "nccl");
    const ncclDataType_t type = nccl_type(t.scalar_type());
    return enqueue({t}, [&](cudaStream_t s) {
      DS_NCCL_CHECK(*shared_, ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), type,
                                            nccl_op(op), shared_->comm, s));
    });
  }

  std::shared_ptr<CommWork> broadcast_async(const at::Tensor& t, int root) override {
    comm_detail::check_tensor(t, device_, "nccl", "broadcast", "tensor");
    comm_detail::check_root(root, shared_->world, "nccl");
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();   // any dtype, as bytes
    return enqueue({t}, [&](cudaStream_t s) {
      DS_NCCL_CHECK(*shared_, ncclBroadcast(t.data_ptr(), t.data_ptr(), bytes, ncclUint8, root, shared_->comm, s));
    });
  }

  std::shared_ptr<CommWork> all_gather_async(const at::Tensor& in, const at::Tensor& out) override {
    comm_detail::check_tensor(in, device_, "nccl", "all_gather", "in");
    comm_detail::check_tensor(out, device_, "nccl", "all_gather", "out");
    comm_detail::check_all_gather(in, out, shared_->world, "nccl");
    const size_t bytes = static_cast<size_t>(in.numel()) * in.element_size();
    return enqueue({in, out}, [&](cudaStream_t s) {
      DS_NCCL_CHECK(*shared_, ncclAllGather(in.data_ptr(), out.data_ptr(), bytes, ncclUint8, shared_->comm, s));
    });
  }

  void barrier() override {
    const c10::cuda::CUDAGuard guard(shared_->device);
    const at::Tensor token = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device_));
    all_reduce_async(token, ReduceOp::Sum)->synchronize();
  }

  void abort() noexcept override { shared_->abort(); }

 private:
  // Orders `call` (an NCCL launch on the communicator's stream) after the caller's queued work, keeps
  // the tensors' memory from being reused while NCCL uses it, and returns its completion.
  template <typename F>
  std::shared_ptr<CommWork> enqueue(std::initializer_list<at::Tensor> tensors, F&& call) {
    const std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->aborted) {
      throw std::runtime_error("NCCL communicator on " + shared_->where() +
                               " was aborted after an earlier error; no further communication is possible");
    }
    const c10::cuda::CUDAGuard guard(shared_->device);
    const cudaStream_t current = c10::cuda::getCurrentCUDAStream(shared_->device).stream();
    DS_CUDA_CHECK(cudaEventRecord(ready_.get(), current));
    DS_CUDA_CHECK(cudaStreamWaitEvent(stream_.stream(), ready_.get(), 0));
    call(stream_.stream());
    for (const at::Tensor& t : tensors) c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), stream_);
    auto work = std::make_shared<NcclWork>(shared_);
    DS_CUDA_CHECK(cudaEventRecord(work->done().get(), stream_.stream()));
    return work;
  }

  std::shared_ptr<NcclShared> shared_;
  at::Device device_;
  c10::cuda::CUDAStream stream_;
  CudaEvent ready_;
};

}  // namespace

bool nccl_built() { return true; }

std::shared_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, at::Device device) {
  if (!device.is_cuda()) {
    throw std::invalid_argument("make_nccl_communicator: " + device.str() + " is not a CUDA device");
  }
  if (!device.has_index()) device = at::Device(at::kCUDA, c10::cuda::current_device());
  return std::make_shared<NcclCommunicator>(bootstrap, device);
}

}  // namespace ds
