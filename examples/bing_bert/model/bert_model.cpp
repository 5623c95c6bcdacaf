#include "examples/bing_bert/model/bert_model.h"

#include <torch/torch.h>

#include <cmath>
#include <set>
#include <stdexcept>

#include "sparse_attention/sparse_attention_utils.h"
#include "sparse_attention/sparse_self_attention.h"
#include "sparse_attention/sparsity_config.h"

namespace ds::bert {

PretrainingBatch PretrainingBatch::to(const at::Device& device, bool non_blocking) const {
  auto mv = [&](const at::Tensor& t) { return t.to(device, /*dtype=*/t.scalar_type(), non_blocking); };
  return {mv(input_ids), mv(input_mask), mv(segment_ids), mv(masked_lm_labels), mv(next_sentence_labels)};
}

namespace {

BertSparseSelfAttention make_sparse(const BertConfig& c, std::shared_ptr<const SparsityConfig> sparsity,
                                    int64_t max_seq_length) {
  return BertSparseSelfAttention(c.hidden_size, c.num_attention_heads, std::move(sparsity), max_seq_length);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
BertEncoderImpl::BertEncoderImpl(const BertConfig& c, const BertModelOptions& o) : kind_(o.kind) {
  FinalLayerNorm = register_module("FinalLayerNorm", BertLayerNorm(c.hidden_size, c.layer_norm_eps));
  layer = torch::nn::ModuleList();
  // bing_bert deep-copies one freshly built layer L times; its LinearActivation (never re-initialised)
  // and DeepSpeedTransformerLayer weights therefore start identical in every layer. We build each
  // layer with its own draw.
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    if (o.kind == EncoderKind::TransformerKernel) {
      kernel_.emplace_back(o.kernel);
      // Dropout streams by the layer's index in this model, not by how many layers the process
      // built before (the layer's default offset), so a model is reproducible from its seed.
      kernel_.back()->set_rng_state(kernel_.back()->rng_seed(), static_cast<uint64_t>(i) << 32);
      layer->push_back(kernel_.back());
    } else {
      plain_.emplace_back(c);
      if (o.kind == EncoderKind::SparseAttention) {
        if (!o.sparsity) throw std::invalid_argument("BertEncoder: sparse attention needs a sparsity config");
        plain_.back()->attention->set_self(torch::nn::AnyModule(make_sparse(c, o.sparsity, o.sparse_max_seq_length)));
      }
      layer->push_back(plain_.back());
    }
  }
  register_module("layer", layer);
}

at::Tensor BertEncoderImpl::forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask) {
  at::Tensor h = hidden_states;
  for (auto& l : plain_) h = l->forward(h, attention_mask);
  for (auto& l : kernel_) h = l->forward(h, attention_mask);
  return FinalLayerNorm->forward(h);
}

BertPoolerImpl::BertPoolerImpl(const BertConfig& c) {
  dense_act = register_module("dense_act", LinearActivation(c.hidden_size, c.hidden_size, "tanh"));
}

// ---------------------------------------------------------------------------------------------
BertModelImpl::BertModelImpl(const BertConfig& c, const BertModelOptions& o) : pad_token_id(c.pad_token_id) {
  embeddings = register_module("embeddings", BertEmbeddings(c, c.padded_vocab_size()));
  encoder = register_module("encoder", BertEncoder(c, o));
  pooler = register_module("pooler", BertPooler(c));
  // Dynamic N:M has no blocks: the op pads its key groups itself, so the input is not padded.
  if (o.kind == EncoderKind::SparseAttention && o.sparsity->has_block_layout()) sparse_block = o.sparsity->block();
}

std::pair<at::Tensor, at::Tensor> BertModelImpl::forward(const at::Tensor& input_ids_in,
                                                         const at::Tensor& token_type_ids_in,
                                                         const at::Tensor& attention_mask_in) {
  at::Tensor input_ids = input_ids_in;
  at::Tensor token_type_ids = token_type_ids_in.defined() ? token_type_ids_in : at::zeros_like(input_ids);
  at::Tensor mask = attention_mask_in.defined() ? attention_mask_in : at::ones_like(input_ids);
  int64_t pad_len = 0;
  if (sparse_block > 0) {
    // The 0/1 mask is padded with 0 here, before it becomes the additive mask, so the padded keys
    // are masked out (bing_bert pads the additive mask with 0 = attend; see bert_model.h).
    auto p = SparseAttentionUtils::pad_to_block_size(sparse_block, input_ids, mask, token_type_ids, {}, {},
                                                     pad_token_id);
    pad_len = p.pad_len;
    input_ids = p.input_ids;
    mask = p.attention_mask;
    token_type_ids = p.token_type_ids;
  }
  const auto dtype = embeddings->word_embeddings->weight.scalar_type();
  const at::Tensor extended = (1.0 - mask.unsqueeze(1).unsqueeze(2).to(dtype)) * -10000.0;  // [B, 1, 1, S]
  at::Tensor sequence_output = encoder->forward(embeddings->forward(input_ids, token_type_ids), extended);
  at::Tensor pooled = pooler->forward(sequence_output);
  if (pad_len > 0) sequence_output = SparseAttentionUtils::unpad_sequence_output(pad_len, sequence_output);
  return {sequence_output, pooled};
}

// ---------------------------------------------------------------------------------------------
BertPredictionHeadTransformImpl::BertPredictionHeadTransformImpl(const BertConfig& c) {
  dense_act = register_module("dense_act", LinearActivation(c.hidden_size, c.hidden_size, c.hidden_act));
  LayerNorm = register_module("LayerNorm", BertLayerNorm(c.hidden_size, c.layer_norm_eps));
}

BertLMPredictionHeadImpl::BertLMPredictionHeadImpl(const BertConfig& c, at::Tensor embedding_weight)
    : decoder_weight(std::move(embedding_weight)) {
  bias = register_parameter("bias", torch::zeros({decoder_weight.size(0)}));
  transform = register_module("transform", BertPredictionHeadTransform(c));
}

at::Tensor BertLMPredictionHeadImpl::forward(const at::Tensor& hidden) {
  // decoder_weight shares the embedding parameter's TensorImpl, which Module::to(device / dtype)
  // converts in place, so it follows the model.
  return at::linear(transform->forward(hidden), decoder_weight, bias);
}

BertPreTrainingHeadsImpl::BertPreTrainingHeadsImpl(const BertConfig& c, at::Tensor embedding_weight) {
  predictions = register_module("predictions", BertLMPredictionHead(c, std::move(embedding_weight)));
  seq_relationship = register_module("seq_relationship", torch::nn::Linear(c.hidden_size, 2));
}

// ---------------------------------------------------------------------------------------------
BertForPreTrainingPreLNImpl::BertForPreTrainingPreLNImpl(const BertConfig& config, const BertModelOptions& options)
    : config_(config) {
  config_.validate();
  bert = register_module("bert", BertModel(config_, options));
  cls = register_module("cls", BertPreTrainingHeads(config_, bert->embeddings->word_embeddings->weight));
  init_weights();
}

void BertForPreTrainingPreLNImpl::init_weights() {
  const torch::NoGradGuard no_grad;
  const double std = config_.initializer_range;
  // "Accounting for accumulation on the residual path": the two Linears that write into the
  // residual stream of every layer.
  const double out_std = std / std::sqrt(2.0 * static_cast<double>(config_.num_hidden_layers));
  std::set<const torch::nn::Module*> output_layers;
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* so = m->as<BertSelfOutputImpl>()) output_layers.insert(so->dense.get());
    if (auto* o = m->as<BertOutputImpl>()) output_layers.insert(o->dense.get());
  }
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::LinearImpl>()) {
      lin->weight.normal_(0.0, output_layers.count(lin) ? out_std : std);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* emb = m->as<torch::nn::EmbeddingImpl>()) {
      emb->weight.normal_(0.0, std);
    } else if (auto* ln = m->as<BertLayerNormImpl>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    }
  }
  cls->predictions->bias.zero_();
}

PretrainingOutput BertForPreTrainingPreLNImpl::forward_outputs(const PretrainingBatch& b, bool stats) {
  auto [sequence_output, pooled] = bert->forward(b.input_ids, b.segment_ids, b.input_mask);
  const int64_t H = sequence_output.size(-1);
  const at::Tensor labels = b.masked_lm_labels.reshape({-1});                 // [B*S]
  const at::Tensor index = labels.ne(-1).nonzero().reshape({-1});             // [M]
  const at::Tensor hidden = sequence_output.reshape({-1, H}).index_select(0, index);  // [M, H]
  const at::Tensor target = labels.index_select(0, index);                    // [M]
  const at::Tensor logits = cls->predictions->forward(hidden);                // [M, V8]
  const at::Tensor nsp_logits = cls->seq_relationship->forward(pooled);       // [B, 2]

  // fp16 / bf16 logits go through the cross entropy in float32; float32 / float64 stay as they are.
  auto wide = [](const at::Tensor& t) { const auto k = t.scalar_type();
    return k == at::kHalf || k == at::kBFloat16 ? t.to(at::kFloat) : t; };
  PretrainingOutput out;
  if (index.numel() > 0) {
    out.mlm_loss = torch::nn::functional::cross_entropy(wide(logits), target);
  } else {
    out.mlm_loss = wide(logits).sum() * 0.0;
  }
  const at::Tensor nsp_target = b.next_sentence_labels.reshape({-1});
  out.nsp_loss = torch::nn::functional::cross_entropy(wide(nsp_logits), nsp_target);
  out.loss = out.mlm_loss + out.nsp_loss;
  if (stats) {
    const torch::NoGradGuard no_grad;
    out.mlm_correct = logits.argmax(-1).eq(target).sum();
    out.mlm_count = torch::full({}, index.numel(), torch::kLong);
    out.nsp_correct = nsp_logits.argmax(-1).eq(nsp_target).sum();
    out.nsp_count = torch::full({}, nsp_target.numel(), torch::kLong);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
void replace_model_self_attention_with_sparse_self_attention(BertForPreTrainingPreLNImpl& model,
                                                             int64_t max_position,
                                                             std::shared_ptr<const SparsityConfig> sparsity) {
  if (!sparsity) throw std::invalid_argument("replace_model_self_attention_with_sparse_self_attention: no sparsity config");
  BertEncoderImpl& enc = *model.bert->encoder;
  if (enc.kind() == EncoderKind::TransformerKernel) {
    throw std::invalid_argument(
        "replace_model_self_attention_with_sparse_self_attention: the model uses DeepSpeedTransformerLayer, which "
        "has no separate self-attention to replace; build it without transformer_kernel");
  }
  if (max_position <= 0) {
    throw std::invalid_argument("replace_model_self_attention_with_sparse_self_attention: max_position must be > 0, got " +
                                std::to_string(max_position));
  }
  BertConfig& c = model.mutable_config();
  if (sparsity->num_heads() != c.num_attention_heads) {
    throw std::invalid_argument("replace_model_self_attention_with_sparse_self_attention: the sparsity config has " +
                                std::to_string(sparsity->num_heads()) + " heads, the model " +
                                std::to_string(c.num_attention_heads));
  }
  c.max_position_embeddings = max_position;
  const int64_t block = sparsity->block();
  const int64_t layout_len = std::max<int64_t>(2048, (max_position + block - 1) / block * block);
  for (size_t i = 0; i < enc.num_layers(); ++i) {
    BertAttentionImpl& att = *enc.plain_layer(i)->attention;
    torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr};
    const auto self = att.self_attention().ptr();
    if (auto* dense = self->as<BertSelfAttentionImpl>()) {
      q = dense->query, k = dense->key, v = dense->value;
    } else if (auto* sp = self->as<BertSparseSelfAttentionImpl>()) {
      q = sp->query, k = sp->key, v = sp->value;
    } else {
      throw std::logic_error("replace_model_self_attention_with_sparse_self_attention: unknown self-attention in layer " +
                             std::to_string(i));
    }
    BertSparseSelfAttention sparse = make_sparse(c, sparsity, layout_len);
    sparse->query = sparse->replace_module("query", q);
    sparse->key = sparse->replace_module("key", k);
    sparse->value = sparse->replace_module("value", v);
    att.set_self(torch::nn::AnyModule(sparse));
  }
  enc.set_kind(EncoderKind::SparseAttention);
  model.bert->sparse_block = sparsity->has_block_layout() ? block : 0;
}

int64_t extend_position_embedding(BertForPreTrainingPreLNImpl& model, int64_t max_position) {
  const int64_t n = SparseAttentionUtils::extend_position_embedding(model.bert->embeddings->position_embeddings,
                                                                    max_position);
  model.mutable_config().max_position_embeddings = n;
  return n;
}

double forward_flops_per_sequence(const BertConfig& c, int64_t seq_len, double num_masked) {
  const double S = static_cast<double>(seq_len), H = static_cast<double>(c.hidden_size);
  const double I = static_cast<double>(c.intermediate_size), L = static_cast<double>(c.num_hidden_layers);
  const double V = static_cast<double>(c.padded_vocab_size());
  const double layers = L * (2.0 * S * (4.0 * H * H + 2.0 * H * I) + 4.0 * S * S * H);
  const double mlm = 2.0 * num_masked * (H * H + H * V);
  const double heads = 2.0 * (H * H + 2.0 * H);
  return layers + mlm + heads;
}

}  // namespace ds::bert
