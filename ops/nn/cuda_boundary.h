// Helpers shared by the ops/nn Torch boundaries (*_cuda.cpp): tensor checks, raw pointers, the
// dropout site of a spec, workspace. Only included by *_cuda.cpp files (DS_WITH_CUDA builds).
#pragma once

#include <ATen/ATen.h>

#include <climits>
#include <cstdint>

#include "ops/common/torch_utils.h"
#include "ops/nn/nn_cuda.h"
#include "ops/nn/nn_kernels.h"

namespace ds::nn::cuda::detail {

inline kern::DropoutSite site(const DropoutSpec& d) {
  kern::DropoutSite s;
  s.ratio = static_cast<float>(d.ratio);
  s.scale = static_cast<float>(1.0 / (1.0 - d.ratio));  // as the CPU path's keep_scale
  s.seed = d.seed;
  s.offset = d.offset;
  return s;
}

inline void check_ratio(double ratio, const char* op) {
  TORCH_CHECK(ratio >= 0.0 && ratio < 1.0, op, ": dropout ratio must be in [0, 1), got ", ratio);
}

// A CUDA tensor of a kernel dtype, as a contiguous tensor.
inline at::Tensor operand(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  DS_CHECK_CUDA(t, name);
  TORCH_CHECK(kernel_dtype(t.scalar_type()), op, ": ", name, " has dtype ", t.scalar_type(),
              "; the CUDA kernels take float32, float16 or bfloat16");
  return t.contiguous();
}

// An optional operand: undefined stays undefined; else it must match `like`'s dtype and device.
inline at::Tensor optional_operand(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name) {
  if (!t.defined()) return t;
  DS_CHECK_SAME_DEVICE(t, like, name, "x");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " is ", t.scalar_type(), " but x is ",
              like.scalar_type());
  return t.contiguous();
}

inline int row_length(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() >= 1, op, ": x must be [..., n], got a scalar");
  const int64_t n = x.size(-1);
  TORCH_CHECK(n > 0 && kern::row_length_supported(static_cast<int>(std::min<int64_t>(n, INT_MAX))), op,
              ": rows of ", n, " elements are not supported by the CUDA kernels (1 .. 16384)");
  return static_cast<int>(n);
}

inline int64_t rows_of(const at::Tensor& x) { return x.size(-1) == 0 ? 0 : x.numel() / x.size(-1); }

inline const void* cptr(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
inline void* mptr(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

inline at::Tensor float_workspace(int64_t n, const at::Tensor& like) {
  return at::empty({n}, like.options().dtype(at::kFloat));
}

inline at::Tensor mask_bytes(int64_t numel, const at::Tensor& like) {
  return at::empty({dropout_mask_bytes(numel)}, like.options().dtype(at::kByte));
}

}  // namespace ds::nn::cuda::detail
