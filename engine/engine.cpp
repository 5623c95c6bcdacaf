// Engine construction, backward, step and logging. Checkpoints: engine_checkpoint.cpp.
#include "engine/engine.h"

#include <torch/cuda.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "engine/lr_schedules.h"
#include "engine/optimizer.h"
#include "ops/optim/fused_optim.h"

namespace ds {
namespace {

bool contains_any(const std::string& s, const std::vector<std::string>& subs) {
  for (const auto& sub : subs) {
    if (s.find(sub) != std::string::npos) return true;
  }
  return false;
}

at::Device pick_device(const std::optional<at::Device>& requested) {
  if (requested) return *requested;
  if (!torch::cuda::is_available()) return at::Device(at::kCPU);
  int64_t local_rank = 0;
  if (const char* env = std::getenv("LOCAL_RANK")) {
    char* end = nullptr;
    local_rank = std::strtoll(env, &end, 10);
    if (end == env || *end != '\0' || local_rank < 0) {
      throw std::invalid_argument(std::string("LOCAL_RANK='") + env + "' is not a non-negative integer");
    }
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (local_rank >= count) {
    throw std::invalid_argument("LOCAL_RANK=" + std::to_string(local_rank) + " but only " + std::to_string(count) +
                                " CUDA devices are visible; start at most " + std::to_string(count) +
                                " processes per node or set CUDA_VISIBLE_DEVICES");
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

std::string format_lrs(const std::vector<double>& lrs) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < lrs.size(); ++i) os << (i ? ", " : "") << std::setprecision(6) << lrs[i];
  os << "]";
  return os.str();
}

}  // namespace

std::vector<ParamGroupSpec> decay_param_groups(const torch::nn::Module& module, double weight_decay,
                                               const std::vector<std::string>& no_decay,
                                               const std::vector<std::string>& exclude) {
  ParamGroupSpec decay, plain;
  decay.weight_decay = weight_decay;
  plain.weight_decay = 0.0;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (contains_any(item.key(), exclude)) continue;
    (contains_any(item.key(), no_decay) ? plain : decay).names.push_back(item.key());
  }
  return {decay, plain};
}

Engine::Engine(std::shared_ptr<torch::nn::Module> module, DeepSpeedConfig config, EngineOptions options)
    : module_(std::move(module)),
      config_(std::move(config)),
      options_(std::move(options)),
      reducer_(options_.reducer ? options_.reducer : std::make_shared<SingleProcessReducer>()),
      scaler_(LossScaler::from_config(config_)) {
  if (!module_) throw std::invalid_argument("Engine: module is null");
  validate_config();
  model_dtype_ = config_.fp16.enabled ? at::kHalf : config_.bf16.enabled ? at::kBFloat16 : at::kFloat;
  device_ = pick_device(options_.device);

  for (const auto& item : module_->named_parameters(true)) {
    if (item.value().scalar_type() != at::kFloat) {
      throw std::invalid_argument("Engine: parameter '" + item.key() + "' is " +
                                  std::string(c10::toString(item.value().scalar_type())) +
                                  "; build the model in float32 and enable fp16 / bf16 in the config instead");
    }
  }
  module_->to(device_);
  {
    // Every rank starts from rank 0's weights (a no-op at world size 1).
    std::vector<at::Tensor> all;
    for (const auto& p : module_->parameters(true)) all.push_back(p);
    for (const auto& b : module_->buffers(true)) all.push_back(b);
    reducer_->broadcast_parameters(all);
  }
  build_slots(options_.param_groups);

  // The optimizer groups: masters taken before the cast, so fp16/bf16 training keeps the full
  // fp32 initial weights (DeepSpeed copies the already-rounded half weights).
  std::vector<OptimParamGroup> groups;
  size_t at_slot = 0;
  for (size_t gi = 0; gi < group_sizes_.size(); ++gi) {
    OptimParamGroup g = group_defaults(config_.optimizer);
    const auto& spec = gi < options_.param_groups.size() ? options_.param_groups[gi] : ParamGroupSpec{};
    if (spec.lr) g.lr = *spec.lr;
    if (spec.weight_decay) g.weight_decay = *spec.weight_decay;
    for (size_t i = 0; i < group_sizes_[gi]; ++i, ++at_slot) {
      Slot& s = slots_[at_slot];
      s.master = model_dtype_ == at::kFloat ? s.model_param : s.model_param.detach().clone().contiguous();
      g.params.push_back(s.master);
      g.names.push_back(s.name);
    }
    groups.push_back(std::move(g));
  }
  if (model_dtype_ != at::kFloat) {
    module_->to(model_dtype_);
    // Module::to replaces the parameters' data in place; fetch them again to be independent of that.
    const auto params = module_->named_parameters(true);
    size_t k = 0;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      for (size_t i = 0; i < groups[gi].params.size(); ++i, ++k) {
        slots_[k].model_param = params[slots_[k].name];
        groups[gi].model_params.push_back(slots_[k].model_param);
      }
    }
  }
  optimizer_ = make_optimizer(config_.optimizer, std::move(groups));
  scheduler_ = make_scheduler(config_.scheduler, *optimizer_);

  timers_.set_synchronize(config_.wall_clock_breakdown && device_.is_cuda());
  if (rank() == 0) {
    std::set<std::string> dirs;
    for (const auto* m : {&config_.csv_monitor, &config_.tensorboard}) {
      if (!m->enabled) continue;
      const std::string base = !m->output_path.empty() ? m->output_path
                               : m == &config_.csv_monitor ? std::string("csv_monitor")
                                                           : std::string("runs");
      const std::string dir = base + "/" + m->job_name;
      if (dirs.insert(dir).second) monitors_.push_back(std::make_unique<CsvMonitor>(dir));
    }
  }
  interval_start_ = std::chrono::steady_clock::now();
}

Engine::~Engine() = default;

void Engine::validate_config() const {
  const auto& c = config_;
  if (c.train_micro_batch_size_per_gpu <= 0 || c.gradient_accumulation_steps <= 0 || c.train_batch_size <= 0) {
    throw std::invalid_argument("Engine: the batch sizes are not resolved (train_batch_size " +
                                std::to_string(c.train_batch_size) + ", train_micro_batch_size_per_gpu " +
                                std::to_string(c.train_micro_batch_size_per_gpu) + ", gradient_accumulation_steps " +
                                std::to_string(c.gradient_accumulation_steps) +
                                "); load the config with ds::load_config or set all three > 0");
  }
  const int world = reducer_->world_size();
  if (c.world_size != world) {
    throw std::invalid_argument("Engine: the config was resolved for world size " + std::to_string(c.world_size) +
                                " but " + std::to_string(world) +
                                " ranks are running; load the config with the running world size");
  }
  if (c.train_batch_size != c.train_micro_batch_size_per_gpu * c.gradient_accumulation_steps * world) {
    throw std::invalid_argument("Engine: train_batch_size " + std::to_string(c.train_batch_size) +
                                " != micro " + std::to_string(c.train_micro_batch_size_per_gpu) + " x accumulation " +
                                std::to_string(c.gradient_accumulation_steps) + " x world " + std::to_string(world));
  }
  if (!c.optimizer.present) {
    throw std::invalid_argument("Engine: the config has no \"optimizer\" section; add one, e.g. "
                                "\"optimizer\": {\"type\": \"Adam\", \"params\": {\"lr\": 1e-4}}");
  }
  if (c.fp16.enabled && c.bf16.enabled) {
    throw std::invalid_argument("Engine: fp16.enabled and bf16.enabled are both true; enable at most one");
  }
  if (c.zero_stage != 0) {
    throw std::invalid_argument("Engine: zero_optimization.stage " + std::to_string(c.zero_stage) +
                                " is not supported; use stage 0");
  }
  if (c.optimizer.type == OptimizerType::Lamb && c.fp16.enabled && !c.fp16.dynamic()) {
    throw std::invalid_argument("Engine: the Lamb optimizer requires dynamic loss scaling (as DeepSpeed); "
                                "set fp16.loss_scale to 0");
  }
  if (c.gradient_clipping < 0) {
    throw std::invalid_argument("Engine: gradient_clipping " + std::to_string(c.gradient_clipping) + " is negative");
  }
}

void Engine::build_slots(const std::vector<ParamGroupSpec>& specs) {
  const auto named = module_->named_parameters(true);
  if (specs.empty()) {
    size_t n = 0;
    for (const auto& item : named) {
      if (!item.value().requires_grad()) continue;
      slots_.push_back(Slot{item.key(), item.value(), {}, {}});
      ++n;
    }
    group_sizes_.push_back(n);
    return;
  }
  std::set<std::string> seen;
  for (size_t gi = 0; gi < specs.size(); ++gi) {
    for (const auto& name : specs[gi].names) {
      const at::Tensor* p = named.find(name);
      if (!p) {
        std::string some;
        size_t shown = 0;
        for (const auto& item : named) {
          if (shown++ == 8) {
            some += " ...";
            break;
          }
          some += " " + item.key();
        }
        throw std::invalid_argument("Engine: param_groups[" + std::to_string(gi) + "] names '" + name +
                                    "', which the module does not have (its parameters:" + some + ")");
      }
      if (!seen.insert(name).second) {
        throw std::invalid_argument("Engine: parameter '" + name + "' is in more than one parameter group");
      }
      slots_.push_back(Slot{name, *p, {}, {}});
    }
    group_sizes_.push_back(specs[gi].names.size());
  }
}

std::vector<std::vector<std::string>> Engine::param_group_names() const {
  std::vector<std::vector<std::string>> out;
  size_t k = 0;
  for (size_t n : group_sizes_) {
    out.emplace_back();
    for (size_t i = 0; i < n; ++i) out.back().push_back(slots_[k++].name);
  }
  return out;
}

at::Tensor Engine::master_weight(const std::string& name) const {
  for (const auto& s : slots_) {
    if (s.name == name) return s.master;
  }
  throw std::invalid_argument("Engine::master_weight: '" + name + "' is not an optimized parameter");
}

std::ostream& Engine::log() const { return options_.log ? *options_.log : std::cout; }

bool Engine::is_gradient_accumulation_boundary() const {
  return (micro_steps_ + 1) % config_.gradient_accumulation_steps == 0;
}

std::vector<at::Tensor> Engine::current_grads() const {
  std::vector<at::Tensor> out;
  out.reserve(slots_.size());
  for (const auto& s : slots_) out.push_back(model_dtype_ == at::kBFloat16 ? s.accum : s.model_param.grad());
  return out;
}

void Engine::install_grads(const std::vector<at::Tensor>& before, const std::vector<at::Tensor>& after) {
  if (after.size() != slots_.size()) {
    throw std::logic_error("GradientReducer::end_backward changed the number of gradients from " +
                           std::to_string(slots_.size()) + " to " + std::to_string(after.size()));
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (after[i].unsafeGetTensorImpl() == before[i].unsafeGetTensorImpl()) continue;
    if (model_dtype_ == at::kBFloat16) {
      slots_[i].accum = after[i];
    } else {
      slots_[i].model_param.mutable_grad() = after[i];
    }
  }
}

void Engine::fold_bf16_grads() {
  const at::NoGradGuard no_grad;
  for (auto& s : slots_) {
    const at::Tensor g = s.model_param.grad();
    if (!g.defined()) continue;
    if (s.accum.defined()) {
      s.accum.add_(g);
    } else {
      s.accum = g.to(at::kFloat).contiguous();
    }
    s.model_param.mutable_grad() = at::Tensor();
  }
}

void Engine::backward(const at::Tensor& loss) {
  if (!loss.defined() || loss.numel() != 1) {
    throw std::invalid_argument("Engine::backward: loss must be a tensor with one element, got " +
                                (loss.defined() ? c10::str(loss.sizes()) : std::string("an undefined tensor")));
  }
  if (!loss.requires_grad()) {
    throw std::invalid_argument("Engine::backward: loss does not require grad (computed from detached tensors or "
                                "under NoGradGuard / eval-only code?)");
  }
  const ScopedPhase timer(timers_, Phase::Backward);
  const bool boundary = is_gradient_accumulation_boundary();
  {
    const at::NoGradGuard no_grad;
    const at::Tensor value = loss.detach().to(at::kFloat).reshape({});
    interval_loss_sum_ = interval_loss_sum_.defined() ? interval_loss_sum_ + value : value.clone();
    step_loss_sum_ = step_loss_sum_.defined() ? step_loss_sum_ + value : value.clone();
    ++interval_losses_;
    ++step_losses_;
  }
  at::Tensor scaled = loss.to(at::kFloat).reshape({});
  if (config_.gradient_accumulation_steps > 1) scaled = scaled / static_cast<double>(config_.gradient_accumulation_steps);
  if (config_.fp16.enabled) scaled = scaled * scaler_.scale();

  std::vector<at::Tensor> params;
  params.reserve(slots_.size());
  for (const auto& s : slots_) params.push_back(s.model_param);
  reducer_->begin_backward(boundary, params);
  scaled.backward();
  if (model_dtype_ == at::kBFloat16) fold_bf16_grads();
  const std::vector<at::Tensor> before = current_grads();
  std::vector<at::Tensor> grads = before;
  {
    const ScopedPhase reduce_timer(timers_, Phase::Allreduce);
    reducer_->end_backward(boundary, grads);
  }
  install_grads(before, grads);
}

void Engine::step() {
  if (!is_gradient_accumulation_boundary()) {
    ++micro_steps_;
    return;
  }
  {
    const ScopedPhase timer(timers_, Phase::Step);
    take_model_step();
  }
  ++micro_steps_;
  report_step();
}

void Engine::take_model_step() {
  std::vector<at::Tensor> flat = current_grads();
  at::Tensor stats = grad_stats(flat);
  reducer_->reduce_grad_stats(stats);
  const at::Tensor host = stats.to(at::kCPU);
  const double sum_sq = host.data_ptr<double>()[0];
  const double non_finite = host.data_ptr<double>()[1];
  const bool overflow = config_.fp16.enabled && non_finite > 0;
  const LossScaleUpdate update = scaler_.update(overflow);
  last_step_skipped_ = overflow;
  if (overflow) {
    ++skipped_steps_;
    last_grad_norm_ = std::nan("");
    if (rank() == 0 && !options_.quiet) {
      log() << "[deepspeed_cpp] step " << global_steps_ + 1 << ": " << update.describe() << std::endl;
    }
  } else {
    // The gradients carry the scale that was in force during backward (before this update).
    const double scale = update.previous_scale;
    last_grad_norm_ = std::sqrt(sum_sq) / scale;
    double grad_mult = 1.0 / scale;
    if (config_.gradient_clipping > 0) {
      // DeepSpeed's fp16 rule ((norm + 1e-6) / clip > 1 -> divide) and torch's clip_grad_norm_
      // (coef = clip / (norm + 1e-6), applied when < 1) are the same factor.
      const double coef = config_.gradient_clipping / (last_grad_norm_ + 1e-6);
      if (coef < 1.0) grad_mult *= coef;
    }
    if (non_finite > 0 && rank() == 0 && !options_.quiet) {
      log() << "[deepspeed_cpp] warning: step " << global_steps_ + 1 << ": " << non_finite
            << " non-finite gradient values in " << c10::toString(model_dtype_)
            << " training (only fp16 skips such steps, as DeepSpeed)" << std::endl;
    }
    std::vector<std::vector<at::Tensor>> grads;
    size_t k = 0;
    for (size_t n : group_sizes_) {
      grads.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(k), flat.begin() + static_cast<std::ptrdiff_t>(k + n));
      k += n;
    }
    optimizer_->step(grads, grad_mult);
    if (scheduler_) scheduler_->step();
  }
  zero_grad();
  ++global_steps_;
  global_samples_ += config_.train_batch_size;
  ++interval_steps_;
  interval_samples_ += config_.train_batch_size;
}

void Engine::zero_grad() {
  for (auto& p : module_->parameters(true)) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
  for (auto& s : slots_) s.accum = at::Tensor();
}

void Engine::train() { module_->train(true); }
void Engine::eval() { module_->train(false); }

std::vector<double> Engine::get_lr() const {
  std::vector<double> out;
  for (const auto& g : optimizer_->param_groups()) out.push_back(g.lr);
  return out;
}

void Engine::report_step() {
  if (rank() != 0) {
    step_loss_sum_ = at::Tensor();
    step_losses_ = 0;
    return;
  }
  double step_ms[kNumPhases];
  for (int p = 0; p < kNumPhases; ++p) {
    const double total = timers_.total_ms(static_cast<Phase>(p));
    step_ms[p] = total - step_timer_mark_[p];
    step_timer_mark_[p] = total;
  }
  if (!monitors_.empty()) {
    // DeepSpeed's monitor events, keyed by the global sample count.
    const double loss = step_losses_ ? step_loss_sum_.item<double>() / static_cast<double>(step_losses_) : std::nan("");
    for (auto& m : monitors_) {
      m->write("Train/Samples/train_loss", loss, global_samples_);
      m->write("Train/Samples/lr", get_lr().front(), global_samples_);
      m->write("Train/Samples/loss_scale", scaler_.scale(), global_samples_);
      m->write("Train/Samples/skipped_steps", static_cast<double>(skipped_steps_), global_samples_);
      if (config_.wall_clock_breakdown) {
        for (int p = 0; p < kNumPhases; ++p) {
          m->write(std::string("Train/Samples/elapsed_time_ms_") + phase_name(static_cast<Phase>(p)), step_ms[p],
                   global_samples_);
        }
      }
    }
  }
  step_loss_sum_ = at::Tensor();
  step_losses_ = 0;
  if (config_.steps_per_print <= 0 || global_steps_ % config_.steps_per_print != 0) return;

  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - interval_start_).count();
  const double samples_per_sec = seconds > 0 ? static_cast<double>(interval_samples_) / seconds : 0.0;
  if (!options_.quiet) {
    const double loss =
        interval_losses_ ? interval_loss_sum_.item<double>() / static_cast<double>(interval_losses_) : std::nan("");
    std::ostringstream os;
    os << "[deepspeed_cpp] step=" << global_steps_ << ", skipped=" << skipped_steps_ << ", loss=" << std::setprecision(6)
       << loss << ", lr=" << format_lrs(get_lr()) << ", loss_scale=" << scaler_.scale() << ", samples/s=" << std::fixed
       << std::setprecision(2) << samples_per_sec;
    log() << os.str() << std::endl;
    if (config_.wall_clock_breakdown && interval_steps_ > 0) {
      std::ostringstream t;
      t << "[deepspeed_cpp] time (ms, mean per step) |" << std::fixed << std::setprecision(2);
      for (int p = 0; p < kNumPhases; ++p) {
        t << " " << phase_name(static_cast<Phase>(p)) << ": "
          << timers_.total_ms(static_cast<Phase>(p)) / static_cast<double>(interval_steps_)
          << (p + 1 < kNumPhases ? " |" : "");
      }
      log() << t.str() << std::endl;
    }
  }
  for (auto& m : monitors_) {
    m->write("Train/Samples/samples_per_sec", samples_per_sec, global_samples_);
    m->flush();
  }
  interval_loss_sum_ = at::Tensor();
  interval_losses_ = 0;
  interval_steps_ = 0;
  interval_samples_ = 0;
  interval_start_ = now;
  timers_.reset();
  step_timer_mark_.fill(0.0);
}

}  // namespace ds
