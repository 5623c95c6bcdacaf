// The resolved config as DeepSpeed JSON: every default written out, in a stable order, so the
// output reads like a documented config and parses back to the same DeepSpeedConfig.
//
// One exception to "every default": fp16's dynamic-scaling keys are written only when the file
// gave one of them, because their presence alone changes DeepSpeed's behaviour (§3.6: without
// them the Lamb/unfused path starts at 2^16 with min scale 0.25 and ignores the others).
#include <nlohmann/json.hpp>

#include "engine/config/ds_config.h"

namespace ds {
namespace {

using OJ = nlohmann::ordered_json;

OJ number_or_list(const std::vector<double>& v) {
  if (v.size() == 1) return OJ(v[0]);
  return OJ(v);
}

OJ fp16_json(const FP16Config& f) {
  OJ j;
  j["enabled"] = f.enabled;
  j["loss_scale"] = f.loss_scale;
  if (f.dynamic_args_given) {
    j["initial_scale_power"] = f.initial_scale_power;
    j["loss_scale_window"] = f.loss_scale_window;
    j["hysteresis"] = f.hysteresis;
    j["consecutive_hysteresis"] = f.consecutive_hysteresis;
    j["min_loss_scale"] = f.min_loss_scale;
  }
  j["auto_cast"] = f.auto_cast;
  return j;
}

const char* optimizer_name(OptimizerType t) {
  switch (t) {
    case OptimizerType::AdamW: return "AdamW";
    case OptimizerType::Lamb: return "Lamb";
    default: return "Adam";
  }
}

OJ optimizer_json(const OptimizerConfig& o) {
  OJ p;
  p["lr"] = o.lr;
  p["betas"] = {o.betas[0], o.betas[1]};
  p["eps"] = o.eps;
  p["weight_decay"] = o.weight_decay;
  p["bias_correction"] = o.bias_correction;
  if (o.type == OptimizerType::Lamb) {
    p["eps_inside_sqrt"] = o.eps_inside_sqrt;
    p["max_coeff"] = o.max_coeff;
    p["min_coeff"] = o.min_coeff;
  } else {
    p["adam_w_mode"] = o.adam_w_mode;
    p["torch_adam"] = o.torch_adam;
  }
  p["amsgrad"] = o.amsgrad;
  OJ j;
  j["type"] = o.type_name.empty() ? optimizer_name(o.type) : o.type_name;
  j["params"] = std::move(p);
  j["legacy_fusion"] = o.legacy_fusion;
  return j;
}

const char* scheduler_name(SchedulerType t) {
  switch (t) {
    case SchedulerType::WarmupDecayLR: return "WarmupDecayLR";
    case SchedulerType::WarmupCosineLR: return "WarmupCosineLR";
    case SchedulerType::OneCycle: return "OneCycle";
    case SchedulerType::LRRangeTest: return "LRRangeTest";
    default: return "WarmupLR";
  }
}

OJ optional_int(const std::optional<int64_t>& v) { return v ? OJ(*v) : OJ(nullptr); }

OJ scheduler_json(const SchedulerConfig& s) {
  OJ p;
  switch (s.type) {
    case SchedulerType::WarmupLR:
    case SchedulerType::WarmupDecayLR:
      if (s.type == SchedulerType::WarmupDecayLR) p["total_num_steps"] = s.total_num_steps;
      p["warmup_min_lr"] = number_or_list(s.warmup_min_lr);
      p["warmup_max_lr"] = number_or_list(s.warmup_max_lr);
      p["warmup_num_steps"] = s.warmup_num_steps;
      p["warmup_type"] = s.warmup_type;
      break;
    case SchedulerType::WarmupCosineLR:
      p["total_num_steps"] = s.total_num_steps;
      p["warmup_min_ratio"] = s.warmup_min_ratio;
      p["warmup_num_steps"] = s.warmup_num_steps;
      p["cos_min_ratio"] = s.cos_min_ratio;
      p["warmup_type"] = s.warmup_type;
      break;
    case SchedulerType::OneCycle:
      p["cycle_min_lr"] = s.cycle_min_lr;
      p["cycle_max_lr"] = s.cycle_max_lr;
      p["decay_lr_rate"] = s.decay_lr_rate;
      p["cycle_first_step_size"] = s.cycle_first_step_size;
      p["cycle_second_step_size"] = optional_int(s.cycle_second_step_size);
      p["cycle_first_stair_count"] = s.cycle_first_stair_count;
      p["cycle_second_stair_count"] = optional_int(s.cycle_second_stair_count);
      p["decay_step_size"] = s.decay_step_size;
      p["cycle_momentum"] = s.cycle_momentum;
      p["cycle_min_mom"] = s.cycle_min_mom;
      p["cycle_max_mom"] = s.cycle_max_mom;
      p["decay_mom_rate"] = s.decay_mom_rate;
      break;
    case SchedulerType::LRRangeTest:
      p["lr_range_test_min_lr"] = s.lr_range_test_min_lr;
      p["lr_range_test_step_size"] = s.lr_range_test_step_size;
      p["lr_range_test_step_rate"] = s.lr_range_test_step_rate;
      p["lr_range_test_staircase"] = s.lr_range_test_staircase;
      break;
  }
  p["last_batch_iteration"] = s.last_batch_iteration;
  OJ j;
  j["type"] = s.type_name.empty() ? scheduler_name(s.type) : s.type_name;
  j["params"] = std::move(p);
  return j;
}

OJ monitor_json(const MonitorConfig& m) {
  OJ j;
  j["enabled"] = m.enabled;
  j["output_path"] = m.output_path;
  j["job_name"] = m.job_name;
  return j;
}

OJ sparse_json(const SparseAttentionConfig& s) {
  OJ j;
  j["mode"] = sparse_mode_name(s.mode);
  const SparseMode m = s.mode;
  using M = SparseMode;
  if (m != M::DynamicNM) j["block"] = s.block;
  if (m == M::Fixed || m == M::Variable || m == M::BigBird || m == M::BSLongformer) {
    j["different_layout_per_head"] = s.different_layout_per_head;
  }
  if (m == M::Fixed) {
    j["num_local_blocks"] = s.num_local_blocks;
    j["num_global_blocks"] = s.num_global_blocks;
    j["num_different_global_patterns"] = s.num_different_global_patterns;
  }
  if (m == M::Variable || m == M::BigBird) j["num_random_blocks"] = s.num_random_blocks;
  if (m == M::Variable) j["local_window_blocks"] = s.local_window_blocks;
  if (m == M::BigBird || m == M::BSLongformer || m == M::LocalSlidingWindow) {
    j["num_sliding_window_blocks"] = s.num_sliding_window_blocks;
  }
  if (m == M::BigBird) j["num_global_blocks"] = s.num_global_blocks;
  if (m == M::Variable || m == M::BSLongformer) {
    j["global_block_indices"] = s.global_block_indices;
    j["global_block_end_indices"] = s.global_block_end_indices ? OJ(*s.global_block_end_indices) : OJ(nullptr);
  }
  if (m != M::Dense && m != M::DynamicNM) j["attention"] = s.attention;
  if (m == M::Fixed || m == M::Variable) j["horizontal_global_attention"] = s.horizontal_global_attention;
  if (m == M::DynamicNM) {
    j["n"] = s.n;
    j["m"] = s.m;
  }
  j["seed"] = s.seed;
  return j;
}

OJ kernel_json(const TransformerKernelConfig& k) {
  OJ j;
  j["enabled"] = k.enabled;
  j["batch_size"] = k.batch_size;
  j["hidden_size"] = k.hidden_size;
  j["intermediate_size"] = k.intermediate_size;
  j["heads"] = k.heads;
  j["attn_dropout_ratio"] = k.attn_dropout_ratio;
  j["hidden_dropout_ratio"] = k.hidden_dropout_ratio;
  j["num_hidden_layers"] = k.num_hidden_layers;
  j["initializer_range"] = k.initializer_range;
  j["layer_norm_eps"] = k.layer_norm_eps;
  j["local_rank"] = k.local_rank;
  j["seed"] = k.seed;
  j["fp16"] = k.fp16;
  j["bf16"] = k.bf16;
  j["pre_layer_norm"] = k.pre_layer_norm;
  j["normalize_invertible"] = k.normalize_invertible;
  j["gelu_checkpoint"] = k.gelu_checkpoint;
  j["adjust_init_range"] = k.adjust_init_range;
  j["attn_dropout_checkpoint"] = k.attn_dropout_checkpoint;
  j["stochastic_mode"] = k.stochastic_mode;
  j["return_tuple"] = k.return_tuple;
  return j;
}

}  // namespace

std::string to_json_text(const DeepSpeedConfig& c, int indent) {
  OJ j;
  j["train_batch_size"] = c.train_batch_size;
  j["train_micro_batch_size_per_gpu"] = c.train_micro_batch_size_per_gpu;
  j["gradient_accumulation_steps"] = c.gradient_accumulation_steps;
  j["steps_per_print"] = c.steps_per_print > 0 ? OJ(c.steps_per_print) : OJ(nullptr);
  j["wall_clock_breakdown"] = c.wall_clock_breakdown;
  j["memory_breakdown"] = c.memory_breakdown;
  j["dump_state"] = c.dump_state;
  j["gradient_clipping"] = c.gradient_clipping;
  j["prescale_gradients"] = c.prescale_gradients;
  j["gradient_predivide_factor"] = c.gradient_predivide_factor;
  j["communication_data_type"] = c.communication_data_type ? OJ(dtype_name(*c.communication_data_type)) : OJ(nullptr);
  j["fp32_allreduce"] = c.fp32_allreduce;
  j["sparse_gradients"] = c.sparse_gradients;
  j["fp16"] = fp16_json(c.fp16);
  j["bf16"] = OJ{{"enabled", c.bf16.enabled}, {"immediate_grad_update", c.bf16.immediate_grad_update}};
  if (c.optimizer.present) j["optimizer"] = optimizer_json(c.optimizer);
  if (c.scheduler.present) j["scheduler"] = scheduler_json(c.scheduler);
  const char* tag = c.checkpoint.tag_validation == TagValidation::Warn     ? "WARN"
                    : c.checkpoint.tag_validation == TagValidation::Ignore ? "IGNORE"
                                                                           : "FAIL";
  j["checkpoint"] = OJ{{"tag_validation", tag},
                       {"load_universal", c.checkpoint.load_universal},
                       {"use_node_local_storage", c.checkpoint.use_node_local_storage}};
  j["zero_optimization"] = OJ{{"stage", c.zero_stage}};
  j["tensorboard"] = monitor_json(c.tensorboard);
  j["csv_monitor"] = monitor_json(c.csv_monitor);
  j["data_parallel"] = OJ{{"bucket_cap_mb", c.data_parallel.bucket_cap_mb},
                          {"first_bucket_cap_mb", c.data_parallel.first_bucket_cap_mb},
                          {"overlap_comm", c.data_parallel.overlap_comm}};
  if (c.sparse_attention) j["sparse_attention"] = sparse_json(*c.sparse_attention);
  if (c.transformer_kernel) j["transformer_kernel"] = kernel_json(*c.transformer_kernel);
  // replace: strings set in code (not parsed) may hold invalid UTF-8; never throw for them.
  return j.dump(indent, ' ', false, OJ::error_handler_t::replace);
}

}  // namespace ds
