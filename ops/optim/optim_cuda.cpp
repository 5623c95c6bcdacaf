// Torch boundary of the fused optimizer kernels: lists validated by fused_optim.cpp become raw
// pointer tables, scratch comes from Torch's caching allocator, launches go on the current stream.
#include <ATen/ATen.h>

#include <map>
#include <vector>

#include "ops/common/torch_utils.h"
#include "ops/optim/optim_impl.h"
#include "ops/optim/optim_kernels.h"

namespace ds::optim_impl {
namespace {

using optim_kernels::TensorLists;

// Gradients may be non-contiguous (they are read only): keep contiguous copies alive for the call.
std::vector<at::Tensor> contiguous_all(at::TensorList ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

TensorLists make_lists(std::initializer_list<at::TensorList> lists) {
  TensorLists l;
  l.depth = static_cast<int>(lists.size());
  int d = 0;
  for (const auto& list : lists) {
    for (const auto& t : list) {
      l.ptrs[d].push_back(t.data_ptr());
      if (d == 0) l.sizes.push_back(t.numel());
    }
    ++d;
  }
  return l;
}

}  // namespace

void adam_cuda(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
               at::TensorList model_copies, const AdamStepArgs& args) {
  const c10::cuda::CUDAGuard guard(params[0].device());
  const std::vector<at::Tensor> g = contiguous_all(grads);
  const AdamConsts c = adam_consts(args);
  optim_kernels::AdamParams p;
  p.lr = c.lr;
  p.beta1 = c.beta1;
  p.beta2 = c.beta2;
  p.eps = c.eps;
  p.weight_decay = c.weight_decay;
  p.bias_correction1 = c.bias_correction1;
  p.bias_correction2 = c.bias_correction2;
  p.grad_scale = c.grad_scale;
  p.adam_w_mode = c.adam_w_mode;
  p.grad_kind = scalar_kind_of(g[0], "grads");
  p.write_model_copy = !model_copies.empty();
  if (p.write_model_copy) {
    p.model_kind = scalar_kind_of(model_copies[0], "model_copies");
    optim_kernels::launch_fused_adam(make_lists({g, params, exp_avg, exp_avg_sq, model_copies}), p, current_stream());
  } else {
    optim_kernels::launch_fused_adam(make_lists({g, params, exp_avg, exp_avg_sq}), p, current_stream());
  }
}

at::Tensor lamb_cuda(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                     at::TensorList model_copies, const LambStepArgs& args) {
  const c10::cuda::CUDAGuard guard(params[0].device());
  const std::vector<at::Tensor> g = contiguous_all(grads);
  const LambConsts c = lamb_consts(args);
  const TensorLists phase1 = make_lists({g, params, exp_avg, exp_avg_sq});
  const TensorLists phase3 = model_copies.empty() ? make_lists({params, exp_avg, exp_avg_sq})
                                                  : make_lists({params, exp_avg, exp_avg_sq, model_copies});
  const int64_t n = phase1.num_tensors();
  const auto fopts = params[0].options().dtype(at::kFloat);
  at::Tensor scratch = at::zeros({2, n, optim_kernels::max_chunks_per_tensor(phase1)}, fopts);
  at::Tensor coeffs = at::empty({n}, fopts);
  optim_kernels::LambParams p;
  p.beta1 = c.beta1;
  p.beta2 = c.beta2;
  p.eps = c.eps;
  p.weight_decay = c.weight_decay;
  p.step_size = c.step_size;
  p.grad_scale = c.grad_scale;
  p.max_coeff = c.max_coeff;
  p.min_coeff = c.min_coeff;
  p.eps_inside_sqrt = c.eps_inside_sqrt;
  p.grad_kind = scalar_kind_of(g[0], "grads");
  p.write_model_copy = !model_copies.empty();
  if (p.write_model_copy) p.model_kind = scalar_kind_of(model_copies[0], "model_copies");
  p.scratch = scratch.data_ptr<float>();
  p.coeffs = coeffs.data_ptr<float>();
  optim_kernels::launch_fused_lamb(phase1, phase3, p, current_stream());
  return coeffs;
}

at::Tensor grad_stats_cuda(at::TensorList grads) {
  // One launch per gradient dtype (an fp16 model with fp32 buffers' grads may mix them).
  std::map<at::ScalarType, std::vector<at::Tensor>> by_dtype;
  at::Device dev(at::kCUDA);
  for (const auto& t : grads) {
    if (!t.defined()) continue;
    by_dtype[t.scalar_type()].push_back(t.contiguous());
    dev = t.device();
  }
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor total = at::zeros({2}, at::TensorOptions().device(dev).dtype(at::kDouble));
  for (const auto& [dtype, list] : by_dtype) {
    const TensorLists l = make_lists({list});
    at::Tensor partials =
        at::zeros({2, l.num_tensors(), optim_kernels::max_chunks_per_tensor(l)}, total.options().dtype(at::kFloat));
    at::Tensor out = at::empty({2}, total.options());
    optim_kernels::launch_grad_stats(l, scalar_kind_of(list[0], "grads"), partials.data_ptr<float>(),
                                     out.data_ptr<double>(), current_stream());
    total.add_(out);
  }
  return total;
}

}  // namespace ds::optim_impl
