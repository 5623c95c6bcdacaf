// The loss-scaler state machine through overflow, hysteresis and growth sequences
// (DeepSpeed DynamicLossScaler semantics; see engine/loss_scaler.h).
#include <gtest/gtest.h>

#include <vector>

#include "engine/loss_scaler.h"

namespace {

ds::LossScalerOptions dynamic(double init, int64_t window, int64_t hysteresis, bool consecutive = false,
                              double min_scale = 1.0) {
  ds::LossScalerOptions o;
  o.dynamic = true;
  o.init_scale = init;
  o.scale_window = window;
  o.hysteresis = hysteresis;
  o.consecutive_hysteresis = consecutive;
  o.min_scale = min_scale;
  return o;
}

// Feeds a sequence ('o' overflow, '.' clean) and returns the scale after each update.
std::vector<double> run(ds::LossScaler& s, const std::string& seq) {
  std::vector<double> out;
  for (char c : seq) out.push_back(s.update(c == 'o').scale);
  return out;
}

TEST(LossScaler, StaticNeverChanges) {
  ds::LossScalerOptions o;
  o.init_scale = 128;
  ds::LossScaler s(o);
  EXPECT_FALSE(s.dynamic());
  EXPECT_EQ(run(s, "o..o......"), std::vector<double>(10, 128.0));
  const auto u = s.update(true);
  EXPECT_TRUE(u.overflow);
  EXPECT_EQ(u.scale, 128.0);
}

TEST(LossScaler, GrowsAfterExactlyWindowCleanStepsAndHalvesOnOverflow) {
  ds::LossScaler s(dynamic(16, 3, 1));
  // Growth after 3 clean steps (iterations 0, 1, 2); overflow at 3 halves; 3 more clean steps
  // (4, 5, 6) grow again.
  EXPECT_EQ(run(s, "..." "o" "..." "..."), (std::vector<double>{16, 16, 32, 16, 16, 16, 32, 32, 32, 64}));
  EXPECT_EQ(s.cur_iter(), 10);
  EXPECT_EQ(s.last_overflow_iter(), 3);
}

TEST(LossScaler, HysteresisDelaysTheShift) {
  ds::LossScaler s(dynamic(1024, 100, 3));
  auto u = s.update(true);
  EXPECT_TRUE(u.hysteresis_absorbed);
  EXPECT_EQ(u.scale, 1024);
  EXPECT_EQ(u.hysteresis_left, 2);
  EXPECT_NE(u.describe().find("hysteresis left 2"), std::string::npos) << u.describe();
  // Clean steps do not refill without consecutive_hysteresis (only a growth does).
  EXPECT_EQ(run(s, "..o"), (std::vector<double>{1024, 1024, 1024}));
  EXPECT_EQ(s.cur_hysteresis(), 1);
  u = s.update(true);  // exhausted: halve
  EXPECT_FALSE(u.hysteresis_absorbed);
  EXPECT_EQ(u.previous_scale, 1024);
  EXPECT_EQ(u.scale, 512);
  EXPECT_NE(u.describe().find("1024 -> 512"), std::string::npos) << u.describe();
  EXPECT_EQ(run(s, "o"), std::vector<double>{256});  // stays exhausted until a growth refills it
}

TEST(LossScaler, ConsecutiveHysteresisRefillsOnEveryCleanStep) {
  ds::LossScaler s(dynamic(1024, 100, 2, /*consecutive=*/true));
  EXPECT_EQ(run(s, "o.o.o.oo"), (std::vector<double>{1024, 1024, 1024, 1024, 1024, 1024, 1024, 512}));
}

TEST(LossScaler, GrowthRefillsHysteresis) {
  ds::LossScaler s(dynamic(64, 2, 2));
  EXPECT_EQ(run(s, "o" ".." "o"), (std::vector<double>{64, 64, 128, 128})) << "growth refilled the count";
  EXPECT_EQ(s.cur_hysteresis(), 1);
}

TEST(LossScaler, NeverBelowMinimum) {
  ds::LossScaler s(dynamic(4, 1000, 1, false, 1.0));
  EXPECT_EQ(run(s, "oooo"), (std::vector<double>{2, 1, 1, 1}));
  const auto u = s.update(true);
  EXPECT_NE(u.describe().find("at its minimum"), std::string::npos) << u.describe();
}

TEST(LossScaler, FromConfigFollowsDeepSpeedDefaults) {
  ds::DeepSpeedConfig c;
  EXPECT_EQ(ds::LossScaler::from_config(c).scale(), 1.0);  // fp16 off
  c.fp16.enabled = true;
  c.fp16.loss_scale = 0;
  c.fp16.initial_scale_power = 16;
  auto s = ds::LossScaler::from_config(c);
  EXPECT_TRUE(s.dynamic());
  EXPECT_EQ(s.scale(), 65536.0);
  EXPECT_EQ(s.options().scale_window, 1000);
  EXPECT_EQ(s.options().min_scale, 1.0);
  EXPECT_EQ(s.options().hysteresis, 2);
  c.optimizer.type = ds::OptimizerType::Lamb;  // FP16_UnfusedOptimizer without dynamic keys: min 0.25
  EXPECT_EQ(ds::LossScaler::from_config(c).options().min_scale, 0.25);
  c.fp16.dynamic_args_given = true;
  EXPECT_EQ(ds::LossScaler::from_config(c).options().min_scale, 1.0);
  c.fp16.loss_scale = 128;
  s = ds::LossScaler::from_config(c);
  EXPECT_FALSE(s.dynamic());
  EXPECT_EQ(s.scale(), 128.0);
  EXPECT_THROW(ds::LossScaler(dynamic(16, 0, 1)), std::invalid_argument);
}

TEST(LossScaler, StateDictRoundTrip) {
  ds::LossScaler a(dynamic(1024, 5, 2));
  run(a, "o..o...");
  ds::LossScaler b(dynamic(1024, 5, 2));
  b.load_state_dict(a.state_dict());
  EXPECT_EQ(b.scale(), a.scale());
  EXPECT_EQ(b.cur_iter(), a.cur_iter());
  EXPECT_EQ(b.last_overflow_iter(), a.last_overflow_iter());
  EXPECT_EQ(b.cur_hysteresis(), a.cur_hysteresis());
  EXPECT_EQ(run(a, "..o.o"), run(b, "..o.o"));
}

}  // namespace
