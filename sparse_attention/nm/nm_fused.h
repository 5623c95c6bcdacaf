// The fused CUDA path of dynamic N:M attention: the block-sparse flash kernels of
// sparse_attention/fused on a dense (or, causal, lower-triangular) layout of 64-blocks, with the N:M
// selection applied to the score fragments in registers (Params::nm). Forward and backward; the
// backward recomputes the scores and the same selection from the saved log-sum-exp.
#pragma once

#include <torch/types.h>

#include <string>

#include "sparse_attention/nm/nm_attention.h"

namespace ds {

// "" when the fused kernel can run these arguments, else why not (for fallbacks and errors).
std::string nm_fused_unsupported_reason(const at::Tensor& q, const NMOptions& o);

// Differentiable in q, k, v. Requires nm_fused_unsupported_reason(q, o).empty().
at::Tensor nm_fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const NMOptions& o);

}  // namespace ds
