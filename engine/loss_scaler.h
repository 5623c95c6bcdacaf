// fp16 loss scaling: a static scale, or DeepSpeed's dynamic scaling with hysteresis.
//
// Dynamic scaling follows DeepSpeed's DynamicLossScaler (deepspeed/runtime/fp16/loss_scaler.py,
// "algorithm B" in shared/reference/deepspeed-behaviour.md 3.6), which ZeRO uses:
//  - overflow: if hysteresis is exhausted (hysteresis == 1 or the remaining count is 1) the scale
//    halves, never below min_loss_scale; otherwise the remaining hysteresis count drops by one and
//    the scale stays. Either way the step is skipped (the engine's job).
//  - clean step: with consecutive_hysteresis the count refills; when loss_scale_window clean steps
//    have passed since the last overflow (or since the start) the scale doubles (and, without
//    consecutive_hysteresis, the count refills).
// Differences from DeepSpeed, on purpose:
//  - DeepSpeed's non-ZeRO fp16 optimizers (FP16_Optimizer, "algorithm A") ignore hysteresis; we
//    honour it on every path.
//  - Growth timing is algorithm B's: the first doubling comes after exactly loss_scale_window clean
//    steps (algorithm A waits one more step: its first doubling is on the 1001st step of a 1000
//    window, and after an overflow at step k on step k + 1 + window).
//  - An overflow at min_loss_scale keeps skipping with the scale at the minimum and logs it;
//    DynamicLossScaler raises "Current loss scale already at minimum" instead.
#pragma once

#include <ATen/core/ivalue.h>

#include <cstdint>
#include <string>

#include "engine/config/ds_config.h"

namespace ds {

struct LossScalerOptions {
  bool dynamic = false;
  double init_scale = 1.0;
  double scale_factor = 2.0;
  int64_t scale_window = 1000;
  double min_scale = 1.0;
  int64_t hysteresis = 2;           // DeepSpeed's delayed_shift
  bool consecutive_hysteresis = false;
};

// What one update did, for the engine's log line.
struct LossScaleUpdate {
  bool overflow = false;
  double previous_scale = 1.0;
  double scale = 1.0;
  bool grew = false;
  bool hysteresis_absorbed = false;  // overflow with hysteresis left: the scale stayed
  int64_t hysteresis_left = 0;       // remaining count after the update
  std::string describe() const;      // one line, "" when nothing happened
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});
  // fp16 off -> static 1; fp16.loss_scale > 0 -> static; else dynamic from the fp16 section.
  // DeepSpeed quirk kept: Lamb (FP16_UnfusedOptimizer) without any dynamic-scale key in the file
  // uses min scale 0.25 instead of min_loss_scale's default 1.
  static LossScaler from_config(const DeepSpeedConfig& config);

  double scale() const { return cur_scale_; }
  bool dynamic() const { return options_.dynamic; }
  const LossScalerOptions& options() const { return options_; }
  int64_t cur_iter() const { return cur_iter_; }
  int64_t last_overflow_iter() const { return last_overflow_iter_; }
  int64_t cur_hysteresis() const { return cur_hysteresis_; }

  // Records one optimizer step's overflow result (call once per boundary, skipped or not).
  LossScaleUpdate update(bool overflow);

  at::IValue state_dict() const;
  // Restores scale and counters when both this scaler and the saved one are dynamic; a static
  // scaler keeps its configured scale (the config wins when the mode changed).
  void load_state_dict(const at::IValue& state);

 private:
  LossScalerOptions options_;
  double cur_scale_;
  int64_t cur_iter_ = 0;
  int64_t last_overflow_iter_ = -1;
  int64_t cur_hysteresis_;
};

}  // namespace ds
