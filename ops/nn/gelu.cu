// Bias + GELU (tanh approximation) forward and backward; the backward also sums its output per
// column (the FF1 bias gradient) in the same pass. Contracts in nn_kernels.h, math in gelu.h.
#include <type_traits>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "ops/nn/row_kernels.cuh"

namespace ds::nn::kern {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// The same operation order as the CPU reference (ops/nn/gelu.cpp).
__device__ __forceinline__ float gelu_tanh(float z) {
  const float t = tanhf(kSqrt2OverPi * (z + kCubic * z * z * z));
  return 0.5f * z * (1.f + t);
}

__device__ __forceinline__ float gelu_tanh_grad(float z) {
  const float t = tanhf(kSqrt2OverPi * (z + kCubic * z * z * z));
  return 0.5f * (1.f + t) + 0.5f * z * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kCubic * z * z);
}

// kVec consecutive elements per step; with kVec == 8 a step never crosses a row (n % 8 == 0).
// Index: uint32_t below 2^31 elements (the column is a division per step; 64-bit ones are emulated).
template <typename T, int kVec, typename Index>
__global__ void bias_gelu_forward_kernel(const BiasGeluParams p) {
  const Index n = p.n;
  const Index steps = static_cast<Index>(p.rows) * n / kVec;
  const Index stride = gridDim.x * blockDim.x;
  const T* x = static_cast<const T*>(p.x);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  for (Index i = blockIdx.x * blockDim.x + threadIdx.x; i < steps; i += stride) {
    const Index e = i * kVec;
    float v[kVec];
    load_f<T, kVec>(x + e, v);
    if (bias) {
      float b[kVec];
      load_f<T, kVec>(bias + e % n, b);
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] += b[j];
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = gelu_tanh(v[j]);
    store_f<T, kVec>(y + e, v);
  }
}

template <typename T, int kVec, int kIters>
__global__ void __launch_bounds__(kRowMaxThreads) bias_gelu_backward_kernel(const BiasGeluBackwardParams p, float* part) {
  constexpr int kRows = rows_in_flight<kVec, kIters>();
  const int n = p.n;
  const T* bias = static_cast<const T*>(p.bias);
  float acc[kIters][kVec];
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[k][i] = 0.f;
  }
  for (int64_t row0 = blockIdx.x; row0 < p.rows; row0 += int64_t(kRows) * gridDim.x) {
    float g[kRows][kIters][kVec], z[kRows][kIters][kVec];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {  // all loads first
      const int64_t row = row0 + int64_t(r) * gridDim.x;
      if (row >= p.rows) continue;
#pragma unroll
      for (int k = 0; k < kIters; ++k) {
        const int c = (threadIdx.x + k * blockDim.x) * kVec;
        if (c >= n) continue;
        load_f<T, kVec>(static_cast<const T*>(p.grad_y) + row * n + c, g[r][k]);
        load_f<T, kVec>(static_cast<const T*>(p.x) + row * n + c, z[r][k]);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + int64_t(r) * gridDim.x;
      if (row >= p.rows) continue;
#pragma unroll
      for (int k = 0; k < kIters; ++k) {
        const int c = (threadIdx.x + k * blockDim.x) * kVec;
        if (c >= n) continue;
        if (bias) {
          float b[kVec];
          load_f<T, kVec>(bias + c, b);
#pragma unroll
          for (int i = 0; i < kVec; ++i) z[r][k][i] += b[i];
        }
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          g[r][k][i] = round_to<T>(g[r][k][i] * gelu_tanh_grad(z[r][k][i]));
          acc[k][i] += g[r][k][i];
        }
        store_f<T, kVec>(static_cast<T*>(p.grad_x) + row * n + c, g[r][k]);
      }
    }
  }
  if (part == nullptr) return;
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    const int c = (threadIdx.x + k * blockDim.x) * kVec;
    if (c < n) store_f<float, kVec>(part + blockIdx.x * int64_t(n) + c, acc[k]);
  }
}

}  // namespace

void launch_bias_gelu_forward(const BiasGeluParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.n <= 0) return;
  const bool vec = p.n % kVecElems == 0 && aligned16(p.x) && aligned16(p.bias) && aligned16(p.y);
  const bool small = p.rows * p.n < (int64_t(1) << 31);
  constexpr int kThreads = 256;
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    DS_BOOL_SWITCH(small, kSmall, [&] {
      using Index = std::conditional_t<kSmall, uint32_t, uint64_t>;
      if (vec) {
        bias_gelu_forward_kernel<T, kVecElems, Index>
            <<<grid_1d(p.rows * p.n / kVecElems, kThreads), kThreads, 0, stream>>>(p);
      } else {
        bias_gelu_forward_kernel<T, 1, Index><<<grid_1d(p.rows * p.n, kThreads), kThreads, 0, stream>>>(p);
      }
    });
  });
  DS_CUDA_CHECK_LAUNCH();
}

void launch_bias_gelu_backward(const BiasGeluBackwardParams& p, cudaStream_t stream) {
  if (p.n <= 0) return;
  const int64_t groups = row_groups(p.rows);
  float* part = p.grad_bias ? p.workspace : nullptr;
  if (p.rows > 0) {
    const bool aligned = aligned16(p.grad_y) && aligned16(p.x) && aligned16(p.bias) && aligned16(p.grad_x) &&
                         aligned16(part);
    const RowShape s = row_shape(p.n, aligned);
    require_row_shape(s, p.n, "bias_gelu_backward");
    DS_DISPATCH_SCALAR(p.kind, T, [&] {
      dispatch_row_shape(s, [&](auto vec, auto iters) {
        bias_gelu_backward_kernel<T, decltype(vec)::value, decltype(iters)::value>
            <<<static_cast<unsigned>(groups), s.threads, 0, stream>>>(p, part);
      });
    });
    DS_CUDA_CHECK_LAUNCH();
  }
  if (p.grad_bias) launch_column_reduce(p.kind, part, groups, p.n, p.grad_bias, stream);
}

}  // namespace ds::nn::kern
