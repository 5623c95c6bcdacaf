// Multi-tensor optimizer updates and gradient statistics: one call updates a whole parameter
// group. CPU tensors run the reference loops (optim_cpu.cpp); CUDA tensors run the fused chunked
// kernels (fused_adam.cu, fused_lamb.cu, grad_stats.cu). Both follow DeepSpeed's FusedAdam /
// FusedLamb math in fp32, in the same operation order, so CPU and GPU agree to rounding.
//
// Tensor contract (checked, errors name the list and index):
//  - params, exp_avg, exp_avg_sq: float32, contiguous, on one device, params[i] shape == state shapes.
//  - grads: one floating dtype for the whole call (float32, float16 or bfloat16), same numel as the
//    param; contiguous or not (non-contiguous ones are copied). They are multiplied by grad_scale
//    before use, which is how the engine folds loss unscaling and clipping into the update.
//  - model_copies: empty, or one float16/bfloat16 contiguous tensor per param that receives the
//    updated fp32 param rounded to nearest (the model weights of fp16/bf16 training).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace ds {

struct AdamStepArgs {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool bias_correction = true;
  bool adam_w_mode = true;     // true: decoupled decay (AdamW); false: L2 decay added to the gradient
  int64_t step = 1;            // 1-based step of this update (bias correction)
  double grad_scale = 1.0;
};

void fused_adam_step(at::TensorList grads, at::TensorList params, at::TensorList exp_avg,
                     at::TensorList exp_avg_sq, at::TensorList model_copies, const AdamStepArgs& args);

struct LambStepArgs {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool bias_correction = true;
  bool eps_inside_sqrt = false;
  double max_coeff = 10.0, min_coeff = 0.01;
  int64_t step = 1;
  double grad_scale = 1.0;
};

// Returns the trust ratio applied to each param: float32 [params.size()] on the params' device.
at::Tensor fused_lamb_step(at::TensorList grads, at::TensorList params, at::TensorList exp_avg,
                           at::TensorList exp_avg_sq, at::TensorList model_copies, const LambStepArgs& args);

// {sum of squares, number of non-finite elements} over all grads as float64 [2] on their device
// (CPU when the list is empty). Undefined tensors are skipped; dtypes may be mixed.
at::Tensor grad_stats(at::TensorList grads);

}  // namespace ds
