// ds::Adam / AdamW / Lamb through the Optimizer interface: parameter groups with their own
// lr / weight_decay against float64 hand computations, skipped parameters, state_dict round trips.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "engine/ivalue_util.h"
#include "engine/optimizer.h"
#include "tests/common/test_utils.h"
#include "tests/ops_optim/optim_reference.h"

namespace {

using ds::test::max_abs_diff;

constexpr double kU32 = 6.0e-8;

struct Fixture {
  std::vector<ds::OptimParamGroup> groups;
  std::vector<std::vector<torch::Tensor>> p64;  // float64 copies
};

// Group 0: two tensors, lr 1e-2, decay 0.1. Group 1 (like bing_bert's no-decay group): one tensor,
// lr 3e-2, decay 0.
Fixture make_groups(torch::Generator& gen) {
  Fixture f;
  f.groups.resize(2);
  f.groups[0].params = {torch::randn({5, 7}, gen, torch::kFloat), torch::randn({97}, gen, torch::kFloat)};
  f.groups[0].names = {"fc.weight", "emb.weight"};
  f.groups[0].lr = 1e-2;
  f.groups[0].weight_decay = 0.1;
  f.groups[1].params = {torch::randn({40}, gen, torch::kFloat)};
  f.groups[1].names = {"fc.bias"};
  f.groups[1].lr = 3e-2;
  f.groups[1].weight_decay = 0.0;
  for (auto& g : f.groups) {
    g.betas = {0.9, 0.999};
    g.eps = 1e-8;
    f.p64.emplace_back();
    for (auto& p : g.params) f.p64.back().push_back(p.to(torch::kFloat64));
  }
  return f;
}

double tolerance(int steps, double lr) { return steps * 16 * kU32 * (4.0 + 10 * lr); }

TEST(Adam, GroupsFollowTheirOwnLrAndDecayInBothModes) {
  for (bool w_mode : {true, false}) {
    auto gen = at::detail::createCPUGenerator(5);
    Fixture f = make_groups(gen);
    ds::Adam opt(f.groups, ds::AdamOptions{w_mode, true}, w_mode ? "AdamW" : "Adam");
    std::vector<std::vector<torch::Tensor>> m64, v64;
    for (auto& g : f.p64) {
      m64.emplace_back();
      v64.emplace_back();
      for (auto& p : g) {
        m64.back().push_back(torch::zeros_like(p));
        v64.back().push_back(torch::zeros_like(p));
      }
    }
    for (int t = 1; t <= 4; ++t) {
      std::vector<std::vector<torch::Tensor>> grads;
      for (size_t gi = 0; gi < f.groups.size(); ++gi) {
        grads.emplace_back();
        for (auto& p : f.groups[gi].params) grads.back().push_back(torch::randn(p.sizes(), gen, torch::kFloat));
      }
      opt.step(grads, 0.5);
      for (size_t gi = 0; gi < f.groups.size(); ++gi) {
        const auto& g = opt.param_groups()[gi];
        const ds::test::RefAdam ref{g.lr, 0.9, 0.999, 1e-8, g.weight_decay, true, w_mode};
        for (size_t i = 0; i < f.p64[gi].size(); ++i) {
          ref.step(f.p64[gi][i], m64[gi][i], v64[gi][i], grads[gi][i].to(torch::kFloat64) * 0.5, t);
        }
      }
    }
    for (size_t gi = 0; gi < f.groups.size(); ++gi) {
      EXPECT_EQ(opt.param_groups()[gi].step, 4);
      for (size_t i = 0; i < f.p64[gi].size(); ++i) {
        EXPECT_LE(max_abs_diff(opt.param_groups()[gi].params[i], f.p64[gi][i]), tolerance(4, 3e-2))
            << "mode " << w_mode << " group " << gi << " param " << i;
      }
    }
  }
}

TEST(Lamb, GroupsFollowTheirOwnLrAndDecay) {
  auto gen = at::detail::createCPUGenerator(6);
  Fixture f = make_groups(gen);
  ds::LambOptions o;
  ds::Lamb opt(f.groups, o);
  std::vector<std::vector<torch::Tensor>> m64, v64;
  for (auto& g : f.p64) {
    m64.emplace_back();
    v64.emplace_back();
    for (auto& p : g) {
      m64.back().push_back(torch::zeros_like(p));
      v64.back().push_back(torch::zeros_like(p));
    }
  }
  for (int t = 1; t <= 4; ++t) {
    std::vector<std::vector<torch::Tensor>> grads;
    for (size_t gi = 0; gi < f.groups.size(); ++gi) {
      grads.emplace_back();
      for (auto& p : f.groups[gi].params) grads.back().push_back(torch::randn(p.sizes(), gen, torch::kFloat));
    }
    opt.step(grads, 1.0);
    std::vector<double> expect;
    for (size_t gi = 0; gi < f.groups.size(); ++gi) {
      const auto& g = opt.param_groups()[gi];
      const ds::test::RefLamb ref{g.lr, 0.9, 0.999, 1e-8, g.weight_decay, 10.0, 0.01, true, false};
      for (size_t i = 0; i < f.p64[gi].size(); ++i) {
        expect.push_back(ref.step(f.p64[gi][i], m64[gi][i], v64[gi][i], grads[gi][i].to(torch::kFloat64), t));
      }
    }
    const auto coeffs = opt.lamb_coeffs();
    ASSERT_EQ(coeffs.size(), expect.size());
    for (size_t k = 0; k < coeffs.size(); ++k) EXPECT_NEAR(coeffs[k], expect[k], 1e-5 * expect[k]);
  }
  for (size_t gi = 0; gi < f.groups.size(); ++gi) {
    for (size_t i = 0; i < f.p64[gi].size(); ++i) {
      EXPECT_LE(max_abs_diff(opt.param_groups()[gi].params[i], f.p64[gi][i]), tolerance(4, 3e-2));
    }
  }
}

TEST(Optimizer, ParamsWithoutGradientAreLeftAlone) {
  auto gen = at::detail::createCPUGenerator(7);
  Fixture f = make_groups(gen);
  ds::Adam opt(f.groups, ds::AdamOptions{});
  const auto before = opt.param_groups()[0].params[1].clone();
  const auto g0 = torch::ones({5, 7});
  opt.step({{g0, torch::Tensor()}, {torch::Tensor()}}, 1.0);
  EXPECT_TRUE(torch::equal(opt.param_groups()[0].params[1], before));
  EXPECT_FALSE(opt.exp_avg(0, 1).defined());
  EXPECT_TRUE(opt.exp_avg(0, 0).defined());
  EXPECT_EQ(opt.param_groups()[0].step, 1);
  EXPECT_EQ(opt.param_groups()[1].step, 0) << "a group without any gradient does not count a step";
  EXPECT_THROW(opt.step({{g0}}, 1.0), std::invalid_argument);
}

TEST(Optimizer, StandaloneStepUsesTheParamsOwnGrads) {
  auto p = torch::ones({3}).requires_grad_();
  (p * torch::tensor({1.f, 2.f, 3.f})).sum().backward();
  ds::OptimParamGroup g;
  g.params = {p};
  g.lr = 0.1;
  ds::Adam opt({g}, ds::AdamOptions{});
  opt.step();
  // First Adam step moves every element by lr * m_hat / (sqrt(v_hat) + eps) = lr * sign(g).
  EXPECT_LE(max_abs_diff(p, torch::full({3}, 0.9)), 1e-6);
}

TEST(Optimizer, StateDictRoundTripContinuesIdentically) {
  auto gen = at::detail::createCPUGenerator(8);
  Fixture f = make_groups(gen);
  Fixture f2 = f;
  for (auto& g : f2.groups) {
    for (auto& p : g.params) p = p.clone();
  }
  ds::Lamb a(f.groups, ds::LambOptions{});
  std::vector<std::vector<torch::Tensor>> grads{{torch::randn({5, 7}, gen, torch::kFloat), torch::randn({97}, gen, torch::kFloat)},
                                                {torch::randn({40}, gen, torch::kFloat)}};
  a.step(grads, 1.0);
  a.param_groups()[1].lr = 0.123;  // the schedule's lr travels with the groups
  ds::Lamb b(f2.groups, ds::LambOptions{});
  for (size_t gi = 0; gi < 2; ++gi) {
    for (size_t i = 0; i < b.param_groups()[gi].params.size(); ++i) {
      b.param_groups()[gi].params[i].copy_(a.param_groups()[gi].params[i]);
    }
  }
  const at::IValue sd = a.state_dict();
  const auto dict = ds::ivalue::as_dict(sd, "sd");
  EXPECT_EQ(ds::ivalue::get_string(dict, "type", ""), "Lamb");
  b.load_state_dict(sd);
  EXPECT_EQ(b.param_groups()[1].lr, 0.123);
  EXPECT_EQ(b.param_groups()[0].step, 1);
  a.step(grads, 1.0);
  b.step(grads, 1.0);
  for (size_t gi = 0; gi < 2; ++gi) {
    for (size_t i = 0; i < a.param_groups()[gi].params.size(); ++i) {
      EXPECT_TRUE(torch::equal(a.param_groups()[gi].params[i], b.param_groups()[gi].params[i]));
    }
  }
}

TEST(Optimizer, LoadRejectsMismatchesWithoutChangingState) {
  auto gen = at::detail::createCPUGenerator(9);
  Fixture f = make_groups(gen);
  ds::Adam adam(f.groups, ds::AdamOptions{});
  adam.step({{torch::ones({5, 7}), torch::ones({97})}, {torch::ones({40})}}, 1.0);
  const at::IValue sd = adam.state_dict();

  Fixture other = make_groups(gen);
  ds::Lamb lamb(other.groups, ds::LambOptions{});
  try {
    lamb.load_state_dict(sd);
    ADD_FAILURE() << "Adam state loaded into Lamb";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("holds Adam state"), std::string::npos) << e.what();
  }
  ds::Adam l2(other.groups, ds::AdamOptions{false, true});
  EXPECT_THROW(l2.load_state_dict(sd), std::invalid_argument) << "adam_w_mode differs";

  Fixture renamed = make_groups(gen);
  renamed.groups[0].names[1] = "something.else";
  ds::Adam r(renamed.groups, ds::AdamOptions{});
  try {
    r.load_state_dict(sd);
    ADD_FAILURE() << "renamed parameter accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'emb.weight' in the checkpoint but 'something.else' here"), std::string::npos)
        << e.what();
  }
  Fixture reshaped = make_groups(gen);
  reshaped.groups[1].params[0] = torch::zeros({41});
  ds::Adam s(reshaped.groups, ds::AdamOptions{});
  s.param_groups()[0].lr = 0.777;
  EXPECT_THROW(s.load_state_dict(sd), std::invalid_argument);
  EXPECT_EQ(s.param_groups()[0].lr, 0.777) << "a rejected load leaves the optimizer as it was";
}

TEST(MakeOptimizer, AdamWModeRuleAndLambOptions) {
  ds::OptimizerConfig c;
  c.present = true;
  c.type = ds::OptimizerType::Adam;  // adam_w_mode defaults to true: "Adam" decays decoupled
  auto o = ds::make_optimizer(c, {ds::group_defaults(c)});
  EXPECT_TRUE(dynamic_cast<ds::Adam&>(*o).options().adam_w_mode);
  c.adam_w_mode = false;
  o = ds::make_optimizer(c, {ds::group_defaults(c)});
  EXPECT_FALSE(dynamic_cast<ds::Adam&>(*o).options().adam_w_mode);
  c.type = ds::OptimizerType::AdamW;  // AdamW is decoupled whatever adam_w_mode says
  o = ds::make_optimizer(c, {ds::group_defaults(c)});
  EXPECT_TRUE(dynamic_cast<ds::Adam&>(*o).options().adam_w_mode);
  EXPECT_STREQ(o->name(), "AdamW");
  c.type = ds::OptimizerType::Lamb;
  c.max_coeff = 5;
  c.min_coeff = 0.1;
  c.eps_inside_sqrt = true;
  o = ds::make_optimizer(c, {ds::group_defaults(c)});
  const auto& lo = dynamic_cast<ds::Lamb&>(*o).options();
  EXPECT_EQ(lo.max_coeff, 5);
  EXPECT_EQ(lo.min_coeff, 0.1);
  EXPECT_TRUE(lo.eps_inside_sqrt);
  c.type = ds::OptimizerType::Adam;
  c.amsgrad = true;
  EXPECT_THROW(ds::make_optimizer(c, {ds::group_defaults(c)}), std::invalid_argument);
}

}  // namespace
