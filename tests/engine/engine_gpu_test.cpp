// The Engine on a CUDA device: a small model trains in fp16 (dynamic loss scaling) and bf16 with the
// fused optimizer kernels, fp32 training matches the CPU engine, and checkpoints round-trip.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "engine/engine.h"
#include "tests/common/crash_backtrace.h"
#include "tests/common/test_utils.h"
#include "tests/engine/engine_test_util.h"

namespace {

using ds::test::batch;
using ds::test::mse;

ds::EngineOptions on_cuda() {
  ds::EngineOptions o;
  o.device = at::Device(at::kCUDA, 0);
  o.quiet = true;
  return o;
}

// Fixed batch, 40 steps: the loss must drop well below its start in every precision.
void expect_trains(ds::DeepSpeedConfig c, torch::ScalarType dt, const std::string& label) {
  torch::manual_seed(1);
  ds::test::TinyMLP m(64, 256, 32, 0.0);
  c.gradient_clipping = 1.0;
  ds::Engine e(m, c, on_cuda());
  auto [x, y] = batch(0, 0, 16, 64, 32);
  x = x.to(torch::kCUDA, dt);
  y = y.to(torch::kCUDA);
  double first = 0, last = 0;
  for (int s = 0; s < 40; ++s) {
    auto loss = mse(m->forward(x), y);
    if (s == 0) first = loss.item<double>();
    last = loss.item<double>();
    e.backward(loss);
    e.step();
  }
  EXPECT_LT(last, 0.5 * first) << label << ": " << first << " -> " << last << " (skipped " << e.skipped_steps() << ")";
  EXPECT_EQ(m->fc1->weight.scalar_type(), dt) << label;
  EXPECT_TRUE(m->fc1->weight.is_cuda()) << label;
  EXPECT_TRUE(torch::equal(m->fc1->weight, e.master_weight("fc1.weight").to(dt))) << label;
}

TEST(EngineCUDA, SmallModelTrainsInFp16AndBf16WithFusedOptimizers) {
  DS_REQUIRE_CUDA();
  for (auto type : {ds::OptimizerType::Adam, ds::OptimizerType::Lamb}) {
    // Lamb moves each tensor by about lr of its norm per step: it needs a larger lr to fit in 40 steps
    // (bf16 on the CPU: Adam 1e-2 reaches 0.3% of the first loss, Lamb 5e-2 6%).
    const double lr = type == ds::OptimizerType::Lamb ? 5e-2 : 1e-2;
    auto c = ds::test::config(16, 1, type, lr);
    c.fp16.enabled = true;
    expect_trains(c, torch::kHalf, type == ds::OptimizerType::Lamb ? "fp16 Lamb" : "fp16 Adam");
    c = ds::test::config(16, 1, type, lr);
    c.bf16.enabled = true;
    expect_trains(c, torch::kBFloat16, type == ds::OptimizerType::Lamb ? "bf16 Lamb" : "bf16 Adam");
  }
}

TEST(EngineCUDA, Fp32MatchesTheCpuEngine) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(2);
  ds::test::TinyMLP cpu(6, 16, 3, 0.0), gpu(6, 16, 3, 0.0);
  {
    torch::NoGradGuard g;
    auto src = cpu->named_parameters();
    for (auto& item : gpu->named_parameters()) item.value().copy_(src[item.key()]);
  }
  auto c = ds::test::config(4, 2, ds::OptimizerType::Lamb);
  c.gradient_clipping = 0.1;
  ds::Engine ec(cpu, c, ds::test::quiet_cpu()), eg(gpu, c, on_cuda());
  for (int s = 0; s < 3; ++s) {
    for (int k = 0; k < 2; ++k) {
      auto [x, y] = batch(s, k, 4, 6, 3);
      ec.backward(mse(cpu->forward(x), y));
      eg.backward(mse(gpu->forward(x.cuda()), y.cuda()));
      ec.step();
      eg.step();
    }
  }
  EXPECT_NEAR(eg.last_grad_norm(), ec.last_grad_norm(), 1e-5 * ec.last_grad_norm());
  auto pc = cpu->named_parameters();
  for (auto& item : gpu->named_parameters()) {
    EXPECT_LE(ds::test::max_abs_diff(item.value(), pc[item.key()]), 1e-5) << item.key();
  }
}

TEST(EngineCUDA, CheckpointRoundTripOnTheDevice) {
  DS_REQUIRE_CUDA();
  ds::test::TempDir dir("ds_engine_gpu_ckpt");
  auto c = ds::test::config(4, 1);
  c.fp16.enabled = true;
  torch::manual_seed(3);
  ds::test::TinyMLP a(6, 16, 3, 0.1);
  ds::Engine ea(a, c, on_cuda());
  for (int s = 0; s < 3; ++s) {
    auto [x, y] = batch(s, 0, 4, 6, 3);
    ea.backward(mse(a->forward(x.to(torch::kCUDA, torch::kHalf)), y.cuda()));
    ea.step();
  }
  ea.save_checkpoint(dir.str());
  torch::manual_seed(4);
  ds::test::TinyMLP b(6, 16, 3, 0.1);
  ds::Engine eb(b, c, on_cuda());
  eb.load_checkpoint(dir.str());
  EXPECT_EQ(eb.global_steps(), 3);
  EXPECT_EQ(eb.loss_scale(), ea.loss_scale());
  auto pa = a->named_parameters();
  for (auto& item : b->named_parameters()) {
    EXPECT_TRUE(item.value().is_cuda());
    EXPECT_TRUE(torch::equal(item.value(), pa[item.key()])) << item.key();
  }
  EXPECT_TRUE(torch::equal(eb.master_weight("fc1.weight"), ea.master_weight("fc1.weight")));
}

}  // namespace
