// Layout kernels of the fused attention; contracts in attention_transform.h. With d % 8 == 0 and
// 16-byte aligned pointers a thread moves 8 elements of one head row at a time, else one.
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

template <typename T, int kVec>
__global__ void qkv_bias_transform_kernel(const QkvTransformParams p) {
  const int d = p.head_size, h_all = p.heads * d, h3 = 3 * h_all;
  const int64_t steps = p.batch * p.seq * h3 / kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const T* in = static_cast<const T*>(p.qkv);
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < steps; i += stride) {
    const int64_t e = i * kVec;
    const int64_t token = e / h3;
    const int col = static_cast<int>(e - token * h3);
    const int w = col / h_all, hd = col - w * h_all, head = hd / d, k = hd - head * d;
    const int64_t b = token / p.seq, s = token - b * p.seq;
    float v[kVec];
    load_f<T, kVec>(in + e, v);
    if (bias) {
      float bv[kVec];
      load_f<T, kVec>(bias + col, bv);
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] += bv[j];
    }
    store_f<T, kVec>(out + (((w * p.batch + b) * p.heads + head) * p.seq + s) * d + k, v);
  }
}

template <typename T, int kVec>
__global__ void swap_middle_kernel(const SwapMiddleParams p) {
  const int64_t steps = p.a * p.m * p.n * p.k / kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < steps; i += stride) {
    const int64_t e = i * kVec;
    int64_t t = e / p.k;
    const int64_t ki = e - t * p.k;
    const int64_t ni = t % p.n;
    t /= p.n;
    const int64_t mi = t % p.m;
    const int64_t ai = t / p.m;
    nn::kern::copy_n<T, kVec>(out + ((ai * p.n + ni) * p.m + mi) * p.k + ki, in + e);
  }
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
    if (vec) {
      qkv_bias_transform_kernel<T, kVecElems><<<grid_1d(numel / kVecElems, kThreads), kThreads, 0, stream>>>(p);
    } else {
      qkv_bias_transform_kernel<T, 1><<<grid_1d(numel, kThreads), kThreads, 0, stream>>>(p);
    }
  });
  DS_CUDA_CHECK_LAUNCH();
}

void launch_swap_middle(const SwapMiddleParams& p, cudaStream_t stream) {
  const int64_t numel = p.a * p.m * p.n * p.k;
  if (numel <= 0) return;
  const bool vec = p.k % kVecElems == 0 && aligned16(p.in) && aligned16(p.out);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    if (vec) {
      swap_middle_kernel<T, kVecElems><<<grid_1d(numel / kVecElems, kThreads), kThreads, 0, stream>>>(p);
    } else {
      swap_middle_kernel<T, 1><<<grid_1d(numel, kThreads), kThreads, 0, stream>>>(p);
    }
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
