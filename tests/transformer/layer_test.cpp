// DeepSpeedTransformerLayer against the float64 ATen reference (reference.h): forward and every
// gradient, pre-LN and post-LN, each memory flag alone and all together, dropout off and on (the
// reference applies the layer's Philox masks), awkward sizes; plus init, eval/no-grad, RNG streams,
// dtypes and the invertible-LayerNorm guard.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <tuple>

#include "tests/common/test_utils.h"
#include "tests/transformer/reference.h"
#include "transformer/transformer_function.h"
#include "transformer/transformer_layer.h"

namespace {

using ds::test::rel_error;

struct Case {
  int64_t b, s, h, heads, i;
  bool pre;
  bool attn_ckpt, invertible, gelu_ckpt;
  double attn_p, hidden_p;
};

ds::DeepSpeedTransformerConfig config_of(const Case& c) {
  ds::DeepSpeedTransformerConfig cfg;
  cfg.hidden_size = c.h;
  cfg.heads = c.heads;
  cfg.intermediate_size = c.i;
  cfg.attn_dropout_ratio = c.attn_p;
  cfg.hidden_dropout_ratio = c.hidden_p;
  cfg.num_hidden_layers = 2;
  cfg.initializer_range = 0.02;
  cfg.layer_norm_eps = 1e-5;
  cfg.seed = 1234;
  cfg.pre_layer_norm = c.pre;
  cfg.attn_dropout_checkpoint = c.attn_ckpt;
  cfg.normalize_invertible = c.invertible;
  cfg.gelu_checkpoint = c.gelu_ckpt;
  return cfg;
}

void set_params(ds::DeepSpeedTransformerLayer& layer, const std::vector<torch::Tensor>& p) {
  torch::NoGradGuard g;
  auto w = layer->weights().list();
  for (size_t k = 0; k < w.size(); ++k) w[k].copy_(p[k]);
}

// Runs the layer (training, grad on) and the reference on the same weights, input and masks, and
// compares the output and the gradients of the input and all 12 parameters. Float64 on both
// sides: the same math in another order, so agreement to ~1e-13 is expected; 1e-10 leaves room
// for the invertible LayerNorm's (y - beta) / gamma, which loses a few digits where y ~ beta.
void check_against_reference(const Case& c, double tol = 1e-10) {
  SCOPED_TRACE("B " + std::to_string(c.b) + " S " + std::to_string(c.s) + " H " + std::to_string(c.h) + " heads " +
               std::to_string(c.heads) + (c.pre ? " pre-LN" : " post-LN") + (c.attn_ckpt ? " attn_ckpt" : "") +
               (c.invertible ? " invertible" : "") + (c.gelu_ckpt ? " gelu_ckpt" : "") + " dropout " +
               std::to_string(c.attn_p) + "/" + std::to_string(c.hidden_p));
  torch::manual_seed(c.b * 1000 + c.s);
  ds::DeepSpeedTransformerLayer layer(config_of(c));
  layer->to(torch::kDouble);
  layer->train();
  const auto p = ds::test::random_params(c.h, c.i);
  set_params(layer, p);
  auto x = torch::randn({c.b, c.s, c.h}, torch::kDouble).requires_grad_();
  auto mask = ds::test::bert_mask(c.b, c.s, c.s / 4);
  const uint64_t seed = layer->rng_seed(), offset = layer->rng_offset();

  auto out = layer->forward(x, mask);
  auto gy = torch::randn_like(out);
  std::vector<torch::Tensor> inputs{x};
  for (const auto& w : layer->weights().list()) inputs.push_back(w);
  auto grads = torch::autograd::grad({out}, inputs, {gy});

  auto xr = x.detach().clone().requires_grad_();
  std::vector<torch::Tensor> pr, ref_inputs{xr};
  for (const auto& t : p) pr.push_back(t.clone().requires_grad_()), ref_inputs.push_back(pr.back());
  const auto masks = ds::test::layer_masks(c.b, c.s, c.h, c.heads, c.attn_p, c.hidden_p, seed, offset);
  auto ref = ds::test::reference_layer(xr, mask, pr, c.heads, c.pre, 1e-5, c.attn_p, c.hidden_p, masks);
  auto ref_grads = torch::autograd::grad({ref}, ref_inputs, {gy});

  EXPECT_LT(rel_error(out, ref), tol) << "output";
  for (size_t k = 0; k < grads.size(); ++k)
    EXPECT_LT(rel_error(grads[k], ref_grads[k]), tol)
        << "gradient of " << (k == 0 ? "input" : ds::transformer::LayerWeights::name(int(k) - 1));
}

// (pre-LN?, flag set 0..4 = none, attn_dropout_checkpoint, normalize_invertible, gelu_checkpoint, all, dropout?)
class LayerVsReference : public ::testing::TestWithParam<std::tuple<bool, int, bool>> {};

TEST_P(LayerVsReference, ForwardAndAllGradients) {
  const auto [pre, flags, dropout] = GetParam();
  const bool a = flags == 1 || flags == 4, n = flags == 2 || flags == 4, g = flags == 3 || flags == 4;
  check_against_reference({2, 9, 24, 3, 40, pre, a, n, g, dropout ? 0.1 : 0.0, dropout ? 0.2 : 0.0});
}

std::string mode_name(const ::testing::TestParamInfo<std::tuple<bool, int, bool>>& info) {
  static const char* kFlags[] = {"NoFlags", "AttnDropoutCkpt", "Invertible", "GeluCkpt", "AllFlags"};
  return std::string(std::get<0>(info.param) ? "PreLN_" : "PostLN_") + kFlags[std::get<1>(info.param)] +
         (std::get<2>(info.param) ? "_Dropout" : "_NoDropout");
}

INSTANTIATE_TEST_SUITE_P(AllModes, LayerVsReference,
                         ::testing::Combine(::testing::Bool(), ::testing::Range(0, 5), ::testing::Bool()), mode_name);

TEST(LayerAwkwardSizes, Seq51Hidden160TwoHeadsBatch1) {
  check_against_reference({1, 51, 160, 2, 640, true, true, true, true, 0.1, 0.1});
}
TEST(LayerAwkwardSizes, Seq119HeadSize40PostLN) {
  check_against_reference({3, 119, 160, 4, 320, false, false, true, true, 0.1, 0.1});
}
TEST(LayerAwkwardSizes, Seq381HeadSize72) {
  check_against_reference({1, 381, 144, 2, 288, true, false, false, false, 0.1, 0.1});
}
TEST(LayerAwkwardSizes, Seq381Hidden160PostLNAllFlags) {
  check_against_reference({1, 381, 160, 2, 160, false, true, true, true, 0.1, 0.1});
}
TEST(LayerAwkwardSizes, OneHeadSeq1) { check_against_reference({2, 1, 16, 1, 32, true, true, true, true, 0.3, 0.3}); }

TEST(Layer, ParametersHaveDeepSpeedNamesShapesAndInit) {
  torch::manual_seed(0);
  ds::DeepSpeedTransformerConfig cfg;
  cfg.hidden_size = 256;
  cfg.heads = 4;
  cfg.attn_dropout_ratio = cfg.hidden_dropout_ratio = 0.1;
  cfg.num_hidden_layers = 8;
  cfg.initializer_range = 0.05;
  ds::DeepSpeedTransformerLayer layer(cfg);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> want = {
      {"attn_qkvw", {768, 256}}, {"attn_qkvb", {768}}, {"attn_ow", {256, 256}},  {"attn_ob", {256}},
      {"attn_nw", {256}},        {"attn_nb", {256}},   {"inter_w", {1024, 256}}, {"inter_b", {1024}},
      {"output_w", {256, 1024}}, {"output_b", {256}},  {"norm_w", {256}},        {"norm_b", {256}}};
  auto named = layer->named_parameters();
  ASSERT_EQ(named.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    EXPECT_EQ(named[k].key(), want[k].first);
    EXPECT_EQ(named[k].value().sizes(), torch::IntArrayRef(want[k].second)) << want[k].first;
    EXPECT_TRUE(named[k].value().requires_grad());
  }
  // std estimates from >= 65k samples are within ~0.3% (1 sigma); allow 3%.
  const double out_std = 0.05 / std::sqrt(16.0);  // adjust_init_range, whatever local_rank is
  EXPECT_NEAR(layer->attn_qkvw.std().item<double>(), 0.05, 0.05 * 0.03);
  EXPECT_NEAR(layer->inter_w.std().item<double>(), 0.05, 0.05 * 0.03);
  EXPECT_NEAR(layer->attn_ow.std().item<double>(), out_std, out_std * 0.03);
  EXPECT_NEAR(layer->output_w.std().item<double>(), out_std, out_std * 0.03);
  for (auto* t :
       {&layer->attn_qkvb, &layer->attn_ob, &layer->inter_b, &layer->output_b, &layer->attn_nb, &layer->norm_b})
    EXPECT_EQ(t->abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(layer->attn_nw, torch::ones({256})));
  EXPECT_TRUE(torch::equal(layer->norm_w, torch::ones({256})));

  cfg.adjust_init_range = false;
  ds::DeepSpeedTransformerLayer plain(cfg);
  EXPECT_NEAR(plain->attn_ow.std().item<double>(), 0.05, 0.05 * 0.03);
}

TEST(Layer, InitialWeightsAndBiases) {
  ds::DeepSpeedTransformerConfig cfg;
  cfg.hidden_size = 8;
  cfg.heads = 2;
  cfg.intermediate_size = 12;
  cfg.attn_dropout_ratio = cfg.hidden_dropout_ratio = 0;
  std::vector<torch::Tensor> w = {torch::randn({8, 8}),  torch::randn({8, 8}), torch::randn({8, 8}),
                                  torch::randn({8, 8}),  torch::randn({8}),    torch::randn({12, 8}),
                                  torch::randn({8, 12}), torch::randn({8})};
  std::vector<torch::Tensor> b = {torch::randn({8}), torch::randn({8}),  torch::randn({8}), torch::randn({8}),
                                  torch::randn({8}), torch::randn({12}), torch::randn({8}), torch::randn({8})};
  ds::DeepSpeedTransformerLayer layer(cfg, w, b);  // initializer_range unset: not needed here
  EXPECT_TRUE(torch::equal(layer->attn_qkvw, torch::cat({w[0], w[1], w[2]})));
  EXPECT_TRUE(torch::equal(layer->attn_qkvb, torch::cat({b[0], b[1], b[2]})));
  // The others share the caller's storage, as nn.Parameter(tensor) does.
  EXPECT_EQ(layer->attn_ow.data_ptr(), w[3].data_ptr());
  EXPECT_EQ(layer->inter_w.data_ptr(), w[5].data_ptr());
  EXPECT_EQ(layer->norm_b.data_ptr(), b[7].data_ptr());
  w[6] = torch::randn({8, 8});
  EXPECT_THROW(ds::DeepSpeedTransformerLayer(cfg, w, b), c10::Error);
  EXPECT_THROW(ds::DeepSpeedTransformerLayer(cfg, std::vector<torch::Tensor>{w[0]}, std::vector<torch::Tensor>{b[0]}),
               c10::Error);
  // Generating weights needs initializer_range.
  EXPECT_THROW(ds::DeepSpeedTransformerLayer{cfg}, std::invalid_argument);
}

ds::DeepSpeedTransformerLayer small_layer(double dropout, bool invertible = false, bool pre = true) {
  Case c{2, 6, 16, 2, 24, pre, false, invertible, false, dropout, dropout};
  auto cfg = config_of(c);
  ds::DeepSpeedTransformerLayer layer(cfg);
  layer->to(torch::kDouble);
  set_params(layer, ds::test::random_params(16, 24));
  return layer;
}

TEST(Layer, EvalAndNoGradSaveNothing) {
  torch::manual_seed(7);
  auto layer = small_layer(0.3);
  auto x = torch::randn({2, 6, 16}, torch::kDouble).requires_grad_();
  auto mask = ds::test::bert_mask(2, 6, 2);

  layer->eval();
  const uint64_t off = layer->rng_offset();
  auto out = layer->forward(x, mask);
  EXPECT_EQ(layer->rng_offset(), off) << "eval draws no dropout";
  EXPECT_EQ(ds::transformer::saved_for_backward(out).total, 0);
  // No dropout in eval: the reference without masks.
  std::vector<torch::Tensor> p;
  for (const auto& t : layer->weights().list()) p.push_back(t.detach());
  auto ref = ds::test::reference_layer(x.detach(), mask, p, 2, true, 1e-5, 0.3, 0.3, {});
  EXPECT_LT(rel_error(out, ref), 1e-12);
  try {
    out.sum().backward();
    FAIL() << "backward through an eval call";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("eval mode"), std::string::npos) << e.what();
  }

  layer->train();
  {
    torch::NoGradGuard no_grad;
    auto y = layer->forward(x, mask);
    EXPECT_FALSE(y.grad_fn());
    EXPECT_EQ(ds::transformer::saved_for_backward(y).total, 0);
  }
  auto y = layer->forward(x, mask);
  EXPECT_GT(ds::transformer::saved_for_backward(y).total, 0);
}

TEST(Layer, DropoutStreamsAdvanceAndRestore) {
  torch::manual_seed(8);
  auto layer = small_layer(0.3);
  layer->train();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({2, 6, 16}, torch::kDouble);
  const uint64_t off = layer->rng_offset();
  EXPECT_EQ(off >> 32, static_cast<uint64_t>(layer->layer_id()));
  auto a = layer->forward(x);
  EXPECT_EQ(layer->rng_offset(), off + 3);
  auto b = layer->forward(x);
  EXPECT_FALSE(torch::allclose(a, b)) << "a new call must draw new masks";
  layer->set_rng_state(layer->rng_seed(), off);
  EXPECT_TRUE(torch::equal(layer->forward(x), a));
  // Another layer with the same seed and weights draws other masks (its own offset range).
  auto other = small_layer(0.3);
  set_params(other, [&] {
    std::vector<torch::Tensor> v;
    for (const auto& t : layer->weights().list()) v.push_back(t.detach());
    return v;
  }());
  other->train();
  EXPECT_EQ(other->rng_seed(), layer->rng_seed());
  EXPECT_FALSE(torch::allclose(other->forward(x), a));
  // seed < 0: drawn from Torch's generator, so manual_seed repeats it.
  auto cfg = layer->config();
  cfg.seed = -1;
  torch::manual_seed(3);
  ds::DeepSpeedTransformerLayer r1(cfg);
  torch::manual_seed(3);
  ds::DeepSpeedTransformerLayer r2(cfg);
  EXPECT_EQ(r1->rng_seed(), r2->rng_seed());
}

TEST(Layer, InvertibleGuardsZeroLayerNormWeight) {
  torch::manual_seed(9);
  auto layer = small_layer(0.0, /*invertible=*/true);
  {
    torch::NoGradGuard g;
    layer->attn_nw[3] = 0.0;
  }
  auto x = torch::randn({2, 6, 16}, torch::kDouble).requires_grad_();
  try {
    layer->forward(x);
    FAIL() << "zero attn_nw accepted with normalize_invertible";
  } catch (const c10::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("attn_nw has 1 zero entry (first at index 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("Turn normalize_invertible off"), std::string::npos) << m;
  }
  layer->eval();  // nothing is kept in eval: no inversion, no guard needed
  EXPECT_NO_THROW(layer->forward(x));
}

TEST(Layer, DtypeMustMatchThePrecisionFlags) {
  auto layer = small_layer(0.0);
  auto x = torch::randn({2, 6, 16});
  EXPECT_THROW(layer->forward(x), c10::Error);  // float32 input, float64 layer
  auto cfg = layer->config();
  cfg.fp16 = true;
  cfg.initializer_range = 0.02;
  ds::DeepSpeedTransformerLayer half_layer(cfg);
  try {
    half_layer->forward(x);
    FAIL() << "float32 input accepted with fp16";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.fp16 is true but hidden_states is Float"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(layer->forward(torch::randn({2, 6, 16}, torch::kDouble), torch::zeros({2, 6}, torch::kDouble)),
               c10::Error);  // mask must be [B, 1, 1, S]
  EXPECT_THROW(layer->forward(torch::randn({2, 6, 15}, torch::kDouble)), c10::Error);
}

// Reduced precision on the CPU (GEMMs in fp32, stored in the dtype) against float64. Every
// activation along the path is rounded once to the dtype (~12 roundings of relative u); norm-wise
// the errors add roughly in quadrature, sqrt(12) u ~ 3.5u, amplified at most a few times by the
// LayerNorms; bound 10u (bf16: 3.9e-2, fp16: 4.9e-3).
TEST(Layer, ReducedPrecisionForwardAndBackward) {
  for (auto dt : {torch::kBFloat16, torch::kHalf}) {
    torch::manual_seed(10);
    Case c{2, 33, 64, 4, 128, true, true, true, true, 0.1, 0.1};
    auto cfg = config_of(c);
    cfg.bf16 = dt == torch::kBFloat16;
    cfg.fp16 = dt == torch::kHalf;
    ds::DeepSpeedTransformerLayer layer(cfg);
    const auto p = ds::test::random_params(64, 128);
    set_params(layer, p);
    layer->to(dt);
    auto x = torch::randn({2, 33, 64}, torch::kDouble);
    auto mask = ds::test::bert_mask(2, 33, 5);
    const auto masks = ds::test::layer_masks(2, 33, 64, 4, 0.1, 0.1, layer->rng_seed(), layer->rng_offset());
    auto xl = x.to(dt).requires_grad_();
    auto out = layer->forward(xl, mask.to(dt));
    auto gy = torch::randn_like(x);
    out.backward(gy.to(dt));
    auto xr = x.clone().requires_grad_();
    std::vector<torch::Tensor> pr;
    for (const auto& t : p) pr.push_back(t.clone().requires_grad_());
    auto ref = ds::test::reference_layer(xr, mask, pr, 4, true, 1e-5, 0.1, 0.1, masks);
    ref.backward(gy);
    const double u = ds::test::unit_roundoff(dt);
    EXPECT_LT(rel_error(out, ref), 10 * u) << dt;
    EXPECT_LT(rel_error(xl.grad(), xr.grad()), 10 * u) << dt;
    EXPECT_LT(rel_error(layer->inter_w.grad(), pr[6].grad()), 10 * u) << dt;
    EXPECT_LT(rel_error(layer->attn_qkvw.grad(), pr[0].grad()), 10 * u) << dt;
  }
}

TEST(Layer, StochasticModeIsAcceptedAndDeterministicOnCpu) {
  torch::manual_seed(11);
  auto layer = small_layer(0.2);
  auto cfg = layer->config();
  cfg.stochastic_mode = true;
  ds::DeepSpeedTransformerLayer s(cfg);
  s->to(torch::kDouble);
  std::vector<torch::Tensor> v;
  for (const auto& t : layer->weights().list()) v.push_back(t.detach());
  set_params(s, v);
  auto x = torch::randn({2, 6, 16}, torch::kDouble);
  torch::NoGradGuard g;
  s->set_rng_state(5, 9);
  layer->set_rng_state(5, 9);
  EXPECT_TRUE(torch::equal(s->forward(x), layer->forward(x)));
}

}  // namespace
