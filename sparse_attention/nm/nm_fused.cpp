#include "sparse_attention/nm/nm_fused.h"

#include <torch/torch.h>

#include "ops/common/device.h"

namespace ds {

std::string nm_fused_unsupported_reason(const at::Tensor& q, const NMOptions& o) {
  (void)o;
  if (!built_with_cuda()) return "this build has no CUDA kernels";
  if (!q.is_cuda()) return "the inputs are not CUDA tensors";
  if (q.scalar_type() != at::kHalf && q.scalar_type() != at::kBFloat16)
    return std::string("dtype ") + c10::toString(q.scalar_type()) + " (the fused kernel takes float16 or bfloat16)";
  const int64_t D = q.size(3);
  if (D != 32 && D != 64 && D != 128)
    return "head size " + std::to_string(D) + " (the fused kernel takes 32, 64 or 128)";
  return "";
}

#if !DS_WITH_CUDA
at::Tensor nm_fused_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, const NMOptions&) {
  TORCH_CHECK(false, "nm_fused_attention: this build has no CUDA kernels (DS_WITH_CUDA off)");
}
#endif

}  // namespace ds
