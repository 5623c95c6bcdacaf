// SparseSelfAttention and BertSparseSelfAttention against dense float64 attention: outputs and all
// gradients, awkward sizes (sequence not a multiple of the block, head size 40/72, batch 1, one
// head), blocks 16..128, DeepSpeed's module semantics (key transpose, mask squeezing, master layout
// slicing, persistent buffer) and our per-module cache.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <limits>
#include <memory>
#include <string>

#include "dense_reference.h"
#include "sparse_attention/sparse_self_attention.h"
#include "sparse_attention/sparsity_config.h"
#include "tests/common/test_utils.h"

namespace ds {
namespace {

using test::rel_error;
constexpr double kInf = std::numeric_limits<double>::infinity();

struct AttnCase {
  std::shared_ptr<SparsityConfig> config;
  int64_t B, S, D;
  bool rpe, kp, am;
};

// Checks the module's output and the gradients of q, k, v (and rpe) against dense attention.
void check_module(const AttnCase& c, torch::ScalarType dt, double tol, uint64_t seed) {
  const int64_t H = c.config->num_heads();
  SparseSelfAttention attn(c.config, "add", "mul", 512);
  torch::manual_seed(static_cast<int64_t>(seed));
  auto leaf = [&](std::vector<int64_t> s) { return torch::randn(s, torch::kFloat64).to(dt).set_requires_grad(true); };
  torch::Tensor q = leaf({c.B, H, c.S, c.D}), k = leaf({c.B, H, c.S, c.D}), v = leaf({c.B, H, c.S, c.D});
  torch::Tensor rpe = c.rpe ? leaf({c.B, H, c.S, c.S}) : torch::Tensor();
  test::DenseSoftmaxArgs r;
  r.scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  r.kp_mode = MaskMode::Add;
  r.am_mode = MaskMode::Mul;
  r.causal_diagonal = c.config->unidirectional();
  torch::Tensor kp, am;
  if (c.kp) {  // BERT-style additive mask [B, 1, 1, S], squeezed by the module
    kp = torch::zeros({c.B, 1, 1, c.S}, torch::kFloat64);
    kp.narrow(3, c.S - 5, 5).fill_(-10000.0);
    r.key_padding_mask = kp.view({c.B, c.S}).to(dt).to(torch::kFloat64);
  }
  if (c.am) {  // causal 0/1 mask in 'mul' mode
    am = torch::ones({c.S, c.S}, torch::kFloat64).tril();
    r.attn_mask = am;
  }
  if (c.rpe) r.rpe = rpe.to(torch::kFloat64);
  torch::Tensor out = attn->forward(q, k, v, rpe, kp, am);
  ASSERT_EQ(out.sizes(), q.sizes());
  ASSERT_EQ(out.scalar_type(), dt);
  torch::Tensor layout = attn->get_layout(c.S);
  torch::Tensor ref = test::dense_attention(q.to(torch::kFloat64), k.to(torch::kFloat64), v.to(torch::kFloat64),
                                            layout, c.config->block(), r);
  EXPECT_LT(rel_error(out, ref), tol) << "output";
  EXPECT_GT(out.to(torch::kFloat64).abs().sum().item<double>(), 0.0);
  std::vector<torch::Tensor> inputs{q, k, v};
  if (c.rpe) inputs.push_back(rpe);
  torch::Tensor w = torch::randn_like(ref);
  auto g = torch::autograd::grad({(out.to(torch::kFloat64) * w).sum()}, inputs);
  auto g_ref = torch::autograd::grad({(ref * w).sum()}, inputs);
  const char* names[] = {"dq", "dk", "dv", "drpe"};
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_LT(rel_error(g[i], g_ref[i]), tol) << names[i];
}

TEST(SparseSelfAttention, Seq97HeadSize40AllMasksAndRpe) {
  check_module({std::make_shared<FixedSparsityConfig>(4), 2, 97, 40, true, true, true}, torch::kFloat64, 1e-12, 1);
}

TEST(SparseSelfAttention, BatchOneOneHeadHeadSize72Block32) {
  check_module({std::make_shared<BigBirdSparsityConfig>(1, 32, false, 1, 3, 1), 1, 200, 72, false, true, false},
               torch::kFloat64, 1e-12, 2);
}

TEST(SparseSelfAttention, Blocks64And128) {
  check_module({std::make_shared<BSLongformerSparsityConfig>(2, 64), 1, 300, 16, true, false, true},
               torch::kFloat64, 1e-12, 3);
  check_module({std::make_shared<DenseSparsityConfig>(2, 128), 2, 256, 24, false, true, false}, torch::kFloat64,
               1e-12, 4);
  check_module({std::make_shared<VariableSparsityConfig>(3, 128, true, 1), 1, 384, 8, false, false, false},
               torch::kFloat64, 1e-12, 5);
}

TEST(SparseSelfAttention, UnidirectionalLayoutsHaveCausalDiagonalBlocks) {
  // A unidirectional layout's diagonal blocks are causal inside the block (DeepSpeed attends the whole
  // diagonal block, i.e. up to block-1 future tokens, unless an attn_mask says otherwise).
  check_module({std::make_shared<FixedSparsityConfig>(2, 16, false, 4, 1, "unidirectional"), 2, 100, 24, true, true,
                false},
               torch::kFloat64, 1e-12, 11);
  check_module({std::make_shared<BigBirdSparsityConfig>(2, 32, false, 1, 3, 1, "unidirectional"), 1, 160, 16, false,
                false, false},
               torch::kFloat64, 1e-12, 12);
  check_module({std::make_shared<LocalSlidingWindowSparsityConfig>(1, 64), 1, 256, 8, false, true, false},
               torch::kFloat64, 1e-12, 13);
  // A window of one block: a block's first query sees only itself, so its output is its own value.
  auto config = std::make_shared<LocalSlidingWindowSparsityConfig>(1, 16, 1, "unidirectional");
  SparseSelfAttention attn(config, "add", "mul", 64);
  torch::Tensor q = torch::randn({1, 1, 64, 8}, torch::kFloat64), v = torch::randn_like(q);
  torch::Tensor out = attn->forward(q, q, v);
  for (int64_t row : {16, 32, 48}) EXPECT_LT(rel_error(out[0][0][row], v[0][0][row]), 1e-14) << row;
}

TEST(SparseSelfAttention, AttentionPathOptionOnCpu) {
  auto config = std::make_shared<FixedSparsityConfig>(2);
  SparseSelfAttention attn(config);
  torch::Tensor q = torch::randn({1, 2, 32, 8}, torch::kFloat64);
  const torch::Tensor expected = attn->forward(q, q, q);
  // CPU tensors take the reference path whatever DS_SPARSE_ATTENTION_PATH says; forcing the fused
  // kernel on them is an error.
  setenv("DS_SPARSE_ATTENTION_PATH", "fused", 1);
  const torch::Tensor with_env = attn->forward(q, q, q);
  unsetenv("DS_SPARSE_ATTENTION_PATH");
  EXPECT_TRUE(with_env.equal(expected));
  attn->set_attention_path(AttentionPath::Unfused);
  EXPECT_TRUE(attn->forward(q, q, q).equal(expected));
  attn->set_attention_path(AttentionPath::Fused);
  DS_EXPECT_THROW_MSG(attn->forward(q, q, q), c10::ValueError, "path 'fused' needs CUDA tensors, q is on cpu");
  EXPECT_EQ(parse_attention_path("unfused"), AttentionPath::Unfused);
  DS_EXPECT_THROW_MSG(parse_attention_path("flash", "path"), c10::ValueError,
                      "path must be 'auto', 'fused' or 'unfused', got 'flash'");
  LayoutTables t = LayoutTables::build(config->make_layout(32), 16);
  EXPECT_NE(fused_attention_unsupported(q, t, {}).find("CUDA tensors"), std::string::npos);
}

TEST(SparseSelfAttention, ReducedPrecision) {
  // float32 end to end: a few hundred accumulations per output, 1e-5 relative.
  check_module({std::make_shared<FixedSparsityConfig>(2), 2, 70, 32, true, true, false}, torch::kFloat32, 1e-5, 6);
  // bf16 inputs (the reference sees the same rounded inputs); computed in float32, the output
  // rounded once: ~1 unit roundoff; the gradients flow through two more bf16 roundings (output grad
  // and input grad casts), hence 4 unit roundoffs.
  check_module({std::make_shared<FixedSparsityConfig>(2), 1, 64, 16, false, true, false}, torch::kBFloat16,
               4 * test::unit_roundoff(torch::kBFloat16), 7);
}

TEST(SparseSelfAttention, GradcheckFloat64) {
  auto config = std::make_shared<FixedSparsityConfig>(2, 16, false, 1, 1);
  SparseSelfAttention attn(config, "add", "mul", 64);
  torch::manual_seed(8);
  torch::Tensor kp = torch::zeros({1, 24}, torch::kFloat64);
  kp.narrow(1, 20, 4).fill_(-kInf);
  const double err = test::gradcheck_error(
      [&](const std::vector<torch::Tensor>& x) { return attn->forward(x[0], x[1], x[2], x[3], kp); },
      {torch::randn({1, 2, 24, 3}, torch::kFloat64), torch::randn({1, 2, 24, 3}, torch::kFloat64),
       torch::randn({1, 2, 24, 3}, torch::kFloat64), torch::randn({1, 1, 24, 24}, torch::kFloat64)});
  EXPECT_LT(err, 1e-7);
}

TEST(SparseSelfAttention, TransposedKeyIsDetected) {
  auto config = std::make_shared<FixedSparsityConfig>(2);
  SparseSelfAttention attn(config);
  torch::Tensor q = torch::randn({1, 2, 64, 16}, torch::kFloat64), k = torch::randn_like(q), v = torch::randn_like(q);
  torch::Tensor a = attn->forward(q, k, v);
  torch::Tensor b = attn->forward(q, k.transpose(-1, -2).contiguous(), v);
  EXPECT_TRUE(a.equal(b));
  DS_EXPECT_THROW_MSG(attn->forward(q, k, torch::randn({1, 2, 64, 8}, torch::kFloat64)), c10::NotImplementedError,
                      "only self-attention is supported for now");
}

TEST(SparseSelfAttention, MasksAreSqueezedAndCast) {
  auto config = std::make_shared<FixedSparsityConfig>(2);
  SparseSelfAttention attn(config);
  torch::Tensor q = torch::randn({2, 2, 48, 16}), k = torch::randn_like(q), v = torch::randn_like(q);
  torch::Tensor kp = torch::zeros({2, 48}, torch::kFloat64);
  kp.narrow(1, 40, 8).fill_(-10000);
  torch::Tensor am = torch::ones({48, 48}, torch::kBool).tril();
  torch::Tensor flat = attn->forward(q, k, v, {}, kp.to(torch::kFloat32), am.to(torch::kFloat32));
  torch::Tensor nested = attn->forward(q, k, v, {}, kp.view({2, 1, 1, 48}), am.view({1, 1, 48, 48}));
  EXPECT_TRUE(flat.equal(nested));
}

TEST(SparseSelfAttention, MasterLayoutBufferAndSlicing) {
  auto config = std::make_shared<FixedSparsityConfig>(4);
  SparseSelfAttention attn(config);  // max_seq_length 2048
  auto buffers = attn->named_buffers();
  ASSERT_TRUE(buffers.contains("master_layout"));
  EXPECT_EQ(buffers["master_layout"].sizes(), at::IntArrayRef({4, 128, 128}));
  EXPECT_EQ(buffers["master_layout"].scalar_type(), torch::kLong);
  // DeepSpeed's slicing: the layout for 160 tokens is master[:, :10, :10], not make_layout(160).
  torch::Tensor sliced = attn->get_layout(160);
  EXPECT_TRUE(sliced.equal(attn->master_layout.slice(1, 0, 10).slice(2, 0, 10)));
  EXPECT_EQ(layout_rows_string(sliced), "1111...1.. 1111...1.. 1111...1.. 1111...1.. ...11111.. ...11111.. ...11111.. "
                                        "...11111.. ...1...111 ...1...111");
  EXPECT_FALSE(sliced.equal(config->make_layout(160)));
  // Any length: 150 tokens use the 10-block layout too.
  EXPECT_TRUE(attn->get_layout(150).equal(sliced));
  SparseSelfAttention small(config, "add", "mul", 256);
  DS_EXPECT_THROW_MSG(small->get_layout(300), c10::ValueError,
                      "Sequence Length, 300, is longer than max_seq_length 256 of this SparseSelfAttention");
  DS_EXPECT_THROW_MSG(small->forward(torch::randn({1, 2, 64, 16}), torch::randn({1, 2, 64, 16}),
                                     torch::randn({1, 2, 64, 16})),
                      c10::ValueError, "q has 2 heads (dim 1) but the layout has 4; build the layout with num_heads=2");
  DS_EXPECT_THROW_MSG(SparseSelfAttention(std::shared_ptr<const SparsityConfig>()), c10::ValueError,
                      "needs a sparsity config");
  DS_EXPECT_THROW_MSG(SparseSelfAttention(config, "add", "multiply"), c10::ValueError,
                      "attn_mask_mode must be 'add' or 'mul', got 'multiply'");
  DS_EXPECT_THROW_MSG(SparseSelfAttention(config, "add", "mul", 100), c10::ValueError,
                      "Sequence Length, 100, needs to be dividable by Block size 16!");
}

TEST(SparseSelfAttention, CacheIsPerModuleAndFollowsTheLayout) {
  // Two modules, same heads and length, different layouts: each uses its own (DeepSpeed's
  // class-level cache keyed by length would hand the second module the first one's ops).
  auto fixed = std::make_shared<FixedSparsityConfig>(2);
  auto window = std::make_shared<LocalSlidingWindowSparsityConfig>(2);
  SparseSelfAttention a(fixed, "add", "mul", 256), b(window, "add", "mul", 256);
  torch::Tensor q = torch::randn({1, 2, 96, 8}, torch::kFloat64), k = torch::randn_like(q), v = torch::randn_like(q);
  test::DenseSoftmaxArgs r;
  r.scale = 1.0 / std::sqrt(8.0);
  EXPECT_LT(rel_error(a->forward(q, k, v), test::dense_attention(q, k, v, a->get_layout(96), 16, r)), 1e-13);
  test::DenseSoftmaxArgs r_uni = r;  // LocalSlidingWindow is unidirectional: causal diagonal blocks
  r_uni.causal_diagonal = true;
  EXPECT_LT(rel_error(b->forward(q, k, v), test::dense_attention(q, k, v, b->get_layout(96), 16, r_uni)), 1e-13);
  EXPECT_EQ(a->cached_layouts(), 1u);
  a->forward(q.narrow(2, 0, 90), k.narrow(2, 0, 90), v.narrow(2, 0, 90));  // 90 -> the same 6 blocks
  EXPECT_EQ(a->cached_layouts(), 1u);
  EXPECT_EQ(a->get_tables(96).get(), a->get_tables(90).get());
  a->forward(q.narrow(2, 0, 40), k.narrow(2, 0, 40), v.narrow(2, 0, 40));
  EXPECT_EQ(a->cached_layouts(), 2u);
  // Replacing the layout in place (as load_state_dict does) invalidates the cache.
  {
    torch::NoGradGuard g;
    a->master_layout.copy_(window->make_layout(256));
  }
  EXPECT_LT(rel_error(a->forward(q, k, v), test::dense_attention(q, k, v, b->get_layout(96), 16, r)), 1e-13);
  EXPECT_EQ(a->cached_layouts(), 1u);
}

TEST(BertSparseSelfAttention, MatchesDenseComposition) {
  const int64_t B = 2, S = 50, hidden = 48, heads = 3;
  torch::manual_seed(9);
  BertSparseSelfAttention bert(hidden, heads, nullptr, 128);
  // LibTorch's Module::to(dtype) converts integer buffers too; the layout keeps working as 0/1 values.
  bert->to(torch::kFloat64);
  EXPECT_EQ(bert->sparse_self_attention->sparsity_config().num_heads(), heads);
  EXPECT_EQ(bert->sparse_self_attention->sparsity_config().name(), "fixed");
  torch::Tensor x = torch::randn({B, S, hidden}, torch::kFloat64);
  torch::Tensor mask = torch::zeros({B, 1, 1, S}, torch::kFloat64);
  mask[1].narrow(2, 30, 20).fill_(-10000.0);
  torch::Tensor out = bert->forward(x, mask);
  ASSERT_EQ(out.sizes(), at::IntArrayRef({B, S, hidden}));

  auto split = [&](const torch::Tensor& t) { return t.view({B, S, heads, 16}).permute({0, 2, 1, 3}); };
  test::DenseSoftmaxArgs r;
  r.scale = 0.25;
  r.key_padding_mask = mask.view({B, S});
  torch::Tensor ctx = test::dense_attention(split(bert->query->forward(x)), split(bert->key->forward(x)),
                                            split(bert->value->forward(x)),
                                            bert->sparse_self_attention->get_layout(S), 16, r);
  torch::Tensor ref = ctx.permute({0, 2, 1, 3}).reshape({B, S, hidden});
  EXPECT_LT(rel_error(out, ref), 1e-13);
  out.sum().backward();
  EXPECT_GT(bert->query->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(bert->value->bias.grad().abs().sum().item<double>(), 0.0);

  auto params = bert->named_parameters();
  for (const char* name : {"query.weight", "query.bias", "key.weight", "key.bias", "value.weight", "value.bias"})
    EXPECT_TRUE(params.contains(name)) << name;
  EXPECT_TRUE(bert->named_buffers().contains("sparse_self_attention.master_layout"));
  EXPECT_EQ(bert->named_buffers()["sparse_self_attention.master_layout"].sizes(), at::IntArrayRef({3, 8, 8}));
}

TEST(BertSparseSelfAttention, Errors) {
  DS_EXPECT_THROW_MSG(BertSparseSelfAttention(30, 4), c10::ValueError,
                      "The hidden size (30) is not a multiple of the number of attention heads (4)");
  BertSparseSelfAttention bert(32, 2, std::make_shared<FixedSparsityConfig>(4), 64);
  DS_EXPECT_THROW_MSG(bert->forward(torch::randn({1, 16, 32})), c10::ValueError, "but the layout has 4");
  DS_EXPECT_THROW_MSG(bert->forward(torch::randn({1, 16, 30})), c10::ValueError, "hidden_states must be [batch, seq, 32]");
}

}  // namespace
}  // namespace ds
