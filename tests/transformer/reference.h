// The plain-ATen reference of one DeepSpeed transformer layer (deepspeed-behaviour.md §2.5), with
// autograd, for the tests: the dataflow written independently of transformer/layer_core.cpp
// (at::layer_norm, at::linear, torch::softmax, a tanh-GELU composition), taking the dropout keep
// masks as bool tensors so both sides drop the same elements.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "ops/nn/dropout.h"
#include "transformer/layer_core.h"

namespace ds::test {

struct RefMasks {
  torch::Tensor attn, attn_out, layer_out;  // bool, or undefined = no dropout
};

// The masks the layer draws for one call at (seed, offset) (site k at offset + k).
inline RefMasks layer_masks(int64_t b, int64_t s, int64_t h, int64_t heads, double attn_p, double hidden_p,
                            uint64_t seed, uint64_t offset) {
  RefMasks m;
  auto make = [&](double p, uint64_t site, std::vector<int64_t> shape) {
    if (p == 0) return torch::Tensor();
    const int64_t n = c10::multiply_integers(shape);
    return ds::nn::dropout_mask_unpack(ds::nn::dropout_make_mask(n, p, seed, offset + site), shape);
  };
  m.attn = make(attn_p, 0, {b, heads, s, s});
  m.attn_out = make(hidden_p, 1, {b, s, h});
  m.layer_out = make(hidden_p, 2, {b, s, h});
  return m;
}

// p: the 12 parameters in DeepSpeed's order.
inline torch::Tensor reference_layer(const torch::Tensor& x, const torch::Tensor& mask,
                                     const std::vector<torch::Tensor>& p, int64_t heads, bool pre_ln, double eps,
                                     double attn_p, double hidden_p, const RefMasks& m) {
  const auto &qkvw = p[0], &qkvb = p[1], &ow = p[2], &ob = p[3], &anw = p[4], &anb = p[5], &iw = p[6], &ib = p[7],
             &outw = p[8], &outb = p[9], &nw = p[10], &nb = p[11];
  const int64_t b = x.size(0), s = x.size(1), h = x.size(2), d = h / heads;
  auto ln = [&](const torch::Tensor& t, const torch::Tensor& w, const torch::Tensor& bb) {
    return at::layer_norm(t, {h}, w, bb, eps);
  };
  auto gelu = [](const torch::Tensor& z) {
    return 0.5 * z * (1 + torch::tanh(0.7978845608028654 /* sqrt(2/pi) */ * (z + 0.044715 * z * z * z)));
  };
  auto drop = [](const torch::Tensor& t, const torch::Tensor& keep, double ratio) {
    return keep.defined() ? t * keep.to(t.scalar_type()) / (1 - ratio) : t;
  };
  auto a_in = pre_ln ? ln(x, nw, nb) : x;
  auto qkv = at::linear(a_in, qkvw, qkvb).view({b, s, 3, heads, d});
  auto q = qkv.select(2, 0).transpose(1, 2), k = qkv.select(2, 1).transpose(1, 2), v = qkv.select(2, 2).transpose(1, 2);
  auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(double(d));
  if (mask.defined()) scores = scores + mask;
  auto probs = drop(torch::softmax(scores, -1), m.attn, attn_p);
  auto ctx = torch::matmul(probs, v).transpose(1, 2).reshape({b, s, h});
  auto add_res = x + drop(at::linear(ctx, ow, ob), m.attn_out, hidden_p);
  auto ff1 = ln(add_res, anw, anb);
  auto ff = drop(at::linear(gelu(at::linear(ff1, iw, ib)), outw, outb), m.layer_out, hidden_p);
  return pre_ln ? add_res + ff : ln(ff1 + ff, nw, nb);
}

// Random parameters with O(1) activations (so GELU and LayerNorm are far from linear): weights
// N(0, 1/sqrt(fan_in)), biases N(0, 0.1), LayerNorm weights 1 + N(0, 0.1) (never 0), biases N(0, 0.1).
inline std::vector<torch::Tensor> random_params(int64_t h, int64_t i, torch::ScalarType dt = torch::kDouble) {
  auto w = [&](int64_t o, int64_t in) { return torch::randn({o, in}, torch::kDouble) / std::sqrt(double(in)); };
  auto v = [&](int64_t n, double c) { return c + 0.1 * torch::randn({n}, torch::kDouble); };
  std::vector<torch::Tensor> p = {w(3 * h, h), v(3 * h, 0), w(h, h), v(h, 0), v(h, 1), v(h, 0),
                                  w(i, h),     v(i, 0),     w(h, i), v(h, 0), v(h, 1), v(h, 0)};
  for (auto& t : p) t = t.to(dt);
  return p;
}

// A BERT-style additive mask [B, 1, 1, S]: the last `pad` keys of every other sequence masked out.
inline torch::Tensor bert_mask(int64_t b, int64_t s, int64_t pad, torch::ScalarType dt = torch::kDouble) {
  auto m = torch::zeros({b, 1, 1, s}, torch::kDouble);
  for (int64_t i = 1; i < b; i += 2)
    m.index_put_({i, 0, 0, torch::indexing::Slice(s - pad, torch::indexing::None)}, -10000.0);
  return m.to(dt);
}

}  // namespace ds::test
