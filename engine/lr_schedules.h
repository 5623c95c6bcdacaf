// DeepSpeed's LR schedules (deepspeed/runtime/lr_schedules.py at HEAD) with their exact formulas,
// construction-time effects and `last_batch_iteration` state. The engine steps the schedule once per
// optimizer step that was not skipped (fp16 overflow).
//
// Construction with last_batch_iteration == -1 writes the starting lr into the optimizer the way
// DeepSpeed does: WarmupLR / WarmupDecayLR -> warmup_min_lr, WarmupCosineLR -> 0, OneCycle ->
// cycle_min_lr (and betas (cycle_min_mom, 0.99)), LRRangeTest -> lr_range_test_min_lr. So the first
// optimizer step runs at that lr, and step() then advances to t = 0, 1, ...
//
// Differences from DeepSpeed, on purpose:
//  - WarmupCosineLR at t = -1 sets lr 0 in every group (DeepSpeed's get_lr returns [0.0], which its
//    zip() applies to the first group only).
//  - WarmupCosineLR with total_num_steps <= warmup_num_steps divides by max(1, total - warmup) instead
//    of raising ZeroDivisionError / running a negative cosine period; past total_num_steps the lr
//    stays at cos_min_ratio (DeepSpeed's cosine keeps going and the lr climbs back up).
//  - OneCycle with decay_step_size == 0 does not decay (DeepSpeed divides by zero when a decay rate
//    is set with a zero step size).
#pragma once

#include <ATen/core/ivalue.h>

#include <array>
#include <memory>
#include <optional>
#include <vector>

#include "engine/config/ds_config.h"

namespace ds {

class Optimizer;

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  virtual const char* name() const = 0;
  // Sets last_batch_iteration to `iteration` (default: +1) and writes get_lr() (and OneCycle's
  // betas) into every parameter group.
  void step(std::optional<int64_t> iteration = std::nullopt);
  // The lr of every group for the current last_batch_iteration.
  virtual std::vector<double> get_lr() const = 0;
  // The lrs last written into the optimizer (empty when nothing was written yet).
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  int64_t last_batch_iteration() const { return last_batch_iteration_; }

  at::IValue state_dict() const;                // {"last_batch_iteration": n}, as DeepSpeed
  void load_state_dict(const at::IValue& state);  // restores n; the optimizer's groups carry the lr

 protected:
  LRScheduler(Optimizer& optimizer, int64_t last_batch_iteration);
  void write_lr(const std::vector<double>& lrs);
  virtual void write_momentum() {}

  Optimizer& optimizer_;
  int64_t last_batch_iteration_;
  std::vector<double> last_lr_;
};

// Warmup from warmup_min_lr to warmup_max_lr over warmup_num_steps ("log" or "linear"), then flat.
class WarmupLR : public LRScheduler {
 public:
  WarmupLR(Optimizer& optimizer, const SchedulerConfig& config);
  const char* name() const override { return "WarmupLR"; }
  std::vector<double> get_lr() const override;

 protected:
  virtual double gamma() const;  // 0..1 position between min and max lr
  double warmup_gamma() const;
  std::vector<double> min_lrs_, delta_lrs_;
  int64_t warmup_num_steps_;     // max(2, config value)
  bool log_warmup_;
  double inverse_log_warmup_;
};

// WarmupLR, then linear decay to 0 at total_num_steps.
class WarmupDecayLR final : public WarmupLR {
 public:
  WarmupDecayLR(Optimizer& optimizer, const SchedulerConfig& config);
  const char* name() const override { return "WarmupDecayLR"; }

 private:
  double gamma() const override;
  int64_t total_num_steps_;
};

// Ratio of each group's initial lr: warmup from warmup_min_ratio to 1, then cosine to cos_min_ratio.
class WarmupCosineLR final : public LRScheduler {
 public:
  WarmupCosineLR(Optimizer& optimizer, const SchedulerConfig& config);
  const char* name() const override { return "WarmupCosineLR"; }
  std::vector<double> get_lr() const override;
  double lr_ratio() const;

 private:
  std::vector<double> org_lrs_;
  int64_t total_num_steps_, warmup_num_steps_;
  double warmup_min_ratio_, cos_min_ratio_, inverse_log_warmup_;
  bool log_warmup_;
};

// One triangular cycle min -> max -> min lr (momentum max -> min -> max), then optional decay.
class OneCycle final : public LRScheduler {
 public:
  OneCycle(Optimizer& optimizer, const SchedulerConfig& config);
  const char* name() const override { return "OneCycle"; }
  std::vector<double> get_lr() const override;
  // (beta1, beta2) of every group for the current iteration; beta2 is always 0.99, as DeepSpeed.
  std::vector<std::array<double, 2>> get_mom() const;

 private:
  void write_momentum() override;
  double scale_factor() const;
  double total_size_, step_ratio_;
  double min_lr_, max_lr_, decay_lr_rate_;
  int64_t decay_step_size_;
  bool cycle_momentum_;
  double min_mom_, max_mom_, decay_mom_rate_;
  bool skip_lr_decay_, skip_mom_decay_;
};

// lr = min_lr * (1 + step_rate * interval), interval = (t + 1) / step_size (floored if staircase).
class LRRangeTest final : public LRScheduler {
 public:
  LRRangeTest(Optimizer& optimizer, const SchedulerConfig& config);
  const char* name() const override { return "LRRangeTest"; }
  std::vector<double> get_lr() const override;

 private:
  double min_lr_, step_rate_;
  int64_t step_size_;
  bool staircase_;
};

// The schedule the config's "scheduler" section names, or nullptr when the section is absent.
std::unique_ptr<LRScheduler> make_scheduler(const SchedulerConfig& config, Optimizer& optimizer);

}  // namespace ds
