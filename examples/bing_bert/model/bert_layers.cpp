#include "examples/bing_bert/model/bert_layers.h"

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

namespace ds::bert {

at::Tensor activation(const at::Tensor& x, const std::string& name) {
  if (name == "gelu") return at::gelu(x);
  if (name == "relu") return at::relu(x);
  if (name == "swish") return x * at::sigmoid(x);
  if (name == "tanh") return at::tanh(x);
  throw std::invalid_argument("activation '" + name + "' is not supported; use gelu, relu, swish or tanh");
}

// ---------------------------------------------------------------------------------------------
BertLayerNormImpl::BertLayerNormImpl(int64_t hidden_size, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({hidden_size}));
  bias = register_parameter("bias", torch::zeros({hidden_size}));
}

at::Tensor BertLayerNormImpl::forward(const at::Tensor& x) {
  const int64_t h = weight.size(0);
  if (x.is_cpu() && x.scalar_type() == at::kHalf) {
    return at::layer_norm(x.to(at::kFloat), {h}, weight.to(at::kFloat), bias.to(at::kFloat), eps).to(x.scalar_type());
  }
  return at::layer_norm(x, {h}, weight, bias, eps);
}

// ---------------------------------------------------------------------------------------------
LinearActivationImpl::LinearActivationImpl(int64_t in_features, int64_t out_features, std::string act_)
    : act(std::move(act_)) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  bias = register_parameter("bias", torch::empty({out_features}));
  // nn.Linear.reset_parameters, which LinearActivation.reset_parameters repeats.
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  torch::nn::init::uniform_(bias, -bound, bound);
}

at::Tensor LinearActivationImpl::forward(const at::Tensor& x) { return activation(at::linear(x, weight, bias), act); }

// ---------------------------------------------------------------------------------------------
BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& c, int64_t vocab_size) : dropout_p(c.hidden_dropout_prob) {
  word_embeddings = register_module("word_embeddings", torch::nn::Embedding(vocab_size, c.hidden_size));
  position_embeddings =
      register_module("position_embeddings", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
  token_type_embeddings = register_module("token_type_embeddings", torch::nn::Embedding(c.type_vocab_size, c.hidden_size));
  LayerNorm = register_module("LayerNorm", BertLayerNorm(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertEmbeddingsImpl::forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids) {
  const int64_t seq = input_ids.size(1);
  const int64_t max_pos = position_embeddings->weight.size(0);
  if (seq > max_pos) {
    throw std::invalid_argument("BertEmbeddings: sequence length " + std::to_string(seq) + " exceeds the " +
                                std::to_string(max_pos) +
                                " rows of the position table (bert_model_config.max_position_embeddings)");
  }
  const at::Tensor positions = torch::arange(seq, input_ids.options().dtype(torch::kLong)).unsqueeze(0);  // [1, S]
  at::Tensor e = word_embeddings->forward(input_ids) + position_embeddings->forward(positions) +
                 token_type_embeddings->forward(token_type_ids);
  return torch::dropout(LayerNorm->forward(e), dropout_p, is_training());
}

// ---------------------------------------------------------------------------------------------
BertSelfAttentionImpl::BertSelfAttentionImpl(const BertConfig& c)
    : num_heads(c.num_attention_heads), head_size(c.head_size()), dropout_p(c.attention_probs_dropout_prob) {
  query = register_module("query", torch::nn::Linear(c.hidden_size, c.hidden_size));
  key = register_module("key", torch::nn::Linear(c.hidden_size, c.hidden_size));
  value = register_module("value", torch::nn::Linear(c.hidden_size, c.hidden_size));
}

at::Tensor BertSelfAttentionImpl::forward(const at::Tensor& x, const at::Tensor& mask) {
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2);
  auto heads = [&](const at::Tensor& t) { return t.view({B, S, num_heads, head_size}).permute({0, 2, 1, 3}); };
  const at::Tensor q = heads(query->forward(x));                          // [B, h, S, d]
  const at::Tensor k = heads(key->forward(x));                            // [B, h, S, d]
  const at::Tensor v = heads(value->forward(x));                          // [B, h, S, d]
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_size));  // [B, h, S, S]
  if (mask.defined()) scores = scores + mask;
  at::Tensor probs = torch::dropout(at::softmax(scores, -1), dropout_p, is_training());
  return at::matmul(probs, v).permute({0, 2, 1, 3}).reshape({B, S, H});
}

// ---------------------------------------------------------------------------------------------
BertSelfOutputImpl::BertSelfOutputImpl(const BertConfig& c) : dropout_p(c.hidden_dropout_prob) {
  dense = register_module("dense", torch::nn::Linear(c.hidden_size, c.hidden_size));
}

at::Tensor BertSelfOutputImpl::forward(const at::Tensor& x) {
  return torch::dropout(dense->forward(x), dropout_p, is_training());
}

BertAttentionImpl::BertAttentionImpl(const BertConfig& c) {
  self_ = torch::nn::AnyModule(BertSelfAttention(c));
  register_module("self", self_.ptr());
  output = register_module("output", BertSelfOutput(c));
}

at::Tensor BertAttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask) {
  return output->forward(self_.forward(hidden_states, attention_mask));
}

void BertAttentionImpl::set_self(torch::nn::AnyModule m) {
  self_ = std::move(m);
  replace_module("self", self_.ptr());
}

// ---------------------------------------------------------------------------------------------
BertIntermediateImpl::BertIntermediateImpl(const BertConfig& c) {
  dense_act = register_module("dense_act", LinearActivation(c.hidden_size, c.intermediate_size, c.hidden_act));
}

BertOutputImpl::BertOutputImpl(const BertConfig& c) : dropout_p(c.hidden_dropout_prob) {
  dense = register_module("dense", torch::nn::Linear(c.intermediate_size, c.hidden_size));
}

at::Tensor BertOutputImpl::forward(const at::Tensor& x) {
  return torch::dropout(dense->forward(x), dropout_p, is_training());
}

BertLayerImpl::BertLayerImpl(const BertConfig& c) {
  attention = register_module("attention", BertAttention(c));
  PreAttentionLayerNorm = register_module("PreAttentionLayerNorm", BertLayerNorm(c.hidden_size, c.layer_norm_eps));
  PostAttentionLayerNorm = register_module("PostAttentionLayerNorm", BertLayerNorm(c.hidden_size, c.layer_norm_eps));
  intermediate = register_module("intermediate", BertIntermediate(c));
  output = register_module("output", BertOutput(c));
}

at::Tensor BertLayerImpl::forward(const at::Tensor& x, const at::Tensor& mask) {
  const at::Tensor y = x + attention->forward(PreAttentionLayerNorm->forward(x), mask);
  return y + output->forward(intermediate->forward(PostAttentionLayerNorm->forward(y)));
}

}  // namespace ds::bert
