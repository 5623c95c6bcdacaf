// Block-sparse Softmax kernels, forward and backward, fp32/fp16/bf16 computed in fp32 (see
// blocksparse_kernels.h). One warp per row of one block row: the row's present blocks are the CSR
// segment row_ptr[s] .. row_ptr[s+1]; lanes walk the row 4 elements at a time (8 or 16 bytes), so a
// warp reads 128 consecutive elements of one block row segment per access at block >= 32 and two
// 16-element rows of adjacent blocks at block 16.
//   forward:  pass 1 an online (max, sum) of exp over the masked scores, one warp reduction;
//             pass 2 recomputes the masked scores (x, rpe and masks are re-read from L1/L2) and writes
//             y = exp(v - max) / sum; rows with nothing allowed write 0 (DeepSpeed: NaN).
//   backward: dx = y * (dy - sum(y * dy)) (the gradient w.r.t. the scaled scores plus rpe; the caller
//             scales it for x).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "sparse_attention/blocksparse_kernels.h"

namespace ds::bsmm {
namespace {

constexpr int kWarpsPerCta = 4;

// 4 consecutive elements (8 or 16 bytes, aligned) to fp32 and back.
template <typename T> struct Quad;
template <> struct Quad<float> {
  __device__ __forceinline__ static void load(const float* p, float (&v)[4]) {
    const float4 x = *reinterpret_cast<const float4*>(p);
    v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
  }
  __device__ __forceinline__ static void store(float* p, const float (&v)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
};
template <> struct Quad<__half> {
  __device__ __forceinline__ static void load(const __half* p, float (&v)[4]) {
    const uint2 x = *reinterpret_cast<const uint2*>(p);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&x.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&x.y));
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
  }
  __device__ __forceinline__ static void store(__half* p, const float (&v)[4]) {
    __half2 a = __floats2half2_rn(v[0], v[1]), b = __floats2half2_rn(v[2], v[3]);
    uint2 x;
    x.x = *reinterpret_cast<uint32_t*>(&a);
    x.y = *reinterpret_cast<uint32_t*>(&b);
    *reinterpret_cast<uint2*>(p) = x;
  }
};
template <> struct Quad<__nv_bfloat16> {
  __device__ __forceinline__ static void load(const __nv_bfloat16* p, float (&v)[4]) {
    const uint2 x = *reinterpret_cast<const uint2*>(p);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&x.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&x.y));
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
  }
  __device__ __forceinline__ static void store(__nv_bfloat16* p, const float (&v)[4]) {
    __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), b = __floats2bfloat162_rn(v[2], v[3]);
    uint2 x;
    x.x = *reinterpret_cast<uint32_t*>(&a);
    x.y = *reinterpret_cast<uint32_t*>(&b);
    *reinterpret_cast<uint2*>(p) = x;
  }
};

__device__ __forceinline__ float mask_value(float m, int mode) {
  return mode == 0 ? m : (m == 0.f ? -INFINITY : 0.f);
}

// The row a warp works on: z, row segment s = h * rows + r, row i inside the block row.
struct RowRef {
  int z, h, r, i;
  int32_t n0, count;
};

__device__ __forceinline__ bool warp_row(const SoftmaxParams& p, RowRef& ref) {
  const LayoutView& L = p.layout;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5);
  const int64_t per_z = static_cast<int64_t>(L.heads) * L.rows * L.block;
  if (row >= per_z * p.Z) return false;
  ref.z = static_cast<int>(row / per_z);
  const int64_t in_z = row % per_z;
  const int s = static_cast<int>(in_z / L.block);
  ref.i = static_cast<int>(in_z % L.block);
  ref.h = s / L.rows;
  ref.r = s % L.rows;
  ref.n0 = p.row_ptr[s];
  ref.count = p.row_ptr[s + 1] - ref.n0;
  return ref.count > 0;
}

// The masked score of 4 consecutive elements (column c0 .. c0+3 of block n, row ref.i).
template <typename T>
__device__ __forceinline__ void scores4(const SoftmaxParams& p, const RowRef& ref, int32_t n, int c0, float (&v)[4]) {
  const LayoutView& L = p.layout;
  const int b = L.block;
  const int64_t S_cols = static_cast<int64_t>(L.cols) * b;
  const T* x = static_cast<const T*>(p.x) + ((static_cast<int64_t>(ref.z) * L.nnz + n) * b + ref.i) * b + c0;
  Quad<T>::load(x, v);
  const int blk_col = p.col[n];
  const int q_pos = ref.r * b + ref.i;
  const int k_pos = blk_col * b + c0;
#pragma unroll
  for (int e = 0; e < 4; ++e) v[e] *= p.scale;
  float m[4];
  if (p.rpe != nullptr) {
    Quad<T>::load(static_cast<const T*>(p.rpe) + ref.z * p.rpe_zs + ref.h * p.rpe_hs + q_pos * S_cols + k_pos, m);
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] += m[e];
  }
  if (p.key_padding != nullptr) {
    Quad<T>::load(static_cast<const T*>(p.key_padding) + ref.z * S_cols + k_pos, m);
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] += mask_value(m[e], p.key_padding_mode);
  }
  if (p.attn_mask != nullptr) {
    Quad<T>::load(static_cast<const T*>(p.attn_mask) + q_pos * S_cols + k_pos, m);
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] += mask_value(m[e], p.attn_mask_mode);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int k = k_pos + e;
    if ((p.valid_keys >= 0 && k >= p.valid_keys) || (p.causal_diagonal && blk_col == ref.r && k > q_pos))
      v[e] = -INFINITY;
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarpsPerCta * 32) softmax_fwd_kernel(const SoftmaxParams p) {
  RowRef ref;
  if (!warp_row(p, ref)) return;
  const int lane = threadIdx.x & 31;
  const int b = p.layout.block;
  const int elems = ref.count * b;
  float run_max = -INFINITY, run_sum = 0.f;
  for (int e0 = 4 * lane; e0 < elems; e0 += 128) {
    float v[4];
    scores4<T>(p, ref, ref.n0 + e0 / b, e0 % b, v);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (v[e] == -INFINITY) continue;
      if (v[e] > run_max) {
        run_sum = run_sum * expf(run_max - v[e]) + 1.f;
        run_max = v[e];
      } else {
        run_sum += expf(v[e] - run_max);
      }
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, run_max, off);
    const float os = __shfl_xor_sync(0xffffffffu, run_sum, off);
    const float m = fmaxf(run_max, om);
    run_sum = m == -INFINITY ? 0.f : run_sum * expf(run_max - m) + os * expf(om - m);
    run_max = m;
  }
  const float inv = run_sum > 0.f ? 1.f / run_sum : 0.f;
  const float m_use = run_max == -INFINITY ? 0.f : run_max;
  T* y = static_cast<T*>(p.y);
  for (int e0 = 4 * lane; e0 < elems; e0 += 128) {
    const int32_t n = ref.n0 + e0 / b;
    const int c0 = e0 % b;
    float v[4];
    scores4<T>(p, ref, n, c0, v);
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = expf(v[e] - m_use) * inv;  // exp(-inf) = 0
    Quad<T>::store(y + ((static_cast<int64_t>(ref.z) * p.layout.nnz + n) * b + ref.i) * b + c0, v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarpsPerCta * 32) softmax_bwd_kernel(const SoftmaxParams p) {
  RowRef ref;
  if (!warp_row(p, ref)) return;
  const int lane = threadIdx.x & 31;
  const int b = p.layout.block;
  const int elems = ref.count * b;
  const T* y = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.y);
  auto offset = [&](int e0) {
    return ((static_cast<int64_t>(ref.z) * p.layout.nnz + ref.n0 + e0 / b) * b + ref.i) * b + e0 % b;
  };
  float dot = 0.f;
  for (int e0 = 4 * lane; e0 < elems; e0 += 128) {
    float a[4], d[4];
    Quad<T>::load(y + offset(e0), a);
    Quad<T>::load(dy + offset(e0), d);
#pragma unroll
    for (int e = 0; e < 4; ++e) dot = fmaf(a[e], d[e], dot);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
  for (int e0 = 4 * lane; e0 < elems; e0 += 128) {
    float a[4], d[4];
    Quad<T>::load(y + offset(e0), a);
    Quad<T>::load(dy + offset(e0), d);
#pragma unroll
    for (int e = 0; e < 4; ++e) a[e] = a[e] * (d[e] - dot);
    Quad<T>::store(dx + offset(e0), a);
  }
}

unsigned softmax_grid(const SoftmaxParams& p) {
  const int64_t rows = static_cast<int64_t>(p.Z) * p.layout.heads * p.layout.rows * p.layout.block;
  const int64_t ctas = (rows + kWarpsPerCta - 1) / kWarpsPerCta;
  if (ctas > INT32_MAX) throw std::invalid_argument("block-sparse softmax: too many rows (" + std::to_string(rows) + ")");
  return static_cast<unsigned>(ctas);
}

void check_softmax(const SoftmaxParams& p) {
  const int b = p.layout.block;
  if (b != 16 && b != 32 && b != 64 && b != 128)
    throw std::invalid_argument("block-sparse softmax: block " + std::to_string(b) + " is not 16, 32, 64 or 128");
  if (p.row_ptr == nullptr || p.col == nullptr) throw std::invalid_argument("block-sparse softmax: tables missing");
}

}  // namespace

void launch_softmax_forward(const SoftmaxParams& p, void* stream) {
  check_softmax(p);
  if (p.Z == 0 || p.layout.nnz == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    softmax_fwd_kernel<T><<<softmax_grid(p), kWarpsPerCta * 32, 0, s>>>(p);
    DS_CUDA_CHECK_LAUNCH();
  });
}

void launch_softmax_backward(const SoftmaxParams& p, void* stream) {
  check_softmax(p);
  if (p.Z == 0 || p.layout.nnz == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    softmax_bwd_kernel<T><<<softmax_grid(p), kWarpsPerCta * 32, 0, s>>>(p);
    DS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace ds::bsmm
