// Attention softmax (DeepSpeed's softmax_kernels.cu): probs = softmax(scores + mask) over the last
// dim, math in fp32 (fp64 for fp64), probs in scores' dtype; the backward needs the output only.
#pragma once

#include <ATen/ATen.h>

namespace ds::nn {

// scores: [..., Sq, Sk] (the layer passes [B, heads, S, S], already scaled by 1/sqrt(d));
// mask: additive, with scores' rank and each dim 1 or equal to scores' ([B, 1, 1, Sk] as BERT's
// (1 - m) * -10000), or undefined.
at::Tensor attn_softmax_forward(const at::Tensor& scores, const at::Tensor& mask);

// grad_scores = probs * (grad_probs - sum(grad_probs * probs, last dim)).
at::Tensor softmax_backward(const at::Tensor& grad_probs, const at::Tensor& probs);

}  // namespace ds::nn
