#include "examples/bing_bert/model/bert_config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <set>

#include "engine/config/ds_config.h"
#include "sparse_attention/sparsity_config.h"

namespace ds::bert {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& field, const std::string& msg) {
  throw ModelConfigError(where + "." + field + ": " + msg);
}

int64_t get_int(const nlohmann::json& j, const std::string& key, const std::string& where, int64_t dflt) {
  if (!j.contains(key)) return dflt;
  const auto& v = j.at(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) return static_cast<int64_t>(v.get<double>());
  fail(where, key, "expected an integer, got " + v.dump());
}

double get_double(const nlohmann::json& j, const std::string& key, const std::string& where, double dflt) {
  if (!j.contains(key)) return dflt;
  const auto& v = j.at(key);
  if (!v.is_number()) fail(where, key, "expected a number, got " + v.dump());
  return v.get<double>();
}

}  // namespace

void BertConfig::validate(const std::string& where) const {
  auto positive = [&](const char* field, int64_t v) {
    if (v <= 0) fail(where, field, "must be > 0, got " + std::to_string(v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("intermediate_size", intermediate_size);
  positive("max_position_embeddings", max_position_embeddings);
  positive("type_vocab_size", type_vocab_size);
  if (hidden_size % num_attention_heads != 0) {
    fail(where, "num_attention_heads",
         "the hidden size (" + std::to_string(hidden_size) + ") is not a multiple of the number of attention heads (" +
             std::to_string(num_attention_heads) + ")");
  }
  if (hidden_act != "gelu" && hidden_act != "relu" && hidden_act != "swish") {
    fail(where, "hidden_act", "'" + hidden_act + "' is not supported; use \"gelu\", \"relu\" or \"swish\"");
  }
  auto ratio = [&](const char* field, double v) {
    if (!(v >= 0.0 && v < 1.0)) fail(where, field, "must be in [0, 1), got " + std::to_string(v));
  };
  ratio("hidden_dropout_prob", hidden_dropout_prob);
  ratio("attention_probs_dropout_prob", attention_probs_dropout_prob);
  if (!(initializer_range >= 0.0)) fail(where, "initializer_range", "must be >= 0, got " + std::to_string(initializer_range));
  if (!(layer_norm_eps > 0.0)) fail(where, "layer_norm_eps", "must be > 0, got " + std::to_string(layer_norm_eps));
  if (pad_token_id < 0 || pad_token_id >= vocab_size) {
    fail(where, "pad_token_id", std::to_string(pad_token_id) + " is outside the vocabulary [0, " +
                                    std::to_string(vocab_size) + ")");
  }
}

BertConfig parse_bert_config(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw ModelConfigError(where + ": expected a JSON object, got " + j.dump());
  // Every key bing_bert's model configs carry; HuggingFace-style extras are accepted too so a
  // config.json of a BERT checkpoint can be pasted in.
  static const std::set<std::string> known{
      "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
      "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
      "initializer_range", "layer_norm_eps", "pad_token_id", "model_type", "architectures"};
  for (const auto& item : j.items()) {
    if (!known.count(item.key())) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      fail(where, item.key(), "unknown key (known: " + list + ")");
    }
  }
  BertConfig c;
  c.vocab_size = get_int(j, "vocab_size", where, c.vocab_size);
  c.hidden_size = get_int(j, "hidden_size", where, c.hidden_size);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", where, c.num_hidden_layers);
  c.num_attention_heads = get_int(j, "num_attention_heads", where, c.num_attention_heads);
  c.intermediate_size = get_int(j, "intermediate_size", where, c.intermediate_size);
  if (j.contains("hidden_act")) {
    if (!j.at("hidden_act").is_string()) fail(where, "hidden_act", "expected a string, got " + j.at("hidden_act").dump());
    c.hidden_act = j.at("hidden_act").get<std::string>();
  }
  c.hidden_dropout_prob = get_double(j, "hidden_dropout_prob", where, c.hidden_dropout_prob);
  c.attention_probs_dropout_prob = get_double(j, "attention_probs_dropout_prob", where, c.attention_probs_dropout_prob);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", where, c.max_position_embeddings);
  c.type_vocab_size = get_int(j, "type_vocab_size", where, c.type_vocab_size);
  c.initializer_range = get_double(j, "initializer_range", where, c.initializer_range);
  c.layer_norm_eps = get_double(j, "layer_norm_eps", where, c.layer_norm_eps);
  c.pad_token_id = get_int(j, "pad_token_id", where, c.pad_token_id);
  c.validate(where);
  return c;
}

const char* encoder_kind_name(EncoderKind k) {
  switch (k) {
    case EncoderKind::Plain: return "plain";
    case EncoderKind::TransformerKernel: return "transformer_kernel";
    case EncoderKind::SparseAttention: return "sparse_attention";
  }
  return "?";
}

namespace {

// A section value that is set (not -1) must agree with the model; an unset one takes the model's.
void fill_int(int64_t& field, int64_t model_value, const char* name, const char* model_field) {
  if (field < 0) {
    field = model_value;
  } else if (field != model_value) {
    throw ModelConfigError(std::string("transformer_kernel.") + name + ": " + std::to_string(field) +
                           " contradicts the model's bert_model_config." + model_field + " " +
                           std::to_string(model_value) + "; remove it from the section (it is taken from the model)");
  }
}

void fill_double(double& field, double model_value, const char* name, const char* model_field) {
  if (field < 0) {
    field = model_value;
  } else if (std::abs(field - model_value) > 1e-12 * std::max(1.0, std::abs(model_value))) {
    throw ModelConfigError(std::string("transformer_kernel.") + name + ": " + std::to_string(field) +
                           " contradicts the model's bert_model_config." + model_field + " " +
                           std::to_string(model_value) + "; remove it from the section (it is taken from the model)");
  }
}

}  // namespace

BertModelOptions model_options_from_ds_config(const BertConfig& model, const DeepSpeedConfig& ds, int64_t seed,
                                              int64_t max_seq_length) {
  BertModelOptions o;
  const bool kernel = ds.transformer_kernel_enabled();
  if (kernel && ds.sparse_attention) {
    // bing_bert's BertEncoder raises NotImplementedError for the same combination.
    throw ModelConfigError(
        "sparse_attention and transformer_kernel: DeepSpeed Transformer Kernels do not support Sparse Attention "
        "(the kernel computes dense attention); remove \"sparse_attention\" or set "
        "\"transformer_kernel\": {\"enabled\": false}");
  }
  if (kernel) {
    o.kind = EncoderKind::TransformerKernel;
    DeepSpeedTransformerConfig k = DeepSpeedTransformerConfig::from_kernel_config(*ds.transformer_kernel);
    fill_int(k.batch_size, ds.train_micro_batch_size_per_gpu, "batch_size", "(train_micro_batch_size_per_gpu)");
    fill_int(k.hidden_size, model.hidden_size, "hidden_size", "hidden_size");
    fill_int(k.intermediate_size, model.intermediate_size, "intermediate_size", "intermediate_size");
    fill_int(k.heads, model.num_attention_heads, "heads", "num_attention_heads");
    fill_double(k.attn_dropout_ratio, model.attention_probs_dropout_prob, "attn_dropout_ratio",
                "attention_probs_dropout_prob");
    fill_double(k.hidden_dropout_ratio, model.hidden_dropout_prob, "hidden_dropout_ratio", "hidden_dropout_prob");
    fill_int(k.num_hidden_layers, model.num_hidden_layers, "num_hidden_layers", "num_hidden_layers");
    fill_double(k.initializer_range, model.initializer_range, "initializer_range", "initializer_range");
    if (k.seed < 0) k.seed = seed;
    // The parser already made fp16/bf16 follow (and agree with) the config's precision.
    k.fp16 = ds.fp16.enabled;
    k.bf16 = ds.bf16.enabled;
    if (!k.pre_layer_norm) {
      throw ModelConfigError(
          "transformer_kernel.pre_layer_norm: false, but bing_bert's model is pre-LN (its FinalLayerNorm follows "
          "the last layer); remove the key or set it to true");
    }
    if (model.hidden_act != "gelu") {
      throw ModelConfigError("bert_model_config.hidden_act: '" + model.hidden_act +
                             "', but the transformer kernel has GELU only; use \"gelu\" or disable transformer_kernel");
    }
    k.validate("transformer_kernel");
    k.validate_for_init("transformer_kernel");
    o.kernel = k;
  } else if (ds.sparse_attention) {
    o.kind = EncoderKind::SparseAttention;
    o.sparsity = make_sparsity_config(*ds.sparse_attention, model.num_attention_heads);
    const int64_t block = ds.sparse_attention->block;
    o.sparse_max_seq_length = std::max<int64_t>(2048, (max_seq_length + block - 1) / block * block);
  }
  return o;
}

}  // namespace ds::bert
