// Finite differences: the explicit backward against central differences of the forward, for every
// element of the input and of all 12 parameters, on a small layer in float64 with dropout on
// (a fixed Philox stream, so every evaluation drops the same elements).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "tests/transformer/reference.h"
#include "transformer/transformer_function.h"

namespace {

using ds::transformer::LayerSpec;
using ds::transformer::LayerWeights;

void gradcheck(bool pre, bool flags) {
  SCOPED_TRACE(std::string(pre ? "pre-LN" : "post-LN") + (flags ? " all flags" : " no flags"));
  torch::manual_seed(pre ? 21 : 22);
  const int64_t b = 2, s = 3, h = 8, heads = 2, i = 12;
  LayerSpec spec;
  spec.heads = heads;
  spec.pre_layer_norm = pre;
  spec.layer_norm_eps = 1e-5;
  spec.attn_dropout_ratio = 0.3;
  spec.hidden_dropout_ratio = 0.3;
  spec.attn_dropout_checkpoint = spec.normalize_invertible = spec.gelu_checkpoint = flags;
  const ds::transformer::DropoutStream rng{77, 5};
  auto x = torch::randn({b, s, h}, torch::kDouble);
  auto mask = ds::test::bert_mask(b, s, 1);
  auto params = ds::test::random_params(h, i);
  auto r = torch::randn({b, s, h}, torch::kDouble);

  auto loss = [&](const torch::Tensor& xx, const std::vector<torch::Tensor>& pp) {
    return (ds::transformer::transformer_layer_apply(xx, mask, LayerWeights::from_list(pp), spec, rng, true) * r).sum();
  };

  std::vector<torch::Tensor> leaves{x.clone().requires_grad_()};
  std::vector<torch::Tensor> pl;
  for (const auto& p : params) pl.push_back(p.clone().requires_grad_()), leaves.push_back(pl.back());
  auto analytic = torch::autograd::grad({loss(leaves[0], pl)}, leaves);

  torch::NoGradGuard no_grad;
  const double eps = 1e-6;
  for (size_t t = 0; t < leaves.size(); ++t) {
    std::vector<torch::Tensor> vals{x.clone()};
    for (const auto& p : params) vals.push_back(p.clone());
    auto flat = vals[t].view({-1});
    auto ana = analytic[t].reshape({-1});
    for (int64_t e = 0; e < flat.numel(); ++e) {
      const double v = flat[e].item<double>();
      flat[e] = v + eps;
      const double up = loss(vals[0], {vals.begin() + 1, vals.end()}).item<double>();
      flat[e] = v - eps;
      const double down = loss(vals[0], {vals.begin() + 1, vals.end()}).item<double>();
      flat[e] = v;
      const double num = (up - down) / (2 * eps), a = ana[e].item<double>();
      // Central differences: truncation ~eps^2 * f''' and cancellation ~1e-16 * |loss| / eps, both
      // below 1e-8 here.
      ASSERT_NEAR(a, num, 1e-6 + 1e-5 * std::abs(num))
          << (t == 0 ? "input" : LayerWeights::name(int(t) - 1)) << " element " << e;
    }
  }
}

TEST(LayerGradcheck, PreLNNoFlags) { gradcheck(true, false); }
TEST(LayerGradcheck, PreLNAllFlags) { gradcheck(true, true); }
TEST(LayerGradcheck, PostLNNoFlags) { gradcheck(false, false); }
TEST(LayerGradcheck, PostLNAllFlags) { gradcheck(false, true); }

}  // namespace
