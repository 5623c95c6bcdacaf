// ds::Engine: DeepSpeed's training step in C++ (the counterpart of deepspeed.initialize's engine).
//
//   ds::Engine engine(model, ds::load_config("ds_config.json"));
//   for (auto& batch : data) {
//     auto loss = engine.forward([&] { return model->forward(batch.to(engine.device())); });
//     engine.backward(loss);   // loss * loss_scale / gradient_accumulation_steps
//     engine.step();           // optimizer step at the accumulation boundary only
//   }
//   engine.save_checkpoint("ckpt");            // ckpt/global_step<N>/..., ckpt/latest
//
// What it does, in DeepSpeed's order (shared/reference/deepspeed-behaviour.md 3):
//  - construction: device cuda:LOCAL_RANK (CPU without CUDA), module moved there, parameters
//    broadcast from rank 0, fp32 master copies taken, module cast to fp16 / bf16 when enabled,
//    optimizer, LR schedule and loss scaler built from the config.
//  - backward(loss): scales by the loss scale and 1 / gradient_accumulation_steps; bf16 gradients
//    are folded into fp32 accumulators after every micro-step.
//  - step(): counts micro-steps; at the boundary computes the global gradient norm and the
//    non-finite count in one pass; fp16 overflow skips the step (weights, optimizer and schedule
//    untouched, loss scale updated); otherwise unscales and clips (global L2 norm, after unscaling)
//    inside the fused optimizer update, steps the schedule, logs.
//  - checkpoints: see engine/checkpoint.h for the files and engine/README.md for loading them in
//    Python.
// Differences from DeepSpeed on purpose are listed in engine/README.md.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/config/ds_config.h"
#include "engine/grad_reducer.h"
#include "engine/loss_scaler.h"
#include "engine/monitor.h"

namespace torch::nn {
class Module;
template <typename Contained>
class ModuleHolder;
}  // namespace torch::nn

namespace ds {

class Optimizer;
class LRScheduler;
class CsvMonitor;

// One optimizer parameter group, by parameter name (as module.named_parameters() spells them).
struct ParamGroupSpec {
  std::vector<std::string> names;
  std::optional<double> lr;            // default: optimizer.params.lr
  std::optional<double> weight_decay;  // default: optimizer.params.weight_decay
};

// bing_bert's prepare_optimizer_parameters: parameters whose name contains an `exclude` substring
// are left out (frozen, e.g. "pooler"); of the rest, names containing a `no_decay` substring go to a
// group with weight_decay 0, the others to a group with `weight_decay`.
std::vector<ParamGroupSpec> decay_param_groups(
    const torch::nn::Module& module, double weight_decay,
    const std::vector<std::string>& no_decay = {"bias", "LayerNorm.bias", "LayerNorm.weight"},
    const std::vector<std::string>& exclude = {});

struct EngineOptions {
  // Empty: one group with every parameter that requires grad. Parameters in no group are not
  // optimized (they still are saved and loaded with the module).
  std::vector<ParamGroupSpec> param_groups;
  std::optional<at::Device> device;            // default: cuda:$LOCAL_RANK with CUDA, else CPU
  std::shared_ptr<GradientReducer> reducer;    // default: SingleProcessReducer
  std::ostream* log = nullptr;                 // rank 0 progress log; default std::cout
  bool quiet = false;                          // no progress log at all
};

using ClientState = std::map<std::string, at::IValue>;

struct LoadCheckpointOptions {
  bool load_module_strict = true;       // missing / unexpected module keys are errors (shapes always are)
  bool load_optimizer_states = true;
  bool load_lr_scheduler_states = true;
};

struct LoadedCheckpoint {
  std::string path;                     // <dir>/<tag>
  std::string tag;
  ClientState client_state;             // every top-level key the engine did not write itself
};

class Engine {
 public:
  Engine(std::shared_ptr<torch::nn::Module> module, DeepSpeedConfig config, EngineOptions options = {});
  template <typename M>
  Engine(const torch::nn::ModuleHolder<M>& module, DeepSpeedConfig config, EngineOptions options = {})
      : Engine(std::static_pointer_cast<torch::nn::Module>(module.ptr()), std::move(config), std::move(options)) {}
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs f() (the model's forward) under the forward timer and returns its result.
  template <typename F>
  auto forward(F&& f) -> decltype(f()) {
    const ScopedPhase timer(timers_, Phase::Forward);
    return f();
  }
  void backward(const at::Tensor& loss);
  void step();
  bool is_gradient_accumulation_boundary() const;
  void zero_grad();                     // gradients of every module parameter (and accumulators) to none
  void train();
  void eval();

  int64_t global_steps() const { return global_steps_; }      // optimizer steps, skipped ones included
  int64_t global_samples() const { return global_samples_; }
  int64_t skipped_steps() const { return skipped_steps_; }
  int64_t micro_steps() const { return micro_steps_; }
  std::vector<double> get_lr() const;   // one per parameter group
  double loss_scale() const { return scaler_.scale(); }
  bool last_step_skipped() const { return last_step_skipped_; }
  // Global L2 norm of the unscaled gradients at the last boundary (before clipping); NaN when that
  // step overflowed.
  double last_grad_norm() const { return last_grad_norm_; }

  at::Device device() const { return device_; }
  at::ScalarType model_dtype() const { return model_dtype_; }   // kFloat, kHalf or kBFloat16
  int rank() const { return reducer_->rank(); }
  int world_size() const { return reducer_->world_size(); }
  const DeepSpeedConfig& config() const { return config_; }
  torch::nn::Module& module() { return *module_; }
  const std::shared_ptr<torch::nn::Module>& module_ptr() const { return module_; }
  Optimizer& optimizer() { return *optimizer_; }
  LRScheduler* lr_scheduler() { return scheduler_.get(); }    // nullptr without a scheduler section
  const LossScaler& loss_scaler() const { return scaler_; }
  const PhaseTimers& timers() const { return timers_; }
  // Names of the optimized parameters, per group, in optimizer order.
  std::vector<std::vector<std::string>> param_group_names() const;
  // fp32 master weight of an optimized parameter (the module parameter itself in fp32 training).
  at::Tensor master_weight(const std::string& name) const;

  // Writes <dir>/<tag>/ (rank 0 only) and <dir>/latest; every rank must call it. Returns <dir>/<tag>.
  std::string save_checkpoint(const std::string& dir, std::optional<std::string> tag = std::nullopt,
                              const ClientState& client_state = {}, bool save_latest = true);
  // tag default: the contents of <dir>/latest. Throws CheckpointError for a missing tag / file or a
  // checkpoint that does not fit this model or optimizer (nothing is changed then).
  LoadedCheckpoint load_checkpoint(const std::string& dir, std::optional<std::string> tag = std::nullopt,
                                   const LoadCheckpointOptions& options = {});

 private:
  struct Slot {                  // one optimized parameter
    std::string name;
    at::Tensor model_param;      // the module's parameter (fp32, fp16 or bf16)
    at::Tensor master;           // fp32 master weight (== model_param in fp32 training)
    at::Tensor accum;            // bf16 training: fp32 gradient accumulator
  };
  void validate_config() const;
  void build_slots(const std::vector<ParamGroupSpec>& specs);
  std::vector<at::Tensor> current_grads() const;          // one per slot, optimizer order
  void install_grads(const std::vector<at::Tensor>& before, const std::vector<at::Tensor>& after);
  void fold_bf16_grads();
  void take_model_step();
  void report_step();
  std::ostream& log() const;

  std::shared_ptr<torch::nn::Module> module_;
  DeepSpeedConfig config_;
  EngineOptions options_;
  std::shared_ptr<GradientReducer> reducer_;
  at::Device device_{at::kCPU};
  at::ScalarType model_dtype_ = at::kFloat;
  std::vector<Slot> slots_;
  std::vector<size_t> group_sizes_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<LRScheduler> scheduler_;
  LossScaler scaler_;

  int64_t global_steps_ = 0, global_samples_ = 0, skipped_steps_ = 0, micro_steps_ = 0;
  bool last_step_skipped_ = false;
  double last_grad_norm_ = 0.0;

  // Logging: sums since the last progress line / the last optimizer step.
  at::Tensor interval_loss_sum_, step_loss_sum_;
  int64_t interval_losses_ = 0, step_losses_ = 0, interval_steps_ = 0;
  int64_t interval_samples_ = 0;
  std::chrono::steady_clock::time_point interval_start_;
  PhaseTimers timers_;
  std::array<double, kNumPhases> step_timer_mark_{};
  std::vector<std::unique_ptr<CsvMonitor>> monitors_;
};

}  // namespace ds
