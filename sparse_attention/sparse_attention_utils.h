// DeepSpeed's SparseAttentionUtils (sparse_attention_utils.py): padding inputs to whole blocks and
// back, and longer position-embedding tables for models trained on shorter sequences.
//
// Differences on purpose: position tables are tiled up to exactly max_position rows (DeepSpeed
// stops at a multiple of the original size, leaving positions past it out of range, and leaves
// RoBERTa's first two rows uninitialised; we keep the originals); pad_to_block_size leaves an
// undefined attention_mask / token_type_ids undefined (DeepSpeed crashes on None). The function that
// swaps a BERT model's self-attention for BertSparseSelfAttention lives with the recipe's BERT model.
#pragma once

#include <torch/nn/modules/embedding.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>

namespace ds {

struct SparseAttentionUtils {
  enum class ModelType { Bert, Roberta };

  // Tiles a learned position table to max_position rows (RoBERTa: keeps the 2 offset rows and tiles
  // the rest to max_position + 2 rows). max_position must exceed the current number of positions
  // (DeepSpeed's assert). Returns the new table.
  static at::Tensor extend_position_embedding(const at::Tensor& weight, int64_t max_position,
                                              ModelType type = ModelType::Bert);
  // The same on an Embedding module, in place (the parameter object is kept, its data replaced, as
  // `weight.data = ...` does). Returns the value for config.max_position_embeddings (max_position,
  // or max_position + 2 for RoBERTa).
  static int64_t extend_position_embedding(torch::nn::Embedding& embedding, int64_t max_position,
                                           ModelType type = ModelType::Bert);

  // Sets a model config's max_position_embeddings (anything with that field) the way
  // replace_model_self_attention_with_sparse_self_attention does: max_position (+2 for RoBERTa).
  template <class ModelConfig>
  static void update_max_position(ModelConfig& config, int64_t max_position, ModelType type = ModelType::Bert) {
    config.max_position_embeddings = max_position + (type == ModelType::Roberta ? 2 : 0);
  }
  // DeepSpeed's update_tokenizer_model_max_length, for anything with a model_max_length field.
  template <class Tokenizer>
  static void update_tokenizer_model_max_length(Tokenizer& tokenizer, int64_t max_position) {
    tokenizer.model_max_length = max_position;
  }

  struct Padded {
    int64_t pad_len = 0;
    at::Tensor input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds;
  };
  // Right-pads the sequence dim (1) to a multiple of block_size: input_ids and position_ids with
  // pad_token_id, attention_mask with 0, token_type_ids with 0, inputs_embeds with
  // model_embeddings(pad ids). Undefined tensors stay undefined; model_embeddings is needed only
  // when inputs_embeds is given and padding happens.
  static Padded pad_to_block_size(int64_t block_size, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                  const at::Tensor& token_type_ids, const at::Tensor& position_ids,
                                  const at::Tensor& inputs_embeds, int64_t pad_token_id,
                                  const std::function<at::Tensor(const at::Tensor&)>& model_embeddings = {});
  // sequence_output[:, :-pad_len] when pad_len > 0.
  static at::Tensor unpad_sequence_output(int64_t pad_len, const at::Tensor& sequence_output);
};

}  // namespace ds
