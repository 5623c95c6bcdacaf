// LayerNorm over the last dimension, DeepSpeed's normalize_kernels.cu semantics:
//   mean = mean(x), var = mean((x - mean)^2) + eps   (the stored var INCLUDES eps),
//   y = (x - mean) * rsqrt(var) * gamma + beta,
// statistics in fp32 (fp64 for fp64 inputs), y in x's dtype.
// Two backward forms: from the input x and (mean, var), and the invertible one (DeepSpeed's
// normalize_invertible) that rebuilds x_hat = (y - beta) / gamma from the output, so the input
// need not be kept; it needs every gamma entry non-zero and checks it.
#pragma once

#include <ATen/ATen.h>

namespace ds::nn {

struct LayerNormOutput {
  at::Tensor y;     // like x
  at::Tensor mean;  // [rows] fp32 (fp64 for fp64 x); rows = x.numel() / H
  at::Tensor var;   // [rows], includes eps
};

struct LayerNormGrads {
  at::Tensor grad_x;      // like x
  at::Tensor grad_gamma;  // [H], gamma's dtype
  at::Tensor grad_beta;   // [H], gamma's dtype
};

// x: [..., H]; gamma, beta: [H].
LayerNormOutput layer_norm_forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, double eps);

// grad_residual (optional, shaped like x) is added to grad_x: the residual branch that meets the
// LayerNorm input (DeepSpeed's BackwardFusedAdd).
LayerNormGrads layer_norm_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& gamma,
                                   const at::Tensor& mean, const at::Tensor& var, const at::Tensor& grad_residual = {});

// The same gradients from the output y, gamma, beta and var (no input, no mean).
LayerNormGrads layer_norm_backward_invertible(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& gamma,
                                              const at::Tensor& beta, const at::Tensor& var,
                                              const at::Tensor& grad_residual = {});

// Throws (naming `what`) if any gamma entry is 0: the invertible backward divides by gamma.
void check_invertible_gamma(const at::Tensor& gamma, const char* what);

}  // namespace ds::nn
