// Every error class, with its JSON path and message: invalid JSON, duplicate keys, unknown keys
// (with suggestions), wrong types, out-of-range values, DeepSpeed's own rules across sections,
// known-but-unimplemented keys (warnings), and that all problems in a file are reported.
#include <string>

#include "tests/config/config_test_util.h"

namespace ds::test {
namespace {

TEST(ConfigErrors, InvalidJsonHasLineAndColumn) {
  ConfigParseResult r = parse("{\n  \"train_batch_size\": 8,\n  \"fp16\" {}\n}");
  ASSERT_EQ(r.errors.size(), 1u) << issues_text(r);
  EXPECT_TRUE(HasError(r, "", "invalid JSON at line 3, column 10"));
  EXPECT_TRUE(HasError(r, "", "syntax error"));

  EXPECT_TRUE(HasError(parse(""), "", "invalid JSON at line 1, column 1"));
  EXPECT_TRUE(HasError(parse(R"({"train_batch_size": 8} trailing)"), "", "invalid JSON at line 1, column 27"));
  EXPECT_TRUE(HasError(parse(R"({"train_batch_size": 8,})"), "", "invalid JSON"));
  EXPECT_TRUE(HasError(parse("{\"a\": \"\xff\"}"), "", "invalid JSON"));
}

TEST(ConfigErrors, CommentsAreAllowedAsInDeepSpeedsHjsonReader) {
  DeepSpeedConfig c = ok("{\n  // the global batch\n  \"train_batch_size\": 8 /* per step */\n}");
  EXPECT_EQ(c.train_batch_size, 8);
}

TEST(ConfigErrors, TopLevelMustBeAnObject) {
  EXPECT_TRUE(HasError(parse("[1, 2]"), "", "a DeepSpeed config is a JSON object, got [1, 2]"));
  EXPECT_TRUE(HasError(parse("3"), "", "a DeepSpeed config is a JSON object"));
}

TEST(ConfigErrors, DeepNestingIsRefusedNotRecursed) {
  std::string deep = R"({"train_batch_size": 8, "x": )" + std::string(200, '[') + std::string(200, ']') + "}";
  ConfigParseResult r = parse(deep);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].message.find("nested deeper than 64 levels"), std::string::npos) << issues_text(r);
}

TEST(ConfigErrors, DuplicateKeysEverywhere) {
  ConfigParseResult r = parse(R"({"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"lr": 1, "lr": 2}},
                                   "train_batch_size": 16})");
  EXPECT_TRUE(HasError(r, "optimizer.params.lr", "duplicate key \"lr\""));
  EXPECT_TRUE(HasError(r, "train_batch_size", "duplicate key \"train_batch_size\""));
  EXPECT_EQ(r.errors.size(), 2u) << issues_text(r);
  r = parse(R"({"train_batch_size": 8, "sparse_attention": {"mode": "variable", "local_window_blocks": [4], "local_window_blocks": [2]}})");
  EXPECT_TRUE(HasError(r, "sparse_attention.local_window_blocks", "duplicate key"));
}

TEST(ConfigErrors, UnknownKeysSuggestTheNearest) {
  ConfigParseResult r = parse(R"({"train_micro_batch_size_per_gpu": 8, "gradient_acumulation_steps": 4})");
  EXPECT_TRUE(HasError(r, "gradient_acumulation_steps",
                       "unknown key \"gradient_acumulation_steps\"; did you mean \"gradient_accumulation_steps\"?"));
  r = parse(with_batch(R"("fp16": {"enabled": true, "loss_scale_windw": 500}, "Steps_Per_Print": 5)"));
  EXPECT_TRUE(HasError(r, "fp16.loss_scale_windw", "did you mean \"loss_scale_window\"?"));
  EXPECT_TRUE(HasError(r, "Steps_Per_Print", "did you mean \"steps_per_print\"?"));
  r = parse(with_batch(R"("accumulation_steps": 2)"));
  EXPECT_TRUE(HasError(r, "accumulation_steps", "did you mean \"gradient_accumulation_steps\"?"));
  r = parse(with_batch(R"("transformer_kernel": {"attn_dropout_chekpoint": true})"));
  EXPECT_TRUE(HasError(r, "transformer_kernel.attn_dropout_chekpoint", "did you mean \"attn_dropout_checkpoint\"?"));
  // Far from every key: the known keys of a small section are listed.
  r = parse(with_batch(R"("bf16": {"enabled": true, "zzz": 1})"));
  EXPECT_TRUE(HasError(r, "bf16.zzz", "known keys: enabled, immediate_grad_update"));
}

TEST(ConfigErrors, SectionKeysAtTheTopLevelAreNamed) {
  ConfigParseResult r = parse(with_batch(R"("loss_scale": 0, "lr": 0.1, "stage": 0)"));
  EXPECT_TRUE(HasError(r, "loss_scale", "it belongs in the \"fp16\" section"));
  EXPECT_TRUE(HasError(r, "lr", "it belongs in the \"optimizer.params\" section"));
  EXPECT_TRUE(HasError(r, "stage", "it belongs in the \"zero_optimization\" section"));
}

TEST(ConfigErrors, WrongTypesCarryValueAndExpectation) {
  ConfigParseResult r = parse(with_batch(
      R"("wall_clock_breakdown": "true", "gradient_clipping": "1.0", "fp16": [true], "optimizer": {"type": 3},
         "tensorboard": {"job_name": 7}, "data_parallel": {"overlap_comm": 1})"));
  EXPECT_TRUE(HasError(r, "wall_clock_breakdown", "got \"true\", expected true or false"));
  EXPECT_TRUE(HasError(r, "gradient_clipping", "got \"1.0\", expected a max gradient norm >= 0"));
  EXPECT_TRUE(HasError(r, "fp16", "got [true], expected an object"));
  EXPECT_TRUE(HasError(r, "optimizer.type", "got 3, expected \"Adam\", \"AdamW\" or \"Lamb\""));
  EXPECT_TRUE(HasError(r, "tensorboard.job_name", "got 7, expected a job name"));
  EXPECT_TRUE(HasError(r, "data_parallel.overlap_comm", "got 1, expected true or false"));
}

TEST(ConfigErrors, OutOfRangeValues) {
  ConfigParseResult r = parse(with_batch(
      R"("gradient_clipping": -1, "gradient_predivide_factor": 0, "steps_per_print": 0,
         "fp16": {"enabled": true, "initial_scale_power": 65, "loss_scale_window": 0, "min_loss_scale": 0, "hysteresis": 0, "loss_scale": -1},
         "optimizer": {"type": "Adam", "params": {"lr": -0.1, "betas": [0.9, 1.0], "weight_decay": -1, "eps": -1}},
         "data_parallel": {"bucket_cap_mb": 0})"));
  EXPECT_TRUE(HasError(r, "gradient_clipping", "got -1"));
  EXPECT_TRUE(HasError(r, "gradient_predivide_factor", "got 0, expected a number > 0"));
  EXPECT_TRUE(HasError(r, "steps_per_print", "got 0, expected a positive integer"));
  EXPECT_TRUE(HasError(r, "fp16.initial_scale_power", "got 65, expected an integer in [0, 64]"));
  EXPECT_TRUE(HasError(r, "fp16.loss_scale_window", "got 0"));
  EXPECT_TRUE(HasError(r, "fp16.min_loss_scale", "got 0"));
  EXPECT_TRUE(HasError(r, "fp16.hysteresis", "got 0"));
  EXPECT_TRUE(HasError(r, "fp16.loss_scale", "got -1"));
  EXPECT_TRUE(HasError(r, "optimizer.params.lr", "got -0.1"));
  EXPECT_TRUE(HasError(r, "optimizer.params.betas[1]", "got 1.0, expected in [0, 1)"));
  EXPECT_TRUE(HasError(r, "optimizer.params.weight_decay", "got -1"));
  EXPECT_TRUE(HasError(r, "optimizer.params.eps", "got -1"));
  EXPECT_TRUE(HasError(r, "data_parallel.bucket_cap_mb", "got 0"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("optimizer": {"type": "Adam", "params": {"betas": [0.9]}})")),
                       "optimizer.params.betas", "got [0.9], expected a list of 2 numbers"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("gradient_clipping": 1e999)")), "", "number overflow parsing '1e999'"));
}

TEST(ConfigErrors, MaxGradNormInParamsIsDeepSpeedsError) {
  ConfigParseResult r = parse(with_batch(R"("optimizer": {"type": "Lamb", "params": {"max_grad_norm": 1.0}})"));
  EXPECT_TRUE(HasError(r, "optimizer.params.max_grad_norm",
                       "'max_grad_norm' is not supported as an optimizer parameter, please switch to using the deepspeed "
                       "parameter 'gradient_clipping' see: https://www.deepspeed.ai/docs/config-json/#gradient-clipping "
                       "for more details"));
  EXPECT_EQ(r.errors.size(), 1u) << issues_text(r);
}

TEST(ConfigErrors, OptimizerTypesAndParams) {
  EXPECT_TRUE(HasError(parse(with_batch(R"("optimizer": {"type": "OneBitAdam"})")), "optimizer.type", "is not supported yet"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("optimizer": {"type": "SGD"})")), "optimizer.type", "torch.optim.SGD is not supported"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("optimizer": {"type": "Adma"})")), "optimizer.type", "did you mean \"Adam\"?"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("optimizer": {"params": {}})")), "optimizer.type", "missing"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("optimizer": {"type": "Adam", "params": {"amsgrad": true}})")),
                       "optimizer.params.amsgrad", "true is not supported"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("optimizer": {"type": "Lamb", "params": {"min_coeff": 0.5, "max_coeff": 0.3}})")),
                       "optimizer.params.min_coeff", "min_coeff 0.5 is larger than max_coeff 0.3"));
  ConfigParseResult r = parse(with_batch(R"("optimizer": {"type": "Lamb", "params": {"adam_w_mode": true, "momentum": 0.9}})"));
  EXPECT_TRUE(HasError(r, "optimizer.params.adam_w_mode", "is not a parameter of Lamb (it belongs to Adam/AdamW)"));
  EXPECT_TRUE(HasError(r, "optimizer.params.momentum", "unknown key \"momentum\""));
  r = parse(with_batch(R"("optimizer": {"type": "Adam", "params": {"max_coeff": 1}})"));
  EXPECT_TRUE(HasError(r, "optimizer.params.max_coeff", "is not a parameter of Adam (it belongs to Lamb)"));
  r = parse(with_batch(R"("optimizer": {"type": "Adam", "params": {"set_grad_none": true}})"));
  EXPECT_TRUE(r.ok()) << issues_text(r);
  EXPECT_TRUE(HasWarning(r, "optimizer.params.set_grad_none", "ignored"));
}

TEST(ConfigErrors, LambWithStaticLossScale) {
  ConfigParseResult r = parse(with_batch(R"("optimizer": {"type": "Lamb"}, "fp16": {"enabled": true, "loss_scale": 128})"));
  EXPECT_TRUE(HasError(r, "fp16.loss_scale", "DeepSpeed Lamb optimizer requires dynamic loss scaling"));
  // Only with fp16 on; Adam may use a static scale.
  EXPECT_TRUE(parse(with_batch(R"("optimizer": {"type": "Lamb"}, "fp16": {"enabled": false, "loss_scale": 128})")).ok());
  EXPECT_TRUE(parse(with_batch(R"("optimizer": {"type": "Adam"}, "fp16": {"enabled": true, "loss_scale": 128})")).ok());
}

TEST(ConfigErrors, Fp16AndBf16Together) {
  ConfigParseResult r = parse(with_batch(R"("fp16": {"enabled": true}, "bf16": {"enabled": true})"));
  EXPECT_TRUE(HasError(r, "bf16.enabled", "bfloat16 and fp16 modes cannot be simultaneously enabled"));
  r = parse(with_batch(R"("fp16": {"enabled": true}, "bfloat16": {"enabled": true})"));
  EXPECT_TRUE(HasError(r, "bfloat16.enabled", "cannot be simultaneously enabled"));
  r = parse(with_batch(R"("bf16": {"enabled": true}, "bfloat16": {"enabled": true})"));
  EXPECT_TRUE(HasError(r, "bfloat16", "give only one of \"bf16\" and its legacy alias \"bfloat16\""));
}

TEST(ConfigErrors, PrecisionSectionWithoutEnabledWarns) {
  ConfigParseResult r = parse(with_batch(R"("fp16": {"loss_scale": 0})"));
  EXPECT_TRUE(r.ok());
  EXPECT_FALSE(r.config.fp16.enabled);
  EXPECT_TRUE(HasWarning(r, "fp16", "has no \"enabled\" key"));
}

TEST(ConfigErrors, ZeroStagesOtherThanZero) {
  for (int stage : {1, 2, 3}) {
    ConfigParseResult r = parse(with_batch(R"("zero_optimization": {"stage": )" + std::to_string(stage) + "}"));
    EXPECT_TRUE(HasError(r, "zero_optimization.stage", "ZeRO stage " + std::to_string(stage) + " is not supported yet"));
  }
  EXPECT_TRUE(HasError(parse(with_batch(R"("zero_optimization": true)")), "zero_optimization",
                       "the legacy form true means ZeRO stage 1, which is not supported yet"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("zero_optimization": {"stage": 4})")), "zero_optimization.stage",
                       "got 4, expected 0, 1, 2 or 3"));
  ConfigParseResult r = parse(with_batch(R"("zero_optimization": {"stage": 0, "overlap_comm": true, "reduce_bucket_sise": 5})"));
  EXPECT_TRUE(HasWarning(r, "zero_optimization.overlap_comm", "has no effect"));
  EXPECT_TRUE(HasError(r, "zero_optimization.reduce_bucket_sise", "did you mean \"reduce_bucket_size\"?"));
}

TEST(ConfigErrors, Schedulers) {
  EXPECT_TRUE(HasError(parse(with_batch(R"("scheduler": {"type": "warmuplr"})")), "scheduler.type",
                       "did you mean \"WarmupLR\"? (names are case-sensitive"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("scheduler": {"type": "StepLR"})")), "scheduler.type",
                       "torch.optim.lr_scheduler.StepLR is not supported"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("scheduler": {"type": "WarmupDecayLR"})")), "scheduler.params.total_num_steps",
                       "missing; WarmupDecayLR needs it"));
  EXPECT_TRUE(HasError(parse(with_batch(R"("scheduler": {"type": "WarmupCosineLR", "params": {}})")),
                       "scheduler.params.total_num_steps", "missing"));
  ConfigParseResult r = parse(with_batch(R"("scheduler": {"type": "OneCycle", "params": {"cycle_max_lr": 1}})"));
  EXPECT_TRUE(HasError(r, "scheduler.params.cycle_min_lr", "missing; OneCycle needs it"));
  r = parse(with_batch(R"("scheduler": {"type": "WarmupLR", "params": {"total_num_steps": 10, "warmup_typ": "log"}})"));
  EXPECT_TRUE(HasError(r, "scheduler.params.total_num_steps", "unknown key \"total_num_steps\" (not a parameter of WarmupLR)"));
  EXPECT_TRUE(HasError(r, "scheduler.params.warmup_typ", "did you mean \"warmup_type\"?"));
  r = parse(with_batch(R"("scheduler": {"type": "WarmupLR", "params": {"warmup_type": "cosine", "warmup_num_steps": -1}})"));
  EXPECT_TRUE(HasError(r, "scheduler.params.warmup_type", "expected \"log\" or \"linear\""));
  EXPECT_TRUE(HasError(r, "scheduler.params.warmup_num_steps", "got -1"));
  r = parse(with_batch(R"("scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": [0, 0], "warmup_max_lr": [1, 1, 1]}})"));
  EXPECT_TRUE(HasError(r, "scheduler.params.warmup_max_lr", "has 3 values but warmup_min_lr has 2"));
  r = parse(with_batch(R"("scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": [0.1, "x"]}})"));
  EXPECT_TRUE(HasError(r, "scheduler.params.warmup_max_lr[1]", "got \"x\""));
  r = parse(with_batch(R"("scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 10, "warmup_num_steps": 100}})"));
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(HasWarning(r, "scheduler.params.total_num_steps", "smaller than warmup_num_steps 100"));
}

TEST(ConfigErrors, UnimplementedDeepSpeedKeysWarnOnceEach) {
  const char* keys[] = {"amp", "activation_checkpointing", "flops_profiler", "elasticity", "pipeline",
                        "progressive_layer_drop", "wandb", "comet", "aio", "compression_training", "data_efficiency"};
  std::string body;
  for (const char* k : keys) body += std::string(body.empty() ? "" : ", ") + "\"" + k + "\": {\"enabled\": false}";
  ConfigParseResult r = parse(with_batch(body));
  EXPECT_TRUE(r.ok()) << issues_text(r);
  EXPECT_EQ(r.warnings.size(), std::size(keys)) << issues_text(r);
  for (const char* k : keys) {
    EXPECT_EQ(count_at(r.warnings, k, std::string("\"") + k + "\" is a DeepSpeed feature this engine does not implement"), 1)
        << k;
  }
}

TEST(ConfigErrors, SparseGradientsAndPredivideWarn) {
  ConfigParseResult r = parse(with_batch(R"("sparse_gradients": true, "prescale_gradients": true, "gradient_predivide_factor": 8)"));
  EXPECT_TRUE(r.ok()) << issues_text(r);
  EXPECT_TRUE(r.config.sparse_gradients);
  EXPECT_TRUE(HasWarning(r, "sparse_gradients", "all-reduced dense"));
  EXPECT_TRUE(HasWarning(r, "gradient_predivide_factor", "has no effect because prescale_gradients is true"));
}

TEST(ConfigErrors, AllProblemsInAFileAreReported) {
  ConfigParseResult r = parse(R"({
    "train_batch_size": 96, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 4,
    "steps_per_print": "often",
    "optimizer": {"type": "Lamb", "params": {"lr": -1, "max_grad_norm": 1.0}},
    "fp16": {"enabled": true, "loss_scale": 128, "loss_scale_windw": 500},
    "bf16": {"enabled": true},
    "zero_optimization": {"stage": 2},
    "amp": {"enabled": false},
    "sparse_attention": {"mode": "fixed", "block": 24, "num_local_blocks": 4, "num_global_blocks": 3}
  })", 8);
  EXPECT_TRUE(HasError(r, "train_batch_size", "96 != micro 4 x accumulation 4 x world 8 = 128"));
  EXPECT_TRUE(HasError(r, "steps_per_print", "got \"often\""));
  EXPECT_TRUE(HasError(r, "optimizer.params.lr", "got -1"));
  EXPECT_TRUE(HasError(r, "optimizer.params.max_grad_norm", "gradient_clipping"));
  EXPECT_TRUE(HasError(r, "fp16.loss_scale_windw", "did you mean"));
  EXPECT_TRUE(HasError(r, "fp16.loss_scale", "requires dynamic loss scaling"));
  EXPECT_TRUE(HasError(r, "bf16.enabled", "cannot be simultaneously enabled"));
  EXPECT_TRUE(HasError(r, "zero_optimization.stage", "not supported yet"));
  EXPECT_TRUE(HasError(r, "sparse_attention.block", "got 24"));
  EXPECT_TRUE(HasError(r, "sparse_attention.num_local_blocks", "must be dividable by number of global blocks, 3!"));
  EXPECT_EQ(r.errors.size(), 10u) << issues_text(r);
  EXPECT_TRUE(HasWarning(r, "amp", "does not implement"));
}

TEST(ConfigErrors, LoadConfigThrowsWithEveryError) {
  try {
    load_config_text(R"({"train_batch_size": 0, "fp16": {"enabled": "yes"}})");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.issues().size(), 2u);
    EXPECT_NE(std::string(e.what()).find("train_batch_size: got 0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fp16.enabled: got \"yes\""), std::string::npos) << e.what();
  }
  EXPECT_EQ(load_config_text(R"({"train_batch_size": 4})", 2).train_micro_batch_size_per_gpu, 2);
}

TEST(ConfigErrors, MissingFile) {
  ConfigParseResult r = parse_config_file("/nonexistent/ds_config.json");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_TRUE(HasError(r, "", "cannot read config file \"/nonexistent/ds_config.json\": No such file or directory"));
  EXPECT_TRUE(HasError(parse_config_file("/"), "", "it is a directory"));
  EXPECT_THROW(load_config("/nonexistent/ds_config.json"), ConfigError);
}

TEST(ConfigErrors, IssueFormat) {
  EXPECT_EQ((ConfigIssue{"fp16.enabled", "bad"}).format(), "fp16.enabled: bad");
  EXPECT_EQ((ConfigIssue{"", "bad"}).format(), "bad");
}

}  // namespace
}  // namespace ds::test
