#include "ops/common/device.h"

#include <torch/cuda.h>

namespace ds {

bool built_with_cuda() {
#if DS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_device_available() { return built_with_cuda() && torch::cuda::is_available(); }

std::string cuda_unavailable_reason() {
  if (!built_with_cuda()) return "built without CUDA kernels (DS_WITH_CUDA off: the Torch found has no CUDA)";
  if (!torch::cuda::is_available()) return "no CUDA device visible";
  return "";
}

}  // namespace ds
