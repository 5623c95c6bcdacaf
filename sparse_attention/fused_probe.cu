#include "sparse_attention/fused_probe.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>

#include "ops/common/cuda_check.h"

namespace ds::bsa {
namespace {

__global__ void sm90a_probe_kernel(int* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *out = 1;
#else
  *out = 0;
#endif
}

bool probe(int device) {
  cudaDeviceProp prop;
  DS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (prop.major != 9 || prop.minor != 0) return false;
  int previous = 0;
  DS_CUDA_CHECK(cudaGetDevice(&previous));
  DS_CUDA_CHECK(cudaSetDevice(device));
  int* flag = nullptr;
  int result = 0;
  DS_CUDA_CHECK(cudaMalloc(&flag, sizeof(int)));
  sm90a_probe_kernel<<<1, 1>>>(flag);
  // No kernel image for this device (e.g. a build without sm_90a SASS and no usable PTX): not available.
  const cudaError_t launch = cudaGetLastError();
  if (launch == cudaSuccess) DS_CUDA_CHECK(cudaMemcpy(&result, flag, sizeof(int), cudaMemcpyDeviceToHost));
  DS_CUDA_CHECK(cudaFree(flag));
  DS_CUDA_CHECK(cudaSetDevice(previous));
  return launch == cudaSuccess && result == 1;
}

}  // namespace

bool sm90a_kernels_available(int device) {
  static std::mutex mu;
  static std::map<int, bool> known;
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find(device);
  if (it == known.end()) it = known.emplace(device, probe(device)).first;
  return it->second;
}

}  // namespace ds::bsa
