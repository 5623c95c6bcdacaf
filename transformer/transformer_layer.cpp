#include "transformer/transformer_layer.h"

#include <torch/torch.h>

#include <atomic>
#include <limits>

#include "transformer/transformer_function.h"

namespace ds {
namespace {

std::atomic<int64_t> g_next_layer_id{0};  // like DeepSpeedTransformerLayer.layer_id: one per layer built

void check_initial(const torch::Tensor& t, at::IntArrayRef shape, const char* what) {
  TORCH_CHECK(t.defined() && t.sizes() == shape, "DeepSpeedTransformerLayer: ", what, " must have shape ", shape,
              ", got ", t.defined() ? t.sizes() : at::IntArrayRef{});
}

}  // namespace

DeepSpeedTransformerLayerImpl::DeepSpeedTransformerLayerImpl(const DeepSpeedTransformerConfig& config,
                                                             const std::vector<torch::Tensor>& initial_weights,
                                                             const std::vector<torch::Tensor>& initial_biases)
    : config_(config), layer_id_(g_next_layer_id.fetch_add(1)) {
  config_.validate();
  if (initial_weights.empty() && initial_biases.empty()) {
    config_.validate_for_init();
    init_weights();
  } else {
    take_initial(initial_weights, initial_biases);
  }
  seed_ = config_.seed >= 0
              ? static_cast<uint64_t>(config_.seed)
              : static_cast<uint64_t>(
                    torch::randint(std::numeric_limits<int64_t>::max(), {1}, torch::kLong).item<int64_t>());
  offset_ = static_cast<uint64_t>(layer_id_) << 32;
}

void DeepSpeedTransformerLayerImpl::init_weights() {
  const int64_t h = config_.hidden_size, i = config_.resolved_intermediate_size();
  const double std = config_.initializer_range, out_std = config_.output_init_std();
  torch::NoGradGuard no_grad;
  auto normal = [](std::vector<int64_t> shape, double s) { return torch::empty(shape).normal_(0.0, s); };
  attn_qkvw = register_parameter("attn_qkvw", normal({3 * h, h}, std));
  attn_qkvb = register_parameter("attn_qkvb", torch::zeros({3 * h}));
  attn_ow = register_parameter("attn_ow", normal({h, h}, out_std));
  attn_ob = register_parameter("attn_ob", torch::zeros({h}));
  attn_nw = register_parameter("attn_nw", torch::ones({h}));
  attn_nb = register_parameter("attn_nb", torch::zeros({h}));
  inter_w = register_parameter("inter_w", normal({i, h}, std));
  inter_b = register_parameter("inter_b", torch::zeros({i}));
  output_w = register_parameter("output_w", normal({h, i}, out_std));
  output_b = register_parameter("output_b", torch::zeros({h}));
  norm_w = register_parameter("norm_w", torch::ones({h}));
  norm_b = register_parameter("norm_b", torch::zeros({h}));
}

void DeepSpeedTransformerLayerImpl::take_initial(const std::vector<torch::Tensor>& w,
                                                 const std::vector<torch::Tensor>& b) {
  TORCH_CHECK(w.size() == 8 && b.size() == 8,
              "DeepSpeedTransformerLayer: initial_weights and initial_biases must hold 8 tensors each "
              "([Wq, Wk, Wv, Wo, attn_nw, inter_w, output_w, norm_w] and [bq, bk, bv, bo, attn_nb, inter_b, "
              "output_b, norm_b]), got ",
              w.size(), " and ", b.size());
  const int64_t h = config_.hidden_size, i = config_.resolved_intermediate_size();
  const char* wn[8] = {"initial_weights[0] (Wq)",       "initial_weights[1] (Wk)",      "initial_weights[2] (Wv)",
                       "initial_weights[3] (Wo)",       "initial_weights[4] (attn_nw)", "initial_weights[5] (inter_w)",
                       "initial_weights[6] (output_w)", "initial_weights[7] (norm_w)"};
  const char* bn[8] = {"initial_biases[0] (bq)",       "initial_biases[1] (bk)",      "initial_biases[2] (bv)",
                       "initial_biases[3] (bo)",       "initial_biases[4] (attn_nb)", "initial_biases[5] (inter_b)",
                       "initial_biases[6] (output_b)", "initial_biases[7] (norm_b)"};
  const std::vector<std::vector<int64_t>> ws = {{h, h}, {h, h}, {h, h}, {h, h}, {h}, {i, h}, {h, i}, {h}};
  const std::vector<std::vector<int64_t>> bs = {{h}, {h}, {h}, {h}, {h}, {i}, {h}, {h}};
  for (int k = 0; k < 8; ++k) {
    check_initial(w[k], ws[k], wn[k]);
    check_initial(b[k], bs[k], bn[k]);
  }
  torch::NoGradGuard no_grad;
  // detach(): a parameter sharing the caller's storage, as nn.Parameter(tensor) does.
  attn_qkvw = register_parameter("attn_qkvw", torch::cat({w[0], w[1], w[2]}, 0).detach());
  attn_qkvb = register_parameter("attn_qkvb", torch::cat({b[0], b[1], b[2]}, 0).detach());
  attn_ow = register_parameter("attn_ow", w[3].detach());
  attn_ob = register_parameter("attn_ob", b[3].detach());
  attn_nw = register_parameter("attn_nw", w[4].detach());
  attn_nb = register_parameter("attn_nb", b[4].detach());
  inter_w = register_parameter("inter_w", w[5].detach());
  inter_b = register_parameter("inter_b", b[5].detach());
  output_w = register_parameter("output_w", w[6].detach());
  output_b = register_parameter("output_b", b[6].detach());
  norm_w = register_parameter("norm_w", w[7].detach());
  norm_b = register_parameter("norm_b", b[7].detach());
}

transformer::LayerWeights DeepSpeedTransformerLayerImpl::weights() const {
  return {attn_qkvw, attn_qkvb, attn_ow,  attn_ob,  attn_nw, attn_nb,
          inter_w,   inter_b,   output_w, output_b, norm_w,  norm_b};
}

torch::Tensor DeepSpeedTransformerLayerImpl::forward(const torch::Tensor& hidden_states,
                                                     const torch::Tensor& attention_mask) {
  TORCH_CHECK(hidden_states.defined() && hidden_states.dim() == 3 && hidden_states.size(2) == config_.hidden_size,
              "DeepSpeedTransformerLayer: hidden_states must be [B, S, ", config_.hidden_size, "], got ",
              hidden_states.defined() ? hidden_states.sizes() : at::IntArrayRef{});
  transformer::check_precision(config_, hidden_states.scalar_type(), "DeepSpeedTransformerLayer");
  const bool training = is_training();
  const transformer::LayerSpec spec = transformer::LayerSpec::from_config(config_, training);
  const transformer::DropoutStream rng{seed_, offset_};
  if (training && spec.has_dropout()) offset_ += transformer::kDropoutSites;
  return transformer::transformer_layer_apply(hidden_states, attention_mask, weights(), spec, rng, training);
}

}  // namespace ds
