#include "transformer/transformer_config.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "engine/config/ds_config.h"

namespace ds {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& field, const std::string& message) {
  throw std::invalid_argument(where + "." + field + ": " + message);
}

void check_ratio(const std::string& where, const char* field, double v) {
  if (!(v >= 0.0 && v < 1.0)) {
    std::ostringstream m;
    m << "must be in [0, 1), got " << v;
    if (v == -1) m << " (DeepSpeed's 'unset' default)";
    m << "; set it, e.g. 0.1 as BERT does, or 0 for no dropout";
    fail(where, field, m.str());
  }
}

}  // namespace

DeepSpeedTransformerConfig DeepSpeedTransformerConfig::from_kernel_config(const TransformerKernelConfig& k) {
  DeepSpeedTransformerConfig c;
  c.batch_size = k.batch_size;
  c.hidden_size = k.hidden_size;
  c.intermediate_size = k.intermediate_size;
  c.heads = k.heads;
  c.attn_dropout_ratio = k.attn_dropout_ratio;
  c.hidden_dropout_ratio = k.hidden_dropout_ratio;
  c.num_hidden_layers = k.num_hidden_layers;
  c.initializer_range = k.initializer_range;
  c.layer_norm_eps = k.layer_norm_eps;
  c.local_rank = k.local_rank;
  c.seed = k.seed;
  c.fp16 = k.fp16;
  c.bf16 = k.bf16;
  c.pre_layer_norm = k.pre_layer_norm;
  c.normalize_invertible = k.normalize_invertible;
  c.gelu_checkpoint = k.gelu_checkpoint;
  c.adjust_init_range = k.adjust_init_range;
  c.attn_dropout_checkpoint = k.attn_dropout_checkpoint;
  c.stochastic_mode = k.stochastic_mode;
  c.return_tuple = k.return_tuple;
  return c;
}

void DeepSpeedTransformerConfig::validate(const std::string& where) const {
  if (hidden_size <= 0)
    fail(where, "hidden_size",
         "must be > 0, got " + std::to_string(hidden_size) + "; set it to the model's hidden size");
  if (heads <= 0)
    fail(where, "heads", "must be > 0, got " + std::to_string(heads) + "; set it to the number of attention heads");
  if (hidden_size % heads != 0)
    fail(where, "hidden_size",
         std::to_string(hidden_size) + " is not divisible by heads (" + std::to_string(heads) +
             "); the head size hidden_size / heads must be a whole number");
  check_ratio(where, "attn_dropout_ratio", attn_dropout_ratio);
  check_ratio(where, "hidden_dropout_ratio", hidden_dropout_ratio);
  if (!(layer_norm_eps >= 0.0) || !std::isfinite(layer_norm_eps)) {
    std::ostringstream m;
    m << "must be a finite value >= 0, got " << layer_norm_eps;
    fail(where, "layer_norm_eps", m.str());
  }
  if (fp16 && bf16) fail(where, "fp16", "fp16 and bf16 are both true; choose one precision (or neither for fp32)");
}

void DeepSpeedTransformerConfig::validate_for_init(const std::string& where) const {
  if (!(initializer_range >= 0.0) || !std::isfinite(initializer_range)) {
    std::ostringstream m;
    m << "must be >= 0 to initialise the weights, got " << initializer_range
      << "; set it (BERT uses 0.02) or pass initial weights and biases";
    fail(where, "initializer_range", m.str());
  }
  if (adjust_init_range && num_hidden_layers <= 0)
    fail(where, "num_hidden_layers",
         "must be > 0 when adjust_init_range is true (the output-projection init std is divided by "
         "sqrt(2 * num_hidden_layers)), got " +
             std::to_string(num_hidden_layers) + "; set it or turn adjust_init_range off");
}

double DeepSpeedTransformerConfig::output_init_std() const {
  if (!adjust_init_range) return initializer_range;
  return initializer_range / std::sqrt(2.0 * static_cast<double>(num_hidden_layers));
}

std::string DeepSpeedTransformerConfig::to_string() const {
  std::ostringstream s;
  auto b = [](bool v) { return v ? "true" : "false"; };
  s << "{\"batch_size\": " << batch_size << ", \"hidden_size\": " << hidden_size
    << ", \"intermediate_size\": " << intermediate_size << ", \"heads\": " << heads
    << ", \"attn_dropout_ratio\": " << attn_dropout_ratio << ", \"hidden_dropout_ratio\": " << hidden_dropout_ratio
    << ", \"num_hidden_layers\": " << num_hidden_layers << ", \"initializer_range\": " << initializer_range
    << ", \"layer_norm_eps\": " << layer_norm_eps << ", \"local_rank\": " << local_rank << ", \"seed\": " << seed
    << ", \"fp16\": " << b(fp16) << ", \"bf16\": " << b(bf16) << ", \"pre_layer_norm\": " << b(pre_layer_norm)
    << ", \"normalize_invertible\": " << b(normalize_invertible) << ", \"gelu_checkpoint\": " << b(gelu_checkpoint)
    << ", \"adjust_init_range\": " << b(adjust_init_range)
    << ", \"attn_dropout_checkpoint\": " << b(attn_dropout_checkpoint)
    << ", \"stochastic_mode\": " << b(stochastic_mode) << ", \"return_tuple\": " << b(return_tuple) << "}";
  return s.str();
}

}  // namespace ds
