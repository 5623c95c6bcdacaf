// The layer's fused CUDA path (transformer kernel part 2): the contract of layer_forward /
// layer_backward (layer_core.h) for CUDA tensors, built from cuBLAS GEMMs (through ATen) and the
// fused kernels of ops/nn (nn_cuda.h) and transformer/attention_transform.h. Defined only in builds
// with CUDA (layer_fused_cuda.cpp); layer_core.cpp dispatches here when fused_path_applies.
//
// Dataflow of one forward (kernels in brackets; GEMMs accumulate in fp32, round once to the dtype):
//   [LN]                      pre-LN: inp_norm = LN(x)                        (one block per row)
//   GEMM + [bias, transform]  qkv_tf [3, B, heads, S, d] = split(inp_norm·Wqkvᵀ + bqkv)
//   batched GEMM, alpha=1/√d  scores [B*heads, S, S] = Q·Kᵀ/√d
//   [softmax+mask+dropout]    soft_out (in place over the scores), ctx_bufB = dropout(soft_out), mask
//   batched GEMM + [swap]     attn_o_inp [B*S, H] = (ctx_bufB·V) as [B, S, heads, d]
//   GEMM + [bias, dropout, residual, LN]   add_res, ff1_inp, mask, LN statistics
//   GEMM + [bias, GELU]       gelu_inp = ff1_inp·Wiᵀ, ff2_inp = gelu(gelu_inp + bi)
//   GEMM + [bias, dropout, residual (, LN)]  pre-LN: out; post-LN: inp_norm, out = LN(inp_norm)
// The backward mirrors it with the dropout backward fused with each bias gradient, the GELU backward
// with the FF1 bias gradient, the LayerNorm backward with the residual gradient, the softmax
// backward with the attention-dropout backward, and the QKV gradient's gather with its bias
// gradient. What is kept for backward is exactly the composition's (SavedActivations per flag), so
// the saved-bytes measurement and the memory flags mean the same on both paths.
#pragma once

#include <ATen/ATen.h>

#include "transformer/layer_core.h"

namespace ds::transformer {

// CUDA tensors of a kernel dtype (float32, float16, bfloat16), spec.fused, hidden and FFN sizes the
// row kernels hold (<= 16384) and sequences the softmax kernel holds (<= 2048); other CUDA calls
// take the composition of ops/nn functions on the GPU.
bool fused_path_applies(const at::Tensor& x, const LayerWeights& w, const LayerSpec& spec);

at::Tensor layer_forward_fused(const at::Tensor& input, const at::Tensor& mask, const LayerWeights& w,
                               const LayerSpec& spec, DropoutStream rng, SavedActivations* keep);

LayerGrads layer_backward_fused(const at::Tensor& grad_output, const LayerWeights& w, const LayerSpec& spec,
                                const SavedActivations& saved);

}  // namespace ds::transformer
