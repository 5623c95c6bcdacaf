#include "transformer/transformer_function.h"

#include <torch/csrc/autograd/custom_function.h>

#include <unordered_set>

namespace ds::transformer {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// saved_data keys
constexpr const char* kTraining = "training";

void put_spec(AutogradContext* ctx, const LayerSpec& s) {
  ctx->saved_data["heads"] = s.heads;
  ctx->saved_data["pre_layer_norm"] = s.pre_layer_norm;
  ctx->saved_data["layer_norm_eps"] = s.layer_norm_eps;
  ctx->saved_data["attn_dropout_ratio"] = s.attn_dropout_ratio;
  ctx->saved_data["hidden_dropout_ratio"] = s.hidden_dropout_ratio;
  ctx->saved_data["attn_dropout_checkpoint"] = s.attn_dropout_checkpoint;
  ctx->saved_data["normalize_invertible"] = s.normalize_invertible;
  ctx->saved_data["gelu_checkpoint"] = s.gelu_checkpoint;
  ctx->saved_data["stochastic_mode"] = s.stochastic_mode;
}

LayerSpec get_spec(AutogradContext* ctx) {
  LayerSpec s;
  s.heads = ctx->saved_data["heads"].toInt();
  s.pre_layer_norm = ctx->saved_data["pre_layer_norm"].toBool();
  s.layer_norm_eps = ctx->saved_data["layer_norm_eps"].toDouble();
  s.attn_dropout_ratio = ctx->saved_data["attn_dropout_ratio"].toDouble();
  s.hidden_dropout_ratio = ctx->saved_data["hidden_dropout_ratio"].toDouble();
  s.attn_dropout_checkpoint = ctx->saved_data["attn_dropout_checkpoint"].toBool();
  s.normalize_invertible = ctx->saved_data["normalize_invertible"].toBool();
  s.gelu_checkpoint = ctx->saved_data["gelu_checkpoint"].toBool();
  s.stochastic_mode = ctx->saved_data["stochastic_mode"].toBool();
  return s;
}

// The 12 parameters are separate arguments: custom Functions track only top-level tensor arguments.
// The mask is optional<Tensor> because an undefined Tensor argument is not accepted as an input.
struct TransformerFunction : public torch::autograd::Function<TransformerFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const c10::optional<at::Tensor>& mask,
                            const at::Tensor& attn_qkvw, const at::Tensor& attn_qkvb, const at::Tensor& attn_ow,
                            const at::Tensor& attn_ob, const at::Tensor& attn_nw, const at::Tensor& attn_nb,
                            const at::Tensor& inter_w, const at::Tensor& inter_b, const at::Tensor& output_w,
                            const at::Tensor& output_b, const at::Tensor& norm_w, const at::Tensor& norm_b,
                            const LayerSpec& spec, DropoutStream rng, bool training) {
    const LayerWeights w{attn_qkvw, attn_qkvb, attn_ow,  attn_ob,  attn_nw, attn_nb,
                         inter_w,   inter_b,   output_w, output_b, norm_w,  norm_b};
    ctx->saved_data[kTraining] = training;
    const at::Tensor m = mask.value_or(at::Tensor());
    if (!training) return layer_forward(input, m, w, spec, rng, nullptr);
    SavedActivations keep;
    at::Tensor out = layer_forward(input, m, w, spec, rng, &keep);
    put_spec(ctx, spec);
    // Activations first, then the parameters (saved so in-place changes before backward are caught).
    auto to_save = keep.list();
    for (const auto& p : w.list()) to_save.push_back(p);
    ctx->save_for_backward(to_save);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    TORCH_CHECK(ctx->saved_data[kTraining].toBool(),
                "DeepSpeedTransformerLayer: backward through a call made in eval mode; eval keeps nothing for "
                "backward. Call train() on the layer before the forward whose gradient you need");
    const auto saved = ctx->get_saved_variables();
    const SavedActivations sv = SavedActivations::from_list(saved);
    const LayerWeights w =
        LayerWeights::from_list(std::vector<at::Tensor>(saved.begin() + SavedActivations::kCount, saved.end()));
    LayerGrads g = layer_backward(grad_outputs[0], w, get_spec(ctx), sv);
    variable_list out{g.input, at::Tensor()};  // no gradient for the additive mask (as DeepSpeed)
    for (const auto& p : g.params.list()) out.push_back(p);
    out.resize(out.size() + 3);  // spec, rng, training: not tensors
    return out;
  }
};

}  // namespace

at::Tensor transformer_layer_apply(const at::Tensor& input, const at::Tensor& mask, const LayerWeights& w,
                                   const LayerSpec& spec, DropoutStream rng, bool training) {
  check_layer_inputs(input, mask, w, spec);
  bool needs_graph = input.requires_grad();
  for (const auto& p : w.list()) needs_graph = needs_graph || p.requires_grad();
  needs_graph = needs_graph && at::GradMode::is_enabled();
  if (!needs_graph) return layer_forward(input, mask, w, spec, rng, nullptr);
  const c10::optional<at::Tensor> m = mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt;
  return TransformerFunction::apply(input, m, w.attn_qkvw, w.attn_qkvb, w.attn_ow, w.attn_ob, w.attn_nw, w.attn_nb,
                                    w.inter_w, w.inter_b, w.output_w, w.output_b, w.norm_w, w.norm_b, spec, rng,
                                    training);
}

SavedBytes saved_for_backward(const at::Tensor& layer_output) {
  SavedBytes r;
  auto* node = dynamic_cast<torch::autograd::CppNode<TransformerFunction>*>(layer_output.grad_fn().get());
  if (node == nullptr) return r;
  const auto saved = node->ctx_.get_saved_variables();
  std::unordered_set<const void*> seen;
  const int n = std::min<int>(SavedActivations::kCount, static_cast<int>(saved.size()));
  for (int i = 0; i < n; ++i) {
    const at::Tensor& t = saved[i];
    if (!t.defined()) continue;
    const void* storage = t.storage().unsafeGetStorageImpl();
    const int64_t bytes = seen.insert(storage).second ? static_cast<int64_t>(t.storage().nbytes()) : 0;
    r.tensors.push_back({SavedActivations::name(i), t.sizes().vec(), t.scalar_type(), bytes});
    r.total += bytes;
  }
  return r;
}

}  // namespace ds::transformer
