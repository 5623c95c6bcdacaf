// The MPI backend of Communicator: CPU tensors, Open MPI.
//
// Every MPI call of a communicator runs on its own communication thread, in submission order. That
// is what lets gradient buckets be reduced while backward goes on: a blocking MPI_Allreduce on the
// communication thread drives its own progress (Open MPI has no progress thread for MPI_Iallreduce,
// whose data would only move inside MPI_Wait), and the thread that submitted it keeps computing.
// The submission order is the order of the collectives, identical on every rank.
//
// dtypes: float32/64 and the integer types use MPI's own types; float16 and bfloat16 (which MPI 3
// lacks) are reduced in float32 and rounded once at the end (more precise than summing in 16 bits;
// with 2 ranks the same as an exact sum rounded to 16 bits). Broadcast and all-gather move bytes.
#include <climits>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "engine/comm/mpi_runtime.h"

namespace ds::comm_detail {
namespace {

// One thread that runs tasks in the order they were submitted.
class SerialWorker {
 public:
  SerialWorker() : thread_([this] { run(); }) {}
  ~SerialWorker() {
    {
      const std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;

  std::shared_future<void> submit(std::function<void()> fn) {
    std::packaged_task<void()> task(std::move(fn));
    std::shared_future<void> result = task.get_future().share();
    {
      const std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
    return result;
  }

 private:
  void run() {
    for (;;) {
      std::packaged_task<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;   // stop_ and drained
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();   // exceptions land in the task's future
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;   // last: starts after the members it uses exist
};

class MpiWork final : public CommWork {
 public:
  explicit MpiWork(std::shared_future<void> f) : f_(std::move(f)) {}
  void wait() override { f_.get(); }
  void synchronize() override { f_.get(); }

 private:
  std::shared_future<void> f_;
};

// MPI's counts are ints: larger buffers go in pieces of this many elements / bytes.
constexpr int64_t kMaxChunk = int64_t{1} << 30;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(std::shared_ptr<MpiRuntime> runtime) : runtime_(std::move(runtime)) {
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    // Errors come back as codes that we turn into exceptions (the default handler kills the job
    // without saying which call failed; the exception's handler then ends the job with context).
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    worker_ = std::make_unique<SerialWorker>();
  }
  ~MpiCommunicator() override {
    worker_.reset();   // finishes what was submitted
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  at::Device device() const override { return at::Device(at::kCPU); }

  std::shared_ptr<CommWork> all_reduce_async(const at::Tensor& t, ReduceOp op) override {
    check_tensor(t, device(), "mpi", "all_reduce", "tensor");
    check_avg_dtype(t, op, "mpi");
    mpi_type(t.scalar_type(), "all_reduce");   // unsupported dtypes fail here, on the caller's thread
    return submit([this, t, op] { all_reduce_now(t, op); });
  }

  std::shared_ptr<CommWork> broadcast_async(const at::Tensor& t, int root) override {
    check_tensor(t, device(), "mpi", "broadcast", "tensor");
    check_root(root, size_, "mpi");
    return submit([this, t, root] {
      auto* p = static_cast<char*>(t.data_ptr());
      const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
      for (int64_t off = 0; off < bytes; off += kMaxChunk) {
        const int n = static_cast<int>(std::min(kMaxChunk, bytes - off));
        check(MPI_Bcast(p + off, n, MPI_BYTE, root, comm_), "MPI_Bcast");
      }
    });
  }

  std::shared_ptr<CommWork> all_gather_async(const at::Tensor& in, const at::Tensor& out) override {
    check_tensor(in, device(), "mpi", "all_gather", "in");
    check_tensor(out, device(), "mpi", "all_gather", "out");
    check_all_gather(in, out, size_, "mpi");
    const int64_t bytes = in.numel() * static_cast<int64_t>(in.element_size());
    if (bytes > INT_MAX) {
      throw std::invalid_argument("mpi all_gather: " + std::to_string(bytes) +
                                  " bytes per rank is more than MPI's int count allows; gather in pieces");
    }
    return submit([this, in, out, bytes] {
      check(MPI_Allgather(in.data_ptr(), static_cast<int>(bytes), MPI_BYTE, out.data_ptr(), static_cast<int>(bytes),
                          MPI_BYTE, comm_),
            "MPI_Allgather");
    });
  }

  void barrier() override {
    submit([this] { check(MPI_Barrier(comm_), "MPI_Barrier"); })->synchronize();
  }

  void abort() noexcept override { MPI_Abort(MPI_COMM_WORLD, 1); }

 private:
  std::shared_ptr<CommWork> submit(std::function<void()> fn) {
    return std::make_shared<MpiWork>(worker_->submit(std::move(fn)));
  }

  void check(int rc, const char* call) const {
    if (rc != MPI_SUCCESS) throw std::runtime_error(mpi_error(rc, call));
  }

  static MPI_Datatype mpi_type(at::ScalarType t, const char* what) {
    switch (t) {
      case at::kFloat: return MPI_FLOAT;
      case at::kDouble: return MPI_DOUBLE;
      case at::kHalf:
      case at::kBFloat16: return MPI_FLOAT;   // reduced in float32, see the file comment
      case at::kInt: return MPI_INT32_T;
      case at::kLong: return MPI_INT64_T;
      case at::kShort: return MPI_INT16_T;
      case at::kChar: return MPI_INT8_T;
      case at::kByte: return MPI_UINT8_T;
      default:
        throw std::invalid_argument(std::string("mpi ") + what + ": dtype " + c10::toString(t) +
                                    " is not supported (float32/64, float16, bfloat16, int8/16/32/64, uint8 are)");
    }
  }

  void all_reduce_now(const at::Tensor& t, ReduceOp op) {
    const bool narrow = t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
    const at::Tensor buf = narrow ? t.to(at::kFloat) : t;
    const MPI_Datatype type = mpi_type(t.scalar_type(), "all_reduce");
    const MPI_Op mpi_op = op == ReduceOp::Max ? MPI_MAX : MPI_SUM;
    auto* p = static_cast<char*>(buf.data_ptr());
    const int64_t n = buf.numel();
    for (int64_t off = 0; off < n; off += kMaxChunk) {
      const int count = static_cast<int>(std::min(kMaxChunk, n - off));
      check(MPI_Allreduce(MPI_IN_PLACE, p + off * static_cast<int64_t>(buf.element_size()), count, type, mpi_op, comm_),
            "MPI_Allreduce");
    }
    if (op == ReduceOp::Avg) buf.div_(static_cast<double>(size_));
    if (narrow) t.copy_(buf);
  }

  std::shared_ptr<MpiRuntime> runtime_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::unique_ptr<SerialWorker> worker_;
};

}  // namespace

std::string mpi_error(int code, const char* call) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(code, text, &len);
  int rank = -1, size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return std::string(call) + " failed on rank " + std::to_string(rank) + " of " + std::to_string(size) + ": " +
         std::string(text, static_cast<size_t>(len)) + " (if another rank failed first, its log has the cause)";
}

std::shared_ptr<Communicator> make_mpi_communicator(std::shared_ptr<MpiRuntime> runtime) {
  return std::make_shared<MpiCommunicator>(std::move(runtime));
}

}  // namespace ds::comm_detail
