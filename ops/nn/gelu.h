// GELU, tanh approximation (DeepSpeed's gelu_kernels.cu; not the erf form), fused with the bias add
// of the FF1 GEMM:  y = gelu(x + bias),  gelu(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))).
// Computed in fp32 (fp64 for fp64), stored in x's dtype.
#pragma once

#include <ATen/ATen.h>

namespace ds::nn {

// x: [..., I]; bias: [I] or undefined (no bias).
at::Tensor bias_gelu_forward(const at::Tensor& x, const at::Tensor& bias);

// grad of (x + bias): grad_y * gelu'(x + bias), shaped like x. The bias gradient is its sum over rows.
at::Tensor bias_gelu_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& bias);

}  // namespace ds::nn
