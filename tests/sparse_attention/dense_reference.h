// Dense references for the block-sparse ops: the layout expanded to an element mask, absent blocks
// -inf before softmax (DeepSpeed's test formulation), computed in float64 with plain Torch ops so
// autograd gives the reference gradients. Plus a finite-difference gradient check.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "sparse_attention/blocksparse.h"

namespace ds::test {

// bool [H, R*b, C*b]
inline torch::Tensor element_mask(const torch::Tensor& layout, int64_t block) {
  return layout.ne(0).repeat_interleave(block, 1).repeat_interleave(block, 2);
}

// A random 0/1 layout [H, R, C] where each block is present with probability p (every row keeps at
// least one block unless allow_empty_rows).
inline torch::Tensor random_layout(int64_t H, int64_t R, int64_t C, double p, uint64_t seed,
                                   bool allow_empty_rows = false) {
  torch::manual_seed(static_cast<int64_t>(seed));
  torch::Tensor l = torch::rand({H, R, C}).lt(p).to(torch::kLong);
  if (!allow_empty_rows) {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t r = 0; r < R; ++r) l[h][r][r % C] = 1;
  }
  return l;
}

// The additive form of a mask: 'add' as is, 'mul' 0 -> -inf, else 0.
inline torch::Tensor additive_mask(const torch::Tensor& m, ds::MaskMode mode) {
  if (mode == ds::MaskMode::Add) return m;
  return torch::zeros_like(m).masked_fill(m.eq(0), -std::numeric_limits<double>::infinity());
}

// Softmax over the allowed entries of the last dim; rows with nothing allowed give 0 (our rule).
inline torch::Tensor masked_softmax(const torch::Tensor& scores, const torch::Tensor& allowed) {
  const double inf = std::numeric_limits<double>::infinity();
  torch::Tensor s = scores.masked_fill(allowed.logical_not(), -inf);
  torch::Tensor s_finite = s.isfinite().logical_or(s.gt(0));  // +inf stays as is
  torch::Tensor row_ok = s_finite.any(-1, /*keepdim=*/true);
  torch::Tensor p = torch::softmax(s.masked_fill(row_ok.logical_not(), 0.0), -1);
  return p * row_ok;
}

struct DenseSoftmaxArgs {
  double scale = 1.0;
  torch::Tensor rpe, key_padding_mask, attn_mask;
  ds::MaskMode kp_mode = ds::MaskMode::Add, am_mode = ds::MaskMode::Add;
  bool causal_diagonal = false;  // in diagonal blocks, keys after the query are not allowed
};

// bool [R*b, C*b]: false where the block is on the diagonal and the key comes after the query.
inline torch::Tensor causal_diagonal_allowed(int64_t rows, int64_t cols, int64_t block) {
  torch::Tensor qi = torch::arange(rows).unsqueeze(1), ki = torch::arange(cols).unsqueeze(0);
  return (qi.div(block, "floor") != ki.div(block, "floor")).logical_or(ki <= qi);
}

// x: dense scores [Z, H, M, N]; layout [H, M/b, N/b].
inline torch::Tensor dense_softmax(const torch::Tensor& x, const torch::Tensor& layout, int64_t block,
                                   const DenseSoftmaxArgs& a) {
  torch::Tensor s = x * a.scale;
  if (a.rpe.defined()) s = s + a.rpe;
  if (a.key_padding_mask.defined()) s = s + additive_mask(a.key_padding_mask, a.kp_mode).unsqueeze(1).unsqueeze(1);
  if (a.attn_mask.defined()) s = s + additive_mask(a.attn_mask, a.am_mode);
  torch::Tensor allowed = element_mask(layout, block).unsqueeze(0).expand_as(s);
  if (a.causal_diagonal) allowed = allowed.logical_and(causal_diagonal_allowed(s.size(2), s.size(3), block));
  // An entry that a mask sets to -inf is "not allowed" too.
  allowed = allowed.logical_and(s.ne(-std::numeric_limits<double>::infinity()));
  return masked_softmax(s, allowed);
}

// Dense attention on [Z, H, S, D]; the layout covers ceil(S/b) blocks and is cut to S.
inline torch::Tensor dense_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                     const torch::Tensor& layout, int64_t block, const DenseSoftmaxArgs& a) {
  const int64_t S = q.size(2);
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2));
  torch::Tensor s = scores * a.scale;
  if (a.rpe.defined()) s = s + a.rpe;
  if (a.key_padding_mask.defined()) s = s + additive_mask(a.key_padding_mask, a.kp_mode).unsqueeze(1).unsqueeze(1);
  if (a.attn_mask.defined()) s = s + additive_mask(a.attn_mask, a.am_mode);
  torch::Tensor allowed = element_mask(layout, block).narrow(1, 0, S).narrow(2, 0, S).unsqueeze(0).expand_as(s);
  if (a.causal_diagonal) allowed = allowed.logical_and(causal_diagonal_allowed(S, S, block));
  allowed = allowed.logical_and(s.ne(-std::numeric_limits<double>::infinity()));
  return torch::matmul(masked_softmax(s, allowed), v);
}

// Checks the autograd gradient of <w, f(inputs)> against central differences, element by element
// (inputs float64 and small). Returns the largest |autograd - numeric| / (1 + |numeric|).
inline double gradcheck_error(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& f,
                              std::vector<torch::Tensor> inputs, uint64_t seed = 0, double eps = 1e-6) {
  for (auto& x : inputs) x = x.detach().clone().set_requires_grad(true);
  torch::manual_seed(static_cast<int64_t>(seed));
  torch::Tensor out = f(inputs);
  torch::Tensor w = torch::randn_like(out);
  torch::Tensor loss = (out * w).sum();
  std::vector<torch::Tensor> grads = torch::autograd::grad({loss}, inputs, {}, false, false, true);
  double worst = 0.0;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    torch::Tensor x = inputs[i].detach().clone();
    std::vector<torch::Tensor> args;
    for (auto& in : inputs) args.push_back(in.detach());
    torch::Tensor flat = x.view(-1);
    torch::Tensor g = grads[i].defined() ? grads[i].reshape(-1) : torch::zeros_like(flat);
    for (int64_t j = 0; j < flat.numel(); ++j) {
      const double orig = flat[j].item<double>();
      flat[j] = orig + eps;
      args[i] = x;
      const double up = (f(args) * w).sum().item<double>();
      flat[j] = orig - eps;
      const double down = (f(args) * w).sum().item<double>();
      flat[j] = orig;
      const double numeric = (up - down) / (2 * eps);
      worst = std::max(worst, std::abs(g[j].item<double>() - numeric) / (1.0 + std::abs(numeric)));
    }
  }
  return worst;
}

// Message of a c10::Error without its backtrace.
inline std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace ds::test

// Expects fn to throw exception type T whose message contains `needle`.
#define DS_EXPECT_THROW_MSG(stmt, T, needle)                                                        \
  do {                                                                                              \
    bool ds_thrown_ = false;                                                                        \
    try {                                                                                           \
      stmt;                                                                                         \
    } catch (const T& e) {                                                                          \
      ds_thrown_ = true;                                                                            \
      std::string ds_msg_ = e.what();                                                               \
      EXPECT_NE(ds_msg_.find(needle), std::string::npos) << "message: " << ds_msg_.substr(0, 600);  \
    }                                                                                               \
    EXPECT_TRUE(ds_thrown_) << #stmt " did not throw " #T;                                          \
  } while (0)
