// DataParallelReducer at world size 1 (self communicator): bucket layout, the hook path, gradient
// accumulation (also bf16's fp32 accumulators), unused parameters. At world size 1 the all-reduce is
// the identity and averaging multiplies by 1 (or by a power of two and back), so training must be
// bitwise identical to the Engine's single-process path.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <tuple>

#include "engine/comm/communicator.h"
#include "engine/comm/data_parallel_reducer.h"
#include "tests/common/test_utils.h"
#include "tests/engine_dp/dp_test_util.h"

namespace {

using ds::test::batch;
using ds::test::mse;

std::shared_ptr<ds::DataParallelReducer> self_reducer(ds::DataParallelOptions o = {}) {
  return std::make_shared<ds::DataParallelReducer>(ds::make_self_communicator(at::Device(at::kCPU)), o);
}

torch::Tensor leaf(std::vector<int64_t> shape, torch::ScalarType t = torch::kFloat) {
  return torch::zeros(shape, torch::TensorOptions().dtype(t)).requires_grad_(true);
}

TEST(DataParallelBuckets, ReverseOrderSmallFirstBucketThenCap) {
  ds::DataParallelOptions o;
  o.first_bucket_cap_mb = 4096.0 / (1024 * 1024);   // 1024 floats
  o.bucket_cap_mb = 1.0;                             // 262144 floats
  auto r = self_reducer(o);
  std::vector<torch::Tensor> params{leaf({1000}), leaf({10}), leaf({300000}), leaf({5, 10}), leaf({2000})};
  r->begin_backward(false, params);
  const auto layout = r->bucket_layout();
  ASSERT_EQ(layout.size(), 4u);
  // The last parameter opens the first bucket alone (over the small cap); the 50-element one does
  // not fit after it; 300000 floats exceed 1 MB alone; the first two parameters share the last bucket.
  EXPECT_EQ(layout[0].params, (std::vector<size_t>{4}));
  EXPECT_EQ(layout[1].params, (std::vector<size_t>{3}));
  EXPECT_EQ(layout[2].params, (std::vector<size_t>{2}));
  EXPECT_EQ(layout[3].params, (std::vector<size_t>{1, 0}));
  EXPECT_EQ(layout[3].numel, 1010);
  for (const auto& b : layout) EXPECT_EQ(b.wire_dtype, torch::kFloat);
}

TEST(DataParallelBuckets, WireDtypeChangesStartNewBucketsAndBf16UsesFloatAccumulators) {
  auto r = self_reducer();
  std::vector<torch::Tensor> params{leaf({3}), leaf({4}, torch::kHalf), leaf({5}), leaf({6}, torch::kBFloat16)};
  r->begin_backward(false, params);
  const auto layout = r->bucket_layout();
  ASSERT_EQ(layout.size(), 3u);
  EXPECT_EQ(layout[0].params, (std::vector<size_t>{3, 2}));   // bf16 grads travel as their fp32 accumulators
  EXPECT_EQ(layout[0].wire_dtype, torch::kFloat);
  EXPECT_EQ(layout[1].params, (std::vector<size_t>{1}));
  EXPECT_EQ(layout[1].wire_dtype, torch::kHalf);
  EXPECT_EQ(layout[2].params, (std::vector<size_t>{0}));

  ds::DataParallelOptions fp16_wire;
  fp16_wire.wire_dtype = torch::kHalf;
  auto r16 = self_reducer(fp16_wire);
  r16->begin_backward(false, params);
  ASSERT_EQ(r16->bucket_layout().size(), 1u);
  EXPECT_EQ(r16->bucket_layout()[0].wire_dtype, torch::kHalf);
}

TEST(DataParallelBuckets, OptionsFromConfig) {
  ds::DeepSpeedConfig c;
  c.data_parallel.bucket_cap_mb = 7;
  c.data_parallel.first_bucket_cap_mb = 0.5;
  c.data_parallel.overlap_comm = false;
  c.prescale_gradients = true;
  c.gradient_predivide_factor = 4;
  auto o = ds::DataParallelOptions::from_config(c);
  EXPECT_EQ(o.bucket_cap_mb, 7);
  EXPECT_EQ(o.first_bucket_cap_mb, 0.5);
  EXPECT_FALSE(o.overlap_comm);
  EXPECT_TRUE(o.prescale_gradients);
  EXPECT_EQ(o.gradient_predivide_factor, 4);
  EXPECT_FALSE(o.wire_dtype.has_value());
  c.fp32_allreduce = true;
  EXPECT_EQ(ds::DataParallelOptions::from_config(c).wire_dtype, torch::kFloat);
  c.communication_data_type = ds::DType::BF16;   // wins over fp32_allreduce
  EXPECT_EQ(ds::DataParallelOptions::from_config(c).wire_dtype, torch::kBFloat16);
  ds::DataParallelOptions bad;
  bad.gradient_predivide_factor = 0;
  EXPECT_THROW(self_reducer(bad), std::invalid_argument);
}

TEST(DataParallelReducer, MissingGradientsBecomeZerosOfTheGradientDtype) {
  auto r = self_reducer();
  std::vector<torch::Tensor> params{leaf({2, 3}), leaf({4}, torch::kBFloat16)};
  r->begin_backward(true, params);
  std::vector<torch::Tensor> grads{torch::ones({2, 3}), torch::Tensor()};
  r->end_backward(true, grads);
  ASSERT_TRUE(grads[1].defined());
  EXPECT_EQ(grads[1].scalar_type(), torch::kFloat);
  EXPECT_EQ(grads[1].sizes(), torch::IntArrayRef({4}));
  EXPECT_EQ(grads[1].abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(grads[0], torch::ones({2, 3})));
}

TEST(DataParallelReducer, HooksOutliveTheReducerHarmlessly) {
  torch::manual_seed(3);
  torch::nn::Linear lin(4, 2);
  std::vector<torch::Tensor> params = lin->parameters();
  {
    auto r = self_reducer();
    r->begin_backward(true, params);   // registers the hooks
  }
  auto x = torch::randn({3, 4});
  lin->forward(x).sum().backward();
  EXPECT_TRUE(lin->weight.grad().defined());
  EXPECT_NEAR(lin->bias.grad().sum().item<double>(), 6.0, 1e-6);
}

TEST(DataParallelReducer, TwoBackwardsInOneBoundaryMicroStepAreAnError) {
  torch::nn::Linear lin(4, 2);
  std::vector<torch::Tensor> params = lin->parameters();
  auto r = self_reducer();
  r->begin_backward(true, params);
  auto loss = lin->forward(torch::randn({3, 4})).sum();
  loss.backward({}, /*retain_graph=*/true);
  try {
    loss.backward();
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("arrived twice in one backward"), std::string::npos) << e.what();
  }
}

// (model dtype, gradient accumulation steps, overlap, tiny buckets, predivide factor)
using TrainCase = std::tuple<torch::ScalarType, int, bool, bool, double>;
class DataParallelWorldOne : public ::testing::TestWithParam<TrainCase> {};

TEST_P(DataParallelWorldOne, TrainsBitwiseLikeTheSingleProcessEngine) {
  const auto [dtype, gas, overlap, tiny, predivide] = GetParam();
  torch::manual_seed(11);
  const bool fp16 = dtype == torch::kHalf;
  // fp16 on the CPU: LibTorch 1.13 has no fp16 matmul there, the elementwise model trains.
  ds::test::TinyMLP ma(6, 16, 3, 0.0), mb(6, 16, 3, 0.0);
  ds::test::Elementwise ea(3), eb(3);
  torch::nn::Module& a_mod = fp16 ? static_cast<torch::nn::Module&>(*ea) : *ma;
  torch::nn::Module& b_mod = fp16 ? static_cast<torch::nn::Module&>(*eb) : *mb;
  {
    torch::NoGradGuard g;
    auto src = a_mod.named_parameters();
    for (auto& item : b_mod.named_parameters()) item.value().copy_(src[item.key()]);
  }
  auto cfg = ds::test::dp_config(/*micro=*/4, gas, /*world=*/1);
  cfg.fp16.enabled = fp16;
  cfg.fp16.initial_scale_power = 8;
  cfg.fp16.dynamic_args_given = true;
  cfg.bf16.enabled = dtype == torch::kBFloat16;
  ds::DataParallelOptions o;
  o.overlap_comm = overlap;
  o.gradient_predivide_factor = predivide;
  if (tiny) o.bucket_cap_mb = o.first_bucket_cap_mb = 1e-5;   // one parameter per bucket
  auto reducer = self_reducer(o);
  auto a_ptr = fp16 ? std::static_pointer_cast<torch::nn::Module>(ea.ptr()) : std::static_pointer_cast<torch::nn::Module>(ma.ptr());
  auto b_ptr = fp16 ? std::static_pointer_cast<torch::nn::Module>(eb.ptr()) : std::static_pointer_cast<torch::nn::Module>(mb.ptr());
  ds::Engine a(a_ptr, cfg, ds::test::cpu_options(reducer));
  ds::Engine b(b_ptr, cfg, ds::test::quiet_cpu());
  auto fwd = [&](bool is_a, const torch::Tensor& x) {
    ds::Engine& e = is_a ? a : b;
    const torch::Tensor xi = x.to(e.model_dtype());
    if (fp16) return is_a ? ea->forward(xi) : eb->forward(xi);
    return is_a ? ma->forward(xi) : mb->forward(xi);
  };
  for (int step = 0; step < 4; ++step) {
    for (int k = 0; k < gas; ++k) {
      auto [x, y] = batch(step, k, 4, fp16 ? 3 : 6, 3);
      a.backward(a.forward([&] { return mse(fwd(true, x), y); }));
      b.backward(b.forward([&] { return mse(fwd(false, x), y); }));
      a.step();
      b.step();
    }
    EXPECT_EQ(a.last_grad_norm(), b.last_grad_norm()) << "step " << step;
    if (overlap && tiny) {
      EXPECT_GT(reducer->buckets_started_in_backward(), 0) << "no bucket started inside backward";
    }
    if (!overlap) {
      EXPECT_EQ(reducer->buckets_started_in_backward(), 0);
    }
  }
  for (const auto& [name, w] : ds::test::named_masters(a)) {
    EXPECT_TRUE(torch::equal(w, b.master_weight(name))) << name << " differs by "
                                                        << ds::test::max_abs_diff(w, b.master_weight(name));
  }
  EXPECT_EQ(a.skipped_steps(), b.skipped_steps());
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DataParallelWorldOne,
    ::testing::Values(TrainCase{torch::kFloat, 1, true, true, 1.0}, TrainCase{torch::kFloat, 3, true, true, 1.0},
                      TrainCase{torch::kFloat, 3, false, false, 1.0}, TrainCase{torch::kFloat, 2, true, false, 2.0},
                      TrainCase{torch::kBFloat16, 3, true, true, 1.0}, TrainCase{torch::kBFloat16, 2, false, true, 1.0},
                      TrainCase{torch::kHalf, 2, true, true, 1.0}, TrainCase{torch::kHalf, 1, false, false, 4.0}));

}  // namespace
