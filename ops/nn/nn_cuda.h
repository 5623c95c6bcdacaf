// The CUDA side of ops/nn, tensor in, tensor out: the Torch boundary of the kernels in nn_kernels.h.
// The public functions (layer_norm.h, dropout.h, gelu.h, softmax.h) call these for CUDA tensors of
// a kernel dtype; the transformer's fused layer calls them directly, including the fused forms
// that have no public counterpart (residual + LayerNorm in one pass, dropout backward with the bias
// gradient, in-place variants). Defined only when DS_WITH_CUDA; callers guard with #if DS_WITH_CUDA.
//
// Tensors: CUDA, one dtype among float32, float16, bfloat16 (kernel_dtype); the last dimension is the
// row (hidden size, FFN size, key length); non-contiguous inputs are made contiguous. Statistics
// (mean, var) are float32 [rows]; masks are packed uint8 (ops/nn/dropout.h); parameter gradients
// come back in the parameter's dtype. All launches on the current stream; nothing synchronises.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>

#include "ops/nn/dropout.h"
#include "ops/nn/layer_norm.h"

namespace ds::nn::cuda {

// The dtypes the kernels are built for; others (float64) take the ATen composition on the GPU.
bool kernel_dtype(at::ScalarType t);
// Whether the row kernels (LayerNorm, bias + dropout + residual, GELU backward) take rows of n.
bool row_supported(int64_t n);

// A dropout site of one call: Philox stream (seed, offset), ratio in [0, 1); ratio 0 = off.
struct DropoutSpec {
  double ratio = 0;
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// sum = residual + dropout(x + bias) and, when gamma is defined, ln = LayerNorm(sum; gamma, beta).
// x, residual: [..., n]; bias, gamma, beta: [n] or undefined. keep_sum false (LN on) returns no
// sum. mask: defined iff drop.ratio > 0. A plain LayerNorm is (x, {}, {}, {}, gamma, beta).
struct ResidualLnOutput {
  at::Tensor sum;
  at::Tensor mask;
  LayerNormOutput ln;
};
ResidualLnOutput residual_ln_forward(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& residual,
                                     const DropoutSpec& drop, const at::Tensor& gamma, const at::Tensor& beta,
                                     double eps, bool keep_sum);

// LayerNorm backward of grad_y (+ grad_y2, a second gradient of the same output, or undefined):
// from (x, mean, var), or invertible from (y, beta, var) when x is undefined. grad_residual
// (optional) is added to grad_x.
LayerNormGrads layer_norm_backward(const at::Tensor& grad_y, const at::Tensor& grad_y2, const at::Tensor& x,
                                   const at::Tensor& mean, const at::Tensor& y, const at::Tensor& beta,
                                   const at::Tensor& var, const at::Tensor& gamma, const at::Tensor& grad_residual);

// (dropout_apply(x, mask, ratio), its column sums over [..., n] in x's dtype, summing the rounded
// values). ratio 0: (x itself, the column sums of x).
std::pair<at::Tensor, at::Tensor> dropout_apply_colsum(const at::Tensor& x, const at::Tensor& mask, double ratio);

at::Tensor make_mask(int64_t numel, double ratio, uint64_t seed, uint64_t offset, at::Device device);
DropoutOutput dropout_forward(const at::Tensor& x, double ratio, uint64_t seed, uint64_t offset);
// x * keep / (1 - ratio) from a stored mask; in_place writes into x's storage (x contiguous).
at::Tensor dropout_apply(const at::Tensor& x, const at::Tensor& mask, double ratio, bool in_place = false);

// gelu(x + bias), tanh form; bias [n] or undefined.
at::Tensor bias_gelu_forward(const at::Tensor& x, const at::Tensor& bias);
// (grad of x + bias, its column sums when want_bias_grad else undefined); in_place reuses grad_y.
std::pair<at::Tensor, at::Tensor> bias_gelu_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                                     const at::Tensor& bias, bool want_bias_grad,
                                                     bool in_place = false);

// softmax(scores + mask) over the last dim, then dropout. scores: [..., cols] with cols <=
// kAttnSoftmaxMaxCols (attn_softmax_supported); mask_rows: float32 [rows / rows_per_batch, cols]
// (row r of the scores adds mask row r / rows_per_batch) or undefined. in_place writes probs over
// scores. dropped and mask are defined iff drop.ratio > 0.
struct AttnSoftmaxOutput {
  at::Tensor probs, dropped, mask;
};
AttnSoftmaxOutput attn_softmax_forward(const at::Tensor& scores, const at::Tensor& mask_rows, int64_t rows_per_batch,
                                       const DropoutSpec& drop, bool in_place);
// grad of the scores from the grad of the dropped probabilities (mask undefined when ratio 0).
at::Tensor attn_softmax_backward(const at::Tensor& grad, const at::Tensor& probs, const at::Tensor& mask,
                                 double ratio, bool in_place);
// Whether the fused softmax kernels take rows of this many scores.
bool attn_softmax_supported(int64_t cols);

}  // namespace ds::nn::cuda
