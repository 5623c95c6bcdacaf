// The CUDA kernels of ops/nn behind plain params structs (no Torch header): raw pointers, sizes,
// ScalarKind. The Torch boundaries (*_cuda.cpp) fill these and call the launchers, which pick the
// template instantiation once (dtype, vector width, registers per thread), launch on the given
// stream and check the launch. Every kernel computes in fp32 and stores in the tensor's dtype.
//
// Layouts: row-major [rows, n] for the row kernels; dropout masks are bit-packed in ops/nn/philox.h's
// layout over the flat element index of the tensor a site drops (so bit-identical to the CPU path's
// masks for the same (seed, offset)).
//
// Determinism: no atomics. Column sums (bias, gamma, beta gradients) are per-block partials over a
// fixed row partition (row_groups(rows), a function of the shape only) reduced in a fixed order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ops/common/scalar_kind.h"

namespace ds::nn::kern {

// One dropout site: element e of the site's tensor is kept iff philox_uniform(draw e of stream
// (seed, offset)) > ratio; kept values are multiplied by scale.
struct DropoutSite {
  float ratio = 0.f;  // 0: no dropout
  float scale = 1.f;  // float(1 / (1 - ratio)), rounded once on the host as the CPU path does
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// sum = residual + dropout(x + bias), rounded to the dtype; then, when gamma is set, the LayerNorm
// of that rounded sum: y = (sum - mean) * rsqrt(var) * gamma + beta with var = mean((sum-mean)^2) + eps.
// A plain LayerNorm is x alone (no bias, residual or dropout). One block per row.
struct ResidualLnParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t rows = 0;
  int n = 0;                       // row length
  const void* x = nullptr;         // [rows, n]
  const void* bias = nullptr;      // [n] or null
  const void* residual = nullptr;  // [rows, n] or null
  DropoutSite drop;
  uint8_t* mask = nullptr;  // packed keep bits of the rows * n elements; written iff drop.ratio > 0
  void* sum = nullptr;      // [rows, n], or null when only the LayerNorm output is wanted
  const void* gamma = nullptr;  // [n]; null: no LayerNorm
  const void* beta = nullptr;   // [n]
  float eps = 0.f;
  void* y = nullptr;        // [rows, n]
  float* mean = nullptr;    // [rows] or null
  float* var = nullptr;     // [rows], includes eps
};
void launch_residual_ln_forward(const ResidualLnParams& p, cudaStream_t stream);

// LayerNorm backward. Normal form from (x, mean, var); invertible form (x == nullptr) from
// (y, beta, var) with x_hat = (y - beta) / gamma. grad = grad_y (+ grad_y2); grad_x = the LayerNorm
// input gradient (+ grad_residual); grad_gamma = sum_rows grad * x_hat, grad_beta = sum_rows grad.
struct LnBackwardParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t rows = 0;
  int n = 0;
  const void* grad_y = nullptr;         // [rows, n]
  const void* grad_y2 = nullptr;        // [rows, n] or null
  const void* x = nullptr;              // [rows, n]; null selects the invertible form
  const float* mean = nullptr;          // [rows] (normal form)
  const void* y = nullptr;              // [rows, n] (invertible form)
  const void* beta = nullptr;           // [n] (invertible form)
  const float* var = nullptr;           // [rows], includes eps
  const void* gamma = nullptr;          // [n]
  const void* grad_residual = nullptr;  // [rows, n] or null
  void* grad_x = nullptr;               // [rows, n]
  void* grad_gamma = nullptr;           // [n]
  void* grad_beta = nullptr;            // [n]
  float* workspace = nullptr;           // column_partials_floats(rows, n, 2) floats
};
void launch_ln_backward(const LnBackwardParams& p, cudaStream_t stream);

// y = x * keep * scale (the dropout backward, or x itself without a mask) and its column sums:
// the bias gradient of a linear whose output was dropped out. The sums add the rounded y.
struct DropoutColsumParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t rows = 0;
  int n = 0;
  const void* x = nullptr;        // [rows, n]
  const uint8_t* mask = nullptr;  // packed keep bits, or null: y = x
  float scale = 1.f;
  void* y = nullptr;        // [rows, n], written when mask is set (else y is x); or null: only the sums
  void* colsum = nullptr;   // [n]
  float* workspace = nullptr;  // column_partials_floats(rows, n, 1)
};
void launch_dropout_colsum(const DropoutColsumParams& p, cudaStream_t stream);

// y = gelu(x + bias), tanh approximation (ops/nn/gelu.h).
struct BiasGeluParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t rows = 0;
  int n = 0;
  const void* x = nullptr;     // [rows, n]
  const void* bias = nullptr;  // [n] or null
  void* y = nullptr;           // [rows, n]; may be x
};
void launch_bias_gelu_forward(const BiasGeluParams& p, cudaStream_t stream);

// grad_x = grad_y * gelu'(x + bias), and (grad_bias set) its column sums.
struct BiasGeluBackwardParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t rows = 0;
  int n = 0;
  const void* grad_y = nullptr;  // [rows, n]
  const void* x = nullptr;       // [rows, n]
  const void* bias = nullptr;    // [n] or null
  void* grad_x = nullptr;        // [rows, n]; may be grad_y
  void* grad_bias = nullptr;     // [n] or null
  float* workspace = nullptr;    // column_partials_floats(rows, n, 1) when grad_bias is set
};
void launch_bias_gelu_backward(const BiasGeluBackwardParams& p, cudaStream_t stream);

// Attention softmax over rows of `cols` scores (one warp per row): probs = softmax(scores + mask),
// with the additive mask row (row / rows_per_batch) of [batches, cols]; then, when dropped is set,
// dropped = probs_rounded * keep * scale and the packed mask of the rows * cols elements.
struct AttnSoftmaxParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t rows = 0;
  int cols = 0;
  int64_t rows_per_batch = 1;  // rows sharing one mask row (heads * query length)
  const float* mask = nullptr; // [rows / rows_per_batch, cols] or null
  const void* scores = nullptr;  // [rows, cols]
  void* probs = nullptr;         // [rows, cols]; may be scores
  void* dropped = nullptr;       // [rows, cols] or null (no dropout)
  uint8_t* mask_bits = nullptr;  // written when dropped is set
  DropoutSite drop;
};
void launch_attn_softmax_forward(const AttnSoftmaxParams& p, cudaStream_t stream);

// grad_scores = probs * (gd - sum(gd * probs)), gd = grad * keep * scale (grad: of the dropped
// probabilities; no mask: gd = grad).
struct AttnSoftmaxBackwardParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t rows = 0;
  int cols = 0;
  const void* grad = nullptr;          // [rows, cols]
  const void* probs = nullptr;         // [rows, cols] softmax output
  const uint8_t* mask_bits = nullptr;  // or null
  float scale = 1.f;
  void* grad_scores = nullptr;  // [rows, cols]; may be grad
};
void launch_attn_softmax_backward(const AttnSoftmaxBackwardParams& p, cudaStream_t stream);
// The longest row the softmax kernels hold in registers; longer rows take the ATen path.
constexpr int kAttnSoftmaxMaxCols = 2048;

// Flat dropout over numel elements: the mask from the site (mask_in null) or a stored one, written
// to mask_out when set; y = x * keep * scale when x is set.
struct DropoutFlatParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t numel = 0;
  const void* x = nullptr;           // or null: the mask only
  const uint8_t* mask_in = nullptr;  // or null: drawn from drop
  uint8_t* mask_out = nullptr;       // or null
  DropoutSite drop;                  // ratio/seed/offset to draw; scale always
  void* y = nullptr;                 // like x; may be x
};
void launch_dropout_flat(const DropoutFlatParams& p, cudaStream_t stream);

// Column sums by row groups (shared by the backward kernels here and in transformer/): a kernel
// that owns rows g, g + groups, ... writes its per-column partial sums to partial[g * n + col];
// launch_column_reduce adds the `groups` partials in a fixed order and stores [n] in `kind`.
int64_t row_groups(int64_t rows);
int64_t column_partials_floats(int64_t rows, int n, int arrays);
void launch_column_reduce(ScalarKind kind, const float* partial, int64_t groups, int n, void* out,
                          cudaStream_t stream);

// Whether the row kernels take rows of n elements (n up to 16384).
bool row_length_supported(int n);

}  // namespace ds::nn::kern
