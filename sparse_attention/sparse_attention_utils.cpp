#include "sparse_attention/sparse_attention_utils.h"

#include <torch/torch.h>

namespace ds {
namespace {

// rows [0, n) of the table repeated: row i = table[i % table.size(0)].
at::Tensor tile_rows(const at::Tensor& table, int64_t n) {
  const int64_t orig = table.size(0);
  const int64_t reps = (n + orig - 1) / orig;
  return table.repeat({reps, 1}).narrow(0, 0, n);
}

}  // namespace

at::Tensor SparseAttentionUtils::extend_position_embedding(const at::Tensor& weight, int64_t max_position,
                                                           ModelType type) {
  TORCH_CHECK_VALUE(weight.defined() && weight.dim() == 2,
                    "extend_position_embedding: expected a [positions, hidden] table, got ",
                    weight.defined() ? weight.sizes() : at::IntArrayRef{});
  if (type == ModelType::Bert) {
    const int64_t orig = weight.size(0);
    TORCH_CHECK_VALUE(max_position > orig, "extend_position_embedding: max_position ", max_position,
                      " must be larger than the current number of positions ", orig);
    return tile_rows(weight, max_position);
  }
  // RoBERTa: positions start after the padding index, so rows 0 and 1 are not part of the table.
  TORCH_CHECK_VALUE(weight.size(0) > 2, "extend_position_embedding: a RoBERTa table needs more than 2 rows, got ",
                    weight.size(0));
  const int64_t orig = weight.size(0) - 2;
  TORCH_CHECK_VALUE(max_position > orig, "extend_position_embedding: max_position ", max_position,
                    " must be larger than the current number of positions ", orig);
  return at::cat({weight.narrow(0, 0, 2), tile_rows(weight.narrow(0, 2, orig), max_position)}, 0);
}

int64_t SparseAttentionUtils::extend_position_embedding(torch::nn::Embedding& embedding, int64_t max_position,
                                                        ModelType type) {
  torch::NoGradGuard no_grad;
  at::Tensor extended = extend_position_embedding(embedding->weight.detach(), max_position, type);
  embedding->weight.set_data(extended);
  embedding->options.num_embeddings(extended.size(0));
  return type == ModelType::Roberta ? max_position + 2 : max_position;
}

SparseAttentionUtils::Padded SparseAttentionUtils::pad_to_block_size(
    int64_t block_size, const at::Tensor& input_ids, const at::Tensor& attention_mask,
    const at::Tensor& token_type_ids, const at::Tensor& position_ids, const at::Tensor& inputs_embeds,
    int64_t pad_token_id, const std::function<at::Tensor(const at::Tensor&)>& model_embeddings) {
  TORCH_CHECK_VALUE(block_size > 0, "pad_to_block_size: block_size must be positive, got ", block_size);
  TORCH_CHECK_VALUE(input_ids.defined() || inputs_embeds.defined(),
                    "pad_to_block_size: give input_ids [batch, seq] or inputs_embeds [batch, seq, hidden]");
  const at::Tensor& shape_src = input_ids.defined() ? input_ids : inputs_embeds;
  TORCH_CHECK_VALUE(shape_src.dim() >= 2, "pad_to_block_size: expected [batch, seq, ...], got ", shape_src.sizes());
  const int64_t batch = shape_src.size(0), seq_len = shape_src.size(1);

  Padded p;
  p.pad_len = (block_size - seq_len % block_size) % block_size;
  p.input_ids = input_ids;
  p.attention_mask = attention_mask;
  p.token_type_ids = token_type_ids;
  p.position_ids = position_ids;
  p.inputs_embeds = inputs_embeds;
  if (p.pad_len == 0) return p;

  auto pad_right = [&](const at::Tensor& x, double value) {
    return x.defined() ? at::constant_pad_nd(x, {0, p.pad_len}, value) : x;
  };
  if (inputs_embeds.defined()) {
    TORCH_CHECK_VALUE(static_cast<bool>(model_embeddings),
                      "pad_to_block_size: inputs_embeds need padding, so model_embeddings must be given");
    at::Tensor pad_ids = at::full({batch, p.pad_len}, pad_token_id, inputs_embeds.options().dtype(at::kLong));
    p.inputs_embeds = at::cat({inputs_embeds, model_embeddings(pad_ids)}, -2);
  }
  p.input_ids = pad_right(input_ids, static_cast<double>(pad_token_id));
  p.position_ids = pad_right(position_ids, static_cast<double>(pad_token_id));
  p.attention_mask = pad_right(attention_mask, 0.0);
  p.token_type_ids = pad_right(token_type_ids, 0.0);
  return p;
}

at::Tensor SparseAttentionUtils::unpad_sequence_output(int64_t pad_len, const at::Tensor& sequence_output) {
  if (pad_len <= 0) return sequence_output;
  return sequence_output.narrow(1, 0, sequence_output.size(1) - pad_len);
}

}  // namespace ds
