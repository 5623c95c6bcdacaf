// DistributedContext, the MPI runtime, and ending the job on failure.
#include "engine/comm/distributed_context.h"

#include <torch/cuda.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <mutex>
#include <stdexcept>

#include "engine/comm/data_parallel_reducer.h"
#include "engine/comm/mpi_runtime.h"
#include "engine/comm/nccl_communicator.h"
#include "ops/common/device.h"

namespace ds {
namespace comm_detail {
namespace {

// MPI can be initialised once per process; this weak registry lets a second DistributedContext
// (e.g. in tests) share the runtime while it lives, without owning it.
std::mutex g_runtime_mu;
std::weak_ptr<MpiRuntime> g_runtime;

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    default: return "an unknown level";
  }
}

}  // namespace

std::shared_ptr<MpiRuntime> MpiRuntime::acquire() {
  const std::lock_guard<std::mutex> lock(g_runtime_mu);
  if (auto rt = g_runtime.lock()) return rt;
  int finalized = 0, initialized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {
    throw std::runtime_error("MPI was already finalised in this process and cannot start again; keep one "
                             "DistributedContext alive for the whole program");
  }
  MPI_Initialized(&initialized);
  std::shared_ptr<MpiRuntime> rt(new MpiRuntime());
  int provided = 0;
  if (!initialized) {
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) throw std::runtime_error(mpi_error(rc, "MPI_Init_thread"));
    rt->owns_init_ = true;
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    // Communication threads (one per communicator) and the training thread call MPI concurrently.
    throw std::runtime_error(std::string("MPI provides ") + thread_level_name(provided) +
                             " but deepspeed_cpp needs MPI_THREAD_MULTIPLE; use an MPI built with thread support "
                             "(Open MPI: --enable-mpi-thread-multiple, the default since 3.0)" +
                             (initialized ? ", or initialise MPI with MPI_Init_thread(MPI_THREAD_MULTIPLE)" : ""));
  }
  g_runtime = rt;
  return rt;
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_init_ && !finalized) MPI_Finalize();
}

}  // namespace comm_detail

namespace {

std::atomic<int> g_rank_for_messages{-1};

void set_env_default(const char* name, int value) { ::setenv(name, std::to_string(value).c_str(), /*overwrite=*/0); }

[[noreturn]] void on_terminate() {
  std::string what = "std::terminate called without an active exception";
  if (std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      what = x.what();
    } catch (...) {
      what = "an exception that is not a std::exception";
    }
  }
  std::fprintf(stderr, "[deepspeed_cpp] rank %d: fatal: %s\n[deepspeed_cpp] rank %d: ending the job (MPI_Abort)\n",
               g_rank_for_messages.load(), what.c_str(), g_rank_for_messages.load());
  abort_job(1);
}

void check_rank_agrees(const LaunchInfo& l, int mpi_rank, int mpi_size) {
  if ((l.world_size >= 0 && l.world_size != mpi_size) || (l.rank >= 0 && l.rank != mpi_rank)) {
    throw LaunchError("started as " + l.describe() + " but MPI_Init made this process rank " +
                      std::to_string(mpi_rank) + " of " + std::to_string(mpi_size) +
                      ": the MPI library this program uses does not belong to the launcher that started it (e.g. "
                      "another MPI's mpirun, or srun without a PMI this MPI understands); build and launch with "
                      "the same MPI");
  }
}

}  // namespace

DistributedContext::DistributedContext() : DistributedContext(detect_launch([](const char* n) { return std::getenv(n); })) {}

DistributedContext::DistributedContext(LaunchInfo launch) : launch_(std::move(launch)) {
  if (launch_.uses_mpi()) {
    mpi_ = comm_detail::MpiRuntime::acquire();
    int r = 0, s = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &s);
    check_rank_agrees(launch_, r, s);
    launch_.rank = r;
    launch_.world_size = s;
    if (launch_.local_rank < 0 || launch_.local_size < 0) {
      // Ranks sharing this node's memory, in rank order: the launcher's local rank when it did not say.
      MPI_Comm node = MPI_COMM_NULL;
      const int rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, &node);
      if (rc != MPI_SUCCESS) throw std::runtime_error(comm_detail::mpi_error(rc, "MPI_Comm_split_type"));
      MPI_Comm_rank(node, &launch_.local_rank);
      MPI_Comm_size(node, &launch_.local_size);
      MPI_Comm_free(&node);
    }
    g_rank_for_messages = r;
    if (s > 1) std::set_terminate(on_terminate);
  }
  set_env_default("RANK", launch_.rank);
  set_env_default("WORLD_SIZE", launch_.world_size);
  set_env_default("LOCAL_RANK", launch_.local_rank);
  set_env_default("LOCAL_SIZE", launch_.local_size);
}

DistributedContext::~DistributedContext() = default;

at::Device DistributedContext::device() const {
  if (!cuda_device_available()) return at::Device(at::kCPU);
  const int count = static_cast<int>(torch::cuda::device_count());
  if (launch_.local_rank >= count) {
    throw std::invalid_argument("local rank " + std::to_string(launch_.local_rank) + " (" + launch_.describe() +
                                ") but only " + std::to_string(count) + " CUDA devices are visible; start at most " +
                                std::to_string(count) + " ranks per node, or set CUDA_VISIBLE_DEVICES");
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(launch_.local_rank));
}

std::shared_ptr<Communicator> DistributedContext::world_communicator() {
  if (!world_) {
    world_ = (mpi_ && launch_.world_size > 1) ? comm_detail::make_mpi_communicator(mpi_)
                                              : make_self_communicator(at::Device(at::kCPU));
  }
  return world_;
}

std::shared_ptr<Communicator> DistributedContext::make_communicator(at::Device device) {
  if (device.is_cuda()) return make_nccl_communicator(*world_communicator(), device);
  if (!device.is_cpu()) {
    throw std::invalid_argument("make_communicator: no communication backend for " + device.str() +
                                " (CUDA devices use NCCL, the CPU uses MPI)");
  }
  if (!mpi_ || launch_.world_size == 1) return make_self_communicator(device);
  return comm_detail::make_mpi_communicator(mpi_);
}

void abort_job(int code) noexcept {
  std::fflush(stdout);
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

int run_distributed(const std::function<int(DistributedContext&)>& body) {
  std::unique_ptr<DistributedContext> ctx;
  try {
    ctx = std::make_unique<DistributedContext>();
  } catch (const std::exception& e) {
    std::cerr << "[deepspeed_cpp] error: " << e.what() << std::endl;
    abort_job(1);   // MPI may be up on the ranks that got further
  }
  int code = 1;
  try {
    code = body(*ctx);
  } catch (const std::exception& e) {
    std::cerr << "[deepspeed_cpp] rank " << ctx->rank() << ": error: " << e.what() << std::endl;
  } catch (...) {
    std::cerr << "[deepspeed_cpp] rank " << ctx->rank() << ": error: an exception that is not a std::exception"
              << std::endl;
  }
  if (code != 0 && ctx->world_size() > 1) {
    std::cerr << "[deepspeed_cpp] rank " << ctx->rank() << ": exit code " << code
              << ", ending the job so that no other rank waits for it (MPI_Abort)" << std::endl;
    abort_job(code);
  }
  ctx.reset();
  return code;
}

std::shared_ptr<GradientReducer> make_gradient_reducer(DistributedContext& ctx, const DeepSpeedConfig& config,
                                                       at::Device device) {
  if (ctx.world_size() == 1) return std::make_shared<SingleProcessReducer>();
  return std::make_shared<DataParallelReducer>(ctx.make_communicator(device), DataParallelOptions::from_config(config));
}

}  // namespace ds
