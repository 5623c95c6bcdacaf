#include "engine/lr_schedules.h"

#include <cmath>
#include <iostream>
#include <stdexcept>
#include <string>

#include "engine/ivalue_util.h"
#include "engine/optimizer.h"

namespace ds {
namespace {

constexpr double kPi = 3.14159265358979323846;

// DeepSpeed's _format_param: one value for every group, or one per group.
std::vector<double> per_group(const std::vector<double>& values, size_t groups, const char* key) {
  if (values.size() == 1) return std::vector<double>(groups, values[0]);
  if (values.size() == groups) return values;
  throw std::invalid_argument(std::string("scheduler.params.") + key + ": expected 1 value or " +
                              std::to_string(groups) + " (one per parameter group), got " +
                              std::to_string(values.size()));
}

bool is_log_warmup(const std::string& type) {
  if (type == "linear") return false;
  if (type != "log") {
    std::cerr << "warning: scheduler.params.warmup_type: unknown value '" << type << "', using 'log' as DeepSpeed does\n";
  }
  return true;
}

}  // namespace

LRScheduler::LRScheduler(Optimizer& optimizer, int64_t last_batch_iteration)
    : optimizer_(optimizer), last_batch_iteration_(last_batch_iteration) {}

void LRScheduler::step(std::optional<int64_t> iteration) {
  last_batch_iteration_ = iteration ? *iteration : last_batch_iteration_ + 1;
  write_lr(get_lr());
  write_momentum();
}

void LRScheduler::write_lr(const std::vector<double>& lrs) {
  auto& groups = optimizer_.param_groups();
  for (size_t i = 0; i < groups.size() && i < lrs.size(); ++i) groups[i].lr = lrs[i];
  last_lr_.clear();
  for (const auto& g : groups) last_lr_.push_back(g.lr);
}

at::IValue LRScheduler::state_dict() const {
  ivalue::Dict d = ivalue::new_dict();
  d.insert("last_batch_iteration", last_batch_iteration_);
  return d;
}

void LRScheduler::load_state_dict(const at::IValue& state) {
  const ivalue::Dict d = ivalue::as_dict(state, "lr_scheduler");
  last_batch_iteration_ = ivalue::get_int(d, "last_batch_iteration", "lr_scheduler");
  last_lr_.clear();
  for (const auto& g : optimizer_.param_groups()) last_lr_.push_back(g.lr);
}

// ---- WarmupLR / WarmupDecayLR -------------------------------------------------------------------

WarmupLR::WarmupLR(Optimizer& optimizer, const SchedulerConfig& c)
    : LRScheduler(optimizer, c.last_batch_iteration),
      warmup_num_steps_(std::max<int64_t>(2, c.warmup_num_steps)),
      log_warmup_(is_log_warmup(c.warmup_type)),
      inverse_log_warmup_(1.0 / std::log(static_cast<double>(warmup_num_steps_))) {
  const size_t n = optimizer.param_groups().size();
  min_lrs_ = per_group(c.warmup_min_lr, n, "warmup_min_lr");
  const std::vector<double> max_lrs = per_group(c.warmup_max_lr, n, "warmup_max_lr");
  for (size_t i = 0; i < n; ++i) delta_lrs_.push_back(max_lrs[i] - min_lrs_[i]);
  if (last_batch_iteration_ == -1) write_lr(min_lrs_);
}

double WarmupLR::warmup_gamma() const {
  const auto t = static_cast<double>(last_batch_iteration_);
  return log_warmup_ ? inverse_log_warmup_ * std::log(t + 1.0) : t / static_cast<double>(warmup_num_steps_);
}

double WarmupLR::gamma() const { return last_batch_iteration_ < warmup_num_steps_ ? warmup_gamma() : 1.0; }

std::vector<double> WarmupLR::get_lr() const {
  if (last_batch_iteration_ < 0) return min_lrs_;
  const double g = gamma();
  std::vector<double> out;
  for (size_t i = 0; i < min_lrs_.size(); ++i) out.push_back(min_lrs_[i] + delta_lrs_[i] * g);
  return out;
}

WarmupDecayLR::WarmupDecayLR(Optimizer& optimizer, const SchedulerConfig& c)
    : WarmupLR(optimizer, c), total_num_steps_(c.total_num_steps) {
  if (total_num_steps_ < warmup_num_steps_) {
    std::cerr << "warning: scheduler.params.total_num_steps " << total_num_steps_ << " is less than warmup_num_steps "
              << c.warmup_num_steps << "\n";
  }
}

double WarmupDecayLR::gamma() const {
  if (last_batch_iteration_ < warmup_num_steps_) return warmup_gamma();
  const double num = static_cast<double>(total_num_steps_ - last_batch_iteration_);
  const double den = std::max(1.0, static_cast<double>(total_num_steps_ - warmup_num_steps_));
  return std::max(0.0, num / den);
}

// ---- WarmupCosineLR -----------------------------------------------------------------------------

WarmupCosineLR::WarmupCosineLR(Optimizer& optimizer, const SchedulerConfig& c)
    : LRScheduler(optimizer, c.last_batch_iteration),
      total_num_steps_(c.total_num_steps),
      warmup_num_steps_(std::max<int64_t>(2, c.warmup_num_steps)),
      warmup_min_ratio_(c.warmup_min_ratio),
      cos_min_ratio_(c.cos_min_ratio),
      inverse_log_warmup_(1.0 / std::log(static_cast<double>(warmup_num_steps_))),
      log_warmup_(is_log_warmup(c.warmup_type)) {
  if (total_num_steps_ < warmup_num_steps_) {
    std::cerr << "warning: scheduler.params.total_num_steps " << total_num_steps_ << " is less than warmup_num_steps "
              << c.warmup_num_steps << "\n";
  }
  for (const auto& g : optimizer.param_groups()) org_lrs_.push_back(g.lr);
  if (last_batch_iteration_ == -1) write_lr(get_lr());
}

double WarmupCosineLR::lr_ratio() const {
  if (last_batch_iteration_ < 0) return 0.0;
  const auto t = static_cast<double>(last_batch_iteration_);
  if (last_batch_iteration_ < warmup_num_steps_) {
    const double r = log_warmup_ ? inverse_log_warmup_ * std::log(t + 1.0) : t / static_cast<double>(warmup_num_steps_);
    return warmup_min_ratio_ + r * (1.0 - warmup_min_ratio_);
  }
  const double period = std::max(1.0, static_cast<double>(total_num_steps_ - warmup_num_steps_));
  const double s = std::min(t - static_cast<double>(warmup_num_steps_) + 1.0, period);
  const double cosine = (1.0 + std::cos(kPi * s / period)) / 2.0;
  return std::max(0.0, cos_min_ratio_ + (1.0 - cos_min_ratio_) * cosine);
}

std::vector<double> WarmupCosineLR::get_lr() const {
  const double r = lr_ratio();
  std::vector<double> out;
  for (double lr : org_lrs_) out.push_back(lr * r);
  return out;
}

// ---- OneCycle -------------------------------------------------------------------------------------

OneCycle::OneCycle(Optimizer& optimizer, const SchedulerConfig& c)
    : LRScheduler(optimizer, c.last_batch_iteration),
      min_lr_(c.cycle_min_lr),
      max_lr_(c.cycle_max_lr),
      decay_lr_rate_(c.decay_lr_rate),
      decay_step_size_(c.decay_step_size),
      cycle_momentum_(c.cycle_momentum),
      min_mom_(c.cycle_min_mom),
      max_mom_(c.cycle_max_mom),
      decay_mom_rate_(c.decay_mom_rate) {
  const double first = static_cast<double>(c.cycle_first_step_size);
  const double second = c.cycle_second_step_size ? static_cast<double>(*c.cycle_second_step_size) : first;
  total_size_ = first + second;
  if (!(total_size_ > 0)) {
    throw std::invalid_argument("scheduler.params.cycle_first_step_size + cycle_second_step_size must be > 0, got " +
                                std::to_string(total_size_));
  }
  step_ratio_ = first / total_size_;
  // DeepSpeed tests math.isclose(rate, 0), which is true for exactly 0 only.
  skip_lr_decay_ = decay_step_size_ == 0 || decay_lr_rate_ == 0.0;
  skip_mom_decay_ = decay_step_size_ == 0 || decay_mom_rate_ == 0.0;
  if (last_batch_iteration_ == -1) {
    write_lr(std::vector<double>(optimizer.param_groups().size(), min_lr_));
    if (cycle_momentum_) {
      for (auto& g : optimizer.param_groups()) g.betas = {min_mom_, 0.99};
    }
  }
}

double OneCycle::scale_factor() const {
  const double b = static_cast<double>(last_batch_iteration_ + 1);
  const double cycle = std::floor(1.0 + b / total_size_);
  const double x = 1.0 + b / total_size_ - cycle;
  return x <= step_ratio_ ? x / step_ratio_ : (x - 1.0) / (step_ratio_ - 1.0);
}

std::vector<double> OneCycle::get_lr() const {
  const size_t n = optimizer_.param_groups().size();
  double lr;
  if (static_cast<double>(last_batch_iteration_) < total_size_) {
    lr = min_lr_ + (max_lr_ - min_lr_) * scale_factor();
  } else if (skip_lr_decay_) {
    lr = min_lr_;
  } else {
    const double interval = (static_cast<double>(last_batch_iteration_) - total_size_ + 1.0) /
                            static_cast<double>(decay_step_size_);
    lr = min_lr_ / (1.0 + decay_lr_rate_ * interval);
  }
  return std::vector<double>(n, lr);
}

std::vector<std::array<double, 2>> OneCycle::get_mom() const {
  const size_t n = optimizer_.param_groups().size();
  double mom;
  if (static_cast<double>(last_batch_iteration_) < total_size_) {
    mom = max_mom_ - (max_mom_ - min_mom_) * scale_factor();
  } else if (skip_mom_decay_) {
    mom = max_mom_;
  } else {
    const double interval = (static_cast<double>(last_batch_iteration_) - total_size_ + 1.0) /
                            static_cast<double>(decay_step_size_);
    mom = max_mom_ * (1.0 + decay_mom_rate_ * interval);
  }
  return std::vector<std::array<double, 2>>(n, {mom, 0.99});
}

void OneCycle::write_momentum() {
  if (!cycle_momentum_) return;
  const auto moms = get_mom();
  auto& groups = optimizer_.param_groups();
  for (size_t i = 0; i < groups.size(); ++i) groups[i].betas = moms[i];
}

// ---- LRRangeTest --------------------------------------------------------------------------------

LRRangeTest::LRRangeTest(Optimizer& optimizer, const SchedulerConfig& c)
    : LRScheduler(optimizer, c.last_batch_iteration),
      min_lr_(c.lr_range_test_min_lr),
      step_rate_(c.lr_range_test_step_rate),
      step_size_(c.lr_range_test_step_size),
      staircase_(c.lr_range_test_staircase) {
  if (step_size_ <= 0) {
    throw std::invalid_argument("scheduler.params.lr_range_test_step_size must be > 0, got " +
                                std::to_string(step_size_));
  }
  if (last_batch_iteration_ == -1) write_lr(std::vector<double>(optimizer.param_groups().size(), min_lr_));
}

std::vector<double> LRRangeTest::get_lr() const {
  const double x = static_cast<double>(last_batch_iteration_ + 1) / static_cast<double>(step_size_);
  const double interval = staircase_ ? std::floor(x) : x;
  return std::vector<double>(optimizer_.param_groups().size(), min_lr_ * (1.0 + step_rate_ * interval));
}

std::unique_ptr<LRScheduler> make_scheduler(const SchedulerConfig& config, Optimizer& optimizer) {
  if (!config.present) return nullptr;
  switch (config.type) {
    case SchedulerType::WarmupLR: return std::make_unique<WarmupLR>(optimizer, config);
    case SchedulerType::WarmupDecayLR: return std::make_unique<WarmupDecayLR>(optimizer, config);
    case SchedulerType::WarmupCosineLR: return std::make_unique<WarmupCosineLR>(optimizer, config);
    case SchedulerType::OneCycle: return std::make_unique<OneCycle>(optimizer, config);
    case SchedulerType::LRRangeTest: return std::make_unique<LRRangeTest>(optimizer, config);
  }
  throw std::invalid_argument("scheduler.type: unsupported schedule");
}

}  // namespace ds
