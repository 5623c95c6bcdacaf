// Engine training step: gradient accumulation, fp16 loss scaling and overflow skipping, bf16 fp32
// accumulation, clipping, parameter groups, logs and CSV monitor, config errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <map>
#include <sstream>

#include "engine/engine.h"
#include "engine/lr_schedules.h"
#include "engine/optimizer.h"
#include "tests/common/test_utils.h"
#include "tests/engine/engine_test_util.h"

namespace {

using ds::test::batch;
using ds::test::max_abs_diff;
using ds::test::mse;

void copy_params(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard g;
  auto src = from.named_parameters();
  for (auto& item : to.named_parameters()) item.value().copy_(src[item.key()]);
}

TEST(Engine, GradientAccumulationOfKMicroBatchesEqualsOneKTimesLargerBatch) {
  torch::manual_seed(1);
  ds::test::TinyMLP ma(6, 16, 3, 0.0), mb(6, 16, 3, 0.0);
  copy_params(*ma, *mb);
  auto ca = ds::test::config(/*micro=*/2, /*gas=*/4);
  auto cb = ds::test::config(/*micro=*/8, /*gas=*/1);
  ca.gradient_clipping = cb.gradient_clipping = 0.05;  // makes the gradient's scale matter to Adam
  ds::Engine a(ma, ca, ds::test::quiet_cpu()), b(mb, cb, ds::test::quiet_cpu());
  for (int step = 0; step < 3; ++step) {
    auto [x, y] = batch(step, 0, 8, 6, 3);
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(a.is_gradient_accumulation_boundary(), k == 3);
      a.backward(a.forward([&] { return mse(ma->forward(x.slice(0, 2 * k, 2 * k + 2)), y.slice(0, 2 * k, 2 * k + 2)); }));
      if (k < 3) a.step();
    }
    b.backward(mse(mb->forward(x), y));
    // The accumulated gradient is the average over micro-batches: the large batch's gradient.
    auto gb = mb->named_parameters();
    for (auto& item : ma->named_parameters()) {
      EXPECT_LE(ds::test::rel_error(item.value().grad(), gb[item.key()].grad()), 1e-6) << item.key();
    }
    a.step();
    b.step();
    EXPECT_NEAR(a.last_grad_norm(), b.last_grad_norm(), 1e-6 * b.last_grad_norm());
  }
  EXPECT_EQ(a.global_steps(), 3);
  EXPECT_EQ(a.micro_steps(), 12);
  EXPECT_EQ(a.global_samples(), 24);
  EXPECT_EQ(b.global_samples(), 24);
  auto pb = mb->named_parameters();
  for (auto& item : ma->named_parameters()) EXPECT_LE(max_abs_diff(item.value(), pb[item.key()]), 1e-6) << item.key();
}

ds::DeepSpeedConfig fp16_config(int scale_power, int hysteresis) {
  auto c = ds::test::config(4, 1);
  c.fp16.enabled = true;
  c.fp16.loss_scale = 0;
  c.fp16.initial_scale_power = scale_power;
  c.fp16.hysteresis = hysteresis;
  c.fp16.loss_scale_window = 1000;
  c.fp16.dynamic_args_given = true;
  c.scheduler.present = true;
  c.scheduler.type = ds::SchedulerType::WarmupLR;
  c.scheduler.warmup_type = "linear";
  c.scheduler.warmup_num_steps = 10;
  c.scheduler.warmup_min_lr = {0.0};
  c.scheduler.warmup_max_lr = {0.01};
  return c;
}

struct Snapshot {
  std::vector<torch::Tensor> tensors;
  explicit Snapshot(ds::Engine& e) {
    for (const auto& p : e.module().parameters()) tensors.push_back(p.detach().clone());
    auto& groups = e.optimizer().param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t i = 0; i < groups[g].params.size(); ++i) {
        tensors.push_back(groups[g].params[i].clone());
        tensors.push_back(e.optimizer().exp_avg(g, i).clone());
        tensors.push_back(e.optimizer().exp_avg_sq(g, i).clone());
      }
    }
  }
  bool operator==(const Snapshot& o) const {
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (!torch::equal(tensors[i], o.tensors[i])) return false;
    }
    return true;
  }
};

// One optimizer step of the elementwise fp16 model; `poison` writes inf into w's gradient after
// backward (an overflow injected where the engine looks for it).
void fp16_step(ds::Engine& e, ds::test::Elementwise& m, int step, bool poison) {
  auto [x, y] = batch(step, 0, 4, 16, 16);
  e.backward(mse(m->forward(x.to(torch::kHalf)), y));
  if (poison) {
    torch::NoGradGuard g;
    m->w.grad()[3] = std::numeric_limits<float>::infinity();
  }
  e.step();
}

TEST(Engine, Fp16OverflowSkipsTheStepAndLeavesWeightsUntouched) {
  torch::manual_seed(2);
  ds::test::Elementwise m(16);
  std::ostringstream log;
  auto opts = ds::test::quiet_cpu();
  opts.quiet = false;
  opts.log = &log;
  ds::Engine e(m, fp16_config(8, 1), opts);
  ASSERT_EQ(m->w.scalar_type(), torch::kHalf);
  ASSERT_EQ(e.master_weight("w").scalar_type(), torch::kFloat);
  fp16_step(e, m, 0, false);
  fp16_step(e, m, 1, false);
  ASSERT_EQ(e.skipped_steps(), 0);
  const Snapshot before(e);
  const double lr = e.get_lr()[0];
  const int64_t t = e.lr_scheduler()->last_batch_iteration();
  EXPECT_EQ(e.loss_scale(), 256.0);

  fp16_step(e, m, 2, /*poison=*/true);
  EXPECT_TRUE(e.last_step_skipped());
  EXPECT_EQ(e.skipped_steps(), 1);
  EXPECT_EQ(e.global_steps(), 3) << "a skipped step still counts (DeepSpeed)";
  EXPECT_EQ(e.loss_scale(), 128.0);
  EXPECT_TRUE(Snapshot(e) == before) << "weights, masters or optimizer state changed on a skipped step";
  EXPECT_EQ(e.get_lr()[0], lr) << "the schedule is not stepped on a skipped step";
  EXPECT_EQ(e.lr_scheduler()->last_batch_iteration(), t);
  EXPECT_FALSE(m->w.grad().defined()) << "gradients are cleared after a skipped step";
  EXPECT_NE(log.str().find("fp16 overflow: skipping step; loss scale 256 -> 128"), std::string::npos) << log.str();

  fp16_step(e, m, 3, false);
  EXPECT_FALSE(e.last_step_skipped());
  EXPECT_FALSE(Snapshot(e) == before);
  EXPECT_EQ(e.lr_scheduler()->last_batch_iteration(), t + 1);
  EXPECT_TRUE(torch::equal(m->w, e.master_weight("w").to(torch::kHalf))) << "model weights are the rounded masters";
}

TEST(Engine, Fp16HysteresisDelaysTheScaleReduction) {
  torch::manual_seed(3);
  ds::test::Elementwise m(16);
  ds::Engine e(m, fp16_config(8, 2), ds::test::quiet_cpu());
  fp16_step(e, m, 0, true);
  EXPECT_EQ(e.skipped_steps(), 1);
  EXPECT_EQ(e.loss_scale(), 256.0) << "first overflow is absorbed by hysteresis 2";
  fp16_step(e, m, 1, false);
  fp16_step(e, m, 2, true);
  EXPECT_EQ(e.skipped_steps(), 2);
  EXPECT_EQ(e.loss_scale(), 128.0);
}

TEST(Engine, Fp16DynamicScaleComesDownFromAnOverflowingStartAndTrains) {
  torch::manual_seed(4);
  ds::test::Elementwise m(16);
  auto c = fp16_config(40, 1);  // 2^40: every fp16 gradient overflows at first
  c.scheduler.present = false;
  ds::Engine e(m, c, ds::test::quiet_cpu());
  std::vector<double> losses;
  for (int s = 0; s < 60; ++s) {
    auto [x, y] = batch(0, 0, 4, 16, 16);  // one fixed batch: the loss must fall once steps apply
    auto loss = mse(m->forward(x.to(torch::kHalf)), y);
    losses.push_back(loss.item<double>());
    e.backward(loss);
    e.step();
  }
  EXPECT_GE(e.skipped_steps(), 20);
  EXPECT_LE(e.loss_scale(), 65536.0);
  EXPECT_LT(losses.back(), 0.9 * losses[e.skipped_steps()]);
  EXPECT_TRUE(torch::equal(m->v, e.master_weight("v").to(torch::kHalf)));
}

TEST(Engine, Bf16AccumulatesGradientsInFp32) {
  ds::test::Elementwise m(1);
  {
    torch::NoGradGuard g;
    m->w.fill_(1);
    m->b.fill_(0);
    m->v.fill_(1);
  }
  auto c = ds::test::config(1, 2);
  c.bf16.enabled = true;
  auto opts = ds::test::quiet_cpu();
  opts.param_groups = {ds::ParamGroupSpec{{"w"}, {}, {}}};
  ds::Engine e(m, c, opts);
  EXPECT_EQ(m->w.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(e.loss_scale(), 1.0);
  for (float x : {256.f, 1.f}) {
    auto in = torch::full({1, 1}, x).to(torch::kBFloat16);
    e.backward(m->forward(in).to(torch::kFloat).sum());
    e.step();
  }
  // Micro-gradients 256 / 2 and 1 / 2 (loss / gradient_accumulation_steps): their sum 128.5 has no
  // bf16 representation (bf16 holds 128 or 129 there); an fp32 accumulator keeps it.
  EXPECT_EQ(e.last_grad_norm(), 128.5);
  EXPECT_EQ(e.master_weight("w").scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(m->w, e.master_weight("w").to(torch::kBFloat16)));
}

TEST(Engine, ClippingUsesTheGlobalNormOfTheUnscaledGradients) {
  for (bool fp16 : {false, true}) {
    torch::manual_seed(5);
    ds::test::Elementwise m(16), ref(16);
    copy_params(*m, *ref);
    auto c = fp16 ? fp16_config(10, 1) : ds::test::config(4, 1);
    c.scheduler.present = false;
    c.gradient_clipping = 0.01;
    c.optimizer.eps = 1.0;  // Adam's update ~ g / (|g| + 1): the clip factor shows in the weights
    ds::Engine e(m, c, ds::test::quiet_cpu());
    auto [x, y] = batch(0, 0, 4, 16, 16);
    std::map<std::string, torch::Tensor> initial;  // fp32: the masters start from these
    for (auto& item : ref->named_parameters()) initial[item.key()] = item.value().detach().clone();
    // fp32 reference: the same forward on float weights (the fp16 run's weights are their rounding).
    if (fp16) {
      torch::NoGradGuard g;
      for (auto& p : ref->parameters()) p.copy_(p.to(torch::kHalf));
    }
    const auto xin = fp16 ? x.to(torch::kHalf).to(torch::kFloat) : x;
    mse(ref->forward(xin), y).backward();
    double sq = 0;
    for (auto& p : ref->parameters()) sq += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
    const double norm = std::sqrt(sq);
    ASSERT_GT(norm, 0.01) << "the test needs clipping to be active";

    e.backward(mse(m->forward(fp16 ? x.to(torch::kHalf) : x), y));
    e.step();
    ASSERT_FALSE(e.last_step_skipped());
    // fp16 gradients carry fp16 rounding (relative 2^-11 per value, a few roundings in backward).
    EXPECT_NEAR(e.last_grad_norm(), norm, (fp16 ? 4e-3 : 1e-6) * norm) << (fp16 ? "fp16" : "fp32");

    // Same update from a standalone Adam fed the clipped reference gradients.
    std::vector<ds::OptimParamGroup> groups(1);
    std::vector<torch::Tensor> grads;
    for (auto& item : ref->named_parameters()) {
      groups[0].params.push_back(initial[item.key()]);
      groups[0].names.push_back(item.key());
      grads.push_back(item.value().grad() * (0.01 / (norm + 1e-6)));
    }
    groups[0].lr = c.optimizer.lr;
    groups[0].eps = c.optimizer.eps;
    ds::Adam adam(groups, ds::AdamOptions{});
    adam.step({grads}, 1.0);
    for (size_t i = 0; i < groups[0].names.size(); ++i) {
      EXPECT_LE(max_abs_diff(e.master_weight(groups[0].names[i]), adam.param_groups()[0].params[i]), fp16 ? 1e-5 : 1e-7)
          << groups[0].names[i] << (fp16 ? " fp16" : " fp32");
    }
  }
}

TEST(Engine, DecayGroupsAndFrozenParameters) {
  torch::manual_seed(6);
  ds::test::TinyMLP m(6, 8, 3, 0.0);
  auto groups = ds::decay_param_groups(*m, 0.01, {"bias"}, {"fc2"});
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].names, std::vector<std::string>({"fc1.weight"}));
  EXPECT_EQ(groups[1].names, std::vector<std::string>({"fc1.bias"}));
  auto opts = ds::test::quiet_cpu();
  opts.param_groups = groups;
  opts.param_groups[1].lr = 0.5;
  ds::Engine e(m, ds::test::config(4, 1), opts);
  EXPECT_EQ(e.optimizer().param_groups()[0].weight_decay, 0.01);
  EXPECT_EQ(e.optimizer().param_groups()[1].weight_decay, 0.0);
  EXPECT_EQ(e.get_lr(), std::vector<double>({0.01, 0.5}));
  const auto fc2 = m->fc2->weight.detach().clone();
  const auto fc1 = m->fc1->weight.detach().clone();
  auto [x, y] = batch(0, 0, 4, 6, 3);
  e.backward(mse(m->forward(x), y));
  e.step();
  EXPECT_TRUE(torch::equal(m->fc2->weight, fc2)) << "parameters in no group are not optimized";
  EXPECT_FALSE(torch::equal(m->fc1->weight, fc1));
  EXPECT_FALSE(m->fc2->weight.grad().defined()) << "but their gradients are cleared";
}

TEST(Engine, LogsEveryStepsPerPrintWithPhaseTimes) {
  torch::manual_seed(7);
  ds::test::TinyMLP m(6, 8, 3, 0.0);
  auto c = ds::test::config(2, 2);
  c.steps_per_print = 2;
  c.wall_clock_breakdown = true;
  std::ostringstream log;
  auto opts = ds::test::quiet_cpu();
  opts.quiet = false;
  opts.log = &log;
  ds::Engine e(m, c, opts);
  for (int s = 0; s < 5; ++s) {
    for (int k = 0; k < 2; ++k) {
      auto [x, y] = batch(s, k, 2, 6, 3);
      e.backward(e.forward([&] { return mse(m->forward(x), y); }));
      e.step();
    }
  }
  const std::string out = log.str();
  EXPECT_NE(out.find("step=2, skipped=0, loss="), std::string::npos) << out;
  EXPECT_NE(out.find("step=4, skipped=0, loss="), std::string::npos) << out;
  EXPECT_EQ(out.find("step=5"), std::string::npos) << out;
  EXPECT_EQ(out.find("step=1,"), std::string::npos) << out;
  EXPECT_NE(out.find("lr=[0.01], loss_scale=1, samples/s="), std::string::npos) << out;
  for (const char* phase : {"forward: ", "| backward: ", "| allreduce: ", "| step: "}) {
    EXPECT_NE(out.find(phase), std::string::npos) << phase << " missing in\n" << out;
  }
  EXPECT_GT(e.timers().total_ms(ds::Phase::Forward), 0.0);
}

std::vector<std::vector<std::string>> read_csv(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    rows.emplace_back();
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) rows.back().push_back(cell);
  }
  return rows;
}

TEST(Engine, CsvMonitorAndTensorboardSectionsWriteCsvFiles) {
  ds::test::TempDir dir("ds_engine_csv");
  torch::manual_seed(8);
  ds::test::TinyMLP m(6, 8, 3, 0.0);
  auto c = ds::test::config(2, 1);
  c.steps_per_print = 2;
  c.csv_monitor.enabled = true;
  c.csv_monitor.output_path = dir.str() + "/csv";
  c.csv_monitor.job_name = "job";
  c.tensorboard.enabled = true;
  c.tensorboard.output_path = dir.str() + "/tb";
  c.tensorboard.job_name = "tbjob";
  std::vector<double> losses;
  {
    ds::Engine e(m, c, ds::test::quiet_cpu());
    for (int s = 0; s < 4; ++s) {
      auto [x, y] = batch(s, 0, 2, 6, 3);
      auto loss = mse(m->forward(x), y);
      losses.push_back(loss.item<double>());
      e.backward(loss);
      e.step();
    }
  }
  for (const std::string sub : {"/csv/job", "/tb/tbjob"}) {
    const auto loss = read_csv(dir.str() + sub + "/Train_Samples_train_loss.csv");
    ASSERT_EQ(loss.size(), 5u) << sub;
    EXPECT_EQ(loss[0], std::vector<std::string>({"step", "train_loss"}));
    for (int s = 0; s < 4; ++s) {
      EXPECT_EQ(loss[s + 1][0], std::to_string(2 * (s + 1))) << "keyed by the global sample count";
      EXPECT_NEAR(std::stod(loss[s + 1][1]), losses[s], 1e-6 * losses[s]);
    }
    const auto lr = read_csv(dir.str() + sub + "/Train_Samples_lr.csv");
    ASSERT_EQ(lr.size(), 5u);
    EXPECT_EQ(std::stod(lr[4][1]), 0.01);
    EXPECT_EQ(read_csv(dir.str() + sub + "/Train_Samples_loss_scale.csv").size(), 5u);
    EXPECT_EQ(read_csv(dir.str() + sub + "/Train_Samples_skipped_steps.csv").size(), 5u);
    EXPECT_EQ(read_csv(dir.str() + sub + "/Train_Samples_samples_per_sec.csv").size(), 3u) << "one row per print";
  }
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Engine, ConfigAndModelErrorsAreClear) {
  ds::test::TinyMLP m(6, 8, 3, 0.0);
  auto opts = ds::test::quiet_cpu();
  auto c = ds::test::config(2, 2);
  c.optimizer.present = false;
  expect_error([&] { ds::Engine e(m, c, opts); }, "no \"optimizer\" section");
  c = ds::test::config(2, 2);
  c.fp16.enabled = c.bf16.enabled = true;
  expect_error([&] { ds::Engine e(m, c, opts); }, "both true");
  c = ds::test::config(2, 2, ds::OptimizerType::Lamb);
  c.fp16.enabled = true;
  c.fp16.loss_scale = 128;
  expect_error([&] { ds::Engine e(m, c, opts); }, "requires dynamic loss scaling");
  c = ds::test::config(2, 2);
  c.train_batch_size = 5;
  expect_error([&] { ds::Engine e(m, c, opts); }, "train_batch_size 5 != micro 2 x accumulation 2 x world 1");
  c = ds::test::config(2, 2);
  c.world_size = 2;
  expect_error([&] { ds::Engine e(m, c, opts); }, "resolved for world size 2");
  c = ds::test::config(2, 2);
  auto o2 = opts;
  o2.param_groups = {ds::ParamGroupSpec{{"fc1.weight", "fc9.bias"}, {}, {}}};
  expect_error([&] { ds::Engine e(m, c, o2); }, "'fc9.bias', which the module does not have");
  o2.param_groups = {ds::ParamGroupSpec{{"fc1.weight"}, {}, {}}, ds::ParamGroupSpec{{"fc1.weight"}, {}, {}}};
  expect_error([&] { ds::Engine e(m, c, o2); }, "more than one parameter group");
  ds::test::TinyMLP d(6, 8, 3, 0.0);
  d->to(torch::kDouble);
  expect_error([&] { ds::Engine e(d, c, opts); }, "build the model in float32");
  ds::Engine ok(m, c, opts);
  expect_error([&] { ok.backward(torch::ones({2}, torch::requires_grad())); }, "one element");
  expect_error([&] { ok.backward(torch::ones({})); }, "does not require grad");
}

TEST(Engine, BuildsFromAConfigFileText) {
  const char* json = R"({
    "train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
    "steps_per_print": 1000,
    "optimizer": {"type": "Lamb", "params": {"lr": 0.002, "weight_decay": 0.01, "max_coeff": 0.3}},
    "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0001, "warmup_max_lr": 0.002, "warmup_num_steps": 10}},
    "fp16": {"enabled": false},
    "gradient_clipping": 1.0
  })";
  const ds::DeepSpeedConfig c = ds::load_config_text(json);
  ds::test::TinyMLP m(6, 8, 3, 0.0);
  ds::Engine e(m, c, ds::test::quiet_cpu());
  EXPECT_EQ(c.gradient_accumulation_steps, 4);
  EXPECT_STREQ(e.optimizer().name(), "Lamb");
  EXPECT_EQ(dynamic_cast<ds::Lamb&>(e.optimizer()).options().max_coeff, 0.3);
  EXPECT_EQ(e.get_lr()[0], 0.0001) << "WarmupLR writes warmup_min_lr at construction";
  for (int k = 0; k < 4; ++k) {
    auto [x, y] = batch(0, k, 2, 6, 3);
    e.backward(mse(m->forward(x), y));
    e.step();
  }
  EXPECT_EQ(e.global_steps(), 1);
  EXPECT_EQ(e.lr_scheduler()->last_batch_iteration(), 0);
  EXPECT_EQ(dynamic_cast<ds::Lamb&>(e.optimizer()).lamb_coeffs().size(), 4u);
}

}  // namespace

namespace {

TEST(Engine, BuildsFromEveryRecipeConfig) {
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(DS_CONFIGS_DIR)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("ds_", 0) != 0 || entry.path().extension() != ".json") continue;
    ++seen;
    SCOPED_TRACE(name);
    const ds::DeepSpeedConfig c = ds::load_config(entry.path().string());
    ds::test::TinyMLP m(6, 8, 3, 0.0);
    ds::Engine e(m, c, ds::test::quiet_cpu());
    EXPECT_EQ(e.model_dtype(), c.fp16.enabled ? torch::kHalf : c.bf16.enabled ? torch::kBFloat16 : torch::kFloat);
    EXPECT_EQ(e.loss_scale(), c.fp16.dynamic() ? std::ldexp(1.0, c.fp16.initial_scale_power) : 1.0);
    EXPECT_EQ(e.get_lr()[0], c.optimizer.lr);  // the recipe configs carry no scheduler section
    EXPECT_EQ(e.is_gradient_accumulation_boundary(), c.gradient_accumulation_steps == 1);
  }
  EXPECT_GE(seen, 5);
}

}  // namespace
