// bing_bert's learning-rate schedules (pytorch_pretrained_bert/optimization.py), applied by the
// trainer to every parameter group before each optimizer step:
//
//   lr(t) = learning_rate * f(t) + lr_offset,  t = global_step - last_global_step_from_restore
//   x = t / total_training_steps, w = warmup_proportion
//   EE  warmup_exp_decay_exp:    w == 0 -> 1;  x < w -> (x / w)^2;   else decay_rate^((t - w total) / decay_step)
//   EP  warmup_exp_decay_poly:   x < w -> (x / w)^1.5;  else (1 - x)^2
//   LE  warmup_linear_decay_exp: w == 0 -> 1;  x < w -> x / w;      else decay_rate^((t - w total) / decay_step)
//
// The exponent is a float, not a staircase. bing_bert applies the schedule only in fp16 runs (in
// fp32 its progress report crashes on the undefined lr); we apply it always.
#pragma once

#include <cstdint>
#include <string>

#include "examples/bing_bert/train/recipe_config.h"

namespace ds::bert {

enum class LrSchedule { EE, EP, LE };

// "EE", "EP", "LE"; anything else throws InputError (bing_bert silently falls back to LE).
LrSchedule parse_lr_schedule(const std::string& name);
const char* lr_schedule_name(LrSchedule s);

// f(t) above.
double lr_factor(LrSchedule schedule, int64_t t, const SeqTrainingConfig& training);
// learning_rate * f(t) + lr_offset.
double scheduled_lr(LrSchedule schedule, int64_t t, const SeqTrainingConfig& training, double lr_offset);

}  // namespace ds::bert
