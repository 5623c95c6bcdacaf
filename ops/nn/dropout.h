// Dropout with counter-based (Philox) randomness and compact masks.
//   keep(i) = philox_uniform(draw i of stream (seed, offset)) > ratio   (ops/nn/philox.h)
//   y = x * keep / (1 - ratio)
// Masks are bit-packed uint8 [ceil(numel / 8)] (1 bit per element; DeepSpeed keeps 1 byte), and
// any device regenerates the same mask from (seed, offset), so CPU and CUDA paths can be compared
// with dropout on. A ratio of 0 means identity: no mask is made (an undefined tensor).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace ds::nn {

struct DropoutOutput {
  at::Tensor y;     // like x
  at::Tensor mask;  // uint8 [dropout_mask_bytes(x.numel())]; undefined when ratio == 0
};

int64_t dropout_mask_bytes(int64_t numel);

// The packed keep mask of `numel` elements of stream (seed, offset). ratio in [0, 1).
at::Tensor dropout_make_mask(int64_t numel, double ratio, uint64_t seed, uint64_t offset, at::Device device = at::kCPU);

// A packed mask as bool, shaped `sizes` (tests and the CPU path; never kept for backward).
at::Tensor dropout_mask_unpack(const at::Tensor& mask, at::IntArrayRef sizes);

// y = dropout(x) with a fresh mask from (seed, offset).
DropoutOutput dropout_forward(const at::Tensor& x, double ratio, uint64_t seed, uint64_t offset);

// x * keep / (1 - ratio) with a stored mask: the dropout backward (x = grad_y), and the
// recomputation of dropped-out values from the mask (attn_dropout_checkpoint). ratio 0: x itself.
at::Tensor dropout_apply(const at::Tensor& x, const at::Tensor& mask, double ratio);

// out = residual + dropout(x + bias): the epilogue of both sublayers. x, residual: [..., H];
// bias: [H] or undefined. Sums in fp32 (fp64 for fp64), out in x's dtype.
DropoutOutput bias_dropout_residual_forward(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& residual,
                                            double ratio, uint64_t seed, uint64_t offset);

}  // namespace ds::nn
