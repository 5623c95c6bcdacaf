#include "transformer/layer_core.h"

#include <cmath>

#include "ops/nn/dropout.h"
#include "ops/nn/gelu.h"
#include "ops/nn/layer_norm.h"
#include "ops/nn/softmax.h"
#include "transformer/transformer_config.h"

namespace ds::transformer {
namespace {

using nn::LayerNormGrads;
using nn::LayerNormOutput;

bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// a·b (batched) times alpha, rounded once to a's dtype: a GEMM with fp32 accumulation and the
// scale in its epilogue, as cuBLAS runs it. ATen 1.13 has no CPU GEMM for fp16, so on the CPU half
// types are computed in fp32 (the same result: one rounding of an fp32-accumulated product).
at::Tensor gemm(const at::Tensor& a, const at::Tensor& b, double alpha = 1.0) {
  if (a.is_cpu() && is_reduced(a.scalar_type())) {
    auto r = at::matmul(a.to(at::kFloat), b.to(at::kFloat));
    if (alpha != 1.0) r.mul_(alpha);
    return r.to(a.scalar_type());
  }
  auto r = at::matmul(a, b);
  if (alpha != 1.0) r.mul_(alpha);
  return r;
}

// x: [..., K], w: [N, K] (nn.Linear layout) -> [..., N]
at::Tensor fc(const at::Tensor& x, const at::Tensor& w) { return gemm(x, w.t()); }
// The input gradient of a linear: g [..., N], w [N, K] -> [..., K]
at::Tensor linear_dgrad(const at::Tensor& g, const at::Tensor& w) { return gemm(g, w); }
// The weight gradient: g [..., N], a [..., K] -> [N, K] = Σ_rows gᵀ a
at::Tensor linear_wgrad(const at::Tensor& g, const at::Tensor& a) {
  return gemm(g.reshape({-1, g.size(-1)}).t(), a.reshape({-1, a.size(-1)}));
}
// The bias gradient: g [..., N] -> [N], summed in fp32 (fp64 for fp64).
at::Tensor bias_grad(const at::Tensor& g, const at::Tensor& bias) {
  const auto acc = g.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return g.reshape({-1, g.size(-1)}).to(acc).sum(0).to(bias.scalar_type());
}

LayerNormGrads ln_backward(const at::Tensor& grad, bool invertible, const at::Tensor& x, const at::Tensor& y,
                           const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& mean,
                           const at::Tensor& var, const at::Tensor& grad_residual) {
  return invertible ? nn::layer_norm_backward_invertible(grad, y, gamma, beta, var, grad_residual)
                    : nn::layer_norm_backward(grad, x, gamma, mean, var, grad_residual);
}

}  // namespace

const char* LayerWeights::name(int i) {
  static const char* const kNames[kCount] = {"attn_qkvw", "attn_qkvb", "attn_ow", "attn_ob", "attn_nw", "attn_nb",
                                             "inter_w",   "inter_b",   "output_w", "output_b", "norm_w", "norm_b"};
  return (i >= 0 && i < kCount) ? kNames[i] : "?";
}

std::vector<at::Tensor> LayerWeights::list() const {
  return {attn_qkvw, attn_qkvb, attn_ow,  attn_ob,  attn_nw, attn_nb,
          inter_w,   inter_b,   output_w, output_b, norm_w,  norm_b};
}

LayerWeights LayerWeights::from_list(const std::vector<at::Tensor>& t) {
  TORCH_CHECK(static_cast<int>(t.size()) == kCount, "transformer layer: expected ", kCount,
              " parameters (attn_qkvw, attn_qkvb, attn_ow, attn_ob, attn_nw, attn_nb, inter_w, inter_b, output_w, "
              "output_b, norm_w, norm_b), got ", t.size());
  return {t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11]};
}

const char* SavedActivations::name(int i) {
  static const char* const kNames[kCount] = {
      "input",   "inp_norm", "qkv_tf",   "soft_out", "ctx_bufB", "attn_o_inp",
      "add_res", "ff1_inp",  "gelu_inp", "ff2_inp",  "output",   "attn_prob_dropout_mask",
      "attn_output_dropout_mask", "layer_output_dropout_mask", "attn_layer_norm_mean", "attn_layer_norm_var",
      "layer_norm_mean", "layer_norm_var"};
  return (i >= 0 && i < kCount) ? kNames[i] : "?";
}

std::vector<at::Tensor> SavedActivations::list() const {
  return {input,  inp_norm, qkv_tf,  soft_out, ctx_bufB, attn_o_inp, add_res, ff1_inp, gelu_inp, ff2_inp, output,
          attn_prob_dropout_mask, attn_output_dropout_mask, layer_output_dropout_mask, attn_layer_norm_mean,
          attn_layer_norm_var, layer_norm_mean, layer_norm_var};
}

SavedActivations SavedActivations::from_list(const std::vector<at::Tensor>& t) {
  TORCH_CHECK(static_cast<int>(t.size()) >= kCount, "transformer layer: expected ", kCount, " saved tensors, got ",
              t.size());
  return {t[0],  t[1],  t[2],  t[3],  t[4],  t[5],  t[6],  t[7],  t[8],
          t[9],  t[10], t[11], t[12], t[13], t[14], t[15], t[16], t[17]};
}

LayerSpec LayerSpec::from_config(const DeepSpeedTransformerConfig& c, bool training) {
  LayerSpec s;
  s.heads = c.heads;
  s.pre_layer_norm = c.pre_layer_norm;
  s.layer_norm_eps = c.layer_norm_eps;
  s.attn_dropout_ratio = training ? c.attn_dropout_ratio : 0.0;
  s.hidden_dropout_ratio = training ? c.hidden_dropout_ratio : 0.0;
  s.attn_dropout_checkpoint = c.attn_dropout_checkpoint;
  s.normalize_invertible = c.normalize_invertible;
  s.gelu_checkpoint = c.gelu_checkpoint;
  s.stochastic_mode = c.stochastic_mode;
  return s;
}

void check_layer_inputs(const at::Tensor& input, const at::Tensor& mask, const LayerWeights& w, const LayerSpec& spec) {
  TORCH_CHECK(input.defined() && input.dim() == 3, "transformer layer: hidden_states must be [B, S, H], got ",
              input.defined() ? input.sizes() : at::IntArrayRef{});
  TORCH_CHECK(input.is_floating_point(), "transformer layer: hidden_states must be floating point, got ",
              input.scalar_type());
  const int64_t b = input.size(0), s = input.size(1), h = input.size(2);
  TORCH_CHECK(b > 0 && s > 0, "transformer layer: hidden_states ", input.sizes(), " is empty");
  TORCH_CHECK(spec.heads > 0 && h % spec.heads == 0, "transformer layer: hidden size ", h,
              " is not divisible by heads ", spec.heads);
  const int64_t i = w.inter_w.defined() ? w.inter_w.size(0) : -1;
  const std::vector<std::vector<int64_t>> shapes = {{3 * h, h}, {3 * h}, {h, h}, {h}, {h}, {h},
                                                    {i, h},     {i},     {h, i}, {h}, {h}, {h}};
  const auto params = w.list();
  for (int k = 0; k < LayerWeights::kCount; ++k) {
    const auto& p = params[k];
    TORCH_CHECK(p.defined(), "transformer layer: parameter ", LayerWeights::name(k), " is undefined");
    TORCH_CHECK(p.sizes() == at::IntArrayRef(shapes[k]), "transformer layer: parameter ", LayerWeights::name(k),
                " must have shape ", at::IntArrayRef(shapes[k]), " for hidden size ", h, " and intermediate size ", i,
                ", got ", p.sizes());
    TORCH_CHECK(p.scalar_type() == input.scalar_type(), "transformer layer: parameter ", LayerWeights::name(k), " is ",
                p.scalar_type(), " but hidden_states is ", input.scalar_type(),
                "; convert the layer and its input to one dtype");
    TORCH_CHECK(p.device() == input.device(), "transformer layer: parameter ", LayerWeights::name(k), " is on ",
                p.device(), " but hidden_states is on ", input.device());
  }
  if (mask.defined()) {
    TORCH_CHECK(mask.is_floating_point(), "transformer layer: attention_mask must be an additive float mask, got ",
                mask.scalar_type());
    TORCH_CHECK(mask.sizes() == at::IntArrayRef({b, 1, 1, s}),
                "transformer layer: attention_mask must be [B, 1, 1, S] = [", b, ", 1, 1, ", s,
                "] (additive, e.g. (1 - m) * -10000), got ", mask.sizes());
    TORCH_CHECK(mask.device() == input.device(), "transformer layer: attention_mask is on ", mask.device(),
                " but hidden_states is on ", input.device());
  }
}

void check_precision(const DeepSpeedTransformerConfig& c, at::ScalarType dt, const char* who) {
  TORCH_CHECK(!c.fp16 || dt == at::kHalf, who, ": config.fp16 is true but hidden_states is ", dt,
              "; convert the layer and its input to float16 or set fp16 false");
  TORCH_CHECK(!c.bf16 || dt == at::kBFloat16, who, ": config.bf16 is true but hidden_states is ", dt,
              "; convert the layer and its input to bfloat16 or set bf16 false");
  TORCH_CHECK(c.fp16 || c.bf16 || dt == at::kFloat || dt == at::kDouble, who, ": hidden_states is ", dt,
              " but config.fp16 and config.bf16 are false; set the matching flag or use float32");
}

at::Tensor layer_forward(const at::Tensor& input, const at::Tensor& mask, const LayerWeights& w,
                         const LayerSpec& spec, DropoutStream rng, SavedActivations* keep) {
  const bool pre = spec.pre_layer_norm;
  const double eps = spec.layer_norm_eps;
  const int64_t b = input.size(0), s = input.size(1), h = input.size(2), heads = spec.heads, d = h / heads;
  const at::Tensor x = input.contiguous();
  if (keep && spec.normalize_invertible) {
    nn::check_invertible_gamma(w.norm_w, "norm_w");
    nn::check_invertible_gamma(w.attn_nw, "attn_nw");
  }

  LayerNormOutput ln_in;  // pre-LN: the input LayerNorm
  if (pre) ln_in = nn::layer_norm_forward(x, w.norm_w, w.norm_b, eps);
  const at::Tensor& qkv_in = pre ? ln_in.y : x;
  // qkv: [B, S, 3H] -> qkv_tf: [3, B, heads, S, d]
  at::Tensor qkv_tf = (fc(qkv_in, w.attn_qkvw) + w.attn_qkvb)
                          .view({b, s, 3, heads, d})
                          .permute({2, 0, 3, 1, 4})
                          .contiguous();
  const at::Tensor q = qkv_tf[0], k = qkv_tf[1], v = qkv_tf[2];
  // scores: [B, heads, S, S], 1/sqrt(d) applied in the GEMM as DeepSpeed does
  at::Tensor soft_out = nn::attn_softmax_forward(gemm(q, k.transpose(-1, -2), 1.0 / std::sqrt(double(d))), mask);
  nn::DropoutOutput probs = nn::dropout_forward(soft_out, spec.attn_dropout_ratio, rng.seed, rng.offset + 0);
  // context: [B, heads, S, d] -> attn_o_inp: [B, S, H]
  at::Tensor attn_o_inp = gemm(probs.y, v).permute({0, 2, 1, 3}).reshape({b, s, h});
  nn::DropoutOutput add_res = nn::bias_dropout_residual_forward(fc(attn_o_inp, w.attn_ow), w.attn_ob, x,
                                                                spec.hidden_dropout_ratio, rng.seed, rng.offset + 1);
  LayerNormOutput ln_attn = nn::layer_norm_forward(add_res.y, w.attn_nw, w.attn_nb, eps);  // ff1_inp
  at::Tensor gelu_inp = fc(ln_attn.y, w.inter_w);                                      // [B, S, I], no bias yet
  at::Tensor ff2_inp = nn::bias_gelu_forward(gelu_inp, w.inter_b);
  nn::DropoutOutput layer_out =
      nn::bias_dropout_residual_forward(fc(ff2_inp, w.output_w), w.output_b, pre ? add_res.y : ln_attn.y,
                                        spec.hidden_dropout_ratio, rng.seed, rng.offset + 2);
  LayerNormOutput ln_out;  // post-LN: the output LayerNorm
  if (!pre) ln_out = nn::layer_norm_forward(layer_out.y, w.norm_w, w.norm_b, eps);
  at::Tensor output = pre ? layer_out.y : ln_out.y;
  if (!keep) return output;

  // Keep only what backward reads (DeepSpeed's stash, §2.6, minus what its backward never reads:
  // `output` in the other modes and the attention mask).
  const bool inv = spec.normalize_invertible;
  SavedActivations& k_ = *keep;
  k_ = SavedActivations{};
  k_.input = (pre && inv) ? at::Tensor() : x;  // post-LN: the QKV weight gradient reads x
  k_.inp_norm = (!pre && inv) ? at::Tensor() : (pre ? ln_in.y : layer_out.y);
  k_.output = (!pre && inv) ? output : at::Tensor();
  k_.qkv_tf = qkv_tf;
  k_.soft_out = soft_out;
  k_.ctx_bufB = (spec.attn_dropout_checkpoint || spec.attn_dropout_ratio == 0) ? at::Tensor() : probs.y;
  k_.attn_o_inp = attn_o_inp;
  k_.add_res = inv ? at::Tensor() : add_res.y;
  k_.ff1_inp = ln_attn.y;
  k_.gelu_inp = gelu_inp;
  k_.ff2_inp = spec.gelu_checkpoint ? at::Tensor() : ff2_inp;
  k_.attn_prob_dropout_mask = probs.mask;
  k_.attn_output_dropout_mask = add_res.mask;
  k_.layer_output_dropout_mask = layer_out.mask;
  k_.attn_layer_norm_mean = inv ? at::Tensor() : ln_attn.mean;
  k_.attn_layer_norm_var = ln_attn.var;
  const LayerNormOutput& ln_norm = pre ? ln_in : ln_out;
  k_.layer_norm_mean = inv ? at::Tensor() : ln_norm.mean;
  k_.layer_norm_var = ln_norm.var;
  return output;
}

LayerGrads layer_backward(const at::Tensor& grad_output, const LayerWeights& w, const LayerSpec& spec,
                          const SavedActivations& sv) {
  const bool pre = spec.pre_layer_norm;
  const bool inv = spec.normalize_invertible;
  const int64_t b = grad_output.size(0), s = grad_output.size(1), h = grad_output.size(2), heads = spec.heads,
                d = h / heads;
  const at::Tensor g = grad_output.contiguous();
  LayerGrads out;
  LayerWeights& gp = out.params;

  // Gradient of the FFN sublayer's sum (residual + dropout(FF2 out)).
  at::Tensor g_ff_sum = g;
  if (!pre) {
    LayerNormGrads lnf = ln_backward(g, inv, sv.inp_norm, sv.output, w.norm_w, w.norm_b, sv.layer_norm_mean,
                                     sv.layer_norm_var, at::Tensor());
    gp.norm_w = lnf.grad_gamma;
    gp.norm_b = lnf.grad_beta;
    g_ff_sum = lnf.grad_x;
  }
  // FF2: out = residual + dropout(ff2_inp·output_wᵀ + output_b)
  at::Tensor g_ff2_out = nn::dropout_apply(g_ff_sum, sv.layer_output_dropout_mask, spec.hidden_dropout_ratio);
  gp.output_b = bias_grad(g_ff2_out, w.output_b);
  // gelu_checkpoint: the GELU output was not kept; recompute it from the pre-GELU value.
  const at::Tensor ff2_inp = sv.ff2_inp.defined() ? sv.ff2_inp : nn::bias_gelu_forward(sv.gelu_inp, w.inter_b);
  gp.output_w = linear_wgrad(g_ff2_out, ff2_inp);
  // GELU and FF1
  at::Tensor g_gelu = nn::bias_gelu_backward(linear_dgrad(g_ff2_out, w.output_w), sv.gelu_inp, w.inter_b);
  gp.inter_b = bias_grad(g_gelu, w.inter_b);
  gp.inter_w = linear_wgrad(g_gelu, sv.ff1_inp);
  at::Tensor g_ff1 = linear_dgrad(g_gelu, w.inter_w);
  // LN on add_res. Pre-LN: the FFN residual was add_res itself (fused add); post-LN: it was ff1_inp.
  LayerNormGrads ln_attn = pre ? ln_backward(g_ff1, inv, sv.add_res, sv.ff1_inp, w.attn_nw, w.attn_nb,
                                             sv.attn_layer_norm_mean, sv.attn_layer_norm_var, g_ff_sum)
                               : ln_backward(g_ff1 + g_ff_sum, inv, sv.add_res, sv.ff1_inp, w.attn_nw, w.attn_nb,
                                             sv.attn_layer_norm_mean, sv.attn_layer_norm_var, at::Tensor());
  gp.attn_nw = ln_attn.grad_gamma;
  gp.attn_nb = ln_attn.grad_beta;
  const at::Tensor& g_add_res = ln_attn.grad_x;
  // Attention output projection: add_res = x + dropout(attn_o_inp·attn_owᵀ + attn_ob)
  at::Tensor g_attn_out = nn::dropout_apply(g_add_res, sv.attn_output_dropout_mask, spec.hidden_dropout_ratio);
  gp.attn_ob = bias_grad(g_attn_out, w.attn_ob);
  gp.attn_ow = linear_wgrad(g_attn_out, sv.attn_o_inp);
  // g_ctx: [B, heads, S, d]
  at::Tensor g_ctx = linear_dgrad(g_attn_out, w.attn_ow).view({b, s, heads, d}).permute({0, 2, 1, 3});
  const at::Tensor q = sv.qkv_tf[0], k = sv.qkv_tf[1], v = sv.qkv_tf[2];
  // attn_dropout_checkpoint: rebuild the dropped-out probabilities from soft_out and the kept mask.
  const at::Tensor probs = sv.ctx_bufB.defined()
                               ? sv.ctx_bufB
                               : nn::dropout_apply(sv.soft_out, sv.attn_prob_dropout_mask, spec.attn_dropout_ratio);
  at::Tensor g_v = gemm(probs.transpose(-1, -2), g_ctx);
  at::Tensor g_probs = nn::dropout_apply(gemm(g_ctx, v.transpose(-1, -2)), sv.attn_prob_dropout_mask,
                                         spec.attn_dropout_ratio);
  at::Tensor g_scores = nn::softmax_backward(g_probs, sv.soft_out);  // [B, heads, S, S]
  const double scale = 1.0 / std::sqrt(double(d));
  at::Tensor g_q = gemm(g_scores, k, scale);
  at::Tensor g_k = gemm(g_scores.transpose(-1, -2), q, scale);
  // [3, B, heads, S, d] -> [B, S, 3, heads, d] -> [B, S, 3H]
  at::Tensor g_qkv = at::stack({g_q, g_k, g_v}).permute({1, 3, 0, 2, 4}).reshape({b, s, 3 * h});
  gp.attn_qkvb = bias_grad(g_qkv, w.attn_qkvb);
  gp.attn_qkvw = linear_wgrad(g_qkv, pre ? sv.inp_norm : sv.input);
  at::Tensor g_qkv_in = linear_dgrad(g_qkv, w.attn_qkvw);
  if (pre) {
    // Input LN, fused with the attention residual's gradient.
    LayerNormGrads ln_in = ln_backward(g_qkv_in, inv, sv.input, sv.inp_norm, w.norm_w, w.norm_b, sv.layer_norm_mean,
                                       sv.layer_norm_var, g_add_res);
    gp.norm_w = ln_in.grad_gamma;
    gp.norm_b = ln_in.grad_beta;
    out.input = ln_in.grad_x;
  } else {
    out.input = g_qkv_in + g_add_res;
  }
  return out;
}

}  // namespace ds::transformer
