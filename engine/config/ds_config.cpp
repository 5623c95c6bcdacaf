// The whole DeepSpeed config: top-level keys, batch-size resolution, checks across sections, the
// keys we know but do not implement, and the load entry points.
//
// DeepSpeed reads every top-level key with dict.get(), so a misspelt key is silently ignored (and
// its default used); we report unknown keys as errors on purpose, with the nearest known key.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "engine/config/json_reader.h"

namespace ds {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::FP16: return "fp16";
    case DType::BF16: return "bf16";
    default: return "fp32";
  }
}

const char* sparse_mode_name(SparseMode m) {
  switch (m) {
    case SparseMode::Dense: return "dense";
    case SparseMode::Fixed: return "fixed";
    case SparseMode::Variable: return "variable";
    case SparseMode::BigBird: return "bigbird";
    case SparseMode::BSLongformer: return "bslongformer";
    case SparseMode::LocalSlidingWindow: return "local_sliding_window";
    default: return "dynamic_nm";
  }
}

std::string ConfigIssue::format() const { return path.empty() ? message : path + ": " + message; }

namespace {
std::string error_text(const std::vector<ConfigIssue>& errors) {
  std::string s = "invalid DeepSpeed config (" + std::to_string(errors.size()) + (errors.size() == 1 ? " error):" : " errors):");
  for (const ConfigIssue& e : errors) s += "\n  " + e.format();
  return s;
}
}  // namespace

ConfigError::ConfigError(std::vector<ConfigIssue> errors) : std::runtime_error(error_text(errors)), issues_(std::move(errors)) {}

namespace {

using config_detail::Issues;
using config_detail::Json;
using config_detail::in_quotes;
using config_detail::Section;

// DeepSpeed keys this engine knows but does not implement: one warning each, never silence.
// | key                        | what it does in DeepSpeed                          | here                         |
// |----------------------------|----------------------------------------------------|------------------------------|
// | amp                        | NVIDIA Apex AMP instead of fp16/bf16               | warn; use fp16 or bf16       |
// | activation_checkpointing   | partitioned activation checkpointing               | warn; the transformer kernel's memory flags cover the recipe |
// | flops_profiler             | per-module FLOPs profile                           | warn                         |
// | elasticity                 | elastic batch sizes computed from GPU counts       | warn; batch sizes used as written |
// | pipeline                   | pipeline parallelism (PipelineModule)              | warn                         |
// | progressive_layer_drop     | PLD (bing_bert's PLD variant)                      | warn                         |
// | wandb, comet               | experiment-tracker monitors                        | warn; tensorboard/csv_monitor are supported |
// | aio, nebula                | async NVMe I/O, Azure Nebula checkpoints            | warn                         |
// | compression_training, data_efficiency, curriculum_learning, quantize_training, weight_quantization | compression / curriculum | warn |
// | eigenvalue, autotuning, comms_logger, timers, compile, graph_harvesting | tooling | warn |
// | hybrid_engine, tensor_parallel, seq_parallel_comm_data_type, use_data_before_expert_parallelism | RLHF / model parallel | warn |
// | data_types                 | grad_accum_dtype (fp32 is what we do)              | warn                         |
// | zero_allow_untested_optimizer, zero_force_ds_cpu_optimizer | ZeRO optimizer checks | warn (no ZeRO)            |
// | disable_allgather          | legacy ZeRO-1 switch                               | warn (no ZeRO)               |
// | vocabulary_size            | only a warning when not a multiple of 8            | warn                         |
// | dataloader_drop_last       | deepspeed_io's DataLoader                          | warn; the recipe owns its loader |
// sparse_gradients, memory_breakdown and dump_state are read into DeepSpeedConfig (sparse_gradients
// true warns: embedding gradients are reduced dense, same result, more traffic).
struct Unimplemented {
  const char* key;
  const char* note;
};
const Unimplemented kUnimplemented[] = {
    {"amp", "NVIDIA Apex AMP; use \"fp16\" or \"bf16\" instead"},
    {"activation_checkpointing", "the transformer kernel's memory flags cover the BERT recipe"},
    {"flops_profiler", "the FLOPs profiler"},
    {"elasticity", "elastic training; the batch sizes in this file are used as written"},
    {"pipeline", "pipeline parallelism"},
    {"progressive_layer_drop", "progressive layer drop"},
    {"wandb", "the Weights & Biases monitor; \"tensorboard\" and \"csv_monitor\" are supported"},
    {"comet", "the Comet monitor; \"tensorboard\" and \"csv_monitor\" are supported"},
    {"aio", "asynchronous NVMe I/O (ZeRO-Infinity)"},
    {"nebula", "Nebula checkpointing"},
    {"compression_training", "compression training"},
    {"data_efficiency", "data efficiency (curriculum learning, random-LTD)"},
    {"curriculum_learning", "legacy curriculum learning"},
    {"quantize_training", "quantization-aware training"},
    {"weight_quantization", "weight quantization"},
    {"eigenvalue", "eigenvalue computation"},
    {"autotuning", "the autotuner"},
    {"comms_logger", "the communication logger"},
    {"timers", "DeepSpeed's throughput timers (\"wall_clock_breakdown\" is supported)"},
    {"compile", "torch.compile integration"},
    {"graph_harvesting", "CUDA graph harvesting"},
    {"hybrid_engine", "the RLHF hybrid engine"},
    {"tensor_parallel", "tensor parallelism"},
    {"seq_parallel_comm_data_type", "sequence parallelism"},
    {"use_data_before_expert_parallelism", "expert parallelism"},
    {"data_types", "gradient accumulation dtype (gradients are accumulated in fp32)"},
    {"zero_allow_untested_optimizer", "ZeRO optimizer checks (only ZeRO stage 0 is supported)"},
    {"zero_force_ds_cpu_optimizer", "ZeRO optimizer checks (only ZeRO stage 0 is supported)"},
    {"disable_allgather", "a legacy ZeRO stage 1 switch"},
    {"vocabulary_size", "DeepSpeed only warns when it is not a multiple of 8"},
    {"dataloader_drop_last", "deepspeed_io's DataLoader; the recipe owns its data loader"},
};

// Keys that users put at the top level although they belong to a section.
struct Misplaced {
  const char* key;
  const char* section;
};
const Misplaced kMisplaced[] = {
    {"loss_scale", "fp16"}, {"initial_scale_power", "fp16"}, {"loss_scale_window", "fp16"},
    {"hysteresis", "fp16"}, {"min_loss_scale", "fp16"}, {"lr", "optimizer.params"},
    {"betas", "optimizer.params"}, {"weight_decay", "optimizer.params"}, {"max_coeff", "optimizer.params"},
    {"min_coeff", "optimizer.params"}, {"warmup_min_lr", "scheduler.params"}, {"warmup_max_lr", "scheduler.params"},
    {"warmup_num_steps", "scheduler.params"}, {"total_num_steps", "scheduler.params"},
    {"stage", "zero_optimization"}, {"tag_validation", "checkpoint"}, {"num_local_blocks", "sparse_attention"},
    {"num_global_blocks", "sparse_attention"}, {"hidden_size", "transformer_kernel"},
    {"attn_dropout_checkpoint", "transformer_kernel"}, {"normalize_invertible", "transformer_kernel"},
    {"gelu_checkpoint", "transformer_kernel"}, {"bucket_cap_mb", "data_parallel"},
};

bool positive(int64_t v) { return v >= 1; }

bool mul(int64_t a, int64_t b, int64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

std::string product_text(int64_t a, int64_t b) {
  int64_t p = 0;
  return mul(a, b, p) ? std::to_string(p) : "a number beyond 64 bits";
}

// DeepSpeed's _set_batch_related_parameters + _batch_assertion (§3.2), integer floor division as
// in DeepSpeed, with all numbers in the messages.
void resolve_batch(Section& s, DeepSpeedConfig& c) {
  const char* kT = "train_batch_size";
  const char* kM = "train_micro_batch_size_per_gpu";
  const char* kG = "gradient_accumulation_steps";
  const std::string expect = "a positive integer (or null: derived from the other two)";
  auto T = s.integer(kT, positive, expect, true);
  auto M = s.integer(kM, positive, expect, true);
  auto G = s.integer(kG, positive, expect, true);
  auto given = [&](const char* k) { return s.has(k) && !s.raw(k)->is_null(); };
  if ((given(kT) && !T) || (given(kM) && !M) || (given(kG) && !G)) return;  // already reported

  const int64_t W = c.world_size;
  const std::string w = std::to_string(W);
  std::string how;       // how the missing value was derived, for the messages
  std::string multiple;  // what train_batch_size must be a multiple of
  const char* derived = nullptr;
  if (T && M && G) {
  } else if (T && M) {
    G = *T / *M / W;
    derived = kG;
    how = "gradient_accumulation_steps = " + std::to_string(*T) + " // " + std::to_string(*M) + " // " + w + " = " + std::to_string(*G);
    multiple = "micro x world = " + product_text(*M, W);
  } else if (T && G) {
    M = *T / W / *G;
    derived = kM;
    how = "train_micro_batch_size_per_gpu = " + std::to_string(*T) + " // " + w + " // " + std::to_string(*G) + " = " + std::to_string(*M);
    multiple = "accumulation x world = " + product_text(*G, W);
  } else if (M && G) {
    int64_t mg = 0, t = 0;
    if (!mul(*M, *G, mg) || !mul(mg, W, t)) {
      s.issues().error(kM, "micro " + std::to_string(*M) + " x accumulation " + std::to_string(*G) + " x world " + w +
                               " does not fit in a 64-bit integer");
      return;
    }
    T = t;
  } else if (T) {
    G = 1;
    M = *T / W;
    derived = kM;
    how = "train_micro_batch_size_per_gpu = " + std::to_string(*T) + " // " + w + " = " + std::to_string(*M);
    multiple = "world = " + w;
  } else if (M) {
    G = 1;
    int64_t t = 0;
    if (!mul(*M, W, t)) {
      s.issues().error(kM, "micro " + std::to_string(*M) + " x world " + w + " does not fit in a 64-bit integer");
      return;
    }
    T = t;
  } else {
    // DeepSpeed's assertion text.
    s.issues().error(kT, "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided");
    return;
  }
  if (derived && ((M && *M <= 0) || (G && *G <= 0))) {
    s.issues().error(derived, how + " is not a valid batch setting: train_batch_size " + std::to_string(*T) +
                                  " is too small for world size " + w + "; it must be a positive multiple of " + multiple);
    return;
  }
  int64_t mg = 0, product = 0;
  if (!mul(*M, *G, mg) || !mul(mg, W, product)) {
    s.issues().error(kT, "micro " + std::to_string(*M) + " x accumulation " + std::to_string(*G) + " x world " + w +
                             " does not fit in a 64-bit integer");
    return;
  }
  if (*T != product) {
    std::string msg = "train_batch_size " + std::to_string(*T) + " != micro " + std::to_string(*M) + " x accumulation " +
                      std::to_string(*G) + " x world " + w + " = " + std::to_string(product);
    if (derived) {
      msg += " (" + how + "); train_batch_size must be a multiple of " + multiple;
    } else {
      msg += "; fix one of the three, or leave one out and it is derived";
    }
    s.issues().error(kT, msg);
    return;
  }
  c.train_batch_size = *T;
  c.train_micro_batch_size_per_gpu = *M;
  c.gradient_accumulation_steps = *G;
}

void read_top(const Json& doc, Issues& issues, DeepSpeedConfig& c) {
  Section s(doc, "", issues);
  resolve_batch(s, c);

  if (const Json* v = s.raw("steps_per_print"); v && v->is_null()) {
    c.steps_per_print = 0;  // DeepSpeed >= 0.15.2: None = never
  } else if (auto n = s.integer("steps_per_print", positive, "a positive integer, or null (never)")) {
    c.steps_per_print = *n;
  }
  if (auto v = s.boolean("wall_clock_breakdown")) c.wall_clock_breakdown = *v;
  if (auto v = s.boolean("memory_breakdown")) c.memory_breakdown = *v;
  if (auto v = s.boolean("dump_state")) c.dump_state = *v;
  if (auto v = s.number("gradient_clipping", [](double x) { return x >= 0.0; }, "a max gradient norm >= 0 (0 = off)")) {
    c.gradient_clipping = *v;
  }
  if (auto v = s.boolean("prescale_gradients")) c.prescale_gradients = *v;
  if (auto v = s.number("gradient_predivide_factor", [](double x) { return x > 0.0; }, "a number > 0")) {
    c.gradient_predivide_factor = *v;
  }
  if (const Json* v = s.raw("communication_data_type"); v && !v->is_null()) {
    // Case-insensitive as in DeepSpeed; "bfp16" is the spelling of DeepSpeed < 0.10.
    if (auto t = s.choice("communication_data_type", {"fp16", "bf16", "fp32", "bfp16"}, true)) {
      c.communication_data_type = *t == "fp16" ? DType::FP16 : *t == "fp32" ? DType::FP32 : DType::BF16;
    }
  }
  if (auto v = s.boolean("fp32_allreduce")) c.fp32_allreduce = *v;
  if (auto v = s.boolean("sparse_gradients")) {
    c.sparse_gradients = *v;
    if (*v) issues.warn("sparse_gradients", "embedding gradients are all-reduced dense (same result, more traffic)");
  }

  if (const Json* o = s.object("fp16")) {
    Section sec(*o, "fp16", issues);
    config_detail::read_fp16(sec, c.fp16);
  }
  std::string bf16_key = "bf16";
  if (s.has("bf16") && s.has("bfloat16")) {
    issues.error("bfloat16", "give only one of \"bf16\" and its legacy alias \"bfloat16\"");
    s.consume("bfloat16");
  } else if (s.has("bfloat16")) {
    bf16_key = "bfloat16";
  }
  if (const Json* o = s.object(bf16_key)) {
    Section sec(*o, bf16_key, issues);
    config_detail::read_bf16(sec, c.bf16);
  }
  if (const Json* o = s.object("optimizer")) {
    Section sec(*o, "optimizer", issues);
    config_detail::read_optimizer(sec, c.optimizer);
  }
  if (const Json* o = s.object("scheduler")) {
    Section sec(*o, "scheduler", issues);
    config_detail::read_scheduler(sec, c.scheduler);
  }
  if (const Json* o = s.object("checkpoint")) {
    Section sec(*o, "checkpoint", issues);
    config_detail::read_checkpoint(sec, c.checkpoint);
  }
  if (const Json* v = s.raw("zero_optimization")) config_detail::read_zero(*v, "zero_optimization", issues, c.zero_stage);
  for (const char* key : {"tensorboard", "csv_monitor"}) {
    if (const Json* o = s.object(key)) {
      Section sec(*o, key, issues);
      config_detail::read_monitor(sec, std::string(key) == "tensorboard" ? c.tensorboard : c.csv_monitor);
    }
  }
  if (const Json* o = s.object("data_parallel")) {
    Section sec(*o, "data_parallel", issues);
    config_detail::read_data_parallel(sec, c.data_parallel);
  }
  if (const Json* o = s.object("sparse_attention")) {
    SparseAttentionConfig sa;
    config_detail::read_sparse_attention(*o, "sparse_attention", issues, sa);
    c.sparse_attention = sa;
  }
  bool kernel_fp16_given = false, kernel_bf16_given = false;
  if (const Json* o = s.object("transformer_kernel")) {
    TransformerKernelConfig tk;
    config_detail::read_transformer_kernel(*o, "transformer_kernel", issues, tk, &kernel_fp16_given, &kernel_bf16_given);
    c.transformer_kernel = tk;
  }

  std::vector<std::string> unimplemented;
  for (const Unimplemented& u : kUnimplemented) {
    unimplemented.push_back(u.key);
    if (s.has(u.key)) {
      s.consume(u.key);
      issues.warn(u.key, in_quotes(u.key) + " is a DeepSpeed feature this engine does not implement (" + u.note +
                             "); the key is ignored");
    }
  }
  for (const Misplaced& m : kMisplaced) {
    if (s.has(m.key)) {
      s.consume(m.key);
      issues.error(m.key, "unknown top-level key " + in_quotes(m.key) + "; it belongs in the \"" + std::string(m.section) +
                              "\" section");
    }
  }
  s.also_suggest(unimplemented);
  s.also_suggest({"bfloat16"});
  s.finish();

  // --- checks across sections ---
  if (c.fp16.enabled && c.bf16.enabled) {
    issues.error(bf16_key + ".enabled", "bfloat16 and fp16 modes cannot be simultaneously enabled; disable one");
  }
  if (c.optimizer.present && c.optimizer.type == OptimizerType::Lamb && !c.optimizer.type_name.empty() &&
      c.fp16.enabled && c.fp16.loss_scale != 0.0) {
    issues.error("fp16.loss_scale", "DeepSpeed " + c.optimizer.type_name + " optimizer requires dynamic loss scaling: "
                                    "loss_scale is " + Json(c.fp16.loss_scale).dump() + ", set it to 0");
  }
  if (c.prescale_gradients && c.gradient_predivide_factor != 1.0) {
    issues.warn("gradient_predivide_factor", "has no effect because prescale_gradients is true (DeepSpeed ignores it too)");
  }
  if (c.transformer_kernel) {
    TransformerKernelConfig& tk = *c.transformer_kernel;
    if (tk.enabled && kernel_fp16_given && tk.fp16 != c.fp16.enabled) {
      issues.error("transformer_kernel.fp16", std::string(tk.fp16 ? "true" : "false") + " disagrees with fp16.enabled " +
                                                  (c.fp16.enabled ? "true" : "false") +
                                                  "; the kernel runs in the model's precision: remove the key (it "
                                                  "follows fp16.enabled) or make them agree");
    }
    if (tk.enabled && kernel_bf16_given && tk.bf16 != c.bf16.enabled) {
      issues.error("transformer_kernel.bf16", std::string(tk.bf16 ? "true" : "false") + " disagrees with " + bf16_key +
                                                  ".enabled " + (c.bf16.enabled ? "true" : "false") +
                                                  "; the kernel runs in the model's precision: remove the key (it "
                                                  "follows " + bf16_key + ".enabled) or make them agree");
    }
    if (!kernel_fp16_given) tk.fp16 = c.fp16.enabled;
    if (!kernel_bf16_given) tk.bf16 = c.bf16.enabled;
  }
  if (c.sparse_attention && c.transformer_kernel_enabled()) {
    // DeepSpeed itself never checks this; bing_bert raises NotImplementedError when both flags are
    // given (§1.11): the fused kernel computes dense attention.
    issues.error("transformer_kernel",
                 "\"sparse_attention\" and an enabled \"transformer_kernel\" cannot be used together: the transformer "
                 "kernel computes dense attention. Disable one: remove \"sparse_attention\", or set "
                 "\"transformer_kernel\": {\"enabled\": false}");
  }
}

}  // namespace

ConfigParseResult parse_config_text(std::string_view text, int world_size) {
  ConfigParseResult r;
  Issues issues{r.errors, r.warnings};
  r.config.world_size = world_size;
  if (world_size < 1) {
    issues.error("", "world size " + std::to_string(world_size) + " must be at least 1");
    return r;
  }
  std::optional<Json> doc = config_detail::read_json(text, issues);
  if (!doc) return r;
  if (!doc->is_object()) {
    issues.error("", "a DeepSpeed config is a JSON object, got " + config_detail::preview(*doc));
    return r;
  }
  try {
    read_top(*doc, issues, r.config);
  } catch (const std::exception& e) {
    // The readers check types before every access; this is a last line so nothing escapes.
    issues.error("", std::string("internal error while reading the config: ") + e.what());
  }
  return r;
}

ConfigParseResult parse_config_file(const std::string& file, int world_size) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) {
    ConfigParseResult r;
    r.config.world_size = world_size;
    r.errors.push_back({"", "cannot read config file " + in_quotes(file) + ": it is a directory"});
    return r;
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    ConfigParseResult r;
    r.config.world_size = world_size;
    r.errors.push_back({"", "cannot read config file " + in_quotes(file) + ": " + std::strerror(errno)});
    return r;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    ConfigParseResult r;
    r.config.world_size = world_size;
    r.errors.push_back({"", "cannot read config file " + in_quotes(file) + ": read error"});
    return r;
  }
  return parse_config_text(text.str(), world_size);
}

namespace {
DeepSpeedConfig finish_load(ConfigParseResult r) {
  for (const ConfigIssue& w : r.warnings) std::cerr << "warning: " << w.format() << "\n";
  if (!r.ok()) throw ConfigError(std::move(r.errors));
  return std::move(r.config);
}
}  // namespace

DeepSpeedConfig load_config(const std::string& file, int world_size) {
  return finish_load(parse_config_file(file, world_size));
}

DeepSpeedConfig load_config_text(std::string_view text, int world_size) {
  return finish_load(parse_config_text(text, world_size));
}

}  // namespace ds
