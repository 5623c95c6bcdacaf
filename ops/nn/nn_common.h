// Shared by the ops/nn functions: where an op may run and in which precision it computes.
// Each op is one function that checks its tensors and dispatches on their device: the CPU
// reference now; a CUDA tensor gets a clear error until the kernels of transformer part 2 (issue 12)
// plug in behind the same functions.
#pragma once

#include <ATen/ATen.h>

namespace ds::nn::detail {

// Every tensor argument of an op must be a CPU tensor for now.
inline void check_device(const at::Tensor& t, const char* op, const char* arg) {
  if (!t.defined()) return;
  TORCH_CHECK(!t.is_cuda(), op, ": ", arg, " is a CUDA tensor (", t.device(), ") but the CUDA path of ", op,
              " is not built yet (transformer kernel part 2, issue 12); run it on CPU tensors");
  TORCH_CHECK(t.is_cpu(), op, ": ", arg, " is on device ", t.device(), "; only CPU tensors are supported");
}

// Statistics and reductions accumulate in fp32 for fp32/fp16/bf16 (as the GPU kernels do) and in
// fp64 for fp64, so the float64 reference tests are exact to rounding.
inline at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_floating(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_floating_point(), op, ": ", arg, " must be a floating-point tensor, got ", t.scalar_type());
}

}  // namespace ds::nn::detail
