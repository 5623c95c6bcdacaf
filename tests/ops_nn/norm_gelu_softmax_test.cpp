// LayerNorm (forward statistics, both backward forms), bias + tanh-GELU and the attention softmax
// against compositions of ATen ops with autograd, in float64 (agreement to ~1e-13 relative: the
// same math, rounded differently), plus reduced-precision forwards against float64 with bounds
// from the unit roundoff.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ops/nn/gelu.h"
#include "ops/nn/layer_norm.h"
#include "ops/nn/softmax.h"
#include "tests/common/test_utils.h"

namespace {

using ds::test::rel_error;
constexpr double kF64 = 1e-12;  // float64 vs float64: a few hundred roundings of 1.1e-16 at most

torch::Tensor rnd(at::IntArrayRef s) { return torch::randn(s, torch::kDouble); }

TEST(LayerNorm, ForwardMatchesAtenAndStoresVarWithEps) {
  torch::manual_seed(1);
  const double eps = 1e-3;  // large enough that forgetting it in var shows
  auto x = rnd({3, 7, 40}) * 3 + 1, g = rnd({40}), b = rnd({40});
  auto r = ds::nn::layer_norm_forward(x, g, b, eps);
  EXPECT_LT(rel_error(r.y, at::layer_norm(x, {40}, g, b, eps)), kF64);
  EXPECT_EQ(r.mean.sizes(), torch::IntArrayRef({21}));
  EXPECT_LT(rel_error(r.mean, x.reshape({21, 40}).mean(1)), kF64);
  EXPECT_LT(rel_error(r.var, x.reshape({21, 40}).var(1, /*unbiased=*/false) + eps), kF64);
  EXPECT_EQ(r.mean.scalar_type(), torch::kDouble);
  // fp32 statistics for every other dtype.
  auto rf = ds::nn::layer_norm_forward(x.to(torch::kBFloat16), g.to(torch::kBFloat16), b.to(torch::kBFloat16), eps);
  EXPECT_EQ(rf.var.scalar_type(), torch::kFloat);
  EXPECT_EQ(rf.y.scalar_type(), torch::kBFloat16);
}

TEST(LayerNorm, ReducedPrecisionForwardWithinRoundoff) {
  torch::manual_seed(2);
  auto x = rnd({64, 96}), g = rnd({96}), b = rnd({96});
  auto ref = at::layer_norm(x, {96}, g, b, 1e-12);
  for (auto dt : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    auto y = ds::nn::layer_norm_forward(x.to(dt), g.to(dt), b.to(dt), 1e-12).y;
    // Inputs, gamma, beta and the output are each rounded once to dt (relative u each); fp32 math
    // adds far less. Norm-wise these add to well under 4u.
    EXPECT_LT(rel_error(y, ref), 4 * ds::test::unit_roundoff(dt)) << dt;
  }
}

TEST(LayerNorm, BackwardFormsMatchAutograd) {
  torch::manual_seed(3);
  const double eps = 1e-5;
  auto x = (rnd({4, 5, 24}) * 2).requires_grad_(), g = (rnd({24}) * 0.3 + 1).requires_grad_(),
       b = rnd({24}).requires_grad_();
  auto gy = rnd({4, 5, 24}), res = rnd({4, 5, 24});
  auto y = at::layer_norm(x, {24}, g, b, eps);
  auto grads = torch::autograd::grad({y}, {x, g, b}, {gy});

  auto fwd = ds::nn::layer_norm_forward(x.detach(), g.detach(), b.detach(), eps);
  auto n = ds::nn::layer_norm_backward(gy, x.detach(), g.detach(), fwd.mean, fwd.var);
  EXPECT_LT(rel_error(n.grad_x, grads[0]), kF64);
  EXPECT_LT(rel_error(n.grad_gamma, grads[1]), kF64);
  EXPECT_LT(rel_error(n.grad_beta, grads[2]), kF64);

  // The invertible form: from y, gamma, beta and var only.
  auto inv = ds::nn::layer_norm_backward_invertible(gy, fwd.y, g.detach(), b.detach(), fwd.var);
  EXPECT_LT(rel_error(inv.grad_x, grads[0]), 1e-10);
  EXPECT_LT(rel_error(inv.grad_gamma, grads[1]), 1e-10);
  EXPECT_LT(rel_error(inv.grad_beta, grads[2]), kF64);

  // The fused residual add.
  auto nr = ds::nn::layer_norm_backward(gy, x.detach(), g.detach(), fwd.mean, fwd.var, res);
  EXPECT_LT(rel_error(nr.grad_x, grads[0] + res), kF64);
  auto ir = ds::nn::layer_norm_backward_invertible(gy, fwd.y, g.detach(), b.detach(), fwd.var, res);
  EXPECT_LT(rel_error(ir.grad_x, grads[0] + res), 1e-10);
}

TEST(LayerNorm, InvertibleRejectsZeroGamma) {
  auto g = torch::ones({8}, torch::kDouble);
  g[5] = 0;
  auto x = rnd({2, 8});
  auto f = ds::nn::layer_norm_forward(x, g, torch::zeros({8}, torch::kDouble), 1e-5);
  try {
    ds::nn::layer_norm_backward_invertible(rnd({2, 8}), f.y, g, torch::zeros({8}, torch::kDouble), f.var);
    FAIL() << "zero gamma accepted";
  } catch (const c10::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("1 zero entry (first at index 5)"), std::string::npos) << m;
    EXPECT_NE(m.find("normalize_invertible"), std::string::npos) << m;
  }
}

TEST(LayerNorm, RejectsBadShapes) {
  auto x = rnd({2, 8});
  EXPECT_THROW(ds::nn::layer_norm_forward(x, rnd({7}), rnd({7}), 1e-5), c10::Error);
  EXPECT_THROW(ds::nn::layer_norm_forward(x, rnd({8}), rnd({8}), -1.0), c10::Error);
  auto f = ds::nn::layer_norm_forward(x, rnd({8}), rnd({8}), 1e-5);
  EXPECT_THROW(ds::nn::layer_norm_backward(rnd({2, 8}), x, rnd({8}), f.mean.narrow(0, 0, 1), f.var), c10::Error);
}

torch::Tensor gelu_ref(const torch::Tensor& z) {
  return 0.5 * z * (1 + torch::tanh(0.7978845608028654 * (z + 0.044715 * z.pow(3))));
}

TEST(BiasGelu, ForwardAndBackwardMatchComposition) {
  torch::manual_seed(4);
  auto x = (rnd({6, 5, 33}) * 2).requires_grad_(), bias = rnd({33}).requires_grad_();
  auto gy = rnd({6, 5, 33});
  auto ref = gelu_ref(x + bias);
  auto grads = torch::autograd::grad({ref}, {x, bias}, {gy});
  EXPECT_LT(rel_error(ds::nn::bias_gelu_forward(x.detach(), bias.detach()), ref), kF64);
  auto gx = ds::nn::bias_gelu_backward(gy, x.detach(), bias.detach());
  EXPECT_LT(rel_error(gx, grads[0]), kF64);
  EXPECT_LT(rel_error(gx.reshape({-1, 33}).sum(0), grads[1]), kF64);
  // tanh form, not erf: at z = 1 they differ by ~1.6e-4.
  auto one = torch::ones({1, 1}, torch::kDouble);
  EXPECT_GT(std::abs(ds::nn::bias_gelu_forward(one, {}).item<double>() - torch::gelu(one).item<double>()), 1e-4);
  // No bias.
  EXPECT_LT(rel_error(ds::nn::bias_gelu_forward(x.detach(), {}), gelu_ref(x.detach())), kF64);
}

TEST(AttnSoftmax, ForwardWithMaskAndBackward) {
  torch::manual_seed(5);
  const int64_t B = 2, H = 3, S = 11;
  auto s = rnd({B, H, S, S}).requires_grad_();
  auto mask = (torch::rand({B, 1, 1, S}, torch::kDouble) < 0.3).to(torch::kDouble) * -10000.0;
  auto gy = rnd({B, H, S, S});
  auto ref = torch::softmax(s + mask, -1);
  auto grad = torch::autograd::grad({ref}, {s}, {gy})[0];
  auto p = ds::nn::attn_softmax_forward(s.detach(), mask);
  EXPECT_LT(rel_error(p, ref), kF64);
  EXPECT_LT(rel_error(ds::nn::softmax_backward(gy, p), grad), kF64);
  EXPECT_LT(rel_error(ds::nn::attn_softmax_forward(s.detach(), {}), torch::softmax(s.detach(), -1)), kF64);
  EXPECT_THROW(ds::nn::attn_softmax_forward(s.detach(), torch::zeros({B, 1, S}, torch::kDouble)), c10::Error);
  EXPECT_THROW(ds::nn::attn_softmax_forward(s.detach(), torch::zeros({B, 1, 1, S + 1}, torch::kDouble)), c10::Error);
  // fp16 probabilities, fp32 math: within the rounding of the output.
  auto p16 = ds::nn::attn_softmax_forward(s.detach().to(torch::kHalf), mask.to(torch::kHalf));
  EXPECT_EQ(p16.scalar_type(), torch::kHalf);
  EXPECT_LT(rel_error(p16, ref), 4 * ds::test::unit_roundoff(torch::kHalf));
}

}  // namespace
