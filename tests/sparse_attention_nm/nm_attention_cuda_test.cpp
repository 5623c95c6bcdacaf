// Dynamic N:M attention, fused CUDA path against the reference (on the same GPU, float32 math on the
// same half-precision inputs). q and k are small integers, so every score is exact in both and both
// select the same entries, ties included; v and the output gradient are random.
// Tolerance: the kernel rounds P (and dS) to the input dtype before the second product and the
// reference does not, so errors of a few unit roundoffs u are expected: 4u forward, 8u gradients.
#include <gtest/gtest.h>
#include <torch/torch.h>
#if DS_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include <cstdlib>
#include <string>
#include <vector>

#include "sparse_attention/nm/nm_attention.h"
#include "engine/config/ds_config.h"
#include "sparse_attention/nm/nm_fused.h"
#include "sparse_attention/sparse_self_attention.h"
#include "sparse_attention/sparsity_config.h"
#include "tests/common/test_utils.h"

namespace {

struct Case {
  int64_t B, H, S, D, n, m;
  bool causal, kp, am;
  torch::ScalarType dtype;
};

void run_case(const Case& c, const char* kernel) {
  setenv("DS_BSA_KERNEL", kernel, 1);
  torch::manual_seed(11);
  auto dev = torch::kCUDA;
  auto q = torch::randint(-2, 3, {c.B, c.H, c.S, c.D}, torch::dtype(c.dtype).device(dev)).requires_grad_(true);
  auto k = torch::randint(-2, 3, {c.B, c.H, c.S, c.D}, torch::dtype(c.dtype).device(dev)).requires_grad_(true);
  auto v = torch::randn({c.B, c.H, c.S, c.D}, torch::dtype(c.dtype).device(dev)).requires_grad_(true);
  auto dout = torch::randn({c.B, c.H, c.S, c.D}, torch::dtype(c.dtype).device(dev));
  ds::NMOptions o;
  o.n = c.n;
  o.m = c.m;
  o.causal = c.causal;
  if (c.kp) {
    o.key_padding_mask = (torch::rand({c.B, c.S}, torch::device(dev)) > 0.2).to(c.dtype);
    o.key_padding_mask_mode = ds::MaskMode::Mul;
  }
  if (c.am) {
    o.attn_mask = (torch::rand({c.S, c.S}, torch::device(dev)) > 0.3).to(c.dtype);
    o.attn_mask_mode = ds::MaskMode::Mul;
  }
  setenv("DS_NM_ATTENTION_PATH", "fused", 1);
  auto out = ds::nm_sparse_attention(q, k, v, o);
  auto grads = torch::autograd::grad({out}, {q, k, v}, {dout});
  auto out2 = ds::nm_sparse_attention(q, k, v, o);
  EXPECT_TRUE(torch::equal(out, out2)) << "forward not deterministic";
  setenv("DS_NM_ATTENTION_PATH", "reference", 1);
  auto ref = ds::nm_sparse_attention(q, k, v, o);
  auto rgrads = torch::autograd::grad({ref}, {q, k, v}, {dout});
  unsetenv("DS_NM_ATTENTION_PATH");
  unsetenv("DS_BSA_KERNEL");
  const double u = ds::test::unit_roundoff(c.dtype);
  const std::string what = std::string(kernel) + " B" + std::to_string(c.B) + " S" + std::to_string(c.S) + " D" +
                           std::to_string(c.D) + " " + std::to_string(c.n) + ":" + std::to_string(c.m) +
                           (c.causal ? " causal" : "") + (c.kp ? " kp" : "") + (c.am ? " am" : "");
  EXPECT_FALSE(out.isnan().any().item<bool>()) << what;
  EXPECT_LT(ds::test::rel_error(out, ref), 4 * u) << what;
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) EXPECT_LT(ds::test::rel_error(grads[i], rgrads[i]), 8 * u) << what << " " << names[i];
}

TEST(NMFused, MatchesReference_CUDA) {
  DS_REQUIRE_CUDA();
  std::vector<const char*> kernels{"sm80"};
#if DS_WITH_CUDA
  if (at::cuda::getCurrentDeviceProperties()->major == 9) kernels.push_back("sm90");
#endif
  const std::vector<Case> cases{
      {2, 2, 256, 64, 2, 4, false, false, false, torch::kBFloat16},
      {2, 2, 256, 64, 1, 2, false, false, false, torch::kBFloat16},
      {1, 2, 97, 32, 2, 4, true, false, false, torch::kFloat16},     // S not a multiple of M or of the tile
      {1, 3, 130, 128, 1, 2, true, false, false, torch::kBFloat16},
      {2, 2, 200, 64, 2, 4, false, true, true, torch::kBFloat16},    // masks (mul)
      {1, 1, 64, 128, 2, 4, false, true, false, torch::kFloat16},
      {4, 4, 512, 64, 2, 4, true, false, false, torch::kBFloat16},   // larger batch
  };
  for (const char* kernel : kernels)
    for (const auto& c : cases) run_case(c, kernel);
}

TEST(NMFused, UnsupportedArgumentsFallBackToTheReference_CUDA) {
  DS_REQUIRE_CUDA();
  auto q = torch::randn({1, 2, 40, 48}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));  // head size 48
  EXPECT_NE(ds::nm_fused_unsupported_reason(q, {}), "");
  auto out = ds::nm_sparse_attention(q, q, q, {});
  EXPECT_EQ(out.sizes(), q.sizes());
}

std::shared_ptr<const ds::SparsityConfig> nm_config(int64_t heads, int n, int m) {
  ds::SparseAttentionConfig c;
  c.mode = ds::SparseMode::DynamicNM;
  c.n = n;
  c.m = m;
  return ds::make_sparsity_config(c, heads);
}

// The modules on the GPU: SparseSelfAttention with a "dynamic_nm" config, forced onto the fused path,
// against the same module on float64 CPU tensors (integer q, k: the same selection), with BERT's
// additive key padding mask [B, 1, 1, S] in float32; same tolerances as above.
TEST(NMModules, SparseSelfAttentionOnTheFusedPath_CUDA) {
  DS_REQUIRE_CUDA();
  const int64_t B = 2, H = 4, S = 100, D = 64;
  for (auto [n, m] : {std::pair<int, int>{2, 4}, {1, 2}}) {
    torch::manual_seed(21);
    const auto bf = torch::dtype(torch::kBFloat16).device(torch::kCUDA);
    auto q = torch::randint(-2, 3, {B, H, S, D}, bf).requires_grad_(true);
    auto k = torch::randint(-2, 3, {B, H, S, D}, bf).requires_grad_(true);
    auto v = torch::randn({B, H, S, D}, bf).requires_grad_(true);
    auto dout = torch::randn({B, H, S, D}, bf);
    auto kp = torch::zeros({B, 1, 1, S}, torch::device(torch::kCUDA));
    kp[1].narrow(2, S - 23, 23).fill_(-10000.0);
    ds::SparseSelfAttention module(nm_config(H, n, m));
    module->set_attention_path(ds::AttentionPath::Fused);
    auto out = module->forward(q, k, v, {}, kp);
    auto grads = torch::autograd::grad({out}, {q, k, v}, {dout});

    module->set_attention_path(ds::AttentionPath::Auto);
    auto cpu = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat64); };
    auto q64 = cpu(q).requires_grad_(true), k64 = cpu(k).requires_grad_(true), v64 = cpu(v).requires_grad_(true);
    auto ref = module->forward(q64, k64, v64, {}, cpu(kp));
    auto rgrads = torch::autograd::grad({ref}, {q64, k64, v64}, {cpu(dout)});
    const double u = ds::test::unit_roundoff(torch::kBFloat16);
    const std::string what = std::to_string(n) + ":" + std::to_string(m);
    EXPECT_LT(ds::test::rel_error(out, ref), 4 * u) << what;
    const char* names[] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; ++i) EXPECT_LT(ds::test::rel_error(grads[i], rgrads[i]), 8 * u) << what << " " << names[i];
  }
}

// BertSparseSelfAttention in bf16 on the GPU, forward and backward: the fused path gives what the
// reference path gives on the same projections (random activations: near-tied scores may select
// differently in the two float32 summation orders, so a few swapped entries are allowed), and
// gradients reach the projections.
TEST(NMModules, BertSparseSelfAttentionBf16_CUDA) {
  DS_REQUIRE_CUDA();
  const int64_t B = 2, S = 77, hidden = 256, heads = 4;
  torch::manual_seed(22);
  ds::BertSparseSelfAttention bert(hidden, heads, nm_config(heads, 2, 4), 128);
  bert->to(torch::kCUDA, torch::kBFloat16);
  auto x = torch::randn({B, S, hidden}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  auto mask = torch::zeros({B, 1, 1, S}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  mask[0].narrow(2, 60, 17).fill_(-10000.0);
  bert->sparse_self_attention->set_attention_path(ds::AttentionPath::Fused);
  auto out = bert->forward(x, mask);
  bert->sparse_self_attention->set_attention_path(ds::AttentionPath::Unfused);
  auto ref = bert->forward(x, mask);
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_LT(ds::test::rel_error(out, ref), 2e-2);
  bert->sparse_self_attention->set_attention_path(ds::AttentionPath::Fused);
  bert->forward(x, mask).to(torch::kFloat32).sum().backward();
  EXPECT_GT(bert->query->weight.grad().abs().sum().item().toFloat(), 0.f);
  EXPECT_GT(bert->key->weight.grad().abs().sum().item().toFloat(), 0.f);
  EXPECT_GT(bert->value->bias.grad().abs().sum().item().toFloat(), 0.f);
}

}  // namespace
