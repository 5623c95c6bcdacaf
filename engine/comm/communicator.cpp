// The Communicator helpers and the world-size-1 backend.
#include "engine/comm/communicator.h"

#include <sstream>
#include <stdexcept>

#include "engine/comm/nccl_communicator.h"

namespace ds {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
  }
  return "?";
}

namespace comm_detail {

void check_tensor(const at::Tensor& t, at::Device device, const char* backend, const char* what, const char* name) {
  if (!t.defined()) {
    throw std::invalid_argument(std::string(backend) + " " + what + ": `" + name + "` is an undefined tensor");
  }
  if (t.device() != device) {
    throw std::invalid_argument(std::string(backend) + " " + what + ": `" + name + "` is on " + t.device().str() +
                                " but this communicator works on " + device.str() + "; move it with .to(" +
                                device.str() + ")");
  }
  if (!t.is_contiguous()) {
    throw std::invalid_argument(std::string(backend) + " " + what + ": `" + name + "` " + c10::str(t.sizes()) +
                                " with strides " + c10::str(t.strides()) +
                                " is not contiguous; pass .contiguous() (collectives work in place on flat memory)");
  }
}

void check_root(int root, int world_size, const char* backend) {
  if (root < 0 || root >= world_size) {
    throw std::invalid_argument(std::string(backend) + " broadcast: root " + std::to_string(root) +
                                " is not a rank of this world of " + std::to_string(world_size));
  }
}

void check_all_gather(const at::Tensor& in, const at::Tensor& out, int world_size, const char* backend) {
  if (in.scalar_type() != out.scalar_type()) {
    throw std::invalid_argument(std::string(backend) + " all_gather: `in` is " + c10::toString(in.scalar_type()) +
                                " but `out` is " + c10::toString(out.scalar_type()) + "; use one dtype");
  }
  if (out.numel() != in.numel() * world_size) {
    throw std::invalid_argument(std::string(backend) + " all_gather: `out` has " + std::to_string(out.numel()) +
                                " elements; it needs world_size " + std::to_string(world_size) + " x " +
                                std::to_string(in.numel()) + " = " + std::to_string(in.numel() * world_size));
  }
}

void check_avg_dtype(const at::Tensor& t, ReduceOp op, const char* backend) {
  if (op == ReduceOp::Avg && !at::isFloatingType(t.scalar_type())) {
    throw std::invalid_argument(std::string(backend) + " all_reduce: avg of a " + c10::toString(t.scalar_type()) +
                                " tensor; averages need a floating dtype (use sum and divide yourself)");
  }
}

}  // namespace comm_detail

namespace {

class DoneWork final : public CommWork {
 public:
  void wait() override {}
  void synchronize() override {}
};

class SelfCommunicator final : public Communicator {
 public:
  explicit SelfCommunicator(at::Device device) : device_(device) {}
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "self"; }
  at::Device device() const override { return device_; }

  std::shared_ptr<CommWork> all_reduce_async(const at::Tensor& t, ReduceOp op) override {
    comm_detail::check_tensor(t, device_, "self", "all_reduce", "tensor");
    comm_detail::check_avg_dtype(t, op, "self");
    return completed_work();
  }
  std::shared_ptr<CommWork> broadcast_async(const at::Tensor& t, int root) override {
    comm_detail::check_tensor(t, device_, "self", "broadcast", "tensor");
    comm_detail::check_root(root, 1, "self");
    return completed_work();
  }
  std::shared_ptr<CommWork> all_gather_async(const at::Tensor& in, const at::Tensor& out) override {
    comm_detail::check_tensor(in, device_, "self", "all_gather", "in");
    comm_detail::check_tensor(out, device_, "self", "all_gather", "out");
    comm_detail::check_all_gather(in, out, 1, "self");
    out.view(-1).copy_(in.view(-1));
    return completed_work();
  }
  void barrier() override {}
  void abort() noexcept override {}

 private:
  at::Device device_;
};

}  // namespace

std::shared_ptr<CommWork> completed_work() {
  static const auto done = std::make_shared<DoneWork>();
  return done;
}

std::shared_ptr<Communicator> make_self_communicator(at::Device device) {
  return std::make_shared<SelfCommunicator>(device);
}

#if !DS_WITH_CUDA
bool nccl_built() { return false; }

std::shared_ptr<Communicator> make_nccl_communicator(Communicator&, at::Device device) {
  throw std::runtime_error("NCCL communicator for " + device.str() +
                           " requested, but this build has no CUDA (DS_WITH_CUDA is off); configure with a CUDA "
                           "LibTorch (-DDS_WITH_CUDA=ON) or train on the CPU with the MPI backend");
}
#endif

}  // namespace ds
