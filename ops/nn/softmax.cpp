#include "ops/nn/softmax.h"

#include "ops/nn/nn_common.h"

namespace ds::nn {

at::Tensor attn_softmax_forward(const at::Tensor& scores, const at::Tensor& mask) {
  constexpr const char* op = "attn_softmax_forward";
  detail::check_device(scores, op, "scores");
  detail::check_device(mask, op, "mask");
  detail::check_floating(scores, op, "scores");
  TORCH_CHECK(scores.dim() >= 1 && scores.numel() > 0, op, ": scores must be a non-empty [..., Sq, Sk], got ",
              scores.sizes());
  const auto acc = detail::acc_type(scores.scalar_type());
  auto s = scores.to(acc);
  if (mask.defined()) {
    detail::check_floating(mask, op, "mask");
    bool ok = mask.dim() == scores.dim();
    for (int64_t i = 0; ok && i < mask.dim(); ++i) ok = mask.size(i) == 1 || mask.size(i) == scores.size(i);
    TORCH_CHECK(ok, op, ": mask ", mask.sizes(), " does not broadcast to scores ", scores.sizes(),
                "; an attention mask is [B, 1, 1, S]");
    s = s + mask.to(acc);
  }
  return at::softmax(s, -1).to(scores.scalar_type());
}

at::Tensor softmax_backward(const at::Tensor& grad_probs, const at::Tensor& probs) {
  constexpr const char* op = "softmax_backward";
  detail::check_device(grad_probs, op, "grad_probs");
  detail::check_device(probs, op, "probs");
  TORCH_CHECK(grad_probs.sizes() == probs.sizes(), op, ": grad_probs must have probs' shape ", probs.sizes(), ", got ",
              grad_probs.sizes());
  const auto acc = detail::acc_type(probs.scalar_type());
  auto p = probs.to(acc);
  auto g = grad_probs.to(acc);
  return (p * (g - (g * p).sum(-1, true))).to(probs.scalar_type());
}

}  // namespace ds::nn
