// The building blocks of bing_bert's pre-LN BERT (DeepSpeedExamples training/bing_bert/nvidia/
// modelingpreln.py), with its module and parameter names so state-dict keys read the same
// ("bert.encoder.layer.0.attention.self.query.weight", "...PreAttentionLayerNorm.weight").
//
// Shapes: hidden states [B, S, H]; the attention mask is BERT's additive mask [B, 1, 1, S]
// (0 = attend, -10000 = padding) in the hidden states' dtype.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <string>

#include "examples/bing_bert/model/bert_config.h"

namespace ds::bert {

// Activation by name: "gelu" is the erf form x/2 (1 + erf(x / sqrt 2)) (bing_bert's bias_gelu
// divides by 1.41421, 2.5e-6 relative below sqrt 2; we use the exact constant), "relu", "swish",
// "tanh".
at::Tensor activation(const at::Tensor& x, const std::string& name);

// BertLayerNorm: weight * (x - mean) / sqrt(var + eps) + bias over the last dim. Half inputs on the
// CPU are normalised in float32 (bing_bert's fallback BertLayerNorm computes in float32; on CUDA
// ATen's kernel accumulates in float32 like apex's FusedLayerNorm).
class BertLayerNormImpl : public torch::nn::Module {
 public:
  BertLayerNormImpl(int64_t hidden_size, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight, bias;  // [H]: 1, 0
  double eps;
};
TORCH_MODULE(BertLayerNorm);

// LinearActivation(in, out, act): act(x W^T + b). bing_bert's init_bert_weights matches only
// nn.Linear and nn.Embedding, so these layers (intermediate FFN, pooler, MLM transform) keep
// nn.Linear's own init: weight kaiming_uniform(a = sqrt 5), bias U(+-1/sqrt(in)). We keep that quirk
// so a model trains as the recipe's does.
class LinearActivationImpl : public torch::nn::Module {
 public:
  LinearActivationImpl(int64_t in_features, int64_t out_features, std::string act);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight, bias;  // [out, in], [out]
  std::string act;
};
TORCH_MODULE(LinearActivation);

// word + position (arange(S)) + token type embeddings -> LayerNorm -> dropout.
class BertEmbeddingsImpl : public torch::nn::Module {
 public:
  BertEmbeddingsImpl(const BertConfig& config, int64_t vocab_size);
  // input_ids, token_type_ids: [B, S] int64. Returns [B, S, H].
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids);
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
  BertLayerNorm LayerNorm{nullptr};
  double dropout_p;
};
TORCH_MODULE(BertEmbeddings);

// Dense self-attention: q/k/v projections, softmax(q k^T / sqrt(d) + mask), dropout on the
// probabilities, context. Returns [B, S, H] (no output projection: that is BertSelfOutput).
class BertSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit BertSelfAttentionImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask);
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  int64_t num_heads, head_size;
  double dropout_p;
};
TORCH_MODULE(BertSelfAttention);

// Linear H -> H and dropout; no residual and no LayerNorm inside (pre-LN). `dense` is one of the
// two "bert_output_layer" Linears whose init std is divided by sqrt(2 * num_layers).
class BertSelfOutputImpl : public torch::nn::Module {
 public:
  explicit BertSelfOutputImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear dense{nullptr};
  double dropout_p;
};
TORCH_MODULE(BertSelfOutput);

// attention.self (dense BertSelfAttention or BertSparseSelfAttention) + attention.output.
class BertAttentionImpl : public torch::nn::Module {
 public:
  explicit BertAttentionImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask);
  // Swaps the self-attention module (registered as "self"); `m` must take (hidden [B,S,H],
  // mask [B,1,1,S]) and return [B, S, H].
  void set_self(torch::nn::AnyModule m);
  const torch::nn::AnyModule& self_attention() const { return self_; }
  BertSelfOutput output{nullptr};

 private:
  torch::nn::AnyModule self_;
};
TORCH_MODULE(BertAttention);

// Intermediate (LinearActivation H -> I) then Output (Linear I -> H, dropout).
class BertIntermediateImpl : public torch::nn::Module {
 public:
  explicit BertIntermediateImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& x) { return dense_act->forward(x); }
  LinearActivation dense_act{nullptr};
};
TORCH_MODULE(BertIntermediate);

class BertOutputImpl : public torch::nn::Module {
 public:
  explicit BertOutputImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear dense{nullptr};
  double dropout_p;
};
TORCH_MODULE(BertOutput);

// Pre-LN layer: y = x + Attention(PreAttentionLayerNorm(x));
//               out = y + Output(Intermediate(PostAttentionLayerNorm(y))).
class BertLayerImpl : public torch::nn::Module {
 public:
  explicit BertLayerImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask);
  BertAttention attention{nullptr};
  BertLayerNorm PreAttentionLayerNorm{nullptr}, PostAttentionLayerNorm{nullptr};
  BertIntermediate intermediate{nullptr};
  BertOutput output{nullptr};
};
TORCH_MODULE(BertLayer);

}  // namespace ds::bert
