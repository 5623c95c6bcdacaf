// Every default, against DeepSpeed's constants (reference §3.3-§3.7, §1.10, §2.2). The expected
// values are written out here, not taken from the structs, so a changed default fails a test.
#include <cmath>
#include <limits>

#include "tests/config/config_test_util.h"

namespace ds::test {
namespace {

TEST(ConfigDefaults, TopLevel) {
  DeepSpeedConfig c = ok(R"({"train_batch_size": 8})");
  EXPECT_EQ(c.steps_per_print, 10);
  EXPECT_FALSE(c.wall_clock_breakdown);
  EXPECT_FALSE(c.memory_breakdown);
  EXPECT_FALSE(c.dump_state);
  EXPECT_EQ(c.gradient_clipping, 0.0);
  EXPECT_FALSE(c.prescale_gradients);
  EXPECT_EQ(c.gradient_predivide_factor, 1.0);
  EXPECT_FALSE(c.communication_data_type.has_value());
  EXPECT_FALSE(c.fp32_allreduce);
  EXPECT_FALSE(c.sparse_gradients);
  EXPECT_EQ(c.zero_stage, 0);
  EXPECT_FALSE(c.optimizer.present);
  EXPECT_FALSE(c.scheduler.present);
  EXPECT_FALSE(c.sparse_attention.has_value());
  EXPECT_FALSE(c.transformer_kernel.has_value());
  EXPECT_FALSE(c.transformer_kernel_enabled());
  EXPECT_EQ(c.model_dtype(), DType::FP32);
  EXPECT_EQ(c.checkpoint.tag_validation, TagValidation::Warn);
  EXPECT_FALSE(c.checkpoint.load_universal);
  EXPECT_FALSE(c.checkpoint.use_node_local_storage);
  for (const MonitorConfig* m : {&c.tensorboard, &c.csv_monitor}) {
    EXPECT_FALSE(m->enabled);
    EXPECT_EQ(m->output_path, "");
    EXPECT_EQ(m->job_name, "DeepSpeedJobName");
  }
  EXPECT_EQ(c.data_parallel.bucket_cap_mb, 25.0);
  EXPECT_EQ(c.data_parallel.first_bucket_cap_mb, 1.0);
  EXPECT_TRUE(c.data_parallel.overlap_comm);
}

TEST(ConfigDefaults, Fp16AndBf16) {
  DeepSpeedConfig c = ok(with_batch(R"("fp16": {"enabled": true})"));
  EXPECT_TRUE(c.fp16.enabled);
  EXPECT_EQ(c.fp16.loss_scale, 0.0);
  EXPECT_TRUE(c.fp16.dynamic());
  EXPECT_EQ(c.fp16.initial_scale_power, 16);
  EXPECT_EQ(c.fp16.loss_scale_window, 1000);
  EXPECT_EQ(c.fp16.hysteresis, 2);
  EXPECT_FALSE(c.fp16.consecutive_hysteresis);
  EXPECT_EQ(c.fp16.min_loss_scale, 1.0);
  EXPECT_FALSE(c.fp16.auto_cast);
  EXPECT_FALSE(c.fp16.dynamic_args_given);
  EXPECT_EQ(c.model_dtype(), DType::FP16);
  EXPECT_FALSE(c.bf16.enabled);
  EXPECT_FALSE(c.bf16.immediate_grad_update);

  c = ok(with_batch(R"("fp16": {"enabled": true, "loss_scale": 128})"));
  EXPECT_FALSE(c.fp16.dynamic());
  EXPECT_EQ(c.fp16.loss_scale, 128.0);

  c = ok(with_batch(R"("bf16": {"enabled": true})"));
  EXPECT_TRUE(c.bf16.enabled);
  EXPECT_EQ(c.model_dtype(), DType::BF16);
}

TEST(ConfigDefaults, DynamicArgsGivenByAnyOfFiveKeys) {
  for (const char* kv : {R"("initial_scale_power": 12)", R"("loss_scale_window": 500)", R"("min_loss_scale": 0.25)",
                         R"("hysteresis": 4)", R"("consecutive_hysteresis": true)"}) {
    DeepSpeedConfig c = ok(with_batch(std::string(R"("fp16": {"enabled": true, )") + kv + "}"));
    EXPECT_TRUE(c.fp16.dynamic_args_given) << kv;
  }
  EXPECT_FALSE(ok(with_batch(R"("fp16": {"enabled": true, "loss_scale": 0, "auto_cast": true})")).fp16.dynamic_args_given);
  DeepSpeedConfig c = ok(with_batch(
      R"("fp16": {"enabled": true, "initial_scale_power": 12, "loss_scale_window": 500, "min_loss_scale": 0.25, "hysteresis": 4, "consecutive_hysteresis": true})"));
  EXPECT_EQ(c.fp16.initial_scale_power, 12);
  EXPECT_EQ(c.fp16.loss_scale_window, 500);
  EXPECT_EQ(c.fp16.min_loss_scale, 0.25);
  EXPECT_EQ(c.fp16.hysteresis, 4);
  EXPECT_TRUE(c.fp16.consecutive_hysteresis);
}

TEST(ConfigDefaults, BfloatAliasIsBf16) {
  DeepSpeedConfig c = ok(with_batch(R"("bfloat16": {"enabled": true, "immediate_grad_update": true})"));
  EXPECT_TRUE(c.bf16.enabled);
  EXPECT_TRUE(c.bf16.immediate_grad_update);
  EXPECT_EQ(c.model_dtype(), DType::BF16);
}

TEST(ConfigDefaults, AdamAndAdamW) {
  DeepSpeedConfig c = ok(with_batch(R"("optimizer": {"type": "Adam"})"));
  const OptimizerConfig& o = c.optimizer;
  EXPECT_TRUE(o.present);
  EXPECT_EQ(o.type, OptimizerType::Adam);
  EXPECT_EQ(o.type_name, "Adam");
  EXPECT_EQ(o.lr, 1e-3);
  EXPECT_EQ(o.betas[0], 0.9);
  EXPECT_EQ(o.betas[1], 0.999);
  EXPECT_EQ(o.eps, 1e-8);
  EXPECT_EQ(o.weight_decay, 0.0);
  EXPECT_TRUE(o.bias_correction);
  EXPECT_TRUE(o.adam_w_mode);
  EXPECT_FALSE(o.torch_adam);
  EXPECT_FALSE(o.amsgrad);
  EXPECT_FALSE(o.legacy_fusion);
  // DeepSpeed: decoupled weight decay = type is AdamW or adam_w_mode (default true).
  EXPECT_TRUE(o.decoupled_weight_decay());
  EXPECT_FALSE(ok(with_batch(R"("optimizer": {"type": "Adam", "params": {"adam_w_mode": false}})")).optimizer.decoupled_weight_decay());
  ConfigParseResult r = parse(with_batch(R"("optimizer": {"type": "AdamW", "params": {"adam_w_mode": false}})"));
  ASSERT_TRUE(r.ok()) << issues_text(r);
  EXPECT_EQ(r.config.optimizer.type, OptimizerType::AdamW);
  EXPECT_TRUE(r.config.optimizer.decoupled_weight_decay());
  EXPECT_TRUE(HasWarning(r, "optimizer.params.adam_w_mode", "no effect with type AdamW"));
}

TEST(ConfigDefaults, OptimizerTypeIsCaseInsensitiveLikeDeepSpeed) {
  EXPECT_EQ(ok(with_batch(R"("optimizer": {"type": "ADAM"})")).optimizer.type, OptimizerType::Adam);
  EXPECT_EQ(ok(with_batch(R"("optimizer": {"type": "adamw"})")).optimizer.type, OptimizerType::AdamW);
  DeepSpeedConfig c = ok(with_batch(R"("optimizer": {"type": "lamb"})"));
  EXPECT_EQ(c.optimizer.type, OptimizerType::Lamb);
  EXPECT_EQ(c.optimizer.type_name, "lamb");
}

TEST(ConfigDefaults, Lamb) {
  const OptimizerConfig o = ok(with_batch(R"("optimizer": {"type": "Lamb", "params": {}})")).optimizer;
  EXPECT_EQ(o.type, OptimizerType::Lamb);
  EXPECT_EQ(o.lr, 1e-3);
  EXPECT_EQ(o.betas[0], 0.9);
  EXPECT_EQ(o.betas[1], 0.999);
  EXPECT_EQ(o.eps, 1e-8);
  EXPECT_EQ(o.weight_decay, 0.0);
  EXPECT_TRUE(o.bias_correction);
  EXPECT_FALSE(o.eps_inside_sqrt);
  EXPECT_EQ(o.max_coeff, 10.0);
  EXPECT_EQ(o.min_coeff, 0.01);
  EXPECT_FALSE(o.decoupled_weight_decay());
}

TEST(ConfigDefaults, WarmupSchedulers) {
  SchedulerConfig s = ok(with_batch(R"("scheduler": {"type": "WarmupLR"})")).scheduler;
  EXPECT_TRUE(s.present);
  EXPECT_EQ(s.type, SchedulerType::WarmupLR);
  EXPECT_EQ(s.warmup_min_lr, std::vector<double>{0.0});
  EXPECT_EQ(s.warmup_max_lr, std::vector<double>{0.001});
  EXPECT_EQ(s.warmup_num_steps, 1000);
  EXPECT_EQ(s.warmup_type, "log");
  EXPECT_EQ(s.last_batch_iteration, -1);

  s = ok(with_batch(R"("scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 5000, "warmup_min_lr": [0, 0.1], "warmup_type": "linear"}})")).scheduler;
  EXPECT_EQ(s.type, SchedulerType::WarmupDecayLR);
  EXPECT_EQ(s.total_num_steps, 5000);
  EXPECT_EQ(s.warmup_min_lr, (std::vector<double>{0.0, 0.1}));
  EXPECT_EQ(s.warmup_max_lr, std::vector<double>{0.001});
  EXPECT_EQ(s.warmup_type, "linear");

  s = ok(with_batch(R"("scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 100}})")).scheduler;
  EXPECT_EQ(s.type, SchedulerType::WarmupCosineLR);
  EXPECT_EQ(s.warmup_min_ratio, 0.0);
  EXPECT_EQ(s.cos_min_ratio, 0.0001);
  EXPECT_EQ(s.warmup_num_steps, 1000);
}

TEST(ConfigDefaults, OneCycleAndRangeTest) {
  SchedulerConfig s =
      ok(with_batch(R"("scheduler": {"type": "OneCycle", "params": {"cycle_min_lr": 1e-4, "cycle_max_lr": 1e-3}})")).scheduler;
  EXPECT_EQ(s.type, SchedulerType::OneCycle);
  EXPECT_EQ(s.cycle_min_lr, 1e-4);
  EXPECT_EQ(s.cycle_max_lr, 1e-3);
  EXPECT_EQ(s.decay_lr_rate, 0.0);
  EXPECT_EQ(s.cycle_first_step_size, 2000);
  EXPECT_FALSE(s.cycle_second_step_size.has_value());
  EXPECT_EQ(s.cycle_first_stair_count, 0);
  EXPECT_FALSE(s.cycle_second_stair_count.has_value());
  EXPECT_EQ(s.decay_step_size, 0);
  EXPECT_TRUE(s.cycle_momentum);
  EXPECT_EQ(s.cycle_min_mom, 0.8);
  EXPECT_EQ(s.cycle_max_mom, 0.9);
  EXPECT_EQ(s.decay_mom_rate, 0.0);

  s = ok(with_batch(R"("scheduler": {"type": "LRRangeTest"})")).scheduler;
  EXPECT_EQ(s.type, SchedulerType::LRRangeTest);
  EXPECT_EQ(s.lr_range_test_min_lr, 1e-3);
  EXPECT_EQ(s.lr_range_test_step_size, 2000);
  EXPECT_EQ(s.lr_range_test_step_rate, 1.0);
  EXPECT_FALSE(s.lr_range_test_staircase);
}

TEST(ConfigDefaults, TagValidationIsCaseInsensitive) {
  EXPECT_EQ(ok(with_batch(R"("checkpoint": {"tag_validation": "fail"})")).checkpoint.tag_validation, TagValidation::Fail);
  EXPECT_EQ(ok(with_batch(R"("checkpoint": {"tag_validation": "Ignore"})")).checkpoint.tag_validation, TagValidation::Ignore);
  EXPECT_EQ(ok(with_batch(R"("checkpoint": {"tag_validation": "WARN"})")).checkpoint.tag_validation, TagValidation::Warn);
  EXPECT_TRUE(HasError(parse(with_batch(R"("checkpoint": {"tag_validation": "maybe"})")), "checkpoint.tag_validation",
                       "expected \"WARN\", \"IGNORE\" or \"FAIL\""));
}

TEST(ConfigDefaults, CommunicationDataType) {
  EXPECT_EQ(ok(with_batch(R"("communication_data_type": "FP16")")).communication_data_type, DType::FP16);
  EXPECT_EQ(ok(with_batch(R"("communication_data_type": "bf16")")).communication_data_type, DType::BF16);
  EXPECT_EQ(ok(with_batch(R"("communication_data_type": "bfp16")")).communication_data_type, DType::BF16);
  EXPECT_EQ(ok(with_batch(R"("communication_data_type": "fp32")")).communication_data_type, DType::FP32);
  EXPECT_FALSE(ok(with_batch(R"("communication_data_type": null)")).communication_data_type.has_value());
  EXPECT_TRUE(HasError(parse(with_batch(R"("communication_data_type": "int8")")), "communication_data_type", "got \"int8\""));
}

TEST(ConfigDefaults, ScalarsAreRead) {
  DeepSpeedConfig c = ok(with_batch(
      R"("steps_per_print": 100, "wall_clock_breakdown": true, "memory_breakdown": true, "dump_state": true,
         "gradient_clipping": 1.0, "prescale_gradients": true, "fp32_allreduce": true, "zero_optimization": {"stage": 0},
         "tensorboard": {"enabled": true, "output_path": "runs/", "job_name": "bert"}, "csv_monitor": {"enabled": true},
         "data_parallel": {"bucket_cap_mb": 50, "first_bucket_cap_mb": 2.5, "overlap_comm": false})"));
  EXPECT_EQ(c.steps_per_print, 100);
  EXPECT_TRUE(c.wall_clock_breakdown);
  EXPECT_TRUE(c.memory_breakdown);
  EXPECT_TRUE(c.dump_state);
  EXPECT_EQ(c.gradient_clipping, 1.0);
  EXPECT_TRUE(c.prescale_gradients);
  EXPECT_TRUE(c.fp32_allreduce);
  EXPECT_TRUE(c.tensorboard.enabled);
  EXPECT_EQ(c.tensorboard.output_path, "runs/");
  EXPECT_EQ(c.tensorboard.job_name, "bert");
  EXPECT_TRUE(c.csv_monitor.enabled);
  EXPECT_EQ(c.data_parallel.bucket_cap_mb, 50.0);
  EXPECT_EQ(c.data_parallel.first_bucket_cap_mb, 2.5);
  EXPECT_FALSE(c.data_parallel.overlap_comm);
  // DeepSpeed >= 0.15.2: steps_per_print None = never.
  EXPECT_EQ(ok(with_batch(R"("steps_per_print": null)")).steps_per_print, 0);
  EXPECT_EQ(ok(with_batch(R"("zero_optimization": false)")).zero_stage, 0);
}

TEST(ConfigDefaults, SparseAttentionPerMode) {
  SparseAttentionConfig s = *ok(with_batch(R"("sparse_attention": {})")).sparse_attention;
  EXPECT_EQ(s.mode, SparseMode::Fixed);  // DeepSpeed's default mode
  EXPECT_EQ(s.block, 16);
  EXPECT_FALSE(s.different_layout_per_head);
  EXPECT_EQ(s.num_local_blocks, 4);
  EXPECT_EQ(s.num_global_blocks, 1);
  EXPECT_EQ(s.attention, "bidirectional");
  EXPECT_FALSE(s.horizontal_global_attention);
  EXPECT_EQ(s.num_different_global_patterns, 1);
  EXPECT_EQ(s.seed, 0u);

  s = *ok(with_batch(R"("sparse_attention": {"mode": "variable"})")).sparse_attention;
  EXPECT_EQ(s.mode, SparseMode::Variable);
  EXPECT_EQ(s.num_random_blocks, 0);
  EXPECT_EQ(s.local_window_blocks, std::vector<int>{4});
  EXPECT_EQ(s.global_block_indices, std::vector<int>{0});
  EXPECT_FALSE(s.global_block_end_indices.has_value());
  EXPECT_EQ(s.attention, "bidirectional");

  s = *ok(with_batch(R"("sparse_attention": {"mode": "bigbird"})")).sparse_attention;
  EXPECT_EQ(s.mode, SparseMode::BigBird);
  EXPECT_EQ(s.num_random_blocks, 0);  // the JSON default (the class default is 1)
  EXPECT_EQ(s.num_sliding_window_blocks, 3);
  EXPECT_EQ(s.num_global_blocks, 1);

  s = *ok(with_batch(R"("sparse_attention": {"mode": "bslongformer"})")).sparse_attention;
  EXPECT_EQ(s.mode, SparseMode::BSLongformer);
  EXPECT_EQ(s.num_sliding_window_blocks, 3);
  EXPECT_EQ(s.global_block_indices, std::vector<int>{0});

  s = *ok(with_batch(R"("sparse_attention": {"mode": "local_sliding_window"})")).sparse_attention;
  EXPECT_EQ(s.mode, SparseMode::LocalSlidingWindow);
  EXPECT_EQ(s.num_sliding_window_blocks, 3);
  EXPECT_EQ(s.attention, "unidirectional");  // LocalSlidingWindowSparsityConfig's own default

  s = *ok(with_batch(R"("sparse_attention": {"mode": "dynamic_nm"})")).sparse_attention;
  EXPECT_EQ(s.mode, SparseMode::DynamicNM);
  EXPECT_EQ(s.n, 2);
  EXPECT_EQ(s.m, 4);

  EXPECT_EQ(ok(with_batch(R"("sparse_attention": {"mode": "dense", "block": 32})")).sparse_attention->block, 32);
}

TEST(ConfigDefaults, TransformerKernel) {
  DeepSpeedConfig c = ok(with_batch(R"("transformer_kernel": {})"));
  ASSERT_TRUE(c.transformer_kernel.has_value());
  const TransformerKernelConfig& k = *c.transformer_kernel;
  EXPECT_TRUE(k.enabled);  // a present section is on unless it says otherwise
  EXPECT_TRUE(c.transformer_kernel_enabled());
  EXPECT_EQ(k.batch_size, -1);
  EXPECT_EQ(k.hidden_size, -1);
  EXPECT_EQ(k.intermediate_size, -1);
  EXPECT_EQ(k.heads, -1);
  EXPECT_EQ(k.attn_dropout_ratio, -1.0);
  EXPECT_EQ(k.hidden_dropout_ratio, -1.0);
  EXPECT_EQ(k.num_hidden_layers, -1);
  EXPECT_EQ(k.initializer_range, -1.0);
  EXPECT_EQ(k.layer_norm_eps, 1e-12);
  EXPECT_EQ(k.local_rank, -1);
  EXPECT_EQ(k.seed, -1);
  EXPECT_FALSE(k.fp16);
  EXPECT_FALSE(k.bf16);
  EXPECT_TRUE(k.pre_layer_norm);
  EXPECT_FALSE(k.normalize_invertible);
  EXPECT_FALSE(k.gelu_checkpoint);
  EXPECT_TRUE(k.adjust_init_range);
  EXPECT_FALSE(k.attn_dropout_checkpoint);
  EXPECT_FALSE(k.stochastic_mode);
  EXPECT_FALSE(k.return_tuple);
  EXPECT_FALSE(ok(with_batch(R"("transformer_kernel": {"enabled": false})")).transformer_kernel_enabled());
}

TEST(ConfigDefaults, KernelPrecisionFollowsTheModel) {
  DeepSpeedConfig c = ok(with_batch(R"("fp16": {"enabled": true}, "transformer_kernel": {})"));
  EXPECT_TRUE(c.transformer_kernel->fp16);
  EXPECT_FALSE(c.transformer_kernel->bf16);
  c = ok(with_batch(R"("bf16": {"enabled": true}, "transformer_kernel": {})"));
  EXPECT_FALSE(c.transformer_kernel->fp16);
  EXPECT_TRUE(c.transformer_kernel->bf16);
  c = ok(with_batch(R"("fp16": {"enabled": true}, "transformer_kernel": {"fp16": true})"));
  EXPECT_TRUE(c.transformer_kernel->fp16);
}

TEST(ConfigDefaults, NamesOfEnums) {
  EXPECT_STREQ(dtype_name(DType::FP32), "fp32");
  EXPECT_STREQ(dtype_name(DType::FP16), "fp16");
  EXPECT_STREQ(dtype_name(DType::BF16), "bf16");
  EXPECT_STREQ(sparse_mode_name(SparseMode::Dense), "dense");
  EXPECT_STREQ(sparse_mode_name(SparseMode::Fixed), "fixed");
  EXPECT_STREQ(sparse_mode_name(SparseMode::Variable), "variable");
  EXPECT_STREQ(sparse_mode_name(SparseMode::BigBird), "bigbird");
  EXPECT_STREQ(sparse_mode_name(SparseMode::BSLongformer), "bslongformer");
  EXPECT_STREQ(sparse_mode_name(SparseMode::LocalSlidingWindow), "local_sliding_window");
  EXPECT_STREQ(sparse_mode_name(SparseMode::DynamicNM), "dynamic_nm");
}

}  // namespace
}  // namespace ds::test
