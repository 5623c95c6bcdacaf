// Layout kernels of the fused attention; contracts in attention_transform.h. With d % 8 == 0 and
// 16-byte aligned pointers a thread moves 8 elements of one head row at a time, else one.
#include <type_traits>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "ops/nn/row_kernels.cuh"
#include "transformer/attention_transform.h"

namespace ds::transformer::kern {
namespace {

using nn::kern::aligned16;
using nn::kern::grid_1d;
using nn::kern::kVecElems;
using nn::kern::load_f;
using nn::kern::store_f;

constexpr int kThreads = 256;

// Index: uint32_t when the tensor has < 2^31 elements (32-bit divisions are several times cheaper
// than the emulated 64-bit ones, which would otherwise cost as much as the memory traffic).
template <typename T, int kVec, typename Index>
__global__ void qkv_bias_transform_kernel(const QkvTransformParams p) {
  const Index d = p.head_size, h_all = p.heads * d, h3 = 3 * h_all, batch = p.batch, seq = p.seq, heads = p.heads;
  const Index steps = batch * seq * h3 / kVec;
  const Index stride = gridDim.x * blockDim.x;
  const T* in = static_cast<const T*>(p.qkv);
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  for (Index i = blockIdx.x * blockDim.x + threadIdx.x; i < steps; i += stride) {
    const Index e = i * kVec;
    const Index token = e / h3, col = e - token * h3;
    const Index w = col / h_all, hd = col - w * h_all, head = hd / d, k = hd - head * d;
    const Index b = token / seq, s = token - b * seq;
    float v[kVec];
    load_f<T, kVec>(in + e, v);
    if (bias) {
      float bv[kVec];
      load_f<T, kVec>(bias + col, bv);
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] += bv[j];
    }
    store_f<T, kVec>(out + (((w * batch + b) * heads + head) * seq + s) * d + k, v);
  }
}

template <typename T, int kVec, typename Index>
__global__ void swap_middle_kernel(const SwapMiddleParams p) {
  const Index a = p.a, m = p.m, n = p.n, k = p.k;
  const Index steps = a * m * n * k / kVec;
  const Index stride = gridDim.x * blockDim.x;
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  for (Index i = blockIdx.x * blockDim.x + threadIdx.x; i < steps; i += stride) {
    const Index e = i * kVec;
    Index t = e / k;
    const Index ki = e - t * k;
    Index t2 = t / n;
    const Index ni = t - t2 * n;
    const Index ai = t2 / m, mi = t2 - ai * m;
    nn::kern::copy_n<T, kVec>(out + ((ai * n + ni) * m + mi) * k + ki, in + e);
  }
}

// Calls f(integral_constant kVec, Index{}) for the vector width and the index type.
template <typename F>
void dispatch_layout(bool vec, int64_t numel, F&& f) {
  using std::integral_constant;
  const bool small = numel < (int64_t(1) << 31);
  if (vec && small) return f(integral_constant<int, kVecElems>{}, uint32_t{});
  if (vec) return f(integral_constant<int, kVecElems>{}, uint64_t{});
  if (small) return f(integral_constant<int, 1>{}, uint32_t{});
  return f(integral_constant<int, 1>{}, uint64_t{});
}

template <typename T, int kVec, int kIters>
__global__ void qkv_grad_gather_kernel(const QkvGradParams p, float* part) {
  constexpr int kRows = nn::kern::rows_in_flight<kVec, kIters>();
  const int d = p.head_size, h_all = p.heads * d, n = 3 * h_all;
  const int64_t rows = p.batch * p.seq;
  const T* in = static_cast<const T*>(p.grad_tf);
  T* out = static_cast<T*>(p.grad_qkv);
  float acc[kIters][kVec];
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[k][i] = 0.f;
  }
  for (int64_t row0 = blockIdx.x; row0 < rows; row0 += int64_t(kRows) * gridDim.x) {
    float v[kRows][kIters][kVec];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {  // all loads first
      const int64_t row = row0 + int64_t(r) * gridDim.x;
      if (row >= rows) continue;
      const int64_t b = row / p.seq, s = row - b * p.seq;
#pragma unroll
      for (int k = 0; k < kIters; ++k) {
        const int c = (threadIdx.x + k * blockDim.x) * kVec;
        if (c >= n) continue;
        const int w = c / h_all, hd = c - w * h_all, head = hd / d, kk = hd - head * d;
        load_f<T, kVec>(in + (((w * p.batch + b) * p.heads + head) * p.seq + s) * d + kk, v[r][k]);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + int64_t(r) * gridDim.x;
      if (row >= rows) continue;
#pragma unroll
      for (int k = 0; k < kIters; ++k) {
        const int c = (threadIdx.x + k * blockDim.x) * kVec;
        if (c >= n) continue;
        store_f<T, kVec>(out + row * n + c, v[r][k]);
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[k][i] += v[r][k][i];
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    const int c = (threadIdx.x + k * blockDim.x) * kVec;
    if (c < n) store_f<float, kVec>(part + blockIdx.x * int64_t(n) + c, acc[k]);
  }
}

}  // namespace

void launch_qkv_bias_transform(const QkvTransformParams& p, cudaStream_t stream) {
  const int64_t numel = p.batch * p.seq * 3 * p.heads * p.head_size;
  if (numel <= 0) return;
  const bool vec = p.head_size % kVecElems == 0 && aligned16(p.qkv) && aligned16(p.bias) && aligned16(p.out);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    dispatch_layout(vec, numel, [&](auto v, auto index) {
      constexpr int kVec = decltype(v)::value;
      qkv_bias_transform_kernel<T, kVec, decltype(index)>
          <<<grid_1d(numel / kVec, kThreads), kThreads, 0, stream>>>(p);
    });
  });
  DS_CUDA_CHECK_LAUNCH();
}

void launch_swap_middle(const SwapMiddleParams& p, cudaStream_t stream) {
  const int64_t numel = p.a * p.m * p.n * p.k;
  if (numel <= 0) return;
  const bool vec = p.k % kVecElems == 0 && aligned16(p.in) && aligned16(p.out);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    dispatch_layout(vec, numel, [&](auto v, auto index) {
      constexpr int kVec = decltype(v)::value;
      swap_middle_kernel<T, kVec, decltype(index)><<<grid_1d(numel / kVec, kThreads), kThreads, 0, stream>>>(p);
    });
  });
  DS_CUDA_CHECK_LAUNCH();
}

void launch_qkv_grad_gather(const QkvGradParams& p, cudaStream_t stream) {
  const int n = 3 * p.heads * p.head_size;
  const int64_t rows = p.batch * p.seq;
  if (n <= 0) return;
  const int64_t groups = nn::kern::row_groups(rows);
  if (rows > 0) {
    const bool vec = p.head_size % kVecElems == 0 && aligned16(p.grad_tf) && aligned16(p.grad_qkv) &&
                     aligned16(p.workspace);
    const nn::kern::RowShape s = nn::kern::row_shape(n, vec);
    nn::kern::require_row_shape(s, n, "qkv_grad_gather");
    DS_DISPATCH_SCALAR(p.kind, T, [&] {
      nn::kern::dispatch_row_shape(s, [&](auto v, auto iters) {
        qkv_grad_gather_kernel<T, decltype(v)::value, decltype(iters)::value>
            <<<static_cast<unsigned>(groups), s.threads, 0, stream>>>(p, p.workspace);
      });
    });
    DS_CUDA_CHECK_LAUNCH();
  }
  nn::kern::launch_column_reduce(p.kind, p.workspace, groups, n, p.grad_bias, stream);
}

}  // namespace ds::transformer::kern
