// Internal: the per-device implementations behind fused_optim.h, called after the lists passed
// validation (same lengths, dtypes, shapes, one device, grads defined).
#pragma once

#include <ATen/ATen.h>

#include "ops/optim/fused_optim.h"

namespace ds::optim_impl {

void adam_cpu(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
              at::TensorList model_copies, const AdamStepArgs& args);
at::Tensor lamb_cpu(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                    at::TensorList model_copies, const LambStepArgs& args);
at::Tensor grad_stats_cpu(at::TensorList grads);

#if DS_WITH_CUDA
void adam_cuda(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
               at::TensorList model_copies, const AdamStepArgs& args);
at::Tensor lamb_cuda(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                     at::TensorList model_copies, const LambStepArgs& args);
at::Tensor grad_stats_cuda(at::TensorList grads);
#endif

// The constants both devices derive from the arguments, computed once, the way DeepSpeed's
// launchers do (bias corrections from the fp32 betas, in double, stored as float).
struct AdamConsts {
  float lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, grad_scale;
  bool adam_w_mode;
};
AdamConsts adam_consts(const AdamStepArgs& a);
struct LambConsts {
  float beta1, beta2, eps, weight_decay, step_size, grad_scale, max_coeff, min_coeff;
  bool eps_inside_sqrt;
};
LambConsts lamb_consts(const LambStepArgs& a);

}  // namespace ds::optim_impl
