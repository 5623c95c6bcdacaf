// Layout kernels of the fused attention (DeepSpeed's transform_kernels.cu): plain params structs
// (no Torch), launched by transformer/layer_fused_cuda.cpp. H = heads * d.
//   qkv_bias_transform: qkv [B, S, 3, heads, d] (the QKV GEMM output) + bias [3H]
//                       -> [3, B, heads, S, d] (Q, K, V as batched matrices)
//   swap_middle:        [A, M, N, K] -> [A, N, M, K] (context [B, heads, S, d] -> [B, S, H] and back)
//   qkv_grad_gather:    [3, B, heads, S, d] -> [B, S, 3H], with its column sums (the QKV bias gradient)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ops/common/scalar_kind.h"

namespace ds::transformer::kern {

struct QkvTransformParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t batch = 0, seq = 0;
  int heads = 0, head_size = 0;
  const void* qkv = nullptr;   // [B, S, 3H]
  const void* bias = nullptr;  // [3H] or null
  void* out = nullptr;         // [3, B, heads, S, d]
};
void launch_qkv_bias_transform(const QkvTransformParams& p, cudaStream_t stream);

struct SwapMiddleParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t a = 0, m = 0, n = 0;
  int k = 0;
  const void* in = nullptr;  // [a, m, n, k]
  void* out = nullptr;       // [a, n, m, k]
};
void launch_swap_middle(const SwapMiddleParams& p, cudaStream_t stream);

struct QkvGradParams {
  ScalarKind kind = ScalarKind::F32;
  int64_t batch = 0, seq = 0;
  int heads = 0, head_size = 0;
  const void* grad_tf = nullptr;  // [3, B, heads, S, d]
  void* grad_qkv = nullptr;       // [B, S, 3H]
  void* grad_bias = nullptr;      // [3H]
  float* workspace = nullptr;     // ds::nn::kern::column_partials_floats(B * S, 3H, 1) floats
};
void launch_qkv_grad_gather(const QkvGradParams& p, cudaStream_t stream);

}  // namespace ds::transformer::kern
