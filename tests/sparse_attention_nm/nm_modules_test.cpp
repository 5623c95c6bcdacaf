// Dynamic N:M through the modules: SparseSelfAttention / BertSparseSelfAttention built from a
// "dynamic_nm" config run ds::nm_sparse_attention with DeepSpeed's mask preparation (cast, squeeze),
// modes and scale, causal for unidirectional, no layout and no block padding. Compared with a direct
// call of the N:M reference (forward and gradients, float64), and with dense attention to show the
// selection really happens.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>

#include "engine/config/ds_config.h"
#include "sparse_attention/nm/nm_attention.h"
#include "sparse_attention/sparse_self_attention.h"
#include "sparse_attention/sparsity_config.h"
#include "tests/common/test_utils.h"
#include "tests/sparse_attention/dense_reference.h"  // DS_EXPECT_THROW_MSG

namespace ds {
namespace {

using test::rel_error;

// The module's path and the direct call run the same float64 ops on the same values; the bound only
// leaves room for a different (but equivalent) mask preparation order, not for a wrong mask or scale.
constexpr double kSameMath = 1e-13;

std::shared_ptr<const SparsityConfig> nm_config(int64_t heads, int64_t n, int64_t m,
                                                const std::string& attention = "bidirectional") {
  SparseAttentionConfig c;
  c.mode = SparseMode::DynamicNM;
  c.n = static_cast<int>(n);
  c.m = static_cast<int>(m);
  c.attention = attention;
  return make_sparsity_config(c, heads);
}

struct Grads {
  torch::Tensor out, dq, dk, dv;
};

template <typename F>
Grads run_with_grads(const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0,
                     const torch::Tensor& dout, F&& attention) {
  torch::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
                v = v0.clone().requires_grad_(true);
  torch::Tensor out = attention(q, k, v);
  (out * dout).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

void expect_close(const Grads& a, const Grads& b, double tol, const std::string& what) {
  EXPECT_LT(rel_error(a.out, b.out), tol) << what << ": output";
  EXPECT_LT(rel_error(a.dq, b.dq), tol) << what << ": dq";
  EXPECT_LT(rel_error(a.dk, b.dk), tol) << what << ": dk";
  EXPECT_LT(rel_error(a.dv, b.dv), tol) << what << ": dv";
}

torch::Tensor dense_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const torch::Tensor& additive_kp) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  torch::Tensor s = torch::matmul(q, k.transpose(-1, -2)) * scale + additive_kp.view({q.size(0), 1, 1, -1});
  return torch::matmul(torch::softmax(s, -1), v);
}

// Seq 97 (not a multiple of 4 or 2), head size 40, batch 1, BERT's additive key padding mask
// [B, 1, 1, S] with the last 11 keys masked.
TEST(NMSparseSelfAttention, MatchesTheReferenceForwardAndBackward) {
  const int64_t B = 1, H = 2, S = 97, D = 40;
  torch::manual_seed(11);
  const auto f64 = torch::kFloat64;
  const torch::Tensor q = torch::randn({B, H, S, D}, f64), k = torch::randn({B, H, S, D}, f64),
                      v = torch::randn({B, H, S, D}, f64), dout = torch::randn({B, H, S, D}, f64);
  torch::Tensor kp = torch::zeros({B, 1, 1, S}, f64);
  kp.narrow(3, S - 11, 11).fill_(-10000.0);

  for (auto [n, m] : {std::pair<int64_t, int64_t>{2, 4}, {1, 2}}) {
    const std::string what = std::to_string(n) + ":" + std::to_string(m);
    SparseSelfAttention module(nm_config(H, n, m));
    EXPECT_FALSE(module->master_layout.defined()) << what;
    EXPECT_TRUE(module->named_buffers().is_empty()) << what;
    const Grads got = run_with_grads(q, k, v, dout, [&](auto& q_, auto& k_, auto& v_) {
      return module->forward(q_, k_, v_, {}, kp);
    });
    NMOptions o;
    o.n = n;
    o.m = m;
    o.key_padding_mask = kp.view({B, S});
    o.key_padding_mask_mode = MaskMode::Add;
    const Grads ref = run_with_grads(q, k, v, dout, [&](auto& q_, auto& k_, auto& v_) {
      return nm_sparse_attention_reference(q_, k_, v_, o);
    });
    ASSERT_EQ(got.out.sizes(), q.sizes()) << what;
    expect_close(got, ref, kSameMath, what);
    // The selection drops about (m - n) / m of every row: far from dense attention.
    EXPECT_GT(rel_error(got.out, dense_attention(q, k, v, kp.view({B, S}))), 1e-2) << what;
    // Keys given as [B, H, D, S] (DeepSpeed accepts them pre-transposed).
    EXPECT_LT(rel_error(module->forward(q, k.transpose(-1, -2), v, {}, kp), ref.out), kSameMath) << what;
  }
}

// The other mask mode and causal: attn_mask in "mul" mode (0 = masked), key padding in "mul" mode
// too, and a unidirectional config.
TEST(NMSparseSelfAttention, MulModesAttnMaskAndUnidirectional) {
  const int64_t B = 2, H = 1, S = 37, D = 24;
  torch::manual_seed(12);
  const auto f64 = torch::kFloat64;
  const torch::Tensor q = torch::randn({B, H, S, D}, f64), k = torch::randn({B, H, S, D}, f64),
                      v = torch::randn({B, H, S, D}, f64), dout = torch::randn({B, H, S, D}, f64);
  const torch::Tensor kp = (torch::rand({B, S}, f64) > 0.2).to(f64);         // 1 keep, 0 masked
  const torch::Tensor am = (torch::rand({1, 1, S, S}, f64) > 0.3).to(f64);   // squeezed to [S, S]
  SparseSelfAttention module(nm_config(H, 2, 4, "unidirectional"), "mul", "mul");
  const Grads got = run_with_grads(q, k, v, dout, [&](auto& q_, auto& k_, auto& v_) {
    return module->forward(q_, k_, v_, {}, kp, am);
  });
  NMOptions o;
  o.key_padding_mask = kp;
  o.attn_mask = am.view({S, S});
  o.key_padding_mask_mode = MaskMode::Mul;
  o.attn_mask_mode = MaskMode::Mul;
  o.causal = true;
  const Grads ref = run_with_grads(q, k, v, dout, [&](auto& q_, auto& k_, auto& v_) {
    return nm_sparse_attention_reference(q_, k_, v_, o);
  });
  expect_close(got, ref, kSameMath, "unidirectional, mul masks");
  o.causal = false;
  EXPECT_GT(rel_error(got.out, nm_sparse_attention_reference(q, k, v, o)), 1e-2) << "causal was not applied";
}

TEST(NMSparseSelfAttention, PathsAndErrors) {
  const int64_t H = 2, S = 21, D = 8;
  torch::manual_seed(13);
  const torch::Tensor q = torch::randn({1, H, S, D}), k = torch::randn({1, H, S, D}), v = torch::randn({1, H, S, D});
  SparseSelfAttention module(nm_config(H, 1, 2), "add", "mul", /*max_seq_length=*/16);
  // max_seq_length sizes no layout in this mode: S = 21 > 16 runs.
  const torch::Tensor auto_out = module->forward(q, k, v);
  module->set_attention_path(AttentionPath::Unfused);
  NMOptions o;
  o.n = 1;
  o.m = 2;
  EXPECT_TRUE(torch::equal(module->forward(q, k, v), nm_sparse_attention_reference(q, k, v, o)));
  EXPECT_TRUE(torch::equal(auto_out, nm_sparse_attention_reference(q, k, v, o)));  // CPU: the reference
  module->set_attention_path(AttentionPath::Fused);
  DS_EXPECT_THROW_MSG(module->forward(q, k, v), c10::Error, "the fused N:M kernel cannot run these arguments");
  module->set_attention_path(AttentionPath::Auto);

  DS_EXPECT_THROW_MSG(module->get_layout(S), c10::ValueError, "'dynamic_nm' has no block layout");
  DS_EXPECT_THROW_MSG(module->get_tables(S), c10::ValueError, "'dynamic_nm' has no block layout");
  DS_EXPECT_THROW_MSG(module->forward(q, k, v, torch::zeros({1, H, S, S})), c10::NotImplementedError,
                      "does not take a relative position embedding");
  const torch::Tensor q3 = torch::randn({1, 3, S, D});
  DS_EXPECT_THROW_MSG(module->forward(q3, q3, q3), c10::ValueError, "query has 3 heads, the sparsity config 2");
}

// Only 1:2 and 2:4: the config parser refuses others with the JSON path, and a section built in
// code is refused when the structure is made.
TEST(NMSparseSelfAttention, ThreeOfFourIsRejected) {
  try {
    parse_sparse_attention_section(R"({"mode": "dynamic_nm", "n": 3, "m": 4})");
    FAIL() << "3:4 accepted by the parser";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("sparse_attention.n"), std::string::npos) << msg;
    EXPECT_NE(msg.find("n 3 : m 4 is not supported"), std::string::npos) << msg;
  }
  DS_EXPECT_THROW_MSG(nm_config(2, 3, 4), c10::ValueError, "supports 1:2 and 2:4 (n:m); got 3:4");
  DS_EXPECT_THROW_MSG(NMSparsityConfig(2, 2, 4, "sideways"), c10::NotImplementedError, "attentions are supported");
}

TEST(NMBertSparseSelfAttention, MatchesTheComposition) {
  const int64_t B = 2, S = 50, hidden = 48, heads = 3, d = 16;
  torch::manual_seed(14);
  BertSparseSelfAttention bert(hidden, heads, nm_config(heads, 2, 4), 128);
  bert->to(torch::kFloat64);
  EXPECT_EQ(bert->sparse_self_attention->sparsity_config().name(), "dynamic_nm");
  EXPECT_TRUE(bert->named_buffers().is_empty());  // no sparse_self_attention.master_layout
  const torch::Tensor x = torch::randn({B, S, hidden}, torch::kFloat64);
  torch::Tensor mask = torch::zeros({B, 1, 1, S}, torch::kFloat64);
  mask[1].narrow(2, 30, 20).fill_(-10000.0);
  const torch::Tensor out = bert->forward(x, mask);
  ASSERT_EQ(out.sizes(), at::IntArrayRef({B, S, hidden}));

  auto split = [&](const torch::Tensor& t) { return t.view({B, S, heads, d}).permute({0, 2, 1, 3}); };
  NMOptions o;
  o.key_padding_mask = mask.view({B, S});
  const torch::Tensor ctx = nm_sparse_attention_reference(split(bert->query->forward(x)), split(bert->key->forward(x)),
                                                          split(bert->value->forward(x)), o);
  const torch::Tensor ref = ctx.permute({0, 2, 1, 3}).reshape({B, S, hidden});
  EXPECT_LT(rel_error(out, ref), kSameMath);
  out.sum().backward();
  EXPECT_GT(bert->query->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(bert->value->bias.grad().abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace ds
