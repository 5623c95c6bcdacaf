// What the layer keeps for backward, measured from its autograd node: the baseline equals
// DeepSpeed's stash (minus what its backward never reads), and each memory flag lowers it by
// exactly the tensors it drops.
#include "transformer/saved_bytes.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <string>

namespace {

using ds::transformer::expected_flag_savings;
using ds::transformer::measure_saved_bytes;

ds::DeepSpeedTransformerConfig small_config(bool pre, double attn_p) {
  ds::DeepSpeedTransformerConfig c;
  c.hidden_size = 48;
  c.heads = 3;
  c.intermediate_size = 80;
  c.attn_dropout_ratio = attn_p;
  c.hidden_dropout_ratio = 0.1;
  c.pre_layer_norm = pre;
  c.seed = 3;
  return c;
}

int64_t packed(int64_t n) { return (n + 7) / 8; }

std::set<std::string> names(const ds::transformer::SavedBytes& s) {
  std::set<std::string> n;
  for (const auto& t : s.tensors) n.insert(t.name);
  return n;
}

void check_flags(bool pre, at::ScalarType dt, int64_t elem) {
  SCOPED_TRACE(std::string(pre ? "pre-LN " : "post-LN ") + c10::toString(dt));
  const int64_t b = 2, s = 13, h = 48, heads = 3, i = 80, stat = 4;
  auto cfg = small_config(pre, 0.1);
  const auto none = measure_saved_bytes(cfg, b, s, dt);
  // Baseline: input, inp_norm, attn_o_inp, add_res, ff1_inp ([B,S,H] each) + qkv_tf (3 x) = 8 BSH;
  // soft_out and ctx_bufB (2 BhSS); gelu_inp and ff2_inp (2 BSI); three packed masks; four
  // LayerNorm statistics of B*S fp32 each.
  const int64_t bsh = b * s * h, bhss = b * heads * s * s, bsi = b * s * i;
  const int64_t baseline = elem * (8 * bsh + 2 * bhss + 2 * bsi) + packed(bhss) + 2 * packed(bsh) + 4 * b * s * stat;
  EXPECT_EQ(none.total, baseline);
  EXPECT_EQ(names(none).count("output"), 0u) << "only post-LN + normalize_invertible keeps the output";

  const auto e = expected_flag_savings(cfg, b, s, elem, stat);
  EXPECT_EQ(e.attn_dropout_checkpoint, elem * bhss);
  EXPECT_EQ(e.gelu_checkpoint, elem * bsi);
  EXPECT_EQ(e.normalize_invertible, 2 * b * s * stat + elem * bsh * (pre ? 2 : 1));

  auto with = [&](bool a, bool n, bool g) {
    auto c = cfg;
    c.attn_dropout_checkpoint = a;
    c.normalize_invertible = n;
    c.gelu_checkpoint = g;
    return measure_saved_bytes(c, b, s, dt);
  };
  const auto attn = with(true, false, false), inv = with(false, true, false), gelu = with(false, false, true),
             all = with(true, true, true);
  EXPECT_EQ(none.total - attn.total, e.attn_dropout_checkpoint);
  EXPECT_EQ(none.total - inv.total, e.normalize_invertible);
  EXPECT_EQ(none.total - gelu.total, e.gelu_checkpoint);
  EXPECT_EQ(none.total - all.total, e.attn_dropout_checkpoint + e.normalize_invertible + e.gelu_checkpoint);
  EXPECT_EQ(names(attn).count("ctx_bufB"), 0u);
  EXPECT_EQ(names(attn).count("attn_prob_dropout_mask"), 1u) << "the mask is kept to recompute the probs";
  EXPECT_EQ(names(gelu).count("ff2_inp"), 0u);
  EXPECT_EQ(names(gelu).count("gelu_inp"), 1u);
  EXPECT_EQ(names(inv).count("add_res"), 0u);
  EXPECT_EQ(names(inv).count("attn_layer_norm_mean"), 0u);
  EXPECT_EQ(names(inv).count("input"), pre ? 0u : 1u) << "post-LN: the QKV weight gradient reads the input";
  EXPECT_EQ(names(inv).count("output"), pre ? 0u : 1u) << "post-LN: the output LayerNorm is inverted from it";
  EXPECT_EQ(names(inv).count("inp_norm"), pre ? 1u : 0u);
  for (const auto& t : all.tensors) {  // masks stay packed uint8, never full precision
    if (t.name.find("mask") != std::string::npos) {
      EXPECT_EQ(t.dtype, at::kByte) << t.name;
    }
  }
}

TEST(SavedBytes, EachFlagSavesWhatItDropsPreLNFloat32) { check_flags(true, at::kFloat, 4); }
TEST(SavedBytes, EachFlagSavesWhatItDropsPostLNFloat32) { check_flags(false, at::kFloat, 4); }
TEST(SavedBytes, EachFlagSavesWhatItDropsPreLNBFloat16) { check_flags(true, at::kBFloat16, 2); }
TEST(SavedBytes, EachFlagSavesWhatItDropsPostLNHalf) { check_flags(false, at::kHalf, 2); }

TEST(SavedBytes, NoAttentionDropoutKeepsNoSecondProbabilityTensor) {
  auto cfg = small_config(true, 0.0);
  const auto none = measure_saved_bytes(cfg, 2, 8, at::kFloat);
  EXPECT_EQ(names(none).count("ctx_bufB"), 0u);
  EXPECT_EQ(names(none).count("attn_prob_dropout_mask"), 0u);
  cfg.attn_dropout_checkpoint = true;
  EXPECT_EQ(measure_saved_bytes(cfg, 2, 8, at::kFloat).total, none.total);
  EXPECT_EQ(expected_flag_savings(cfg, 2, 8, 4, 4).attn_dropout_checkpoint, 0);
}

}  // namespace
