// DeepSpeedTransformerLayer: one BERT layer (pre-LN or post-LN) with DeepSpeed's parameter names,
// shapes and initialisation (deepspeed-behaviour.md §2.3), an explicit backward and the memory
// flags of DeepSpeedTransformerConfig.
//
//   ds::DeepSpeedTransformerConfig cfg;  cfg.hidden_size = 1024; cfg.heads = 16; ...
//   ds::DeepSpeedTransformerLayer layer(cfg);
//   auto out = layer(hidden_states /* [B, S, H] */, mask /* [B, 1, 1, S] additive, or {} */);
//
// Dtype: the layer's parameters and the input share one dtype: float16 with cfg.fp16, bfloat16
// with cfg.bf16, otherwise float32 (or float64, for reference tests). Move or convert the layer with
// ->to(...). Any batch size and sequence length.
//
// Dropout randomness: Philox stream (seed, offset) per call (ops/nn/dropout.h). The seed is
// cfg.seed, or one draw from Torch's default generator when cfg.seed < 0 (so torch::manual_seed
// makes runs repeatable). The offset starts at layer_id << 32 (layers with one seed never share
// masks) and advances by 3 (one per dropout site) per training call with dropout on;
// rng_offset() and set_rng_state() save and restore it.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "transformer/layer_core.h"
#include "transformer/transformer_config.h"

namespace ds {

class DeepSpeedTransformerLayerImpl : public torch::nn::Module {
 public:
  // Validates cfg. initial_weights = [Wq, Wk, Wv, Wo, attn_nw, inter_w, output_w, norm_w] and
  // initial_biases = [bq, bk, bv, bo, attn_nb, inter_b, output_b, norm_b] (DeepSpeed's test path):
  // attn_qkvw = cat(Wq, Wk, Wv) and attn_qkvb = cat(bq, bk, bv); the others are used as parameters
  // sharing the given storage. DeepSpeed zeroes attn_qkvb there and ignores bq, bk, bv; we use them.
  explicit DeepSpeedTransformerLayerImpl(const DeepSpeedTransformerConfig& config,
                                         const std::vector<torch::Tensor>& initial_weights = {},
                                         const std::vector<torch::Tensor>& initial_biases = {});

  // hidden_states: [B, S, H]; attention_mask: additive [B, 1, 1, S] or undefined. Training mode
  // (is_training()) turns dropout on and, with grad on, keeps activations for backward.
  torch::Tensor forward(const torch::Tensor& hidden_states, const torch::Tensor& attention_mask = {});

  const DeepSpeedTransformerConfig& config() const { return config_; }
  int64_t layer_id() const { return layer_id_; }
  uint64_t rng_seed() const { return seed_; }
  uint64_t rng_offset() const { return offset_; }  // the offset the next training call uses
  void set_rng_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  transformer::LayerWeights weights() const;

  // DeepSpeed's parameters (registered under these names).
  torch::Tensor attn_qkvw, attn_qkvb, attn_ow, attn_ob, attn_nw, attn_nb;
  torch::Tensor inter_w, inter_b, output_w, output_b, norm_w, norm_b;

 private:
  void init_weights();
  void take_initial(const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& biases);

  DeepSpeedTransformerConfig config_;
  int64_t layer_id_;
  uint64_t seed_;
  uint64_t offset_;
};

TORCH_MODULE(DeepSpeedTransformerLayer);

}  // namespace ds
