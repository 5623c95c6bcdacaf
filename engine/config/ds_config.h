// DeepSpeed JSON config, parsed into typed structs and validated.
//
// Contract:
//  - parse_config_text / parse_config_file never throw on bad input: they return every problem found
//    (errors and warnings), each with its JSON path ("optimizer.params.lr"), the offending value and
//    what was expected. load_config() throws ConfigError carrying all errors.
//  - Defaults and resolution rules are DeepSpeed's (shared/reference/deepspeed-behaviour.md §3);
//    where we differ on purpose the field's comment says so.
//  - Unknown keys are errors (with the nearest known key suggested); known DeepSpeed keys that this
//    engine does not implement give one warning each.
//  - This header depends on the standard library only, so Torch-free tools (ds_config, the fuzzer)
//    and Torch code both include it cheaply.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ds {

enum class DType { FP32, FP16, BF16 };
const char* dtype_name(DType t);  // "fp32", "fp16", "bf16"

struct FP16Config {
  bool enabled = false;
  double loss_scale = 0.0;          // 0 -> dynamic; > 0 -> static scale
  int initial_scale_power = 16;     // DeepSpeed >= 0.8 default (32 before)
  int loss_scale_window = 1000;
  int hysteresis = 2;
  bool consecutive_hysteresis = false;
  double min_loss_scale = 1.0;
  bool auto_cast = false;
  // True when any of initial_scale_power / loss_scale_window / min_loss_scale / hysteresis /
  // consecutive_hysteresis appeared in the file (DeepSpeed's dynamic_loss_scale_args != None).
  bool dynamic_args_given = false;
  bool dynamic() const { return enabled && loss_scale == 0.0; }
};

struct BF16Config {
  bool enabled = false;
  bool immediate_grad_update = false;
};

enum class OptimizerType { Adam, AdamW, Lamb };

struct OptimizerConfig {
  bool present = false;
  OptimizerType type = OptimizerType::Adam;
  std::string type_name;            // as written in the file
  // Shared
  double lr = 1e-3;
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool bias_correction = true;
  // Adam / AdamW
  bool adam_w_mode = true;          // effective decoupled decay = type == AdamW || adam_w_mode
  bool torch_adam = false;
  bool amsgrad = false;             // true is an error (FusedAdam does not support it)
  // Lamb
  bool eps_inside_sqrt = false;
  double max_coeff = 10.0;
  double min_coeff = 0.01;
  bool legacy_fusion = false;
  bool decoupled_weight_decay() const {
    return type == OptimizerType::AdamW || (type == OptimizerType::Adam && adam_w_mode);
  }
};

enum class SchedulerType { WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest };

struct SchedulerConfig {
  bool present = false;
  SchedulerType type = SchedulerType::WarmupLR;
  std::string type_name;
  int64_t last_batch_iteration = -1;
  // WarmupLR / WarmupDecayLR (min/max may be given per parameter group as lists)
  std::vector<double> warmup_min_lr{0.0};
  std::vector<double> warmup_max_lr{0.001};
  int64_t warmup_num_steps = 1000;
  std::string warmup_type = "log";  // "log" | "linear"
  int64_t total_num_steps = 0;      // required by WarmupDecayLR and WarmupCosineLR
  // WarmupCosineLR
  double warmup_min_ratio = 0.0;
  double cos_min_ratio = 0.0001;
  // OneCycle
  double cycle_min_lr = 0.0;        // required
  double cycle_max_lr = 0.0;        // required
  double decay_lr_rate = 0.0;
  int64_t cycle_first_step_size = 2000;
  std::optional<int64_t> cycle_second_step_size;  // default: cycle_first_step_size
  int64_t cycle_first_stair_count = 0;
  std::optional<int64_t> cycle_second_stair_count;
  int64_t decay_step_size = 0;
  bool cycle_momentum = true;
  double cycle_min_mom = 0.8;
  double cycle_max_mom = 0.9;
  double decay_mom_rate = 0.0;
  // LRRangeTest
  double lr_range_test_min_lr = 1e-3;
  int64_t lr_range_test_step_size = 2000;
  double lr_range_test_step_rate = 1.0;
  bool lr_range_test_staircase = false;
};

enum class TagValidation { Warn, Ignore, Fail };

struct CheckpointConfig {
  TagValidation tag_validation = TagValidation::Warn;
  bool load_universal = false;
  bool use_node_local_storage = false;
};

struct MonitorConfig {              // tensorboard / csv_monitor sections
  bool enabled = false;
  std::string output_path;          // "" -> "./runs" style default chosen by the engine
  std::string job_name = "DeepSpeedJobName";
};

// Data-parallel gradient reduction (our extension section "data_parallel"; DeepSpeed has no
// equivalent because it reduces once per step in 500M-element buckets).
struct DataParallelConfig {
  double bucket_cap_mb = 25.0;      // DDP-style bucket cap
  double first_bucket_cap_mb = 1.0; // small first bucket so communication starts early
  bool overlap_comm = true;         // all-reduce buckets during backward
};

enum class SparseMode { Dense, Fixed, Variable, BigBird, BSLongformer, LocalSlidingWindow, DynamicNM };
const char* sparse_mode_name(SparseMode m);  // "dense", "fixed", ... "local_sliding_window", "dynamic_nm"

struct SparseAttentionConfig {
  SparseMode mode = SparseMode::Fixed;
  int block = 16;
  bool different_layout_per_head = false;
  // fixed
  int num_local_blocks = 4;
  int num_global_blocks = 1;
  std::string attention = "bidirectional";   // "bidirectional" | "unidirectional"
                                             // (local_sliding_window defaults to "unidirectional")
  bool horizontal_global_attention = false;
  int num_different_global_patterns = 1;
  // variable / bigbird
  int num_random_blocks = 0;
  std::vector<int> local_window_blocks{4};
  std::vector<int> global_block_indices{0};
  std::optional<std::vector<int>> global_block_end_indices;
  // bigbird / bslongformer / local_sliding_window
  int num_sliding_window_blocks = 3;
  // dynamic_nm (1:2 or 2:4)
  int n = 2;
  int m = 4;
  // Our extension: the seed of the random blocks (variable/bigbird), so every rank builds the same
  // layout without communication.
  uint64_t seed = 0;
};

// The "transformer_kernel" section: DeepSpeedTransformerConfig's fields plus `enabled`.
// -1 means "take it from the model" (hidden_size, heads, ... are filled by the model builder).
struct TransformerKernelConfig {
  bool enabled = true;              // a present section is enabled unless it says otherwise
  int64_t batch_size = -1;
  int64_t hidden_size = -1;
  int64_t intermediate_size = -1;   // <= 0 -> 4 * hidden_size
  int64_t heads = -1;
  double attn_dropout_ratio = -1;
  double hidden_dropout_ratio = -1;
  int64_t num_hidden_layers = -1;
  double initializer_range = -1;
  double layer_norm_eps = 1e-12;
  int64_t local_rank = -1;
  int64_t seed = -1;
  // In a whole config, fp16 / bf16 not written in the section follow fp16.enabled / bf16.enabled
  // (bing_bert passes the engine's precision); written values must agree with them.
  bool fp16 = false;
  bool bf16 = false;
  bool pre_layer_norm = true;
  bool normalize_invertible = false;
  bool gelu_checkpoint = false;
  bool adjust_init_range = true;
  bool attn_dropout_checkpoint = false;
  bool stochastic_mode = false;
  bool return_tuple = false;
};

struct DeepSpeedConfig {
  int world_size = 1;
  // Resolved batch triple: train_batch_size == micro * gradient_accumulation_steps * world_size.
  int64_t train_batch_size = 0;
  int64_t train_micro_batch_size_per_gpu = 0;
  int64_t gradient_accumulation_steps = 0;

  int64_t steps_per_print = 10;     // DeepSpeed <= 0.15.1 default (HEAD: None = never)
                                    // 0 = never: written as null in the file
  bool wall_clock_breakdown = false;
  bool memory_breakdown = false;
  bool dump_state = false;
  double gradient_clipping = 0.0;
  bool prescale_gradients = false;
  double gradient_predivide_factor = 1.0;
  std::optional<DType> communication_data_type;  // "fp16" | "bf16" | "fp32"
  bool fp32_allreduce = false;
  bool sparse_gradients = false;

  FP16Config fp16;
  BF16Config bf16;
  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  CheckpointConfig checkpoint;
  int zero_stage = 0;               // only 0 is supported
  MonitorConfig tensorboard;
  MonitorConfig csv_monitor;
  DataParallelConfig data_parallel;
  std::optional<SparseAttentionConfig> sparse_attention;
  std::optional<TransformerKernelConfig> transformer_kernel;

  // The precision the model trains in.
  DType model_dtype() const { return fp16.enabled ? DType::FP16 : bf16.enabled ? DType::BF16 : DType::FP32; }
  bool transformer_kernel_enabled() const { return transformer_kernel && transformer_kernel->enabled; }
};

struct ConfigIssue {
  std::string path;                 // JSON path, e.g. "sparse_attention.num_local_blocks"; "" = whole file
  std::string message;
  std::string format() const;       // "<path>: <message>"
};

struct ConfigParseResult {
  DeepSpeedConfig config;           // meaningful only when errors is empty
  std::vector<ConfigIssue> errors;
  std::vector<ConfigIssue> warnings;
  bool ok() const { return errors.empty(); }
};

class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<ConfigIssue> errors);
  const std::vector<ConfigIssue>& issues() const { return issues_; }
 private:
  std::vector<ConfigIssue> issues_;
};

// Parse a DeepSpeed JSON document. world_size is the data-parallel world size used to resolve the
// batch triple.
ConfigParseResult parse_config_text(std::string_view text, int world_size = 1);
// Reads the file; a missing or unreadable file is one error with path "".
ConfigParseResult parse_config_file(const std::string& file, int world_size = 1);
// Throws ConfigError with every error; prints warnings to stderr prefixed "warning: ".
DeepSpeedConfig load_config(const std::string& file, int world_size = 1);
DeepSpeedConfig load_config_text(std::string_view text, int world_size = 1);

// One section alone, as a JSON object's text (the Python ops take these): validated with the same
// rules and JSON paths as in a whole file ("sparse_attention.block"). Throw ConfigError.
SparseAttentionConfig parse_sparse_attention_section(std::string_view json_object_text);
TransformerKernelConfig parse_transformer_kernel_section(std::string_view json_object_text);

// The resolved config as JSON text (every default filled in), the form ds_config prints and the
// engine stores in checkpoints. parse_config_text(to_json_text(c), c.world_size) gives back c.
std::string to_json_text(const DeepSpeedConfig& c, int indent = 2);

}  // namespace ds
