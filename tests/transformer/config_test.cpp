// DeepSpeedTransformerConfig: DeepSpeed's defaults, the copy from the JSON section's struct, and
// the validation messages.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/config/ds_config.h"
#include "transformer/transformer_config.h"

namespace {

ds::DeepSpeedTransformerConfig valid() {
  ds::DeepSpeedTransformerConfig c;
  c.hidden_size = 1024;
  c.heads = 16;
  c.attn_dropout_ratio = 0.1;
  c.hidden_dropout_ratio = 0.1;
  c.num_hidden_layers = 24;
  c.initializer_range = 0.02;
  return c;
}

std::string error_of(const ds::DeepSpeedTransformerConfig& c, bool for_init = false) {
  try {
    for_init ? c.validate_for_init("transformer_kernel") : c.validate("transformer_kernel");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(TransformerConfig, DefaultsAreDeepSpeeds) {
  ds::DeepSpeedTransformerConfig c;
  EXPECT_EQ(c.batch_size, -1);
  EXPECT_EQ(c.hidden_size, -1);
  EXPECT_EQ(c.intermediate_size, -1);
  EXPECT_EQ(c.heads, -1);
  EXPECT_EQ(c.attn_dropout_ratio, -1);
  EXPECT_EQ(c.hidden_dropout_ratio, -1);
  EXPECT_EQ(c.num_hidden_layers, -1);
  EXPECT_EQ(c.initializer_range, -1);
  EXPECT_EQ(c.layer_norm_eps, 1e-12);
  EXPECT_EQ(c.local_rank, -1);
  EXPECT_EQ(c.seed, -1);
  EXPECT_FALSE(c.fp16);
  EXPECT_FALSE(c.bf16);
  EXPECT_TRUE(c.pre_layer_norm);
  EXPECT_FALSE(c.normalize_invertible);
  EXPECT_FALSE(c.gelu_checkpoint);
  EXPECT_TRUE(c.adjust_init_range);
  EXPECT_FALSE(c.attn_dropout_checkpoint);
  EXPECT_FALSE(c.stochastic_mode);
  EXPECT_FALSE(c.return_tuple);
}

TEST(TransformerConfig, FromKernelSectionCopiesEveryField) {
  ds::TransformerKernelConfig k;
  k.batch_size = 8;
  k.hidden_size = 160;
  k.intermediate_size = 320;
  k.heads = 2;
  k.attn_dropout_ratio = 0.05;
  k.hidden_dropout_ratio = 0.15;
  k.num_hidden_layers = 3;
  k.initializer_range = 0.03;
  k.layer_norm_eps = 1e-5;
  k.local_rank = 2;
  k.seed = 99;
  k.bf16 = true;
  k.pre_layer_norm = false;
  k.normalize_invertible = true;
  k.gelu_checkpoint = true;
  k.adjust_init_range = false;
  k.attn_dropout_checkpoint = true;
  k.stochastic_mode = true;
  k.return_tuple = true;
  const auto c = ds::DeepSpeedTransformerConfig::from_kernel_config(k);
  EXPECT_EQ(c.batch_size, 8);
  EXPECT_EQ(c.hidden_size, 160);
  EXPECT_EQ(c.intermediate_size, 320);
  EXPECT_EQ(c.heads, 2);
  EXPECT_EQ(c.attn_dropout_ratio, 0.05);
  EXPECT_EQ(c.hidden_dropout_ratio, 0.15);
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.initializer_range, 0.03);
  EXPECT_EQ(c.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.local_rank, 2);
  EXPECT_EQ(c.seed, 99);
  EXPECT_FALSE(c.fp16);
  EXPECT_TRUE(c.bf16);
  EXPECT_FALSE(c.pre_layer_norm);
  EXPECT_TRUE(c.normalize_invertible);
  EXPECT_TRUE(c.gelu_checkpoint);
  EXPECT_FALSE(c.adjust_init_range);
  EXPECT_TRUE(c.attn_dropout_checkpoint);
  EXPECT_TRUE(c.stochastic_mode);
  EXPECT_TRUE(c.return_tuple);
}

TEST(TransformerConfig, ResolvedSizesAndInitStd) {
  auto c = valid();
  EXPECT_EQ(c.resolved_intermediate_size(), 4096);
  c.intermediate_size = 0;
  EXPECT_EQ(c.resolved_intermediate_size(), 4096);
  c.intermediate_size = 1000;
  EXPECT_EQ(c.resolved_intermediate_size(), 1000);
  EXPECT_EQ(c.head_size(), 64);
  EXPECT_DOUBLE_EQ(c.output_init_std(), 0.02 / std::sqrt(48.0));
  c.adjust_init_range = false;
  EXPECT_EQ(c.output_init_std(), 0.02);
  EXPECT_NE(c.to_string().find("\"hidden_size\": 1024"), std::string::npos) << c.to_string();
}

TEST(TransformerConfig, ValidationNamesTheFieldAndTheFix) {
  EXPECT_EQ(error_of(valid()), "");
  EXPECT_EQ(error_of(valid(), true), "");

  auto c = valid();
  c.heads = 12;
  auto m = error_of(c);
  EXPECT_NE(m.find("transformer_kernel.hidden_size: 1024 is not divisible by heads (12)"), std::string::npos) << m;

  c = valid();
  c.hidden_size = -1;
  EXPECT_NE(error_of(c).find("transformer_kernel.hidden_size: must be > 0, got -1"), std::string::npos);
  c = valid();
  c.heads = 0;
  EXPECT_NE(error_of(c).find("transformer_kernel.heads: must be > 0"), std::string::npos);

  c = valid();
  c.attn_dropout_ratio = -1;
  m = error_of(c);
  EXPECT_NE(m.find("transformer_kernel.attn_dropout_ratio: must be in [0, 1), got -1 (DeepSpeed's 'unset' default)"),
            std::string::npos)
      << m;
  c = valid();
  c.hidden_dropout_ratio = 1.0;
  EXPECT_NE(error_of(c).find("transformer_kernel.hidden_dropout_ratio: must be in [0, 1), got 1"), std::string::npos);
  c = valid();
  c.hidden_dropout_ratio = std::nan("");
  EXPECT_NE(error_of(c).find("hidden_dropout_ratio"), std::string::npos);
  c.hidden_dropout_ratio = 0.0;
  EXPECT_EQ(error_of(c), "");

  c = valid();
  c.fp16 = c.bf16 = true;
  EXPECT_NE(error_of(c).find("transformer_kernel.fp16: fp16 and bf16 are both true"), std::string::npos);

  c = valid();
  c.layer_norm_eps = -1e-5;
  EXPECT_NE(error_of(c).find("transformer_kernel.layer_norm_eps"), std::string::npos);

  c = valid();
  c.initializer_range = -1;
  EXPECT_NE(error_of(c, true).find("transformer_kernel.initializer_range: must be >= 0"), std::string::npos);
  c = valid();
  c.num_hidden_layers = -1;
  m = error_of(c, true);
  EXPECT_NE(m.find("transformer_kernel.num_hidden_layers: must be > 0 when adjust_init_range is true"),
            std::string::npos)
      << m;
  c.adjust_init_range = false;
  EXPECT_EQ(error_of(c, true), "");
}

}  // namespace
