// DataParallelReducer: buckets, autograd hooks, averaging. The contract is in the header.
#include "engine/comm/data_parallel_reducer.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <mutex>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace ds {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

bool same_tensor(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && b.defined() && a.unsafeGetTensorImpl() == b.unsafeGetTensorImpl();
}

// The dtype of the gradient the Engine hands to end_backward for a parameter of dtype `t`: its own,
// except bf16, which the Engine accumulates in float32 (engine.h).
at::ScalarType grad_dtype_for(at::ScalarType t) { return t == at::kBFloat16 ? at::kFloat : t; }

at::ScalarType to_scalar_type(DType t) {
  switch (t) {
    case DType::FP32: return at::kFloat;
    case DType::FP16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
  }
  return at::kFloat;
}

// FNV-1a over dtypes and shapes: ranks whose tensor lists differ get different signatures.
int64_t shape_signature(const std::vector<at::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](int64_t v) {
    h ^= static_cast<uint64_t>(v);
    h *= 1099511628211ull;
  };
  for (const auto& t : tensors) {
    mix(static_cast<int64_t>(t.scalar_type()));
    mix(t.dim());
    for (int64_t s : t.sizes()) mix(s);
  }
  return static_cast<int64_t>(h >> 1);
}

}  // namespace

DataParallelOptions DataParallelOptions::from_config(const DeepSpeedConfig& c) {
  DataParallelOptions o;
  o.bucket_cap_mb = c.data_parallel.bucket_cap_mb;
  o.first_bucket_cap_mb = c.data_parallel.first_bucket_cap_mb;
  o.overlap_comm = c.data_parallel.overlap_comm;
  o.prescale_gradients = c.prescale_gradients;
  o.gradient_predivide_factor = c.gradient_predivide_factor;
  if (c.communication_data_type) {
    o.wire_dtype = to_scalar_type(*c.communication_data_type);
  } else if (c.fp32_allreduce) {
    o.wire_dtype = at::kFloat;
  }
  return o;
}

struct DataParallelReducer::State : std::enable_shared_from_this<State> {
  struct Param {
    at::Tensor tensor;
    size_t bucket = 0;
    int64_t offset = 0;            // in the bucket, elements
    at::ScalarType grad_dtype = at::kFloat;
  };
  struct Bucket {
    std::vector<size_t> members;   // unique parameter indices, packing order
    at::Tensor flat;               // [numel] in the wire dtype, on the communicator's device
    size_t pending = 0;            // members not packed yet in this boundary backward
    std::shared_ptr<CommWork> work;
  };

  std::shared_ptr<Communicator> comm;
  DataParallelOptions opt;
  mutable std::mutex mu;

  // Layout for the parameter list of the last begin_backward; duplicates (tied weights) share one entry.
  std::vector<at::Tensor> inputs;
  std::vector<size_t> unique_of_input;
  std::vector<size_t> first_input;   // per unique parameter
  std::vector<Param> params;
  std::unordered_map<const c10::TensorImpl*, size_t> index;
  std::vector<Bucket> buckets;

  // Per boundary backward.
  std::vector<at::Tensor> carry;   // accumulated gradient kept outside param.grad() (bf16), per unique param
  std::vector<char> packed;
  size_t next_launch = 0;
  bool active = false;             // hooks pack (boundary micro-step with overlap)
  int64_t started_in_backward = 0;

  // The parameters only hold a weak_ptr to their gradient accumulator: keep them alive, or a later
  // graph would make a new accumulator without our hook (DDP keeps them for the same reason).
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::unordered_set<const c10::TensorImpl*> hooked;

  int world() const { return comm->world_size(); }
  void rebuild(const std::vector<at::Tensor>& new_inputs);
  void register_hooks();
  void on_grad_ready(const c10::TensorImpl* key);
  void pack(size_t u, const at::Tensor& value);
  void launch_ready(bool in_backward);
};

namespace {

// Runs after AccumulateGrad has written param.grad(): that gradient is final for this backward.
class GradReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  GradReadyHook(std::weak_ptr<DataParallelReducer::State> state, const c10::TensorImpl* key)
      : state_(std::move(state)), key_(key) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (auto s = state_.lock()) s->on_grad_ready(key_);
    return outputs;
  }

 private:
  std::weak_ptr<DataParallelReducer::State> state_;   // the reducer may be gone; then nothing happens
  const c10::TensorImpl* key_;
};

}  // namespace

void DataParallelReducer::State::rebuild(const std::vector<at::Tensor>& new_inputs) {
  // Keep the carried accumulations of parameters that stay.
  std::unordered_map<const c10::TensorImpl*, at::Tensor> old_carry;
  for (size_t u = 0; u < params.size(); ++u) {
    if (u < carry.size() && carry[u].defined()) old_carry[params[u].tensor.unsafeGetTensorImpl()] = carry[u];
  }
  inputs = new_inputs;
  params.clear();
  index.clear();
  buckets.clear();
  unique_of_input.assign(inputs.size(), 0);
  first_input.clear();
  const at::Device device = comm->device();
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor& p = inputs[i];
    if (!p.defined()) throw std::invalid_argument("DataParallelReducer: parameter #" + std::to_string(i) + " is undefined");
    if (p.device() != device) {
      throw std::invalid_argument("DataParallelReducer: parameter #" + std::to_string(i) + " is on " + p.device().str() +
                                  " but the " + comm->backend() + " communicator works on " + device.str() +
                                  "; make the communicator for the model's device (DistributedContext::make_communicator)");
    }
    auto [it, fresh] = index.emplace(p.unsafeGetTensorImpl(), params.size());
    if (fresh) {
      Param entry;
      entry.tensor = p;
      entry.grad_dtype = grad_dtype_for(p.scalar_type());
      params.push_back(entry);
      first_input.push_back(i);
    }
    unique_of_input[i] = it->second;
  }

  // Buckets in reverse parameter order: the first bucket fills first during backward. It is small
  // (first_bucket_cap_mb) so the first all-reduce starts early.
  auto wire_of = [&](const Param& p) { return opt.wire_dtype.value_or(p.grad_dtype); };
  int64_t bytes_in_bucket = 0, numel_in_bucket = 0;
  at::ScalarType bucket_wire = at::kFloat;
  for (size_t k = params.size(); k-- > 0;) {
    Param& p = params[k];
    const at::ScalarType wire = wire_of(p);
    const int64_t bytes = p.tensor.numel() * static_cast<int64_t>(c10::elementSize(wire));
    const double cap = (buckets.size() == 1 ? opt.first_bucket_cap_mb : opt.bucket_cap_mb) * kMiB;
    if (buckets.empty() || wire != bucket_wire || static_cast<double>(bytes_in_bucket + bytes) > cap) {
      buckets.emplace_back();
      bytes_in_bucket = numel_in_bucket = 0;
      bucket_wire = wire;
    }
    p.bucket = buckets.size() - 1;
    p.offset = numel_in_bucket;
    buckets.back().members.push_back(k);
    bytes_in_bucket += bytes;
    numel_in_bucket += p.tensor.numel();
  }
  for (auto& b : buckets) {
    int64_t n = 0;
    for (size_t m : b.members) n += params[m].tensor.numel();
    b.flat = at::zeros({n}, at::TensorOptions().dtype(wire_of(params[b.members.front()])).device(device));
  }
  carry.assign(params.size(), at::Tensor());
  for (size_t u = 0; u < params.size(); ++u) {
    auto it = old_carry.find(params[u].tensor.unsafeGetTensorImpl());
    if (it != old_carry.end()) carry[u] = it->second;
  }
  packed.assign(params.size(), 0);
  if (opt.overlap_comm) register_hooks();
}

void DataParallelReducer::State::register_hooks() {
  for (const Param& p : params) {
    const c10::TensorImpl* key = p.tensor.unsafeGetTensorImpl();
    if (hooked.count(key) || !p.tensor.requires_grad() || !p.tensor.is_leaf()) continue;
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(p.tensor);
    if (!acc) continue;   // no accumulator: packed after backward instead
    acc->add_post_hook(std::make_unique<GradReadyHook>(weak_from_this(), key));
    accumulators.push_back(std::move(acc));
    hooked.insert(key);
  }
}

void DataParallelReducer::State::pack(size_t u, const at::Tensor& value) {
  const Param& p = params[u];
  const at::NoGradGuard no_grad;
  at::Tensor view = buckets[p.bucket].flat.narrow(0, p.offset, p.tensor.numel());
  if (value.defined()) {
    if (value.numel() != p.tensor.numel()) {
      throw std::logic_error("DataParallelReducer: the gradient of a parameter of shape " + c10::str(p.tensor.sizes()) +
                             " has shape " + c10::str(value.sizes()));
    }
    view.copy_(value.reshape({-1}));
  } else {
    view.zero_();   // no gradient on this rank: zeros, so every rank reduces the same bucket
  }
  packed[u] = 1;
}

void DataParallelReducer::State::launch_ready(bool in_backward) {
  while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
    Bucket& b = buckets[next_launch++];
    const double w = static_cast<double>(world());
    if (opt.prescale_gradients) {
      if (w != 1.0) b.flat.mul_(1.0 / w);
    } else if (opt.gradient_predivide_factor != 1.0) {
      b.flat.mul_(1.0 / opt.gradient_predivide_factor);
    }
    b.work = comm->all_reduce_async(b.flat, ReduceOp::Sum);
    if (in_backward) ++started_in_backward;
  }
}

void DataParallelReducer::State::on_grad_ready(const c10::TensorImpl* key) {
  const std::lock_guard<std::mutex> lock(mu);
  if (!active) return;
  const auto it = index.find(key);
  if (it == index.end()) return;
  const size_t u = it->second;
  if (packed[u]) {
    throw std::logic_error("DataParallelReducer: the gradient of parameter #" + std::to_string(u) +
                           " arrived twice in one backward; call backward once per micro-step (Engine::backward)");
  }
  // The accumulated gradient: param.grad() as autograd left it, plus what the Engine keeps outside it.
  const at::NoGradGuard no_grad;
  const at::Tensor g = params[u].tensor.grad();
  const at::Tensor& c = carry[u];
  pack(u, c.defined() ? (g.defined() ? c + g : c) : g);
  Bucket& b = buckets[params[u].bucket];
  if (--b.pending == 0) launch_ready(/*in_backward=*/true);
}

DataParallelReducer::DataParallelReducer(std::shared_ptr<Communicator> comm, DataParallelOptions options)
    : state_(std::make_shared<State>()) {
  if (!comm) throw std::invalid_argument("DataParallelReducer: communicator is null");
  auto positive = [](double v, const char* name) {
    if (!(v > 0.0)) {
      throw std::invalid_argument(std::string("DataParallelReducer: ") + name + " " + std::to_string(v) +
                                  " must be > 0");
    }
  };
  positive(options.bucket_cap_mb, "data_parallel.bucket_cap_mb");
  positive(options.first_bucket_cap_mb, "data_parallel.first_bucket_cap_mb");
  positive(options.gradient_predivide_factor, "gradient_predivide_factor");
  if (options.wire_dtype && !at::isFloatingType(*options.wire_dtype)) {
    throw std::invalid_argument(std::string("DataParallelReducer: wire dtype ") + c10::toString(*options.wire_dtype) +
                                " is not a floating dtype (use fp32, fp16 or bf16)");
  }
  state_->comm = std::move(comm);
  state_->opt = options;
}

DataParallelReducer::~DataParallelReducer() = default;

int DataParallelReducer::rank() const { return state_->comm->rank(); }
int DataParallelReducer::world_size() const { return state_->comm->world_size(); }
Communicator& DataParallelReducer::communicator() const { return *state_->comm; }

void DataParallelReducer::broadcast_parameters(const std::vector<at::Tensor>& tensors) {
  State& s = *state_;
  const int w = s.world();
  if (w == 1) return;
  const at::Device device = s.comm->device();
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].defined()) continue;
    if (tensors[i].device() != device) {
      throw std::invalid_argument("DataParallelReducer::broadcast_parameters: tensor #" + std::to_string(i) + " is on " +
                                  tensors[i].device().str() + " but the communicator works on " + device.str());
    }
    total += tensors[i].numel();
  }
  std::vector<at::Tensor> defined;
  for (const auto& t : tensors) {
    if (t.defined()) defined.push_back(t);
  }

  // Same model everywhere? Otherwise the broadcast below would pair unrelated tensors (or hang).
  const at::Tensor mine =
      at::tensor(std::vector<int64_t>{static_cast<int64_t>(defined.size()), total, shape_signature(defined)},
                 at::TensorOptions().dtype(at::kLong))
          .to(device);
  const at::Tensor all = at::empty({3 * w}, mine.options());
  s.comm->all_gather(mine, all);
  const at::Tensor host = all.to(at::kCPU);
  const int64_t* sig = host.data_ptr<int64_t>();
  std::ostringstream differ;
  for (int r = 1; r < w; ++r) {
    if (sig[3 * r] != sig[0] || sig[3 * r + 1] != sig[1] || sig[3 * r + 2] != sig[2]) {
      differ << " rank " << r << " has " << sig[3 * r] << " tensors (" << sig[3 * r + 1] << " elements)"
             << (sig[3 * r] == sig[0] && sig[3 * r + 1] == sig[1] ? " with other dtypes or shapes" : "") << ";";
    }
  }
  if (!differ.str().empty()) {
    throw std::invalid_argument("DataParallelReducer::broadcast_parameters: the ranks' models differ: rank 0 has " +
                                std::to_string(sig[0]) + " tensors (" + std::to_string(sig[1]) + " elements);" +
                                differ.str() + " every rank must build the same model");
  }

  // Coalesced per dtype, in pieces of at most bucket_cap_mb.
  const at::NoGradGuard no_grad;
  const double cap = s.opt.bucket_cap_mb * kMiB;
  std::vector<bool> done(defined.size(), false);
  for (size_t i = 0; i < defined.size(); ++i) {
    if (done[i]) continue;
    const at::ScalarType dtype = defined[i].scalar_type();
    std::vector<size_t> group;
    double bytes = 0;
    for (size_t j = i; j < defined.size(); ++j) {
      if (done[j] || defined[j].scalar_type() != dtype) continue;
      const double b = static_cast<double>(defined[j].numel() * static_cast<int64_t>(defined[j].element_size()));
      if (!group.empty() && bytes + b > cap) continue;   // next piece
      group.push_back(j);
      bytes += b;
      done[j] = true;
    }
    std::vector<at::Tensor> flat_parts;
    for (size_t j : group) flat_parts.push_back(defined[j].reshape({-1}));
    const at::Tensor flat = at::cat(flat_parts).contiguous();
    s.comm->broadcast(flat, 0);
    int64_t off = 0;
    for (size_t j : group) {
      const int64_t n = defined[j].numel();
      defined[j].copy_(flat.narrow(0, off, n).view(defined[j].sizes()));
      off += n;
    }
  }
}

void DataParallelReducer::begin_backward(bool boundary, const std::vector<at::Tensor>& params) {
  State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.mu);
  bool same = params.size() == s.inputs.size();
  for (size_t i = 0; same && i < params.size(); ++i) same = same_tensor(params[i], s.inputs[i]);
  if (!same) s.rebuild(params);
  s.active = false;
  if (!boundary) return;
  for (auto& b : s.buckets) {
    b.pending = b.members.size();
    b.work.reset();
  }
  std::fill(s.packed.begin(), s.packed.end(), 0);
  s.next_launch = 0;
  s.started_in_backward = 0;
  s.active = s.opt.overlap_comm;
}

void DataParallelReducer::end_backward(bool boundary, std::vector<at::Tensor>& grads) {
  State& s = *state_;
  if (grads.size() != s.inputs.size()) {
    throw std::logic_error("DataParallelReducer::end_backward: " + std::to_string(grads.size()) +
                           " gradients for the " + std::to_string(s.inputs.size()) +
                           " parameters of begin_backward (call begin_backward first, with the same parameters)");
  }
  if (!boundary) {
    // Remember accumulations the Engine keeps outside param.grad() (bf16): the boundary's hooks add them.
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = 0; i < grads.size(); ++i) {
      const size_t u = s.unique_of_input[i];
      const at::Tensor& g = grads[i];
      s.carry[u] = (g.defined() && !same_tensor(g, s.params[u].tensor.grad())) ? g : at::Tensor();
    }
    return;
  }
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    s.active = false;
    // What the hooks did not pack (overlap off, unused parameters, no accumulator), in bucket order;
    // after backward the Engine's gradient list holds the accumulated values.
    for (size_t b = s.next_launch; b < s.buckets.size(); ++b) {
      for (size_t u : s.buckets[b].members) {
        if (!s.packed[u]) s.pack(u, grads[s.first_input[u]]);
      }
      s.buckets[b].pending = 0;
    }
    s.launch_ready(/*in_backward=*/false);
  }
  const double w = static_cast<double>(s.world());
  const double post = s.opt.gradient_predivide_factor / w;
  for (auto& b : s.buckets) {
    b.work->wait();
    b.work.reset();
    if (!s.opt.prescale_gradients && s.opt.gradient_predivide_factor != w) b.flat.mul_(post);
  }
  const at::NoGradGuard no_grad;
  std::vector<at::Tensor> made(s.params.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    const size_t u = s.unique_of_input[i];
    const State::Param& p = s.params[u];
    const at::Tensor view = s.buckets[p.bucket].flat.narrow(0, p.offset, p.tensor.numel()).view(p.tensor.sizes());
    if (grads[i].defined()) {
      if (!grads[i].sizes().equals(p.tensor.sizes())) {
        throw std::invalid_argument("DataParallelReducer::end_backward: gradient #" + std::to_string(i) + " has shape " +
                                    c10::str(grads[i].sizes()) + " but its parameter " + c10::str(p.tensor.sizes()));
      }
      grads[i].copy_(view);
    } else {
      if (!made[u].defined()) made[u] = view.to(p.grad_dtype, /*non_blocking=*/false, /*copy=*/true);
      grads[i] = made[u];
    }
  }
  const std::lock_guard<std::mutex> lock(s.mu);
  std::fill(s.carry.begin(), s.carry.end(), at::Tensor());
}

void DataParallelReducer::reduce_grad_stats(at::Tensor& stats) {
  State& s = *state_;
  if (s.world() == 1) return;
  at::Tensor t = stats.device() == s.comm->device() ? stats.contiguous() : stats.to(s.comm->device());
  s.comm->all_reduce_async(t, ReduceOp::Max)->synchronize();
  if (!same_tensor(t, stats)) stats.copy_(t);
}

void DataParallelReducer::barrier() { state_->comm->barrier(); }

std::vector<DataParallelReducer::BucketInfo> DataParallelReducer::bucket_layout() const {
  const std::lock_guard<std::mutex> lock(state_->mu);
  std::vector<BucketInfo> out;
  for (const auto& b : state_->buckets) {
    BucketInfo info;
    info.numel = b.flat.numel();
    info.wire_dtype = b.flat.scalar_type();
    info.params = b.members;   // unique indices == input indices unless parameters repeat
    out.push_back(std::move(info));
  }
  return out;
}

int64_t DataParallelReducer::buckets_started_in_backward() const {
  const std::lock_guard<std::mutex> lock(state_->mu);
  return state_->started_in_backward;
}

}  // namespace ds
