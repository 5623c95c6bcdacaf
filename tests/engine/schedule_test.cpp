// LR schedules against DeepSpeed's formulas (deepspeed/runtime/lr_schedules.py) at the edges:
// construction (t = -1), step 0, warmup end, total, past total.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "engine/lr_schedules.h"
#include "engine/optimizer.h"

namespace {

constexpr double kPi = 3.14159265358979323846;

std::unique_ptr<ds::Optimizer> two_group_adam(double lr = 0.1) {
  std::vector<ds::OptimParamGroup> groups(2);
  for (auto& g : groups) {
    g.params = {torch::zeros({2})};
    g.lr = lr;
  }
  return std::make_unique<ds::Adam>(std::move(groups), ds::AdamOptions{});
}

// Steps the schedule to iteration t (from its current one) and returns group 0's lr.
double lr_at(ds::LRScheduler& s, ds::Optimizer& o, int64_t t) {
  while (s.last_batch_iteration() < t) s.step();
  EXPECT_EQ(o.param_groups()[0].lr, o.param_groups()[1].lr);
  return o.param_groups()[0].lr;
}

ds::SchedulerConfig warmup(ds::SchedulerType type, const std::string& warmup_type) {
  ds::SchedulerConfig c;
  c.present = true;
  c.type = type;
  c.warmup_min_lr = {0.01};
  c.warmup_max_lr = {0.1};
  c.warmup_num_steps = 10;
  c.warmup_type = warmup_type;
  c.total_num_steps = 20;
  return c;
}

TEST(WarmupLR, LogAndLinearAtTheEdges) {
  for (const std::string type : {"log", "linear"}) {
    auto opt = two_group_adam();
    auto s = ds::make_scheduler(warmup(ds::SchedulerType::WarmupLR, type), *opt);
    ASSERT_STREQ(s->name(), "WarmupLR");
    EXPECT_DOUBLE_EQ(opt->param_groups()[0].lr, 0.01) << "construction writes warmup_min_lr (t = -1)";
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 0), 0.01);  // log(1) = 0; linear 0 / 10
    const double g5 = type == "log" ? std::log(6.0) / std::log(10.0) : 0.5;
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 5), 0.01 + 0.09 * g5);
    const double g9 = type == "log" ? 1.0 : 0.9;  // log(10) / log(10) reaches max one step early
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 9), 0.01 + 0.09 * g9);
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 10), 0.1);
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 1000), 0.1);
    EXPECT_EQ(s->get_last_lr(), std::vector<double>({0.1, 0.1}));
  }
}

TEST(WarmupLR, PerGroupValuesAndWarmupOfOneStep) {
  auto opt = two_group_adam();
  auto c = warmup(ds::SchedulerType::WarmupLR, "linear");
  c.warmup_min_lr = {0.0, 0.02};
  c.warmup_max_lr = {1.0, 0.04};
  c.warmup_num_steps = 1;  // DeepSpeed uses max(2, n)
  auto s = ds::make_scheduler(c, *opt);
  s->step();  // t = 0
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].lr, 0.0);
  EXPECT_DOUBLE_EQ(opt->param_groups()[1].lr, 0.02);
  s->step();  // t = 1 = N / 2
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].lr, 0.5);
  EXPECT_DOUBLE_EQ(opt->param_groups()[1].lr, 0.03);
  c.warmup_min_lr = {0.0, 0.1, 0.2};
  EXPECT_THROW(ds::make_scheduler(c, *opt), std::invalid_argument);
}

TEST(WarmupDecayLR, LinearDecayToZeroAtTotal) {
  auto opt = two_group_adam();
  auto s = ds::make_scheduler(warmup(ds::SchedulerType::WarmupDecayLR, "linear"), *opt);
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].lr, 0.01);
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 0), 0.01);
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 9), 0.01 + 0.09 * 0.9);
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 10), 0.1);        // (20 - 10) / (20 - 10)
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 15), 0.01 + 0.09 * 0.5);
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 20), 0.01);       // gamma 0 -> min lr
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 25), 0.01);       // clamped at 0, not negative
}

TEST(WarmupCosineLR, RatiosOfTheInitialLr) {
  auto opt = two_group_adam(0.1);
  ds::SchedulerConfig c;
  c.present = true;
  c.type = ds::SchedulerType::WarmupCosineLR;
  c.total_num_steps = 20;
  c.warmup_num_steps = 10;
  c.warmup_min_ratio = 0.1;
  c.cos_min_ratio = 0.001;
  c.warmup_type = "linear";
  auto s = ds::make_scheduler(c, *opt);
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].lr, 0.0) << "t = -1 sets 0 (in every group)";
  EXPECT_DOUBLE_EQ(opt->param_groups()[1].lr, 0.0);
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 0), 0.1 * 0.1);
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 9), 0.1 * (0.1 + 0.9 * 0.9));
  auto cosine = [](double s_, double t_) { return 0.001 + 0.999 * (1 + std::cos(kPi * s_ / t_)) / 2; };
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 10), 0.1 * cosine(1, 10));  // s = t - N + 1
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 19), 0.1 * 0.001);          // s = T: cos(pi) -> cos_min_ratio
  EXPECT_NEAR(lr_at(*s, *opt, 19), 1e-4, 1e-15);
  // Past total the lr stays at the floor (DeepSpeed's cosine would rise again; see lr_schedules.h).
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 25), 0.1 * 0.001);
}

TEST(OneCycle, CycleMomentumAndDecay) {
  auto opt = two_group_adam();
  ds::SchedulerConfig c;
  c.present = true;
  c.type = ds::SchedulerType::OneCycle;
  c.cycle_min_lr = 0.01;
  c.cycle_max_lr = 0.1;
  c.cycle_first_step_size = 4;
  c.cycle_second_step_size = 4;
  c.decay_lr_rate = 0.5;
  c.decay_step_size = 2;
  c.cycle_min_mom = 0.8;
  c.cycle_max_mom = 0.9;
  c.decay_mom_rate = 0.1;
  auto s = ds::make_scheduler(c, *opt);
  auto* one = dynamic_cast<ds::OneCycle*>(s.get());
  ASSERT_NE(one, nullptr);
  auto betas = [&] { return opt->param_groups()[1].betas; };
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].lr, 0.01);
  EXPECT_EQ(betas(), (std::array<double, 2>{0.8, 0.99})) << "construction: (cycle_min_mom, 0.99)";
  // t = 0: b = 1, x = 1/8, scale = x / 0.5 = 0.25
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 0), 0.01 + 0.09 * 0.25);
  EXPECT_DOUBLE_EQ(betas()[0], 0.9 - 0.1 * 0.25);
  EXPECT_DOUBLE_EQ(betas()[1], 0.99) << "beta2 is forced to 0.99";
  // t = 3: b = 4, x = 0.5 -> peak lr, lowest momentum
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 3), 0.1);
  EXPECT_DOUBLE_EQ(betas()[0], 0.8);
  // t = 5: x = 0.75 -> scale (0.75 - 1) / (0.5 - 1) = 0.5
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 5), 0.01 + 0.09 * 0.5);
  EXPECT_DOUBLE_EQ(betas()[0], 0.9 - 0.1 * 0.5);
  // t = 7: b = 8 = total: a new cycle starts at scale 0
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 7), 0.01);
  EXPECT_DOUBLE_EQ(betas()[0], 0.9);
  // t = 8 >= total: decay, interval (8 - 8 + 1) / 2
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 8), 0.01 / (1 + 0.5 * 0.5));
  EXPECT_DOUBLE_EQ(betas()[0], 0.9 * (1 + 0.1 * 0.5));
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 13), 0.01 / (1 + 0.5 * 3.0));
}

TEST(OneCycle, NoDecayKeepsMinLrAndMaxMomentumAfterTheCycle) {
  auto opt = two_group_adam();
  ds::SchedulerConfig c;
  c.present = true;
  c.type = ds::SchedulerType::OneCycle;
  c.cycle_min_lr = 0.01;
  c.cycle_max_lr = 0.1;
  c.cycle_first_step_size = 2;  // second defaults to first
  c.decay_lr_rate = 0.5;        // ignored: decay_step_size 0 (DeepSpeed would divide by zero)
  auto s = ds::make_scheduler(c, *opt);
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 1), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 100), 0.01);
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].betas[0], 0.9);
}

TEST(LRRangeTest, ContinuousAndStaircase) {
  for (bool stair : {false, true}) {
    auto opt = two_group_adam();
    ds::SchedulerConfig c;
    c.present = true;
    c.type = ds::SchedulerType::LRRangeTest;
    c.lr_range_test_min_lr = 0.01;
    c.lr_range_test_step_size = 4;
    c.lr_range_test_step_rate = 2.0;
    c.lr_range_test_staircase = stair;
    auto s = ds::make_scheduler(c, *opt);
    EXPECT_DOUBLE_EQ(opt->param_groups()[0].lr, 0.01);
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 0), stair ? 0.01 : 0.01 * (1 + 2 * 0.25));
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 2), stair ? 0.01 : 0.01 * (1 + 2 * 0.75));
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 3), 0.01 * 3);
    EXPECT_DOUBLE_EQ(lr_at(*s, *opt, 7), 0.01 * 5);
  }
}

TEST(Schedules, StateDictRestoresTheIterationAndAbsentSectionGivesNone) {
  auto opt = two_group_adam();
  auto c = warmup(ds::SchedulerType::WarmupDecayLR, "log");
  auto a = ds::make_scheduler(c, *opt);
  for (int i = 0; i < 7; ++i) a->step();
  const auto saved = a->state_dict();
  auto opt2 = two_group_adam();
  auto b = ds::make_scheduler(c, *opt2);
  b->load_state_dict(saved);
  EXPECT_EQ(b->last_batch_iteration(), 6);
  a->step();
  b->step();
  EXPECT_DOUBLE_EQ(opt2->param_groups()[0].lr, opt->param_groups()[0].lr);
  c.last_batch_iteration = 4;  // resuming through the config: no lr written at construction
  auto opt3 = two_group_adam(0.5);
  auto r = ds::make_scheduler(c, *opt3);
  EXPECT_DOUBLE_EQ(opt3->param_groups()[0].lr, 0.5);
  r->step();
  EXPECT_EQ(r->last_batch_iteration(), 5);
  EXPECT_DOUBLE_EQ(opt3->param_groups()[0].lr, 0.01 + 0.09 * std::log(6.0) / std::log(10.0));
  ds::SchedulerConfig none;
  EXPECT_EQ(ds::make_scheduler(none, *opt), nullptr);
}

}  // namespace
