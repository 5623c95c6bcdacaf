// DeepSpeedTransformerConfig: DeepSpeed's fields, names and defaults
// (deepspeed/ops/transformer/transformer.py; shared/reference/deepspeed-behaviour.md §2.2), plus bf16.
// Plain C++ (no Torch): built in code, or from the "transformer_kernel" JSON section
// (ds::TransformerKernelConfig, engine/config/ds_config.h).
//
// -1 means "not set" as in DeepSpeed; validate() (called by the layer) turns every unset or
// impossible value into a std::invalid_argument that names the field, the value and the fix.
// Fields DeepSpeed has that change nothing here, and why:
//  - batch_size: DeepSpeed sizes its workspace from it; we size per call (any batch works).
//  - local_rank: DeepSpeed calls set_device(local_rank); place the layer with .to(device) instead.
//    DeepSpeed also adjusts the output-projection init only when local_rank == 0; we do not tie
//    the init to the rank (see output_init_std()).
//  - stochastic_mode: DeepSpeed's faster non-deterministic kernels; the CPU path is deterministic
//    either way (the CUDA path of issue 12 may use it).
//  - return_tuple: a Python calling convention; C++ forward returns a tensor.
//  - training: DeepSpeed overwrites it from module.training every call; we read the module's flag.
#pragma once

#include <cstdint>
#include <string>

namespace ds {

struct TransformerKernelConfig;

struct DeepSpeedTransformerConfig {
  int64_t batch_size = -1;
  int64_t hidden_size = -1;
  int64_t intermediate_size = -1;  // <= 0 -> 4 * hidden_size
  int64_t heads = -1;
  double attn_dropout_ratio = -1;    // dropout on attention probabilities
  double hidden_dropout_ratio = -1;  // dropout on both sublayer outputs, before the residual add
  int64_t num_hidden_layers = -1;    // only for the init std of the output projections
  double initializer_range = -1;     // std of the weight init
  double layer_norm_eps = 1e-12;
  int64_t local_rank = -1;
  int64_t seed = -1;  // dropout seed; < 0: drawn from Torch's default generator
  bool fp16 = false;
  bool bf16 = false;  // ours: DeepSpeed's kernel has fp16 and fp32 only
  bool pre_layer_norm = true;
  bool normalize_invertible = false;
  bool gelu_checkpoint = false;
  bool adjust_init_range = true;
  bool attn_dropout_checkpoint = false;
  bool stochastic_mode = false;
  bool return_tuple = false;

  // Every field copied from the parsed section (its `enabled` flag is the caller's business).
  static DeepSpeedTransformerConfig from_kernel_config(const TransformerKernelConfig& k);

  int64_t resolved_intermediate_size() const { return intermediate_size > 0 ? intermediate_size : 4 * hidden_size; }
  int64_t head_size() const { return hidden_size / heads; }

  // Sizes, heads, ratios, eps, precision flags. `where` prefixes the messages
  // ("transformer_kernel" for a JSON section).
  void validate(const std::string& where = "DeepSpeedTransformerConfig") const;
  // What generating the initial weights needs on top: initializer_range >= 0 and, with
  // adjust_init_range, num_hidden_layers > 0.
  void validate_for_init(const std::string& where = "DeepSpeedTransformerConfig") const;

  // std of attn_ow and output_w: initializer_range / sqrt(2 * num_hidden_layers) when
  // adjust_init_range, else initializer_range. DeepSpeed applies the adjustment only on the process
  // with local_rank == 0 and then broadcasts rank 0's weights, so a distributed DeepSpeed run ends
  // up adjusted everywhere while a single process with local_rank -1 does not; we always adjust when
  // asked, which is the distributed result.
  double output_init_std() const;

  // The resolved config on one line ({"batch_size": -1, ...}), DeepSpeed's startup echo.
  std::string to_string() const;
};

}  // namespace ds
