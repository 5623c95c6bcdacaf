// CPU reference loops of the fused optimizer ops against float64 hand computations.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

#include "ops/optim/fused_optim.h"
#include "tests/common/test_utils.h"
#include "tests/ops_optim/optim_reference.h"

namespace {

using ds::test::max_abs_diff;
using ds::test::RefAdam;
using ds::test::RefLamb;

// Awkward sizes: one element, odd lengths, head-size-like 40, and more than one 64 Ki chunk.
const std::vector<std::vector<int64_t>> kShapes = {{1}, {97}, {3, 40}, {70001}};
constexpr int kSteps = 5;
constexpr double kU32 = 6.0e-8;  // float32 unit roundoff

struct Lists {
  std::vector<torch::Tensor> p, m, v, copies;
  std::vector<torch::Tensor> p64, m64, v64;
};

Lists make_lists(torch::Generator& gen, torch::ScalarType copy_dtype, bool with_copies) {
  Lists l;
  for (const auto& s : kShapes) {
    auto p = torch::randn(s, gen, torch::kFloat);
    l.p.push_back(p);
    l.m.push_back(torch::zeros_like(p));
    l.v.push_back(torch::zeros_like(p));
    if (with_copies) l.copies.push_back(torch::empty(s, copy_dtype));
    l.p64.push_back(p.to(torch::kFloat64));
    l.m64.push_back(torch::zeros(s, torch::kFloat64));
    l.v64.push_back(torch::zeros(s, torch::kFloat64));
  }
  return l;
}

// Each step's fp32 rounding perturbs a parameter by a few units of its magnitude plus its update;
// 16 roundings per step is a generous count for the ~10 operations of one update.
double tolerance(const Lists& l, double lr, int steps) {
  double pmax = 0;
  for (const auto& p : l.p64) pmax = std::max(pmax, p.abs().max().item<double>());
  return steps * 16 * kU32 * (pmax + 10 * lr);
}

class AdamCpu : public ::testing::TestWithParam<std::tuple<bool, bool, torch::ScalarType>> {};

TEST_P(AdamCpu, MatchesFloat64ReferenceOverSteps) {
  const auto [adam_w_mode, bias_correction, grad_dtype] = GetParam();
  auto gen = at::detail::createCPUGenerator(11);
  const bool copies = grad_dtype != torch::kFloat;
  Lists l = make_lists(gen, grad_dtype == torch::kBFloat16 ? torch::kBFloat16 : torch::kHalf, copies);
  ds::AdamStepArgs a;
  a.lr = 1e-2;
  a.beta1 = 0.9;
  a.beta2 = 0.99;
  a.eps = 1e-6;
  a.weight_decay = 0.05;
  a.adam_w_mode = adam_w_mode;
  a.bias_correction = bias_correction;
  a.grad_scale = 0.25;  // a loss scale of 4 being undone
  const RefAdam ref{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, bias_correction, adam_w_mode};
  for (int t = 1; t <= kSteps; ++t) {
    std::vector<torch::Tensor> g;
    for (const auto& p : l.p) g.push_back((4 * torch::randn(p.sizes(), gen, torch::kFloat)).to(grad_dtype));
    a.step = t;
    ds::fused_adam_step(g, l.p, l.m, l.v, l.copies, a);
    for (size_t i = 0; i < g.size(); ++i) ref.step(l.p64[i], l.m64[i], l.v64[i], g[i].to(torch::kFloat64) * 0.25, t);
  }
  const double tol = tolerance(l, a.lr, kSteps);
  for (size_t i = 0; i < l.p.size(); ++i) {
    EXPECT_LE(max_abs_diff(l.p[i], l.p64[i]), tol) << "param " << i;
    EXPECT_LE(ds::test::rel_error(l.m[i], l.m64[i]), 1e-6) << "exp_avg " << i;
    EXPECT_LE(ds::test::rel_error(l.v[i], l.v64[i]), 1e-6) << "exp_avg_sq " << i;
    // The update moved every parameter (the check is not vacuous).
    EXPECT_GT(max_abs_diff(l.p64[i], l.p64[i].clone().zero_()), 0.0);
    if (copies) {
      EXPECT_TRUE(torch::equal(l.copies[i], l.p[i].to(l.copies[i].scalar_type()))) << "model copy " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, AdamCpu,
                         ::testing::Values(std::make_tuple(true, true, torch::kFloat),
                                           std::make_tuple(false, true, torch::kFloat),
                                           std::make_tuple(true, false, torch::kFloat),
                                           std::make_tuple(true, true, torch::kHalf),
                                           std::make_tuple(false, true, torch::kBFloat16)));

class LambCpu : public ::testing::TestWithParam<std::tuple<bool, bool, torch::ScalarType>> {};

TEST_P(LambCpu, MatchesFloat64ReferenceOverSteps) {
  const auto [eps_inside_sqrt, bias_correction, grad_dtype] = GetParam();
  auto gen = at::detail::createCPUGenerator(12);
  const bool copies = grad_dtype != torch::kFloat;
  Lists l = make_lists(gen, grad_dtype == torch::kBFloat16 ? torch::kBFloat16 : torch::kHalf, copies);
  ds::LambStepArgs a;
  a.lr = 1e-2;
  a.beta1 = 0.9;
  a.beta2 = 0.999;
  a.eps = 1e-6;
  a.weight_decay = 0.01;
  a.eps_inside_sqrt = eps_inside_sqrt;
  a.bias_correction = bias_correction;
  a.grad_scale = 2.0;
  const RefLamb ref{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.max_coeff, a.min_coeff, bias_correction,
                    eps_inside_sqrt};
  for (int t = 1; t <= kSteps; ++t) {
    std::vector<torch::Tensor> g;
    for (const auto& p : l.p) g.push_back(torch::randn(p.sizes(), gen, torch::kFloat).to(grad_dtype));
    a.step = t;
    const torch::Tensor coeffs = ds::fused_lamb_step(g, l.p, l.m, l.v, l.copies, a);
    ASSERT_EQ(coeffs.numel(), static_cast<int64_t>(g.size()));
    for (size_t i = 0; i < g.size(); ++i) {
      const double c = ref.step(l.p64[i], l.m64[i], l.v64[i], g[i].to(torch::kFloat64) * 2.0, t);
      EXPECT_NEAR(coeffs[i].item<double>(), c, 1e-5 * c) << "trust ratio of param " << i << " at step " << t;
    }
  }
  const double tol = tolerance(l, a.lr, kSteps);
  for (size_t i = 0; i < l.p.size(); ++i) {
    EXPECT_LE(max_abs_diff(l.p[i], l.p64[i]), tol) << "param " << i;
    EXPECT_LE(ds::test::rel_error(l.m[i], l.m64[i]), 1e-6) << "exp_avg " << i;
    EXPECT_LE(ds::test::rel_error(l.v[i], l.v64[i]), 1e-6) << "exp_avg_sq " << i;
    if (copies) {
      EXPECT_TRUE(torch::equal(l.copies[i], l.p[i].to(l.copies[i].scalar_type()))) << "model copy " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, LambCpu,
                         ::testing::Values(std::make_tuple(false, true, torch::kFloat),
                                           std::make_tuple(true, true, torch::kFloat),
                                           std::make_tuple(false, false, torch::kFloat),
                                           std::make_tuple(false, true, torch::kHalf),
                                           std::make_tuple(true, true, torch::kBFloat16)));

TEST(LambCpu, TrustRatioIsClampedAndOneForZeroNorms) {
  ds::LambStepArgs a;  // DeepSpeed defaults: max_coeff 10, min_coeff 0.01
  auto run = [&](torch::Tensor p) {
    std::vector<torch::Tensor> g{torch::linspace(-1, 1, p.numel())}, ps{p}, m{torch::zeros_like(p)},
        v{torch::zeros_like(p)};
    return ds::fused_lamb_step(g, ps, m, v, {}, a)[0].item<double>();
  };
  // ||p|| = 3162 against ||u|| ~ 10: ratio ~ 316 -> max_coeff.
  EXPECT_DOUBLE_EQ(run(torch::full({10}, 1000.f)), 10.0);
  // ||p|| ~ 3e-6 against ||u|| ~ 10: ratio ~ 3e-7 -> min_coeff.
  EXPECT_NEAR(run(torch::full({10}, 1e-6f)), 0.01, 1e-9);
  // ||p|| == 0: DeepSpeed uses 1.
  EXPECT_DOUBLE_EQ(run(torch::zeros({10})), 1.0);
}

TEST(LambCpu, NormsDoNotDependOnThreadCount) {
  auto gen = at::detail::createCPUGenerator(3);
  const auto p0 = torch::randn({200000}, gen, torch::kFloat);
  const auto g = torch::randn({200000}, gen, torch::kFloat);
  const int threads = at::get_num_threads();
  std::vector<torch::Tensor> results;
  for (int n : {1, 2}) {
    at::set_num_threads(n);
    std::vector<torch::Tensor> p{p0.clone()}, m{torch::zeros_like(p0)}, v{torch::zeros_like(p0)};
    ds::fused_lamb_step({g}, p, m, v, {}, ds::LambStepArgs{});
    results.push_back(p[0]);
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(results[0], results[1]));
}

TEST(GradStatsCpu, SumOfSquaresAndNonFiniteCountOverMixedDtypes) {
  auto gen = at::detail::createCPUGenerator(4);
  const auto a = torch::randn({70001}, gen, torch::kFloat);
  const auto b = torch::randn({97}, gen, torch::kFloat).to(torch::kHalf);
  const auto c = torch::randn({3, 40}, gen, torch::kFloat).to(torch::kBFloat16);
  const double expect = a.to(torch::kFloat64).pow(2).sum().item<double>() +
                        b.to(torch::kFloat64).pow(2).sum().item<double>() +
                        c.to(torch::kFloat64).pow(2).sum().item<double>();
  torch::Tensor s = ds::grad_stats({a, b, torch::Tensor(), c});
  ASSERT_EQ(s.scalar_type(), torch::kFloat64);
  EXPECT_NEAR(s[0].item<double>(), expect, 1e-12 * expect);
  EXPECT_EQ(s[1].item<double>(), 0.0);

  auto bad = b.clone();
  bad[3] = std::numeric_limits<float>::infinity();
  bad[50] = std::numeric_limits<float>::quiet_NaN();
  auto bad32 = a.clone();
  bad32[69999] = -std::numeric_limits<float>::infinity();
  s = ds::grad_stats({bad32, bad, c});
  EXPECT_EQ(s[1].item<double>(), 3.0);
  EXPECT_TRUE(std::isfinite(s[0].item<double>())) << "finite values are still summed";

  s = ds::grad_stats({});
  EXPECT_EQ(s[0].item<double>(), 0.0);
  EXPECT_EQ(s[1].item<double>(), 0.0);
}

TEST(FusedOptimChecks, BadListsNameTheProblem) {
  auto p = torch::zeros({4});
  auto m = torch::zeros({4}), v = torch::zeros({4});
  auto g = torch::ones({4});
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  ds::AdamStepArgs a;
  expect_error([&] { ds::fused_adam_step({g, g}, {p}, {m}, {v}, {}, a); }, "list lengths differ");
  expect_error([&] { ds::fused_adam_step({g}, {p.to(torch::kDouble)}, {m}, {v}, {}, a); }, "params[0]");
  expect_error([&] { ds::fused_adam_step({torch::Tensor()}, {p}, {m}, {v}, {}, a); }, "grads[0] is undefined");
  expect_error([&] { ds::fused_adam_step({g}, {p}, {torch::zeros({5})}, {v}, {}, a); }, "optimizer state of params[0]");
  expect_error([&] { ds::fused_adam_step({g, g.to(torch::kHalf)}, {p, p}, {m, m}, {v, v}, {}, a); },
               "one call takes one gradient dtype");
  expect_error([&] { ds::fused_adam_step({g}, {p}, {m}, {v}, {torch::zeros({4})}, a); }, "model_copies dtype");
  expect_error([&] { ds::fused_lamb_step({torch::ones({3})}, {p}, {m}, {v}, {}, ds::LambStepArgs{}); },
               "grads[0] has 3 elements");
  auto strided = torch::zeros({4, 2}).t();
  expect_error([&] { ds::fused_adam_step({torch::ones({2, 4})}, {strided}, {torch::zeros({2, 4})},
                                         {torch::zeros({2, 4})}, {}, a); },
               "contiguous float32");
}

}  // namespace
