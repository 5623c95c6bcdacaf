#include "tests/smoke/axpby.h"

#include <cuda_runtime.h>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "ops/common/numeric.cuh"

namespace ds::smoke {
namespace {

template <typename T>
__global__ void axpby_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, float a, float b) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_float<T>(a * to_float(x[i]) + b * to_float(y[i]));
}

}  // namespace

void launch_axpby(const AxpbyParams& p, void* stream) {
  if (p.n == 0) return;
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div_ll(p.n, kThreads), 4096));
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    axpby_kernel<T><<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(p.x), static_cast<T*>(p.y), p.n, p.a, p.b);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::smoke
