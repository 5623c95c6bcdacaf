// torch.ops.ds.transformer_layer: one DeepSpeed transformer layer, differentiable, for Python.
//
//   out = torch.ops.ds.transformer_layer(input, attention_mask, params, config_json, training)
//
// input [B, S, H]; attention_mask additive [B, 1, 1, S] (an empty tensor for none); params the 12
// parameters in DeepSpeed's order (attn_qkvw, attn_qkvb, attn_ow, attn_ob, attn_nw, attn_nb,
// inter_w, inter_b, output_w, output_b, norm_w, norm_b); config_json the "transformer_kernel"
// section as a JSON object (hidden_size and heads required; sizes must match the tensors).
//
// The op is stateless, so its dropout stream comes from Torch's default CPU generator: each
// training call with dropout draws one 64-bit offset (and the seed too when config "seed" is -1),
// like torch.nn.functional.dropout consumes the generator; torch.manual_seed makes calls repeat.
#include <torch/library.h>
#include <torch/torch.h>

#include <stdexcept>
#include <string_view>

#include "engine/config/ds_config.h"
#include "transformer/transformer_config.h"
#include "transformer/transformer_function.h"

namespace {

uint64_t draw_u64() {
  return static_cast<uint64_t>(torch::randint(std::numeric_limits<int64_t>::max(), {1}, torch::kLong).item<int64_t>());
}

at::Tensor transformer_layer_op(const at::Tensor& input, const at::Tensor& attention_mask, at::TensorList params,
                                c10::string_view config_json, bool training) {
  ds::DeepSpeedTransformerConfig cfg;
  try {
    const std::string_view text(config_json.data(), config_json.size());
    cfg = ds::DeepSpeedTransformerConfig::from_kernel_config(ds::parse_transformer_kernel_section(text));
    cfg.validate("transformer_kernel");
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "ds::transformer_layer: config_json: ", e.what());
  }
  TORCH_CHECK(input.dim() == 3 && input.size(2) == cfg.hidden_size, "ds::transformer_layer: input must be [B, S, ",
              cfg.hidden_size, "] (config hidden_size), got ", input.sizes());
  TORCH_CHECK(params.size() == ds::transformer::LayerWeights::kCount,
              "ds::transformer_layer: params must hold 12 "
              "tensors (attn_qkvw, attn_qkvb, attn_ow, attn_ob, attn_nw, attn_nb, inter_w, inter_b, output_w, "
              "output_b, norm_w, norm_b), got ",
              params.size());
  TORCH_CHECK(params[6].dim() == 2 && params[6].size(0) == cfg.resolved_intermediate_size(),
              "ds::transformer_layer: inter_w must be [", cfg.resolved_intermediate_size(), ", ", cfg.hidden_size,
              "] (config intermediate_size), got ", params[6].sizes());
  ds::transformer::check_precision(cfg, input.scalar_type(), "ds::transformer_layer");
  const auto spec = ds::transformer::LayerSpec::from_config(cfg, training);
  ds::transformer::DropoutStream rng;
  if (training && spec.has_dropout()) {
    rng.seed = cfg.seed >= 0 ? static_cast<uint64_t>(cfg.seed) : draw_u64();
    rng.offset = draw_u64();
  }
  const at::Tensor mask = attention_mask.numel() == 0 ? at::Tensor() : attention_mask;
  return ds::transformer::transformer_layer_apply(input, mask, ds::transformer::LayerWeights::from_list(params.vec()),
                                                  spec, rng, training);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ds, m) {
  m.def(
      "transformer_layer(Tensor input, Tensor attention_mask, Tensor[] params, str config_json, bool training) -> "
      "Tensor",
      &transformer_layer_op);
}
