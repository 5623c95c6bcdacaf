// Shared by the ops/nn functions: where an op may run and in which precision it computes.
// Each op is one function that checks its tensors and dispatches on their device and dtype: CUDA
// tensors of a kernel dtype (float32, float16, bfloat16) go to the CUDA kernels (nn_cuda.h) in
// builds with CUDA; every other case runs the ATen composition written here, on the tensors'
// device (so float64 CUDA tensors, e.g. a GPU reference, run it on the GPU).
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>

#if DS_WITH_CUDA
#include "ops/nn/nn_cuda.h"
#endif

namespace ds::nn::detail {

inline void check_device(const at::Tensor& t, const char* op, const char* arg) {
  if (!t.defined()) return;
#if DS_WITH_CUDA
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), op, ": ", arg, " is on device ", t.device(),
              "; CPU and CUDA tensors are supported");
#else
  TORCH_CHECK(!t.is_cuda(), op, ": ", arg, " is a CUDA tensor (", t.device(),
              ") but this build has no CUDA kernels (the Torch it was built against has no CUDA); run it on CPU "
              "tensors or build against a CUDA LibTorch");
  TORCH_CHECK(t.is_cpu(), op, ": ", arg, " is on device ", t.device(), "; only CPU tensors are supported");
#endif
}

#if DS_WITH_CUDA
// Whether the CUDA kernels run an op: x on the GPU in a kernel dtype and the op's other tensors on
// its device in its dtype (mixed dtypes take the ATen composition).
inline bool cuda_kernels(const at::Tensor& x, std::initializer_list<at::Tensor> others = {}) {
  if (!x.is_cuda() || !cuda::kernel_dtype(x.scalar_type())) return false;
  for (const auto& t : others) {
    if (t.defined() && (t.scalar_type() != x.scalar_type() || t.device() != x.device())) return false;
  }
  return true;
}
#endif

// Statistics and reductions accumulate in fp32 for fp32/fp16/bf16 (as the GPU kernels do) and in
// fp64 for fp64, so the float64 reference tests are exact to rounding.
inline at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_floating(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_floating_point(), op, ": ", arg, " must be a floating-point tensor, got ", t.scalar_type());
}

}  // namespace ds::nn::detail
