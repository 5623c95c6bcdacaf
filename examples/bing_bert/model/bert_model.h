// bing_bert's BertForPreTrainingPreLN (training/bing_bert/nvidia/modelingpreln.py; the reference's
// §5.3) in LibTorch:
//
//   bert.embeddings      word [V8, H] + position [P, H] + token type [2, H] -> LayerNorm -> dropout
//   bert.encoder.layer.i pre-LN layers: plain BertLayer, DeepSpeedTransformerLayer, or BertLayer
//                        with BertSparseSelfAttention (BertModelOptions, from the DeepSpeed config)
//   bert.encoder.FinalLayerNorm
//   bert.pooler          LinearActivation(H, H, tanh) on token 0
//   cls.predictions      transform (LinearActivation(H, H, gelu) -> LayerNorm) on the masked
//                        positions only, decoder = word embeddings (tied) + bias [V8]
//   cls.seq_relationship Linear(H, 2) on the pooled output (NSP)
//   loss = CE(MLM, ignore_index -1, mean over masked tokens) + CE(NSP, mean over the batch)
//
// V8 = the vocabulary padded to a multiple of 8. Initialisation is bing_bert's init_bert_weights:
// nn.Linear / nn.Embedding weights N(0, initializer_range), the two "bert_output_layer" Linears of
// every layer N(0, initializer_range / sqrt(2 L)), Linear biases 0, LayerNorms 1 / 0, the MLM bias 0;
// LinearActivation keeps kaiming-uniform (bert_layers.h); DeepSpeedTransformerLayer keeps its own.
//
// Differences from bing_bert, on purpose:
//  - Sparse attention pads the sequence to whole blocks as bing_bert does, but pads the 0/1 input
//    mask before making the additive mask, so padded keys get -10000. bing_bert pads the additive
//    mask with 0 (= attend) and then hands the encoder the unpadded mask anyway (§5.10).
//    Dynamic N:M sparse attention ("mode": "dynamic_nm", no blocks; our addition) pads nothing.
//  - The MLM transform runs on the gathered masked rows only (bing_bert transforms every token
//    and gathers afterwards; the transform is per token, so the result is the same).
//  - The MLM and NSP cross entropies are computed from float32 logits in fp16/bf16 training.
//  - The tied decoder weight is not a second registered parameter (LibTorch would list it twice);
//    state dicts hold it once, as bert.embeddings.word_embeddings.weight.
//  - An MLM batch without any masked token contributes 0 (bing_bert's mean over nothing is NaN).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "examples/bing_bert/model/bert_config.h"
#include "examples/bing_bert/model/bert_layers.h"
#include "transformer/transformer_layer.h"

namespace ds::bert {

// One micro-batch, every tensor int64 on the model's device.
struct PretrainingBatch {
  at::Tensor input_ids;             // [B, S]
  at::Tensor input_mask;            // [B, S] 1 = token, 0 = padding
  at::Tensor segment_ids;           // [B, S] 0 / 1
  at::Tensor masked_lm_labels;      // [B, S] original token id at masked positions, -1 elsewhere
  at::Tensor next_sentence_labels;  // [B] 1 = random next (NVIDIA convention)
  PretrainingBatch to(const at::Device& device, bool non_blocking = false) const;
};

struct PretrainingOutput {
  at::Tensor loss, mlm_loss, nsp_loss;  // scalars (float32; float64 for a float64 model)
  // Filled when asked for (evaluation): correct predictions and counts, int64 scalars.
  at::Tensor mlm_correct, mlm_count, nsp_correct, nsp_count;
};

class BertEncoderImpl : public torch::nn::Module {
 public:
  BertEncoderImpl(const BertConfig& config, const BertModelOptions& options);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask);  // with FinalLayerNorm
  EncoderKind kind() const { return kind_; }
  size_t num_layers() const { return plain_.size() + kernel_.size(); }
  BertLayer plain_layer(size_t i) const { return plain_.at(i); }
  DeepSpeedTransformerLayer kernel_layer(size_t i) const { return kernel_.at(i); }
  void set_kind(EncoderKind k) { kind_ = k; }

  BertLayerNorm FinalLayerNorm{nullptr};
  torch::nn::ModuleList layer{nullptr};

 private:
  EncoderKind kind_;
  std::vector<BertLayer> plain_;
  std::vector<DeepSpeedTransformerLayer> kernel_;
};
TORCH_MODULE(BertEncoder);

class BertPoolerImpl : public torch::nn::Module {
 public:
  explicit BertPoolerImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& sequence_output) { return dense_act->forward(sequence_output.select(1, 0)); }
  LinearActivation dense_act{nullptr};
};
TORCH_MODULE(BertPooler);

class BertModelImpl : public torch::nn::Module {
 public:
  BertModelImpl(const BertConfig& config, const BertModelOptions& options);
  // Returns (sequence_output [B, S, H] after FinalLayerNorm, pooled_output [B, H]).
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids,
                                            const at::Tensor& attention_mask);
  BertEmbeddings embeddings{nullptr};
  BertEncoder encoder{nullptr};
  BertPooler pooler{nullptr};
  int64_t pad_token_id;
  int64_t sparse_block = 0;  // > 0: pad to whole blocks of this size (sparse attention)
};
TORCH_MODULE(BertModel);

class BertPredictionHeadTransformImpl : public torch::nn::Module {
 public:
  explicit BertPredictionHeadTransformImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& x) { return LayerNorm->forward(dense_act->forward(x)); }
  LinearActivation dense_act{nullptr};
  BertLayerNorm LayerNorm{nullptr};
};
TORCH_MODULE(BertPredictionHeadTransform);

class BertLMPredictionHeadImpl : public torch::nn::Module {
 public:
  BertLMPredictionHeadImpl(const BertConfig& config, at::Tensor embedding_weight);
  // hidden: [M, H] (the masked rows). Returns logits [M, V8].
  at::Tensor forward(const at::Tensor& hidden);
  at::Tensor bias;  // [V8]
  BertPredictionHeadTransform transform{nullptr};
  at::Tensor decoder_weight;  // the word embedding table, not registered here
};
TORCH_MODULE(BertLMPredictionHead);

class BertPreTrainingHeadsImpl : public torch::nn::Module {
 public:
  BertPreTrainingHeadsImpl(const BertConfig& config, at::Tensor embedding_weight);
  BertLMPredictionHead predictions{nullptr};
  torch::nn::Linear seq_relationship{nullptr};
};
TORCH_MODULE(BertPreTrainingHeads);

class BertForPreTrainingPreLNImpl : public torch::nn::Module {
 public:
  // The config is validated; options come from model_options_from_ds_config (default: plain).
  explicit BertForPreTrainingPreLNImpl(const BertConfig& config, const BertModelOptions& options = {});

  // The training loss (MLM + NSP), a float32 scalar.
  at::Tensor forward(const PretrainingBatch& batch) { return forward_outputs(batch, false).loss; }
  // Loss parts and, with stats, MLM / NSP accuracy counts (argmax == label).
  PretrainingOutput forward_outputs(const PretrainingBatch& batch, bool stats);

  const BertConfig& config() const { return config_; }
  BertConfig& mutable_config() { return config_; }  // for the SparseAttentionUtils functions below
  int64_t vocab_size() const { return config_.padded_vocab_size(); }
  EncoderKind encoder_kind() const { return bert->encoder->kind(); }
  // Re-runs init_bert_weights over the model (construction does it once).
  void init_weights();

  BertModel bert{nullptr};
  BertPreTrainingHeads cls{nullptr};

 private:
  BertConfig config_;
};
TORCH_MODULE(BertForPreTrainingPreLN);

// SparseAttentionUtils.replace_model_self_attention_with_sparse_self_attention for this model:
// sets config.max_position_embeddings = max_position and replaces every layer's attention.self by a
// BertSparseSelfAttention that reuses the layer's query/key/value Linears (weights kept; DeepSpeed's
// replace_self_attention_layer_with_sparse_self_attention_layer). The model then pads its input to
// whole blocks. Only for plain-layer models (the transformer kernel has no separate self-attention:
// std::invalid_argument). The position table is left alone: extend_position_embedding does that.
void replace_model_self_attention_with_sparse_self_attention(BertForPreTrainingPreLNImpl& model,
                                                             int64_t max_position,
                                                             std::shared_ptr<const SparsityConfig> sparsity);

// SparseAttentionUtils.extend_position_embedding: tiles the learned position table to max_position
// rows (sparse_attention/sparse_attention_utils.h; more than the current rows) and updates the
// config. Returns the new number of positions.
int64_t extend_position_embedding(BertForPreTrainingPreLNImpl& model, int64_t max_position);

// Forward FLOPs of one sequence of seq_len tokens with num_masked masked tokens (a multiply-add is
// 2 FLOPs; dense attention, whatever the layer; embeddings, LayerNorms, softmax and the losses are
// left out as they are O(S H)):
//   L [2 S (4 H^2 + 2 H I) + 4 S^2 H]          projections, FFN, q k^T and probs v
//   + 2 M (H^2 + H V8)                         MLM transform and decoder on the masked rows
//   + 2 (H^2 + 2 H)                            pooler and NSP
// A training step does 3x the forward (backward = 2x forward).
double forward_flops_per_sequence(const BertConfig& config, int64_t seq_len, double num_masked);

}  // namespace ds::bert
