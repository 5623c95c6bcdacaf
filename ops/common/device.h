// Where code can run: whether this build has our CUDA kernels and whether a CUDA device is visible.
#pragma once

#include <string>

namespace ds {

bool built_with_cuda();            // this build compiled the CUDA kernels (DS_WITH_CUDA)
bool cuda_device_available();      // built_with_cuda() and Torch sees at least one CUDA device
// Why GPU work cannot run here ("" when it can): for GTEST_SKIP messages and user-facing errors.
std::string cuda_unavailable_reason();

}  // namespace ds
