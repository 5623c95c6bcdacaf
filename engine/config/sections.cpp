// The engine sections of a DeepSpeed config: fp16, bf16, optimizer, scheduler, checkpoint,
// tensorboard/csv_monitor, zero_optimization and our data_parallel extension.
//
// DeepSpeed reads fp16/bf16/checkpoint/... with dict.get(), so an unknown key inside them is
// silently ignored (a typo such as "loss_scale_windw" just falls back to the default). We report
// unknown keys as errors on purpose. Optimizer and scheduler params are passed to constructors as
// keyword arguments by DeepSpeed, so there an unknown name is an error in DeepSpeed too.
#include <algorithm>
#include <cctype>
#include <climits>

#include "engine/config/json_reader.h"

namespace ds::config_detail {
namespace {

bool ge0(double v) { return v >= 0.0; }
bool gt0(double v) { return v > 0.0; }
bool unit_closed(double v) { return v >= 0.0 && v <= 1.0; }
bool unit_open(double v) { return v >= 0.0 && v < 1.0; }
bool pos_int(int64_t v) { return v >= 1 && v <= INT_MAX; }
bool nonneg(int64_t v) { return v >= 0; }
bool pos(int64_t v) { return v >= 1; }
bool iter_ok(int64_t v) { return v >= -1; }

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

const Json& empty_object() {
  static const Json e = Json::object();
  return e;
}

// A precision section with settings but no "enabled" stays off, as in DeepSpeed; likely a slip.
void warn_if_not_enabled(Section& s) {
  if (!s.has("enabled") && s.size() > 0) {
    s.issues().warn(s.path(), "has no \"enabled\" key, so it stays off (DeepSpeed's default); add \"enabled\": true to use it");
  }
}

}  // namespace

// --- fp16 / bf16 ---------------------------------------------------------------------------------
void read_fp16(Section& s, FP16Config& out) {
  if (auto v = s.boolean("enabled")) out.enabled = *v;
  if (auto v = s.number("loss_scale", ge0, "a number >= 0 (0 = dynamic loss scaling)")) out.loss_scale = *v;
  if (auto v = s.integer("initial_scale_power", [](int64_t p) { return p >= 0 && p <= 64; },
                         "an integer in [0, 64] (the first dynamic loss scale is 2^power)")) {
    out.initial_scale_power = static_cast<int>(*v);
  }
  if (auto v = s.integer("loss_scale_window", pos_int, "a positive integer (steps without overflow before the scale doubles)")) {
    out.loss_scale_window = static_cast<int>(*v);
  }
  if (auto v = s.integer("hysteresis", pos_int, "a positive integer")) out.hysteresis = static_cast<int>(*v);
  if (auto v = s.boolean("consecutive_hysteresis")) out.consecutive_hysteresis = *v;
  if (auto v = s.number("min_loss_scale", gt0, "a number > 0")) out.min_loss_scale = *v;
  if (auto v = s.boolean("auto_cast")) out.auto_cast = *v;
  if (auto v = s.boolean("fp16_master_weights_and_grads"); v && *v) {
    s.issues().error(s.key_path("fp16_master_weights_and_grads"),
                     "true needs ZeRO stage 2 with CPU offload in DeepSpeed, which this engine does not support; "
                     "remove the key");
  }
  // DeepSpeed builds dynamic_loss_scale_args only when one of these keys is written (§3.6).
  for (const char* k : {"initial_scale_power", "loss_scale_window", "min_loss_scale", "hysteresis", "consecutive_hysteresis"}) {
    if (s.has(k)) out.dynamic_args_given = true;
  }
  warn_if_not_enabled(s);
  s.finish();
}

void read_bf16(Section& s, BF16Config& out) {
  if (auto v = s.boolean("enabled")) out.enabled = *v;
  if (auto v = s.boolean("immediate_grad_update")) out.immediate_grad_update = *v;
  warn_if_not_enabled(s);
  s.finish();
}

// --- optimizer -----------------------------------------------------------------------------------
namespace {

const std::vector<std::string> kAdamParams = {"lr", "betas", "eps", "weight_decay", "bias_correction",
                                              "amsgrad", "adam_w_mode", "torch_adam"};
const std::vector<std::string> kLambParams = {"lr", "betas", "eps", "weight_decay", "bias_correction",
                                              "amsgrad", "eps_inside_sqrt", "max_coeff", "min_coeff"};

void read_optimizer_params(Section& p, OptimizerConfig& out) {
  const bool lamb = out.type == OptimizerType::Lamb;
  if (p.has("max_grad_norm")) {
    p.consume("max_grad_norm");
    // DeepSpeed's own text (engine._configure_basic_optimizer).
    p.issues().error(p.key_path("max_grad_norm"),
                     "'max_grad_norm' is not supported as an optimizer parameter, please switch to using the deepspeed "
                     "parameter 'gradient_clipping' see: https://www.deepspeed.ai/docs/config-json/#gradient-clipping "
                     "for more details");
  }
  if (auto v = p.number("lr", ge0, "a learning rate >= 0")) out.lr = *v;
  if (auto v = p.number_list("betas", 2, unit_open, "in [0, 1)")) out.betas = {(*v)[0], (*v)[1]};
  if (auto v = p.number("eps", ge0, "a number >= 0")) out.eps = *v;
  if (auto v = p.number("weight_decay", ge0, "a number >= 0")) out.weight_decay = *v;
  if (auto v = p.boolean("bias_correction")) out.bias_correction = *v;
  if (auto v = p.boolean("amsgrad")) {
    out.amsgrad = *v;
    if (*v) {
      p.issues().error(p.key_path("amsgrad"), std::string("true is not supported (DeepSpeed's Fused") +
                                                  (lamb ? "Lamb" : "Adam") + " rejects it too); remove it or set false");
    }
  }
  if (!lamb) {
    if (auto v = p.boolean("adam_w_mode")) {
      out.adam_w_mode = *v;
      if (!*v && out.type == OptimizerType::AdamW) {
        p.issues().warn(p.key_path("adam_w_mode"),
                        "false has no effect with type AdamW (DeepSpeed: decoupled weight decay = type is AdamW or "
                        "adam_w_mode); use type \"Adam\" for L2-style weight decay");
      }
    }
    if (auto v = p.boolean("torch_adam")) out.torch_adam = *v;
    if (p.has("set_grad_none")) {
      p.consume("set_grad_none");
      p.issues().warn(p.key_path("set_grad_none"), "FusedAdam's set_grad_none is ignored: gradients are reset by the engine");
    }
  } else {
    if (auto v = p.boolean("eps_inside_sqrt")) out.eps_inside_sqrt = *v;
    if (auto v = p.number("max_coeff", ge0, "a number >= 0 (upper clamp of the Lamb trust ratio)")) out.max_coeff = *v;
    if (auto v = p.number("min_coeff", ge0, "a number >= 0 (lower clamp of the Lamb trust ratio)")) out.min_coeff = *v;
    if (out.min_coeff > out.max_coeff) {
      p.issues().error(p.key_path("min_coeff"), "min_coeff " + Json(out.min_coeff).dump() + " is larger than max_coeff " +
                                                    Json(out.max_coeff).dump() + "; the trust ratio is clamped to [min_coeff, max_coeff]");
    }
  }
  // A name of the other optimizer family gets a precise message instead of "unknown key".
  for (const std::string& k : p.unread_keys()) {
    const std::vector<std::string>& other = lamb ? kAdamParams : kLambParams;
    if (contains(other, k)) {
      p.consume(k);
      p.issues().error(p.key_path(k), in_quotes(k) + " is not a parameter of " + out.type_name + " (it belongs to " +
                                          (lamb ? "Adam/AdamW" : "Lamb") + ")");
    }
  }
  p.finish("(not a parameter of " + out.type_name + "; DeepSpeed would fail in the optimizer's constructor)");
}

}  // namespace

void read_optimizer(Section& s, OptimizerConfig& out) {
  out.present = true;
  bool known_type = false;
  if (const Json* t = s.raw("type"); !t) {
    s.issues().error(s.key_path("type"), "missing; expected \"Adam\", \"AdamW\" or \"Lamb\"");
  } else if (!t->is_string()) {
    s.bad("type", *t, "\"Adam\", \"AdamW\" or \"Lamb\"");
  } else {
    out.type_name = t->get<std::string>();
    const std::string name = lower(out.type_name);
    // DeepSpeed lower-cases the names of its own optimizers, so "ADAM" and "lamb" are fine.
    static const std::vector<std::string> ds_unsupported = {"onebitadam", "zerooneadam", "onebitlamb", "adagrad",
                                                            "lion", "muadam", "muadamw", "musgd"};
    static const std::vector<std::string> torch_optim = {"SGD", "RMSprop", "Adadelta", "Adamax", "ASGD", "LBFGS",
                                                         "NAdam", "RAdam", "Rprop", "SparseAdam"};
    if (name == "adam") {
      out.type = OptimizerType::Adam, known_type = true;
    } else if (name == "adamw") {
      out.type = OptimizerType::AdamW, known_type = true;
    } else if (name == "lamb") {
      out.type = OptimizerType::Lamb, known_type = true;
    } else if (contains(ds_unsupported, name)) {
      s.issues().error(s.key_path("type"), "DeepSpeed optimizer " + in_quotes(out.type_name) +
                                               " is not supported yet; use \"Adam\", \"AdamW\" or \"Lamb\"");
    } else if (contains(torch_optim, out.type_name)) {
      s.issues().error(s.key_path("type"), "torch.optim." + out.type_name +
                                               " is not supported by this engine; use \"Adam\", \"AdamW\" or \"Lamb\"");
    } else {
      std::string msg = "unknown optimizer " + in_quotes(out.type_name) + "; expected \"Adam\", \"AdamW\" or \"Lamb\"";
      std::string near = nearest(out.type_name, {"Adam", "AdamW", "Lamb"});
      if (!near.empty()) msg += "; did you mean " + in_quotes(near) + "?";
      s.issues().error(s.key_path("type"), msg);
    }
  }
  if (auto v = s.boolean("legacy_fusion")) out.legacy_fusion = *v;
  const Json* params = s.object("params");
  if (known_type) {
    Section p(params ? *params : empty_object(), s.key_path("params"), s.issues());
    read_optimizer_params(p, out);
  }
  s.finish();
}

// --- scheduler -----------------------------------------------------------------------------------
namespace {

struct SchedulerName {
  const char* name;
  SchedulerType type;
};
const SchedulerName kSchedulers[] = {{"WarmupLR", SchedulerType::WarmupLR},
                                     {"WarmupDecayLR", SchedulerType::WarmupDecayLR},
                                     {"WarmupCosineLR", SchedulerType::WarmupCosineLR},
                                     {"OneCycle", SchedulerType::OneCycle},
                                     {"LRRangeTest", SchedulerType::LRRangeTest}};

void require(Section& p, const std::string& key, const std::string& type) {
  if (!p.has(key)) p.issues().error(p.key_path(key), "missing; " + type + " needs it (there is no default)");
}

void read_warmup(Section& p, SchedulerConfig& out) {
  auto mn = p.number_or_list("warmup_min_lr", ge0, "a learning rate >= 0");
  auto mx = p.number_or_list("warmup_max_lr", ge0, "a learning rate >= 0");
  if (mn) out.warmup_min_lr = *mn;
  if (mx) out.warmup_max_lr = *mx;
  if (mn && mx && mn->size() > 1 && mx->size() > 1 && mn->size() != mx->size()) {
    p.issues().error(p.key_path("warmup_max_lr"), "has " + std::to_string(mx->size()) + " values but warmup_min_lr has " +
                                                      std::to_string(mn->size()) + "; give one value per parameter group in both");
  }
}

void read_warmup_steps(Section& p, SchedulerConfig& out) {
  if (auto v = p.integer("warmup_num_steps", nonneg, "an integer >= 0")) out.warmup_num_steps = *v;
  if (auto v = p.choice("warmup_type", {"log", "linear"}, false)) out.warmup_type = *v;
}

void read_total_steps(Section& p, SchedulerConfig& out, const std::string& type) {
  require(p, "total_num_steps", type);
  if (auto v = p.integer("total_num_steps", pos, "a positive integer")) {
    out.total_num_steps = *v;
    if (out.total_num_steps < out.warmup_num_steps) {
      p.issues().warn(p.key_path("total_num_steps"), "total_num_steps " + std::to_string(out.total_num_steps) +
                                                         " is smaller than warmup_num_steps " +
                                                         std::to_string(out.warmup_num_steps) + " (DeepSpeed warns too)");
    }
  }
}

void read_scheduler_params(Section& p, SchedulerConfig& out) {
  if (auto v = p.integer("last_batch_iteration", iter_ok, "an integer >= -1 (-1 = start from the beginning)")) {
    out.last_batch_iteration = *v;
  }
  switch (out.type) {
    case SchedulerType::WarmupLR:
      read_warmup(p, out);
      read_warmup_steps(p, out);
      break;
    case SchedulerType::WarmupDecayLR:
      read_warmup(p, out);
      read_warmup_steps(p, out);
      read_total_steps(p, out, out.type_name);
      break;
    case SchedulerType::WarmupCosineLR:
      read_warmup_steps(p, out);
      read_total_steps(p, out, out.type_name);
      if (auto v = p.number("warmup_min_ratio", unit_closed, "a ratio in [0, 1]")) out.warmup_min_ratio = *v;
      if (auto v = p.number("cos_min_ratio", unit_closed, "a ratio in [0, 1]")) out.cos_min_ratio = *v;
      break;
    case SchedulerType::OneCycle:
      require(p, "cycle_min_lr", out.type_name);
      require(p, "cycle_max_lr", out.type_name);
      if (auto v = p.number("cycle_min_lr", ge0, "a learning rate >= 0")) out.cycle_min_lr = *v;
      if (auto v = p.number("cycle_max_lr", ge0, "a learning rate >= 0")) out.cycle_max_lr = *v;
      if (auto v = p.number("decay_lr_rate", ge0, "a number >= 0")) out.decay_lr_rate = *v;
      if (auto v = p.integer("cycle_first_step_size", pos, "a positive integer")) out.cycle_first_step_size = *v;
      if (auto v = p.integer("cycle_second_step_size", pos, "a positive integer, or null (= cycle_first_step_size)", true)) {
        out.cycle_second_step_size = *v;
      }
      if (auto v = p.integer("cycle_first_stair_count", nonneg, "an integer >= 0")) out.cycle_first_stair_count = *v;
      if (auto v = p.integer("cycle_second_stair_count", nonneg, "an integer >= 0, or null", true)) {
        out.cycle_second_stair_count = *v;
      }
      if (auto v = p.integer("decay_step_size", nonneg, "an integer >= 0 (0 = no decay after the cycle)")) out.decay_step_size = *v;
      if (auto v = p.boolean("cycle_momentum")) out.cycle_momentum = *v;
      if (auto v = p.number("cycle_min_mom", unit_open, "a momentum in [0, 1)")) out.cycle_min_mom = *v;
      if (auto v = p.number("cycle_max_mom", unit_open, "a momentum in [0, 1)")) out.cycle_max_mom = *v;
      if (auto v = p.number("decay_mom_rate", ge0, "a number >= 0")) out.decay_mom_rate = *v;
      break;
    case SchedulerType::LRRangeTest:
      if (auto v = p.number("lr_range_test_min_lr", ge0, "a learning rate >= 0")) out.lr_range_test_min_lr = *v;
      if (auto v = p.integer("lr_range_test_step_size", pos, "a positive integer")) out.lr_range_test_step_size = *v;
      if (auto v = p.number("lr_range_test_step_rate", ge0, "a number >= 0")) out.lr_range_test_step_rate = *v;
      if (auto v = p.boolean("lr_range_test_staircase")) out.lr_range_test_staircase = *v;
      break;
  }
  // Parameters of the other DeepSpeed schedules are suggested too ("total_num_steps" on WarmupLR
  // then reads "unknown key"; DeepSpeed fails in the constructor for those as well).
  p.also_suggest({"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "total_num_steps",
                  "warmup_min_ratio", "cos_min_ratio", "cycle_min_lr", "cycle_max_lr", "lr_range_test_min_lr"});
  p.finish("(not a parameter of " + out.type_name + ")");
}

}  // namespace

void read_scheduler(Section& s, SchedulerConfig& out) {
  out.present = true;
  bool known_type = false;
  if (const Json* t = s.raw("type"); !t) {
    s.issues().error(s.key_path("type"), "missing; expected one of WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest");
  } else if (!t->is_string()) {
    s.bad("type", *t, "one of \"WarmupLR\", \"WarmupDecayLR\", \"WarmupCosineLR\", \"OneCycle\", \"LRRangeTest\"");
  } else {
    out.type_name = t->get<std::string>();
    std::vector<std::string> names;
    for (const SchedulerName& n : kSchedulers) {
      names.push_back(n.name);
      if (out.type_name == n.name) out.type = n.type, known_type = true;
    }
    static const std::vector<std::string> torch_schedulers = {
        "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
        "SequentialLR", "CosineAnnealingLR", "ChainedScheduler", "ReduceLROnPlateau", "CyclicLR",
        "CosineAnnealingWarmRestarts", "OneCycleLR", "PolynomialLR"};
    if (!known_type) {
      std::string msg;
      if (contains(torch_schedulers, out.type_name)) {
        msg = "torch.optim.lr_scheduler." + out.type_name + " is not supported by this engine";
      } else {
        msg = "unknown scheduler " + in_quotes(out.type_name);
      }
      msg += "; expected WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle or LRRangeTest";
      std::string near = nearest(out.type_name, names);
      if (!near.empty()) msg += "; did you mean " + in_quotes(near) + "? (names are case-sensitive, as in DeepSpeed)";
      s.issues().error(s.key_path("type"), msg);
    }
  }
  // DeepSpeed calls Scheduler(optimizer, **params) and fails on a missing "params"; we read a
  // missing "params" as "all defaults".
  const Json* params = s.object("params");
  if (known_type) {
    Section p(params ? *params : empty_object(), s.key_path("params"), s.issues());
    read_scheduler_params(p, out);
  }
  s.finish();
}

// --- checkpoint, monitors, data_parallel, zero ---------------------------------------------------
void read_checkpoint(Section& s, CheckpointConfig& out) {
  // DeepSpeed upper-cases the value before comparing, so "warn" and "Warn" are fine.
  if (auto v = s.choice("tag_validation", {"WARN", "IGNORE", "FAIL"}, true)) {
    out.tag_validation = *v == "WARN" ? TagValidation::Warn : *v == "IGNORE" ? TagValidation::Ignore : TagValidation::Fail;
  }
  if (auto v = s.boolean("load_universal")) out.load_universal = *v;
  if (auto v = s.boolean("use_node_local_storage")) out.use_node_local_storage = *v;
  if (s.has("parallel_write")) {
    s.consume("parallel_write");
    s.issues().warn(s.key_path("parallel_write"),
                    "DeepSpeed's pipeline-stage parallel checkpoint writing is not implemented; ignored");
  }
  s.finish();
}

void read_monitor(Section& s, MonitorConfig& out) {
  if (auto v = s.boolean("enabled")) out.enabled = *v;
  if (auto v = s.string("output_path", "a directory path (a string)")) out.output_path = *v;
  if (auto v = s.string("job_name", "a job name (a string)")) out.job_name = *v;
  s.finish();
}

void read_data_parallel(Section& s, DataParallelConfig& out) {
  if (auto v = s.number("bucket_cap_mb", gt0, "a size in MB > 0")) out.bucket_cap_mb = *v;
  if (auto v = s.number("first_bucket_cap_mb", gt0, "a size in MB > 0")) out.first_bucket_cap_mb = *v;
  if (auto v = s.boolean("overlap_comm")) out.overlap_comm = *v;
  s.finish();
}

void read_zero(const Json& v, const std::string& path, Issues& issues, int& stage) {
  stage = 0;
  if (v.is_boolean()) {
    if (v.get<bool>()) {
      issues.error(path, "the legacy form true means ZeRO stage 1, which is not supported yet; "
                         "this engine does plain data parallelism (stage 0): remove the key or write {\"stage\": 0}");
    }
    return;
  }
  if (!v.is_object()) {
    issues.error(path, "got " + preview(v) + ", expected an object such as {\"stage\": 0}");
    return;
  }
  Section s(v, path, issues);
  if (auto st = s.integer("stage", [](int64_t x) { return x >= 0 && x <= 3; }, "0, 1, 2 or 3")) {
    if (*st != 0) {
      issues.error(s.key_path("stage"), "ZeRO stage " + std::to_string(*st) +
                                            " is not supported yet; this engine does plain data parallelism "
                                            "(all-reduce of gradients, stage 0): set \"stage\": 0 or remove zero_optimization");
    }
  }
  // DeepSpeed's ZeRO keys (deepspeed/runtime/zero/config.py): accepted, but none has an effect at
  // stage 0, so each one present gets a warning rather than passing silently.
  static const std::vector<std::string> zero_keys = {
      "contiguous_gradients", "reduce_scatter", "reduce_bucket_size", "use_multi_rank_bucket_allreduce",
      "allgather_partitions", "allgather_bucket_size", "overlap_comm", "load_from_fp32_weights",
      "elastic_checkpoint", "offload_param", "offload_optimizer", "sub_group_size", "cpu_offload_param",
      "cpu_offload_use_pin_memory", "cpu_offload", "prefetch_bucket_size", "stage3_prefetch_bucket_size",
      "param_persistence_threshold", "stage3_param_persistence_threshold", "model_persistence_threshold",
      "stage3_model_persistence_threshold", "max_live_parameters", "stage3_max_live_parameters",
      "max_reuse_distance", "stage3_max_reuse_distance", "gather_16bit_weights_on_model_save",
      "stage3_gather_16bit_weights_on_model_save", "module_granularity_threshold",
      "stage3_module_granularity_threshold", "use_all_reduce_for_fetch_params",
      "stage3_use_all_reduce_for_fetch_params", "stage3_gather_fp16_weights_on_model_save",
      "ignore_unused_parameters", "legacy_stage1", "round_robin_gradients", "zero_hpz_partition_size",
      "zero_quantized_weights", "zero_quantized_nontrainable_weights", "zero_quantized_gradients",
      "zeropp_loco_param", "mics_shard_size", "mics_hierarchical_params_gather", "memory_efficient_linear",
      "pipeline_loading_checkpoint", "override_module_apply"};
  for (const std::string& k : s.unread_keys()) {
    if (contains(zero_keys, k)) {
      s.consume(k);
      issues.warn(s.key_path(k), "has no effect: only ZeRO stage 0 is supported");
    }
  }
  s.also_suggest(zero_keys);
  s.finish();
}

}  // namespace ds::config_detail
