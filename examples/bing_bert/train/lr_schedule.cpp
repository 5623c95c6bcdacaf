#include "examples/bing_bert/train/lr_schedule.h"

#include <cmath>

namespace ds::bert {

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "EE") return LrSchedule::EE;
  if (name == "EP") return LrSchedule::EP;
  if (name == "LE") return LrSchedule::LE;
  throw InputError("--lr_schedule '" + name + "': use EE (exp warmup, exp decay), EP (exp warmup, poly decay) or "
                   "LE (linear warmup, exp decay)");
}

const char* lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::EE: return "EE";
    case LrSchedule::EP: return "EP";
    case LrSchedule::LE: return "LE";
  }
  return "?";
}

double lr_factor(LrSchedule schedule, int64_t step, const SeqTrainingConfig& c) {
  const double t = static_cast<double>(step);
  const double total = static_cast<double>(c.total_training_steps);
  const double x = t / total;
  const double w = c.warmup_proportion;
  const double warmup_end = w * total;
  auto exp_decay = [&] { return std::pow(c.decay_rate, (t - warmup_end) / static_cast<double>(c.decay_step)); };
  switch (schedule) {
    case LrSchedule::EE:
      if (w == 0.0) return 1.0;
      if (x < w) return std::pow(x / w, 2.0);
      return exp_decay();
    case LrSchedule::EP:
      if (x < w) return std::pow(x / w, 1.5);
      return std::pow(1.0 - x, 2.0);
    case LrSchedule::LE:
      if (w == 0.0) return 1.0;
      if (x < w) return x / w;
      return exp_decay();
  }
  return 1.0;
}

double scheduled_lr(LrSchedule schedule, int64_t t, const SeqTrainingConfig& c, double lr_offset) {
  return c.learning_rate * lr_factor(schedule, t, c) + lr_offset;
}

}  // namespace ds::bert
