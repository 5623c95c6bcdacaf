// CUDA status checks that become exceptions with context (file, line, the call, CUDA's message).
// No Torch header: usable from .cu kernels files and from the Torch boundary alike.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace ds {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                           ") from `" + call + "` at " + file + ":" + std::to_string(line));
}

}  // namespace ds

// Checked in every build type (never an assert that vanishes in Release).
#define DS_CUDA_CHECK(call)                                                   \
  do {                                                                        \
    cudaError_t ds_cuda_err_ = (call);                                        \
    if (ds_cuda_err_ != cudaSuccess) ::ds::throw_cuda_error(ds_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch.
#define DS_CUDA_CHECK_LAUNCH() DS_CUDA_CHECK(cudaGetLastError())
