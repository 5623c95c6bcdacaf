// BertConfig: the "bert_model_config" section of a bing_bert model config (nvidia/modelingpreln.py's
// BertConfig fields and defaults), and the choice of encoder layer that the DeepSpeed config makes.
// Plain C++ (no Torch); nlohmann::json only in the parser's signature.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "transformer/transformer_config.h"

namespace ds {
struct DeepSpeedConfig;
class SparsityConfig;
}  // namespace ds

namespace ds::bert {

// Thrown for bad model configs and impossible layer choices; the message names the file (when
// known) and the field, e.g. "configs/bert_tiny.json: bert_model_config.num_attention_heads: ...".
class ModelConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct BertConfig {
  int64_t vocab_size = 30522;             // as written; the model pads it (padded_vocab_size)
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";        // "gelu" (erf), "relu", "swish"
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;          // bing_bert hard-codes 1e-12 in every BertLayerNorm
  int64_t pad_token_id = 0;               // sparse attention pads input_ids with it

  // bing_bert (turing/models.py) pads the vocabulary to a multiple of 8 for tensor-core shapes:
  // 30522 -> 30528. The extra rows are never a target; they are trained only as negatives.
  int64_t padded_vocab_size() const { return (vocab_size + 7) / 8 * 8; }
  int64_t head_size() const { return hidden_size / num_attention_heads; }

  // Throws ModelConfigError naming `where` + ".field" (e.g. "bert_tiny.json: bert_model_config").
  void validate(const std::string& where = "bert_model_config") const;
};

// Reads the "bert_model_config" object; unknown keys are errors with the path, known keys of
// bing_bert's files are all accepted. `where` prefixes messages ("file.json: bert_model_config").
BertConfig parse_bert_config(const nlohmann::json& section, const std::string& where);

// Which encoder layer the model is built with.
enum class EncoderKind { Plain, TransformerKernel, SparseAttention };
const char* encoder_kind_name(EncoderKind k);  // "plain", "transformer_kernel", "sparse_attention"

struct BertModelOptions {
  EncoderKind kind = EncoderKind::Plain;
  DeepSpeedTransformerConfig kernel;                 // EncoderKind::TransformerKernel
  std::shared_ptr<const SparsityConfig> sparsity;    // EncoderKind::SparseAttention
  // SparseSelfAttention's master layout covers this many tokens (DeepSpeed: 2048).
  int64_t sparse_max_seq_length = 2048;
};

// bing_bert's switches, read from the DeepSpeed config instead of --deepspeed_transformer_kernel /
// --deepspeed_sparse_attention:
//  - an enabled "transformer_kernel" section: DeepSpeedTransformerLayer, its config filled from the
//    model (hidden, heads, intermediate, dropouts, layers, init range: every field the section
//    leaves at -1; a value that contradicts the model is an error), batch_size = micro batch,
//    seed = `seed` unless the section sets one, fp16/bf16 from the config, pre_layer_norm true
//    (the recipe is pre-LN: false is an error);
//  - a "sparse_attention" section: BertSparseSelfAttention in every layer, structure from
//    make_sparsity_config(section, num_attention_heads) (dynamic_nm: an NMSparsityConfig, no layout);
//  - both: ModelConfigError before anything is built (the parser also refuses it);
//  - neither: the plain layer.
// max_seq_length sizes the sparse master layout (at least DeepSpeed's 2048).
BertModelOptions model_options_from_ds_config(const BertConfig& model, const DeepSpeedConfig& ds, int64_t seed,
                                              int64_t max_seq_length);

}  // namespace ds::bert
