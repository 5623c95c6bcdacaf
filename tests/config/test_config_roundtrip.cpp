// to_json_text: every default written out, and parse(to_json_text(c)) == c field by field, for the
// shipped configs and for configs that exercise every section, mode and scheduler.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/config/config_test_util.h"

namespace ds::test {
namespace {

#define DS_EXPECT_FIELD(a, b, field) EXPECT_EQ((a).field, (b).field) << #field

void expect_same(const DeepSpeedConfig& a, const DeepSpeedConfig& b) {
  DS_EXPECT_FIELD(a, b, world_size);
  DS_EXPECT_FIELD(a, b, train_batch_size);
  DS_EXPECT_FIELD(a, b, train_micro_batch_size_per_gpu);
  DS_EXPECT_FIELD(a, b, gradient_accumulation_steps);
  DS_EXPECT_FIELD(a, b, steps_per_print);
  DS_EXPECT_FIELD(a, b, wall_clock_breakdown);
  DS_EXPECT_FIELD(a, b, memory_breakdown);
  DS_EXPECT_FIELD(a, b, dump_state);
  DS_EXPECT_FIELD(a, b, gradient_clipping);
  DS_EXPECT_FIELD(a, b, prescale_gradients);
  DS_EXPECT_FIELD(a, b, gradient_predivide_factor);
  DS_EXPECT_FIELD(a, b, communication_data_type);
  DS_EXPECT_FIELD(a, b, fp32_allreduce);
  DS_EXPECT_FIELD(a, b, sparse_gradients);
  DS_EXPECT_FIELD(a, b, fp16.enabled);
  DS_EXPECT_FIELD(a, b, fp16.loss_scale);
  DS_EXPECT_FIELD(a, b, fp16.initial_scale_power);
  DS_EXPECT_FIELD(a, b, fp16.loss_scale_window);
  DS_EXPECT_FIELD(a, b, fp16.hysteresis);
  DS_EXPECT_FIELD(a, b, fp16.consecutive_hysteresis);
  DS_EXPECT_FIELD(a, b, fp16.min_loss_scale);
  DS_EXPECT_FIELD(a, b, fp16.auto_cast);
  DS_EXPECT_FIELD(a, b, fp16.dynamic_args_given);
  DS_EXPECT_FIELD(a, b, bf16.enabled);
  DS_EXPECT_FIELD(a, b, bf16.immediate_grad_update);
  const OptimizerConfig &oa = a.optimizer, &ob = b.optimizer;
  DS_EXPECT_FIELD(oa, ob, present);
  DS_EXPECT_FIELD(oa, ob, type);
  DS_EXPECT_FIELD(oa, ob, type_name);
  DS_EXPECT_FIELD(oa, ob, lr);
  DS_EXPECT_FIELD(oa, ob, betas);
  DS_EXPECT_FIELD(oa, ob, eps);
  DS_EXPECT_FIELD(oa, ob, weight_decay);
  DS_EXPECT_FIELD(oa, ob, bias_correction);
  DS_EXPECT_FIELD(oa, ob, adam_w_mode);
  DS_EXPECT_FIELD(oa, ob, torch_adam);
  DS_EXPECT_FIELD(oa, ob, amsgrad);
  DS_EXPECT_FIELD(oa, ob, eps_inside_sqrt);
  DS_EXPECT_FIELD(oa, ob, max_coeff);
  DS_EXPECT_FIELD(oa, ob, min_coeff);
  DS_EXPECT_FIELD(oa, ob, legacy_fusion);
  const SchedulerConfig &sa = a.scheduler, &sb = b.scheduler;
  DS_EXPECT_FIELD(sa, sb, present);
  DS_EXPECT_FIELD(sa, sb, type);
  DS_EXPECT_FIELD(sa, sb, type_name);
  DS_EXPECT_FIELD(sa, sb, last_batch_iteration);
  DS_EXPECT_FIELD(sa, sb, warmup_min_lr);
  DS_EXPECT_FIELD(sa, sb, warmup_max_lr);
  DS_EXPECT_FIELD(sa, sb, warmup_num_steps);
  DS_EXPECT_FIELD(sa, sb, warmup_type);
  DS_EXPECT_FIELD(sa, sb, total_num_steps);
  DS_EXPECT_FIELD(sa, sb, warmup_min_ratio);
  DS_EXPECT_FIELD(sa, sb, cos_min_ratio);
  DS_EXPECT_FIELD(sa, sb, cycle_min_lr);
  DS_EXPECT_FIELD(sa, sb, cycle_max_lr);
  DS_EXPECT_FIELD(sa, sb, decay_lr_rate);
  DS_EXPECT_FIELD(sa, sb, cycle_first_step_size);
  DS_EXPECT_FIELD(sa, sb, cycle_second_step_size);
  DS_EXPECT_FIELD(sa, sb, cycle_first_stair_count);
  DS_EXPECT_FIELD(sa, sb, cycle_second_stair_count);
  DS_EXPECT_FIELD(sa, sb, decay_step_size);
  DS_EXPECT_FIELD(sa, sb, cycle_momentum);
  DS_EXPECT_FIELD(sa, sb, cycle_min_mom);
  DS_EXPECT_FIELD(sa, sb, cycle_max_mom);
  DS_EXPECT_FIELD(sa, sb, decay_mom_rate);
  DS_EXPECT_FIELD(sa, sb, lr_range_test_min_lr);
  DS_EXPECT_FIELD(sa, sb, lr_range_test_step_size);
  DS_EXPECT_FIELD(sa, sb, lr_range_test_step_rate);
  DS_EXPECT_FIELD(sa, sb, lr_range_test_staircase);
  DS_EXPECT_FIELD(a, b, checkpoint.tag_validation);
  DS_EXPECT_FIELD(a, b, checkpoint.load_universal);
  DS_EXPECT_FIELD(a, b, checkpoint.use_node_local_storage);
  DS_EXPECT_FIELD(a, b, zero_stage);
  for (auto m : {&DeepSpeedConfig::tensorboard, &DeepSpeedConfig::csv_monitor}) {
    DS_EXPECT_FIELD(a.*m, b.*m, enabled);
    DS_EXPECT_FIELD(a.*m, b.*m, output_path);
    DS_EXPECT_FIELD(a.*m, b.*m, job_name);
  }
  DS_EXPECT_FIELD(a, b, data_parallel.bucket_cap_mb);
  DS_EXPECT_FIELD(a, b, data_parallel.first_bucket_cap_mb);
  DS_EXPECT_FIELD(a, b, data_parallel.overlap_comm);
  ASSERT_EQ(a.sparse_attention.has_value(), b.sparse_attention.has_value());
  if (a.sparse_attention) {
    const SparseAttentionConfig &x = *a.sparse_attention, &y = *b.sparse_attention;
    DS_EXPECT_FIELD(x, y, mode);
    DS_EXPECT_FIELD(x, y, block);
    DS_EXPECT_FIELD(x, y, different_layout_per_head);
    DS_EXPECT_FIELD(x, y, num_local_blocks);
    DS_EXPECT_FIELD(x, y, num_global_blocks);
    DS_EXPECT_FIELD(x, y, attention);
    DS_EXPECT_FIELD(x, y, horizontal_global_attention);
    DS_EXPECT_FIELD(x, y, num_different_global_patterns);
    DS_EXPECT_FIELD(x, y, num_random_blocks);
    DS_EXPECT_FIELD(x, y, local_window_blocks);
    DS_EXPECT_FIELD(x, y, global_block_indices);
    DS_EXPECT_FIELD(x, y, global_block_end_indices);
    DS_EXPECT_FIELD(x, y, num_sliding_window_blocks);
    DS_EXPECT_FIELD(x, y, n);
    DS_EXPECT_FIELD(x, y, m);
    DS_EXPECT_FIELD(x, y, seed);
  }
  ASSERT_EQ(a.transformer_kernel.has_value(), b.transformer_kernel.has_value());
  if (a.transformer_kernel) {
    const TransformerKernelConfig &x = *a.transformer_kernel, &y = *b.transformer_kernel;
    DS_EXPECT_FIELD(x, y, enabled);
    DS_EXPECT_FIELD(x, y, batch_size);
    DS_EXPECT_FIELD(x, y, hidden_size);
    DS_EXPECT_FIELD(x, y, intermediate_size);
    DS_EXPECT_FIELD(x, y, heads);
    DS_EXPECT_FIELD(x, y, attn_dropout_ratio);
    DS_EXPECT_FIELD(x, y, hidden_dropout_ratio);
    DS_EXPECT_FIELD(x, y, num_hidden_layers);
    DS_EXPECT_FIELD(x, y, initializer_range);
    DS_EXPECT_FIELD(x, y, layer_norm_eps);
    DS_EXPECT_FIELD(x, y, local_rank);
    DS_EXPECT_FIELD(x, y, seed);
    DS_EXPECT_FIELD(x, y, fp16);
    DS_EXPECT_FIELD(x, y, bf16);
    DS_EXPECT_FIELD(x, y, pre_layer_norm);
    DS_EXPECT_FIELD(x, y, normalize_invertible);
    DS_EXPECT_FIELD(x, y, gelu_checkpoint);
    DS_EXPECT_FIELD(x, y, adjust_init_range);
    DS_EXPECT_FIELD(x, y, attn_dropout_checkpoint);
    DS_EXPECT_FIELD(x, y, stochastic_mode);
    DS_EXPECT_FIELD(x, y, return_tuple);
  }
}

void expect_round_trip(const std::string& text, int world_size) {
  SCOPED_TRACE(text);
  DeepSpeedConfig c = ok(text, world_size);
  const std::string once = to_json_text(c);
  ConfigParseResult again = parse(once, world_size);
  ASSERT_TRUE(again.ok()) << once << "\n" << issues_text(again);
  EXPECT_TRUE(again.warnings.empty()) << issues_text(again);
  expect_same(c, again.config);
  EXPECT_EQ(to_json_text(again.config), once);
  EXPECT_EQ(to_json_text(again.config, -1), to_json_text(c, -1));
}

TEST(ConfigRoundTrip, ShippedConfigs) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(DS_SOURCE_DIR "/configs")) {
    if (e.path().extension() != ".json" || e.path().filename().string().rfind("ds_", 0) != 0) continue;
    std::ifstream in(e.path());
    std::stringstream text;
    text << in.rdbuf();
    expect_round_trip(text.str(), 8);
    ++n;
  }
  EXPECT_GE(n, 5);
}

TEST(ConfigRoundTrip, EverySectionModeAndScheduler) {
  const char* sparse_modes[] = {
      R"("sparse_attention": {"mode": "dense", "block": 128, "seed": 3})",
      R"("sparse_attention": {"mode": "fixed", "different_layout_per_head": true, "num_local_blocks": 8, "num_global_blocks": 2, "num_different_global_patterns": 3, "horizontal_global_attention": true})",
      R"("sparse_attention": {"mode": "variable", "num_random_blocks": 1, "local_window_blocks": [2, 3], "global_block_indices": [0, 5], "global_block_end_indices": [2, 6]})",
      R"("sparse_attention": {"mode": "variable", "global_block_indices": []})",
      R"("sparse_attention": {"mode": "bigbird", "num_random_blocks": 2, "attention": "unidirectional"})",
      R"("sparse_attention": {"mode": "bslongformer", "num_sliding_window_blocks": 5, "global_block_indices": [1]})",
      R"("sparse_attention": {"mode": "local_sliding_window", "block": 32})",
      R"("sparse_attention": {"mode": "dynamic_nm", "n": 1, "m": 2, "seed": 18446744073709551615})",
  };
  for (const char* s : sparse_modes) expect_round_trip(with_batch(s), 1);

  const char* schedulers[] = {
      R"("scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": [0, 1e-5], "warmup_max_lr": 0.1, "warmup_type": "linear", "last_batch_iteration": 10}})",
      R"("scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 7500, "warmup_num_steps": 450}})",
      R"("scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 100, "warmup_num_steps": 10, "warmup_min_ratio": 0.01, "cos_min_ratio": 0.5}})",
      R"("scheduler": {"type": "OneCycle", "params": {"cycle_min_lr": 1e-5, "cycle_max_lr": 1e-3, "cycle_second_step_size": 500, "cycle_second_stair_count": 2, "decay_step_size": 100, "decay_lr_rate": 0.1}})",
      R"("scheduler": {"type": "OneCycle", "params": {"cycle_min_lr": 0, "cycle_max_lr": 1}})",
      R"("scheduler": {"type": "LRRangeTest", "params": {"lr_range_test_staircase": true, "lr_range_test_step_rate": 3.5}})",
  };
  for (const char* s : schedulers) expect_round_trip(with_batch(s), 1);

  expect_round_trip(R"({"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 5,
      "steps_per_print": null, "wall_clock_breakdown": true, "gradient_clipping": 0.3333333333333333,
      "communication_data_type": "BFP16", "fp16": {"enabled": true, "loss_scale": 0, "hysteresis": 3},
      "optimizer": {"type": "ADAMW", "params": {"lr": 6.25e-05, "betas": [0.8, 0.95], "torch_adam": true}, "legacy_fusion": true},
      "checkpoint": {"tag_validation": "fail", "use_node_local_storage": true},
      "tensorboard": {"enabled": true, "output_path": "ünïcode/路径", "job_name": "a \"quoted\" name"},
      "zero_optimization": {"stage": 0}, "data_parallel": {"bucket_cap_mb": 12.5},
      "transformer_kernel": {"hidden_size": 768, "heads": 12, "attn_dropout_ratio": 0.1, "seed": 42, "normalize_invertible": true}})",
                    7);
  expect_round_trip(with_batch(R"("bfloat16": {"enabled": true}, "transformer_kernel": {"enabled": false}, "sparse_attention": {}, "optimizer": {"type": "Lamb", "params": {"eps_inside_sqrt": true}})"), 2);
}

TEST(ConfigRoundTrip, EveryDefaultIsWrittenOut) {
  nlohmann::json j = nlohmann::json::parse(to_json_text(ok(R"({"train_batch_size": 8})")));
  for (const char* k : {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "steps_per_print",
                        "wall_clock_breakdown", "memory_breakdown", "dump_state", "gradient_clipping", "prescale_gradients",
                        "gradient_predivide_factor", "communication_data_type", "fp32_allreduce", "sparse_gradients", "fp16",
                        "bf16", "checkpoint", "zero_optimization", "tensorboard", "csv_monitor", "data_parallel"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(j["gradient_accumulation_steps"], 1);
  EXPECT_EQ(j["train_micro_batch_size_per_gpu"], 8);
  EXPECT_EQ(j["steps_per_print"], 10);
  EXPECT_EQ(j["checkpoint"]["tag_validation"], "WARN");
  EXPECT_EQ(j["zero_optimization"]["stage"], 0);
  EXPECT_FALSE(j.contains("optimizer"));
  EXPECT_FALSE(j.contains("sparse_attention"));
  // fp16's dynamic-scaling keys only when one was given (their presence changes DeepSpeed's behaviour).
  EXPECT_FALSE(j["fp16"].contains("initial_scale_power"));
  nlohmann::json k = nlohmann::json::parse(to_json_text(ok(with_batch(R"("fp16": {"enabled": true, "hysteresis": 2})"))));
  EXPECT_EQ(k["fp16"]["initial_scale_power"], 16);
  EXPECT_EQ(k["fp16"]["loss_scale_window"], 1000);
  EXPECT_EQ(k["fp16"]["min_loss_scale"], 1.0);
  nlohmann::json o = nlohmann::json::parse(to_json_text(ok(with_batch(R"("optimizer": {"type": "Lamb"}, "sparse_attention": {"mode": "bigbird"})"))));
  EXPECT_EQ(o["optimizer"]["params"]["max_coeff"], 10.0);
  EXPECT_EQ(o["optimizer"]["params"]["betas"], nlohmann::json({0.9, 0.999}));
  EXPECT_FALSE(o["optimizer"]["params"].contains("adam_w_mode"));
  EXPECT_EQ(o["sparse_attention"]["num_sliding_window_blocks"], 3);
  EXPECT_FALSE(o["sparse_attention"].contains("num_local_blocks"));
}

}  // namespace
}  // namespace ds::test
