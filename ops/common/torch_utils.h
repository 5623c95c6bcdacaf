// The Torch side of the boundary: tensor checks with the offending values in the message, the
// mapping from Torch dtypes to ScalarKind, and (CUDA builds) the current stream.
#pragma once

#include <torch/types.h>

#include <string>

#include "ops/common/scalar_kind.h"

#if DS_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ds {

inline ScalarKind scalar_kind_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return ScalarKind::F32;
    case at::kHalf: return ScalarKind::F16;
    case at::kBFloat16: return ScalarKind::BF16;
    default: break;
  }
  TORCH_CHECK(false, name, ": dtype ", t.scalar_type(), " is not supported; use float32, float16 or bfloat16");
}

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

#if DS_WITH_CUDA
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
#endif

}  // namespace ds

// Torch-boundary checks (throw c10::Error with the argument's name and the values involved).
#define DS_CHECK_CUDA(t, name) TORCH_CHECK((t).is_cuda(), name, " must be a CUDA tensor, got ", (t).device())
#define DS_CHECK_CONTIGUOUS(t, name) TORCH_CHECK((t).is_contiguous(), name, " must be contiguous (strides ", (t).strides(), ")")
#define DS_CHECK_SAME_DEVICE(a, b, na, nb) \
  TORCH_CHECK((a).device() == (b).device(), na, " and ", nb, " must be on the same device; got ", (a).device(), " and ", (b).device())
#define DS_CHECK_SAME_DTYPE(a, b, na, nb) \
  TORCH_CHECK((a).scalar_type() == (b).scalar_type(), na, " and ", nb, " must have the same dtype; got ", (a).scalar_type(), " and ", (b).scalar_type())
#define DS_CHECK_SHAPE(t, name, ...)                                                                  \
  TORCH_CHECK((t).sizes() == at::IntArrayRef({__VA_ARGS__}), name, " must have shape ", at::IntArrayRef({__VA_ARGS__}), \
              ", got ", (t).sizes())
