// The layer's fused CUDA path; the dataflow and its contract are in layer_fused.h.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <utility>

#include "ops/common/torch_utils.h"
#include "ops/nn/layer_norm.h"
#include "ops/nn/nn_cuda.h"
#include "ops/nn/nn_kernels.h"
#include "transformer/attention_transform.h"
#include "transformer/layer_fused.h"

namespace ds::transformer {
namespace {

namespace nc = ds::nn::cuda;

struct Dims {
  int64_t b, s, h, heads, d, i, rows;
};

Dims dims_of(const at::Tensor& x, const LayerWeights& w, const LayerSpec& spec) {
  Dims d;
  d.b = x.size(0);
  d.s = x.size(1);
  d.h = x.size(2);
  d.heads = spec.heads;
  d.d = d.h / d.heads;
  d.i = w.inter_w.size(0);
  d.rows = d.b * d.s;
  return d;
}

// x: [rows, K], w: [N, K] (nn.Linear layout) -> [rows, N]
at::Tensor fc(const at::Tensor& x, const at::Tensor& w) { return at::mm(x, w.t()); }
// The input gradient of a linear: g [rows, N], w [N, K] -> [rows, K]
at::Tensor dgrad(const at::Tensor& g, const at::Tensor& w) { return at::mm(g, w); }
// The weight gradient: g [rows, N], a [rows, K] -> [N, K]
at::Tensor wgrad(const at::Tensor& g, const at::Tensor& a) { return at::mm(g.t(), a); }

// Dropout site k of the call (0: attention probabilities, 1: attention output, 2: layer output).
nc::DropoutSpec site(const LayerSpec& spec, DropoutStream rng, uint64_t k) {
  return {k == 0 ? spec.attn_dropout_ratio : spec.hidden_dropout_ratio, rng.seed, rng.offset + k};
}

// qkv [rows, 3H] + bias -> [3, B, heads, S, d]
at::Tensor qkv_transform(const at::Tensor& qkv, const at::Tensor& bias, const Dims& d) {
  at::Tensor out = at::empty({3, d.b, d.heads, d.s, d.d}, qkv.options());
  const at::Tensor b = bias.contiguous();
  kern::QkvTransformParams p;
  p.kind = scalar_kind_of(qkv, "qkv");
  p.batch = d.b;
  p.seq = d.s;
  p.heads = static_cast<int>(d.heads);
  p.head_size = static_cast<int>(d.d);
  p.qkv = qkv.data_ptr();
  p.bias = b.data_ptr();
  p.out = out.data_ptr();
  kern::launch_qkv_bias_transform(p, current_stream());
  return out;
}

// in [a, m, n, k] (contiguous) -> [a, n, m, k]
at::Tensor swap_middle(const at::Tensor& in, int64_t a, int64_t m, int64_t n, int64_t k) {
  at::Tensor out = at::empty({a, n, m, k}, in.options());
  kern::SwapMiddleParams p;
  p.kind = scalar_kind_of(in, "in");
  p.a = a;
  p.m = m;
  p.n = n;
  p.k = static_cast<int>(k);
  p.in = in.data_ptr();
  p.out = out.data_ptr();
  kern::launch_swap_middle(p, current_stream());
  return out;
}

// g_tf [3, B*heads, S, d] -> (g_qkv [rows, 3H], its column sums [3H])
std::pair<at::Tensor, at::Tensor> qkv_grad(const at::Tensor& g_tf, const Dims& d) {
  at::Tensor g = at::empty({d.rows, 3 * d.h}, g_tf.options());
  at::Tensor gb = at::empty({3 * d.h}, g_tf.options());
  at::Tensor ws = at::empty({nn::kern::column_partials_floats(d.rows, static_cast<int>(3 * d.h), 1)},
                            g_tf.options().dtype(at::kFloat));
  kern::QkvGradParams p;
  p.kind = scalar_kind_of(g_tf, "grad");
  p.batch = d.b;
  p.seq = d.s;
  p.heads = static_cast<int>(d.heads);
  p.head_size = static_cast<int>(d.d);
  p.grad_tf = g_tf.data_ptr();
  p.grad_qkv = g.data_ptr();
  p.grad_bias = gb.data_ptr();
  p.workspace = ws.data_ptr<float>();
  kern::launch_qkv_grad_gather(p, current_stream());
  return {g, gb};
}

// A kept [B, S, n] activation as [rows, n].
at::Tensor flat(const at::Tensor& t, int64_t n) { return t.defined() ? t.view({-1, n}) : t; }

}  // namespace

bool fused_path_applies(const at::Tensor& x, const LayerWeights& w, const LayerSpec& spec) {
  if (!spec.fused || !x.is_cuda() || !nc::kernel_dtype(x.scalar_type()) || x.dim() != 3) return false;
  const int64_t h = x.size(2), s = x.size(1), i = w.inter_w.defined() ? w.inter_w.size(0) : 0;
  return nc::row_supported(h) && nc::row_supported(i) && nc::row_supported(3 * h) && nc::attn_softmax_supported(s);
}

at::Tensor layer_forward_fused(const at::Tensor& input, const at::Tensor& mask, const LayerWeights& w,
                               const LayerSpec& spec, DropoutStream rng, SavedActivations* keep) {
  const c10::cuda::CUDAGuard guard(input.device());
  const Dims d = dims_of(input, w, spec);
  const bool pre = spec.pre_layer_norm, inv = spec.normalize_invertible;
  const double eps = spec.layer_norm_eps;
  if (keep && inv) {
    nn::check_invertible_gamma(w.norm_w, "norm_w");
    nn::check_invertible_gamma(w.attn_nw, "attn_nw");
  }
  const at::Tensor x = input.contiguous().view({d.rows, d.h});

  nc::ResidualLnOutput ln_in;  // pre-LN: the input LayerNorm
  if (pre) ln_in = nc::residual_ln_forward(x, {}, {}, {}, w.norm_w, w.norm_b, eps, /*keep_sum=*/false);
  at::Tensor qkv_tf = qkv_transform(fc(pre ? ln_in.ln.y : x, w.attn_qkvw), w.attn_qkvb, d);
  const int64_t bh = d.b * d.heads;
  const at::Tensor q = qkv_tf[0].view({bh, d.s, d.d}), k = qkv_tf[1].view({bh, d.s, d.d}),
                   v = qkv_tf[2].view({bh, d.s, d.d});

  // scores: [B*heads, S, S], 1/sqrt(d) applied in the GEMM as DeepSpeed does; beta 0 ignores the
  // uninitialised buffer.
  at::Tensor scores = at::empty({bh, d.s, d.s}, x.options());
  scores.baddbmm_(q, k.transpose(1, 2), 0.0, 1.0 / std::sqrt(static_cast<double>(d.d)));
  const at::Tensor mask_rows = mask.defined() ? mask.reshape({d.b, d.s}).to(at::kFloat).contiguous() : at::Tensor();
  nc::AttnSoftmaxOutput sm =
      nc::attn_softmax_forward(scores, mask_rows, d.heads * d.s, site(spec, rng, 0), /*in_place=*/true);
  scores.reset();
  at::Tensor ctx = at::bmm(sm.dropped.defined() ? sm.dropped : sm.probs, v);  // [B*heads, S, d]
  if (!keep || spec.attn_dropout_checkpoint) sm.dropped.reset();
  if (!keep) sm.probs.reset();
  at::Tensor attn_o_inp = swap_middle(ctx, d.b, d.heads, d.s, d.d).view({d.rows, d.h});
  ctx.reset();

  // add_res = x + dropout(attn_o_inp·Woᵀ + bo); ff1_inp = LN(add_res). add_res is read again by the
  // pre-LN layer output and, without normalize_invertible, by the backward.
  nc::ResidualLnOutput r1 = nc::residual_ln_forward(fc(attn_o_inp, w.attn_ow), w.attn_ob, x, site(spec, rng, 1),
                                                    w.attn_nw, w.attn_nb, eps, /*keep_sum=*/pre || (keep && !inv));
  at::Tensor gelu_inp = fc(r1.ln.y, w.inter_w);  // [rows, I], no bias yet
  at::Tensor ff2_inp = nc::bias_gelu_forward(gelu_inp, w.inter_b);
  if (!keep) gelu_inp.reset();
  at::Tensor ff2 = fc(ff2_inp, w.output_w);
  if (!keep || spec.gelu_checkpoint) ff2_inp.reset();
  nc::ResidualLnOutput r2 =
      pre ? nc::residual_ln_forward(ff2, w.output_b, r1.sum, site(spec, rng, 2), {}, {}, eps, /*keep_sum=*/true)
          : nc::residual_ln_forward(ff2, w.output_b, r1.ln.y, site(spec, rng, 2), w.norm_w, w.norm_b, eps,
                                    /*keep_sum=*/keep && !inv);
  ff2.reset();
  at::Tensor output = (pre ? r2.sum : r2.ln.y).view({d.b, d.s, d.h});
  if (!keep) return output;

  // The composition's choice of what to keep (layer_core.cpp), tensor for tensor.
  auto bsh = [&](const at::Tensor& t) { return t.defined() ? t.view({d.b, d.s, d.h}) : t; };
  const bool ckpt = spec.attn_dropout_checkpoint || spec.attn_dropout_ratio == 0;
  SavedActivations& k_ = *keep;
  k_ = SavedActivations{};
  k_.input = (pre && inv) ? at::Tensor() : bsh(x);
  k_.inp_norm = (!pre && inv) ? at::Tensor() : (pre ? bsh(ln_in.ln.y) : bsh(r2.sum));
  k_.output = (!pre && inv) ? output : at::Tensor();
  k_.qkv_tf = qkv_tf;
  k_.soft_out = sm.probs.view({d.b, d.heads, d.s, d.s});
  k_.ctx_bufB = ckpt ? at::Tensor() : sm.dropped.view({d.b, d.heads, d.s, d.s});
  k_.attn_o_inp = bsh(attn_o_inp);
  k_.add_res = inv ? at::Tensor() : bsh(r1.sum);
  k_.ff1_inp = bsh(r1.ln.y);
  k_.gelu_inp = gelu_inp.view({d.b, d.s, d.i});
  k_.ff2_inp = spec.gelu_checkpoint ? at::Tensor() : ff2_inp.view({d.b, d.s, d.i});
  k_.attn_prob_dropout_mask = sm.mask;
  k_.attn_output_dropout_mask = r1.mask;
  k_.layer_output_dropout_mask = r2.mask;
  k_.attn_layer_norm_mean = inv ? at::Tensor() : r1.ln.mean;
  k_.attn_layer_norm_var = r1.ln.var;
  const nn::LayerNormOutput& ln_norm = pre ? ln_in.ln : r2.ln;
  k_.layer_norm_mean = inv ? at::Tensor() : ln_norm.mean;
  k_.layer_norm_var = ln_norm.var;
  return output;
}

LayerGrads layer_backward_fused(const at::Tensor& grad_output, const LayerWeights& w, const LayerSpec& spec,
                                const SavedActivations& sv) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const Dims d = dims_of(grad_output, w, spec);
  const bool pre = spec.pre_layer_norm, inv = spec.normalize_invertible;
  const double hr = spec.hidden_dropout_ratio, ar = spec.attn_dropout_ratio;
  const at::Tensor g = grad_output.contiguous().view({d.rows, d.h});
  LayerGrads out;
  LayerWeights& gp = out.params;

  // Post-LN: the output LayerNorm. g_ff_sum: gradient of the FFN sublayer's sum.
  at::Tensor g_ff_sum = g;
  if (!pre) {
    nn::LayerNormGrads lnf =
        inv ? nc::layer_norm_backward(g, {}, {}, {}, flat(sv.output, d.h), w.norm_b, sv.layer_norm_var, w.norm_w, {})
            : nc::layer_norm_backward(g, {}, flat(sv.inp_norm, d.h), sv.layer_norm_mean, {}, {}, sv.layer_norm_var,
                                      w.norm_w, {});
    gp.norm_w = lnf.grad_gamma;
    gp.norm_b = lnf.grad_beta;
    g_ff_sum = lnf.grad_x;
  }
  // FF2: out = residual + dropout(ff2_inp·Woutᵀ + bout); the dropout backward with bout's gradient.
  auto ff2_grads = nc::dropout_apply_colsum(g_ff_sum, sv.layer_output_dropout_mask, hr);
  at::Tensor g_ff2_out = std::move(ff2_grads.first);
  gp.output_b = std::move(ff2_grads.second);
  {
    // gelu_checkpoint: the GELU output was not kept; recompute it from the pre-GELU value.
    const at::Tensor ff2_inp = sv.ff2_inp.defined() ? flat(sv.ff2_inp, d.i)
                                                    : nc::bias_gelu_forward(flat(sv.gelu_inp, d.i), w.inter_b);
    gp.output_w = wgrad(g_ff2_out, ff2_inp);
  }
  // GELU and FF1; the GELU backward runs in place over its input gradient, with bi's gradient.
  auto gelu_grads = nc::bias_gelu_backward(dgrad(g_ff2_out, w.output_w), flat(sv.gelu_inp, d.i), w.inter_b,
                                           /*want_bias_grad=*/true, /*in_place=*/true);
  g_ff2_out.reset();
  gp.inter_b = std::move(gelu_grads.second);
  gp.inter_w = wgrad(gelu_grads.first, flat(sv.ff1_inp, d.h));
  at::Tensor g_ff1 = dgrad(gelu_grads.first, w.inter_w);  // [rows, H]
  gelu_grads.first.reset();

  // LN on add_res. Pre-LN: the FFN residual was add_res itself (added to its gradient); post-LN: it
  // was ff1_inp (a second gradient of the LN output).
  const at::Tensor g_y2 = pre ? at::Tensor() : g_ff_sum, g_res = pre ? g_ff_sum : at::Tensor();
  nn::LayerNormGrads ln_a =
      inv ? nc::layer_norm_backward(g_ff1, g_y2, {}, {}, flat(sv.ff1_inp, d.h), w.attn_nb, sv.attn_layer_norm_var,
                                    w.attn_nw, g_res)
          : nc::layer_norm_backward(g_ff1, g_y2, flat(sv.add_res, d.h), sv.attn_layer_norm_mean, {}, {},
                                    sv.attn_layer_norm_var, w.attn_nw, g_res);
  g_ff1.reset();
  gp.attn_nw = ln_a.grad_gamma;
  gp.attn_nb = ln_a.grad_beta;
  at::Tensor g_add_res = ln_a.grad_x;

  // Attention output projection: add_res = x + dropout(attn_o_inp·Woᵀ + bo).
  auto attn_grads = nc::dropout_apply_colsum(g_add_res, sv.attn_output_dropout_mask, hr);
  gp.attn_ob = std::move(attn_grads.second);
  gp.attn_ow = wgrad(attn_grads.first, flat(sv.attn_o_inp, d.h));
  const int64_t bh = d.b * d.heads;
  // g_ctx: [B*heads, S, d] from [B, S, heads, d]
  at::Tensor g_ctx = swap_middle(dgrad(attn_grads.first, w.attn_ow), d.b, d.s, d.heads, d.d).view({bh, d.s, d.d});
  attn_grads.first.reset();

  const at::Tensor q = sv.qkv_tf[0].view({bh, d.s, d.d}), k = sv.qkv_tf[1].view({bh, d.s, d.d}),
                   v = sv.qkv_tf[2].view({bh, d.s, d.d});
  const at::Tensor soft = sv.soft_out.view({bh, d.s, d.s});
  at::Tensor g_tf = at::empty({3, bh, d.s, d.d}, g.options());  // dQ, dK, dV
  {
    // attn_dropout_checkpoint: rebuild the dropped-out probabilities from soft_out and the mask.
    const at::Tensor probs = sv.ctx_bufB.defined() ? sv.ctx_bufB.view({bh, d.s, d.s})
                             : ar > 0               ? nc::dropout_apply(soft, sv.attn_prob_dropout_mask, ar)
                                                    : soft;
    at::Tensor g_v = g_tf[2];
    at::bmm_out(g_v, probs.transpose(1, 2), g_ctx);
  }
  at::Tensor g_scores = at::bmm(g_ctx, v.transpose(1, 2));  // grad of the dropped probs: [B*heads, S, S]
  g_ctx.reset();
  nc::attn_softmax_backward(g_scores, soft, sv.attn_prob_dropout_mask, ar, /*in_place=*/true);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.d));
  at::Tensor g_q = g_tf[0], g_k = g_tf[1];
  g_q.baddbmm_(g_scores, k, 0.0, scale);
  g_k.baddbmm_(g_scores.transpose(1, 2), q, 0.0, scale);
  g_scores.reset();
  auto qkv_grads = qkv_grad(g_tf, d);  // [rows, 3H] in [B, S, 3, heads, d] order, and bqkv's gradient
  g_tf.reset();
  const at::Tensor& g_qkv = qkv_grads.first;
  gp.attn_qkvb = std::move(qkv_grads.second);
  gp.attn_qkvw = wgrad(g_qkv, pre ? flat(sv.inp_norm, d.h) : flat(sv.input, d.h));
  if (pre) {
    // Input LN, with the attention residual's gradient added.
    const at::Tensor g_in = dgrad(g_qkv, w.attn_qkvw);
    nn::LayerNormGrads ln_i =
        inv ? nc::layer_norm_backward(g_in, {}, {}, {}, flat(sv.inp_norm, d.h), w.norm_b, sv.layer_norm_var,
                                      w.norm_w, g_add_res)
            : nc::layer_norm_backward(g_in, {}, flat(sv.input, d.h), sv.layer_norm_mean, {}, {}, sv.layer_norm_var,
                                      w.norm_w, g_add_res);
    gp.norm_w = ln_i.grad_gamma;
    gp.norm_b = ln_i.grad_beta;
    out.input = ln_i.grad_x.view({d.b, d.s, d.h});
  } else {
    // grad_input = g_add_res + g_qkv·Wqkv, the sum in the GEMM's epilogue (beta 1, in place: g_add_res
    // is this function's own tensor and nothing reads it after this).
    g_add_res.addmm_(g_qkv, w.attn_qkvw);
    out.input = g_add_res.view({d.b, d.s, d.h});
  }
  return out;
}

}  // namespace ds::transformer
