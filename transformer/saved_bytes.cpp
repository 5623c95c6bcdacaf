#include "transformer/saved_bytes.h"

#include <torch/torch.h>

#include "transformer/transformer_layer.h"

namespace ds::transformer {

SavedBytes measure_saved_bytes(const DeepSpeedTransformerConfig& cfg, int64_t batch, int64_t seq,
                               at::ScalarType dtype) {
  DeepSpeedTransformerConfig c = cfg;
  c.fp16 = dtype == at::kHalf;
  c.bf16 = dtype == at::kBFloat16;
  if (c.initializer_range < 0) c.initializer_range = 0.02;
  if (c.num_hidden_layers <= 0) c.num_hidden_layers = 1;
  DeepSpeedTransformerLayer layer(c);
  layer->to(dtype);
  layer->train();
  torch::AutoGradMode grad(true);
  auto x = torch::randn({batch, seq, c.hidden_size}).to(dtype).requires_grad_(true);
  auto mask = torch::zeros({batch, 1, 1, seq}).to(dtype);
  auto out = layer->forward(x, mask);
  return saved_for_backward(out);
}

FlagSavings expected_flag_savings(const DeepSpeedTransformerConfig& cfg, int64_t batch, int64_t seq, int64_t elem,
                                  int64_t stat) {
  const int64_t bs = batch * seq, h = cfg.hidden_size;
  FlagSavings f;
  f.attn_dropout_checkpoint = cfg.attn_dropout_ratio > 0 ? batch * cfg.heads * seq * seq * elem : 0;
  f.gelu_checkpoint = bs * cfg.resolved_intermediate_size() * elem;
  f.normalize_invertible = 2 * bs * stat + bs * h * elem * (cfg.pre_layer_norm ? 2 : 1);
  return f;
}

}  // namespace ds::transformer
