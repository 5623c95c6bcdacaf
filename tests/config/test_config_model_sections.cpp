// sparse_attention and transformer_kernel: per-mode keys, DeepSpeed's constructor errors, our
// modes, the exclusivity rule, and the one-section entry points used by the Python ops.
#include <string>

#include "tests/config/config_test_util.h"

namespace ds::test {
namespace {

ConfigParseResult sparse(const std::string& body) { return parse(with_batch("\"sparse_attention\": {" + body + "}")); }
ConfigParseResult kernel(const std::string& body) { return parse(with_batch("\"transformer_kernel\": {" + body + "}")); }

TEST(ConfigSparse, BingBertFixedSection) {
  ConfigParseResult r = sparse(R"("mode": "fixed", "block": 16, "different_layout_per_head": true, "num_local_blocks": 4,
      "num_global_blocks": 1, "attention": "bidirectional", "horizontal_global_attention": false, "num_different_global_patterns": 4)");
  ASSERT_TRUE(r.ok()) << issues_text(r);
  const SparseAttentionConfig& s = *r.config.sparse_attention;
  EXPECT_EQ(s.mode, SparseMode::Fixed);
  EXPECT_TRUE(s.different_layout_per_head);
  EXPECT_EQ(s.num_different_global_patterns, 4);
}

TEST(ConfigSparse, EveryModeReadsItsKeys) {
  DeepSpeedConfig c = ok(with_batch(R"("sparse_attention": {"mode": "variable", "block": 32, "num_random_blocks": 2,
      "local_window_blocks": [2, 3], "global_block_indices": [0, 5], "global_block_end_indices": [1, 7],
      "attention": "unidirectional", "different_layout_per_head": true, "seed": 7})"));
  const SparseAttentionConfig& v = *c.sparse_attention;
  EXPECT_EQ(v.block, 32);
  EXPECT_EQ(v.num_random_blocks, 2);
  EXPECT_EQ(v.local_window_blocks, (std::vector<int>{2, 3}));
  EXPECT_EQ(v.global_block_indices, (std::vector<int>{0, 5}));
  EXPECT_EQ(*v.global_block_end_indices, (std::vector<int>{1, 7}));
  EXPECT_EQ(v.attention, "unidirectional");
  EXPECT_EQ(v.seed, 7u);

  SparseAttentionConfig b = *ok(with_batch(R"("sparse_attention": {"mode": "bigbird", "num_random_blocks": 1,
      "num_sliding_window_blocks": 5, "num_global_blocks": 2, "attention": "unidirectional"})")).sparse_attention;
  EXPECT_EQ(b.num_random_blocks, 1);
  EXPECT_EQ(b.num_sliding_window_blocks, 5);
  EXPECT_EQ(b.num_global_blocks, 2);
  EXPECT_EQ(b.attention, "unidirectional");  // accepted for bigbird (our extension of the JSON)

  SparseAttentionConfig l = *ok(with_batch(R"("sparse_attention": {"mode": "bslongformer", "num_sliding_window_blocks": 7,
      "global_block_indices": [0, 2], "global_block_end_indices": [1, 4]})")).sparse_attention;
  EXPECT_EQ(l.num_sliding_window_blocks, 7);
  EXPECT_EQ(*l.global_block_end_indices, (std::vector<int>{1, 4}));

  SparseAttentionConfig w = *ok(with_batch(
      R"("sparse_attention": {"mode": "local_sliding_window", "num_sliding_window_blocks": 4, "attention": "bidirectional"})")).sparse_attention;
  EXPECT_EQ(w.num_sliding_window_blocks, 4);
  EXPECT_EQ(w.attention, "bidirectional");

  SparseAttentionConfig nm = *ok(with_batch(R"("sparse_attention": {"mode": "dynamic_nm", "n": 1, "m": 2})")).sparse_attention;
  EXPECT_EQ(nm.n, 1);
  EXPECT_EQ(nm.m, 2);
}

TEST(ConfigSparse, KeysOfAnotherModeAreErrors) {
  ConfigParseResult r = sparse(R"("mode": "bigbird", "num_local_blocks": 4)");
  EXPECT_TRUE(HasError(r, "sparse_attention.num_local_blocks",
                       "\"num_local_blocks\" is not a key of mode \"bigbird\" (its keys: mode, block, different_layout_per_head"));
  EXPECT_TRUE(HasError(sparse(R"("mode": "dynamic_nm", "block": 16)"), "sparse_attention.block", "is not a key of mode \"dynamic_nm\""));
  EXPECT_TRUE(HasError(sparse(R"("mode": "local_sliding_window", "different_layout_per_head": true)"),
                       "sparse_attention.different_layout_per_head", "is not a key of mode \"local_sliding_window\""));
  EXPECT_TRUE(HasError(sparse(R"("mode": "dense", "n": 2)"), "sparse_attention.n", "is not a key of mode \"dense\""));
  EXPECT_TRUE(HasError(sparse(R"("num_local_blok": 2)"), "sparse_attention.num_local_blok", "did you mean \"num_local_blocks\"?"));
}

TEST(ConfigSparse, UnknownModeSuggests) {
  ConfigParseResult r = sparse(R"("mode": "fixd", "block": 16, "whatever": 1)");
  EXPECT_TRUE(HasError(r, "sparse_attention.mode", "got \"fixd\""));
  EXPECT_TRUE(HasError(r, "sparse_attention.mode", "did you mean \"fixed\"?"));
  EXPECT_EQ(r.errors.size(), 1u) << "one error is enough when the mode is unknown\n" << issues_text(r);
}

TEST(ConfigSparse, BlockSizes) {
  for (int b : {16, 32, 64, 128}) EXPECT_TRUE(sparse("\"block\": " + std::to_string(b)).ok()) << b;
  EXPECT_TRUE(HasError(sparse(R"("block": 24)"), "sparse_attention.block", "got 24, expected 16, 32, 64 or 128"));
  EXPECT_TRUE(HasError(sparse(R"("block": 0)"), "sparse_attention.block", "got 0"));
}

TEST(ConfigSparse, FixedConstructorErrorsWithDeepSpeedsText) {
  EXPECT_TRUE(HasError(sparse(R"("num_local_blocks": 4, "num_global_blocks": 3)"), "sparse_attention.num_local_blocks",
                       "Number of blocks in a local window, 4, must be dividable by number of global blocks, 3!"));
  EXPECT_TRUE(HasError(sparse(R"("attention": "unidirectional", "horizontal_global_attention": true)"),
                       "sparse_attention.horizontal_global_attention",
                       "only \"bi-directional\" attentions can support horizontal global attention!"));
  EXPECT_TRUE(HasError(sparse(R"("num_different_global_patterns": 2)"), "sparse_attention.num_different_global_patterns",
                       "Number of different layouts cannot be more than one when you have set a single layout for all heads!"));
  EXPECT_TRUE(HasError(sparse(R"("different_layout_per_head": true, "num_different_global_patterns": 5)"),
                       "sparse_attention.num_different_global_patterns",
                       "Number of layout versions (num_different_global_patterns), 5, cannot be larger than number of local "
                       "window blocks divided by number of global blocks, 4 / 1 = 4!"));
  EXPECT_TRUE(HasError(sparse(R"("attention": "causal")"), "sparse_attention.attention",
                       "expected \"bidirectional\" or \"unidirectional\""));
  EXPECT_TRUE(HasError(sparse(R"("num_global_blocks": 0)"), "sparse_attention.num_global_blocks", "got 0"));
}

TEST(ConfigSparse, VariableAndLongformerRangeErrors) {
  EXPECT_TRUE(HasError(sparse(R"("mode": "variable", "global_block_indices": [0, 4], "global_block_end_indices": [2])"),
                       "sparse_attention.global_block_end_indices",
                       "Global block start indices length, 2, must be same as global block end indices length, 1!"));
  EXPECT_TRUE(HasError(sparse(R"("mode": "bslongformer", "global_block_indices": [0, 4], "global_block_end_indices": [2, 4])"),
                       "sparse_attention.global_block_end_indices[1]",
                       "Global block start index, 4, must be smaller than global block end index, 4!"));
  EXPECT_TRUE(HasError(sparse(R"("mode": "variable", "attention": "unidirectional", "horizontal_global_attention": true)"),
                       "sparse_attention.horizontal_global_attention", "bi-directional"));
  EXPECT_TRUE(HasError(sparse(R"("mode": "variable", "local_window_blocks": [])"), "sparse_attention.local_window_blocks",
                       "expected a non-empty list of positive integers"));
  EXPECT_TRUE(HasError(sparse(R"("mode": "variable", "local_window_blocks": [4, 0])"), "sparse_attention.local_window_blocks[1]",
                       "got 0"));
  EXPECT_TRUE(sparse(R"("mode": "variable", "global_block_end_indices": null)").ok());
  EXPECT_TRUE(HasError(sparse(R"("mode": "bigbird", "num_sliding_window_blocks": 0)"),
                       "sparse_attention.num_sliding_window_blocks", "got 0"));
}

TEST(ConfigSparse, DynamicNmOnlyOneTwoAndTwoFour) {
  EXPECT_TRUE(sparse(R"("mode": "dynamic_nm", "n": 1, "m": 2)").ok());
  EXPECT_TRUE(sparse(R"("mode": "dynamic_nm", "n": 2, "m": 4)").ok());
  EXPECT_TRUE(HasError(sparse(R"("mode": "dynamic_nm", "n": 2, "m": 8)"), "sparse_attention.n",
                       "n 2 : m 8 is not supported; dynamic N:M attention keeps n of every m keys and supports 1:2 and 2:4 only"));
  EXPECT_TRUE(HasError(sparse(R"("mode": "dynamic_nm", "n": 1)"), "sparse_attention.n", "n 1 : m 4 is not supported"));
  EXPECT_TRUE(HasError(sparse(R"("mode": "dynamic_nm", "n": 0)"), "sparse_attention.n", "got 0"));
}

TEST(ConfigSparse, SeedInEveryMode) {
  for (const char* mode : {"dense", "fixed", "variable", "bigbird", "bslongformer", "local_sliding_window", "dynamic_nm"}) {
    ConfigParseResult r = sparse(std::string("\"mode\": \"") + mode + "\", \"seed\": 18446744073709551615");
    ASSERT_TRUE(r.ok()) << mode << "\n" << issues_text(r);
    EXPECT_EQ(r.config.sparse_attention->seed, 18446744073709551615ull) << mode;
  }
  EXPECT_TRUE(HasError(sparse(R"("seed": -1)"), "sparse_attention.seed", "got -1, expected an integer >= 0"));
}

TEST(ConfigKernel, FieldsAreRead) {
  ConfigParseResult r = kernel(R"("batch_size": 8, "hidden_size": 1024, "intermediate_size": 4096, "heads": 16,
      "attn_dropout_ratio": 0.1, "hidden_dropout_ratio": 0, "num_hidden_layers": 24, "initializer_range": 0.02,
      "layer_norm_eps": 1e-5, "local_rank": 0, "seed": 42, "pre_layer_norm": false, "normalize_invertible": true,
      "gelu_checkpoint": true, "adjust_init_range": false, "attn_dropout_checkpoint": true, "stochastic_mode": true,
      "return_tuple": true)");
  ASSERT_TRUE(r.ok()) << issues_text(r);
  const TransformerKernelConfig& k = *r.config.transformer_kernel;
  EXPECT_EQ(k.batch_size, 8);
  EXPECT_EQ(k.hidden_size, 1024);
  EXPECT_EQ(k.intermediate_size, 4096);
  EXPECT_EQ(k.heads, 16);
  EXPECT_EQ(k.attn_dropout_ratio, 0.1);
  EXPECT_EQ(k.hidden_dropout_ratio, 0.0);
  EXPECT_EQ(k.num_hidden_layers, 24);
  EXPECT_EQ(k.initializer_range, 0.02);
  EXPECT_EQ(k.layer_norm_eps, 1e-5);
  EXPECT_EQ(k.local_rank, 0);
  EXPECT_EQ(k.seed, 42);
  EXPECT_FALSE(k.pre_layer_norm);
  EXPECT_TRUE(k.normalize_invertible);
  EXPECT_TRUE(k.gelu_checkpoint);
  EXPECT_FALSE(k.adjust_init_range);
  EXPECT_TRUE(k.attn_dropout_checkpoint);
  EXPECT_TRUE(k.stochastic_mode);
  EXPECT_TRUE(k.return_tuple);
}

TEST(ConfigKernel, InvalidValues) {
  EXPECT_TRUE(HasError(kernel(R"("attn_dropout_ratio": 1.0)"), "transformer_kernel.attn_dropout_ratio",
                       "got 1.0, expected a ratio in [0, 1), or -1 (taken from the model)"));
  EXPECT_TRUE(HasError(kernel(R"("hidden_dropout_ratio": -0.5)"), "transformer_kernel.hidden_dropout_ratio", "got -0.5"));
  EXPECT_TRUE(kernel(R"("hidden_dropout_ratio": -1)").ok());
  EXPECT_TRUE(HasError(kernel(R"("hidden_size": 1000, "heads": 16)"), "transformer_kernel.heads",
                       "hidden_size 1000 is not divisible by heads 16"));
  EXPECT_TRUE(kernel(R"("hidden_size": 1000)").ok());
  EXPECT_TRUE(HasError(kernel(R"("hidden_size": 0)"), "transformer_kernel.hidden_size", "got 0"));
  EXPECT_TRUE(HasError(kernel(R"("fp16": true, "bf16": true)"), "transformer_kernel.bf16", "fp16 and bf16 cannot both be true"));
  EXPECT_TRUE(HasError(kernel(R"("layer_norm_eps": 0)"), "transformer_kernel.layer_norm_eps", "got 0"));
  EXPECT_TRUE(HasError(kernel(R"("local_rank": -2)"), "transformer_kernel.local_rank", "got -2"));
  EXPECT_TRUE(HasError(kernel(R"("enabled": "yes")"), "transformer_kernel.enabled", "got \"yes\", expected true or false"));
}

TEST(ConfigKernel, NonConfigFieldsWarn) {
  ConfigParseResult r = kernel(R"("training": true, "max_seq_length": 128)");
  EXPECT_TRUE(r.ok()) << issues_text(r);
  EXPECT_TRUE(HasWarning(r, "transformer_kernel.training", "ignored"));
  EXPECT_TRUE(HasWarning(r, "transformer_kernel.max_seq_length", "removed in DeepSpeed v0.5.4"));
}

TEST(ConfigKernel, PrecisionMustMatchTheModel) {
  ConfigParseResult r = parse(with_batch(R"("fp16": {"enabled": true}, "transformer_kernel": {"fp16": false})"));
  EXPECT_TRUE(HasError(r, "transformer_kernel.fp16", "false disagrees with fp16.enabled true"));
  r = parse(with_batch(R"("transformer_kernel": {"bf16": true})"));
  EXPECT_TRUE(HasError(r, "transformer_kernel.bf16", "true disagrees with bf16.enabled false"));
  // A disabled kernel is not checked.
  EXPECT_TRUE(parse(with_batch(R"("transformer_kernel": {"enabled": false, "bf16": true})")).ok());
}

TEST(ConfigExclusive, SparseAttentionAndEnabledKernel) {
  ConfigParseResult r = parse(with_batch(R"("sparse_attention": {"mode": "fixed"}, "transformer_kernel": {"enabled": true})"));
  ASSERT_EQ(r.errors.size(), 1u) << issues_text(r);
  EXPECT_TRUE(HasError(r, "transformer_kernel", "\"sparse_attention\" and an enabled \"transformer_kernel\" cannot be used together"));
  EXPECT_TRUE(HasError(r, "transformer_kernel", "Disable one"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("sparse_attention": {}, "transformer_kernel": {})")), "transformer_kernel",
                       "cannot be used together"));
  EXPECT_TRUE(parse(with_batch(R"("sparse_attention": {"mode": "fixed"}, "transformer_kernel": {"enabled": false})")).ok());
}

TEST(ConfigSections, SparseSectionAlone) {
  SparseAttentionConfig s = parse_sparse_attention_section(R"({"mode": "bigbird", "block": 64, "num_random_blocks": 2})");
  EXPECT_EQ(s.mode, SparseMode::BigBird);
  EXPECT_EQ(s.block, 64);
  EXPECT_EQ(s.num_random_blocks, 2);
  EXPECT_EQ(parse_sparse_attention_section("{}").mode, SparseMode::Fixed);
  try {
    parse_sparse_attention_section(R"({"block": 24, "num_local_blocks": 3, "num_global_blocks": 2, "block": 16})");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    std::vector<std::string> got;
    for (const ConfigIssue& i : e.issues()) got.push_back(i.format());
    ASSERT_EQ(got.size(), 2u) << e.what();
    EXPECT_NE(got[0].find("sparse_attention.block: duplicate key \"block\""), std::string::npos) << e.what();
    EXPECT_NE(got[1].find("sparse_attention.num_local_blocks: Number of blocks in a local window, 3"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(parse_sparse_attention_section("[1]"), ConfigError);
  EXPECT_THROW(parse_sparse_attention_section("{\"mode\": "), ConfigError);
}

TEST(ConfigSections, KernelSectionAlone) {
  TransformerKernelConfig k =
      parse_transformer_kernel_section(R"({"hidden_size": 160, "heads": 2, "fp16": true, "gelu_checkpoint": true})");
  EXPECT_EQ(k.hidden_size, 160);
  EXPECT_EQ(k.heads, 2);
  EXPECT_TRUE(k.fp16);  // alone, nothing to inherit from: as written
  EXPECT_TRUE(k.gelu_checkpoint);
  EXPECT_FALSE(parse_transformer_kernel_section("{}").fp16);
  try {
    parse_transformer_kernel_section(R"({"attn_dropout_ratio": 2, "hidden_size": 100, "heads": 3})");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.issues().size(), 2u) << e.what();
    EXPECT_EQ(e.issues()[0].path, "transformer_kernel.attn_dropout_ratio");
    EXPECT_EQ(e.issues()[1].path, "transformer_kernel.heads");
  }
}

}  // namespace
}  // namespace ds::test
