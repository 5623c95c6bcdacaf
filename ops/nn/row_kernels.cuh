// Device helpers shared by the ops/nn kernels and the transformer's layout kernels: vector loads
// and stores, deterministic warp/block reductions, dropout keep bits, and the row-shape dispatch.
//
// Row kernels: one block owns one row of n elements at a time; thread t holds the chunks
// t, t + blockDim, ... (kIters of them) of kVec consecutive elements in registers. kVec is 8 (one
// dropout-mask byte; 16 B of fp16/bf16, 32 B of fp32) when n % 8 == 0 and every pointer is 16-byte
// aligned, else 1 (any n, scalar accesses).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ops/common/numeric.cuh"
#include "ops/nn/philox.h"
#include "ops/nn/nn_kernels.h"

namespace ds::nn::kern {

constexpr int kVecElems = 8;

// ---- memory ----

template <typename T>
struct alignas(16) Vec16 {
  T e[16 / sizeof(T)];
};

// N elements of T from p, as floats. N * sizeof(T) a multiple of 16 means p is 16-byte aligned.
template <typename T, int N>
__device__ __forceinline__ void load_f(const T* p, float (&f)[N]) {
  if constexpr ((N * sizeof(T)) % 16 == 0) {
    constexpr int kPer = 16 / sizeof(T);
#pragma unroll
    for (int q = 0; q < N / kPer; ++q) {
      const Vec16<T> v = reinterpret_cast<const Vec16<T>*>(p)[q];
#pragma unroll
      for (int i = 0; i < kPer; ++i) f[q * kPer + i] = to_float(v.e[i]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) f[i] = to_float(p[i]);
  }
}

template <typename T, int N>
__device__ __forceinline__ void store_f(T* p, const float (&f)[N]) {
  if constexpr ((N * sizeof(T)) % 16 == 0) {
    constexpr int kPer = 16 / sizeof(T);
#pragma unroll
    for (int q = 0; q < N / kPer; ++q) {
      Vec16<T> v;
#pragma unroll
      for (int i = 0; i < kPer; ++i) v.e[i] = from_float<T>(f[q * kPer + i]);
      reinterpret_cast<Vec16<T>*>(p)[q] = v;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = from_float<T>(f[i]);
  }
}

// Raw copy of N elements (no conversion), for the layout kernels.
template <typename T, int N>
__device__ __forceinline__ void copy_n(T* dst, const T* src) {
  if constexpr ((N * sizeof(T)) % 16 == 0) {
#pragma unroll
    for (int q = 0; q < int(N * sizeof(T) / 16); ++q)
      reinterpret_cast<Vec16<T>*>(dst)[q] = reinterpret_cast<const Vec16<T>*>(src)[q];
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) dst[i] = src[i];
  }
}

// The value as the dtype stores it (what the CPU path computes on after each rounding).
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_float(from_float<T>(v));
}

// exp and 1/sqrt: the fast intrinsics for fp16/bf16 data (their ~1e-6 relative error vanishes in
// the final rounding), the accurate ones for fp32, whose results are compared at fp32 precision.
template <typename T>
__device__ __forceinline__ float exp_acc(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return expf(x);
  } else {
    return __expf(x);
  }
}

template <typename T>
__device__ __forceinline__ float rsqrt_acc(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return 1.f / sqrtf(x);
  } else {
    return rsqrtf(x);
  }
}

// ---- reductions (butterflies: every lane ends with the same bits; fixed order: deterministic) ----

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}

// Sums of v[0..N) over the block (blockDim.x a multiple of 32), the same in every thread.
// red: N * 32 floats of shared memory; safe to call repeatedly.
template <int N>
__device__ __forceinline__ void block_sum(float (&v)[N], float* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
#pragma unroll
  for (int j = 0; j < N; ++j) v[j] = warp_sum(v[j]);
  __syncthreads();  // the previous call's readers are done with red
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < N; ++j) red[j * 32 + warp] = v[j];
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < N; ++j) {
    float s = 0.f;
    for (int w = 0; w < warps; ++w) s += red[j * 32 + w];
    v[j] = s;
  }
}

__device__ __forceinline__ float block_sum1(float a, float* red) {
  float v[1] = {a};
  block_sum<1>(v, red);
  return v[0];
}

// Rows a thread of a persistent row kernel (row_groups() blocks, each owning rows g, g + groups, ...)
// works on at once: two when a row is few values per thread, so each warp has twice the loads in
// flight (those kernels run only a few blocks per multiprocessor); one for long rows (registers).
template <int kVec, int kIters>
constexpr int rows_in_flight() {
  return kVec * kIters <= 16 ? 2 : 1;
}

// ---- dropout ----

__device__ __forceinline__ uint32_t philox_lane(const Philox4x32& r, uint32_t j) {
  // Constant indices only: a run-time index would put r in local memory.
  return j == 0 ? r.v[0] : j == 1 ? r.v[1] : j == 2 ? r.v[2] : r.v[3];
}

// The scalar paths' Philox draws are out of line: their unrolled loops would otherwise inline one
// generator (10 rounds) per element and bloat every instantiation. The vector paths inline theirs.
inline __device__ __noinline__ uint32_t keep_bit_scalar(DropoutSite d, uint64_t e) {
  const Philox4x32 r = philox_block(d.seed, d.offset, e >> 2);
  return dropout_keep(philox_lane(r, static_cast<uint32_t>(e & 3)), d.ratio) ? 1u : 0u;
}

// Mask byte `byte` of a site over numel elements, bits past numel cleared (the CPU path's layout).
inline __device__ __noinline__ uint8_t mask_byte_clipped(DropoutSite d, uint64_t byte, uint64_t numel) {
  uint32_t b = dropout_mask_byte(d.seed, d.offset, byte, d.ratio);
  const uint64_t left = numel - byte * 8;
  if (left < 8) b &= (1u << left) - 1u;
  return static_cast<uint8_t>(b);
}

// Keep bits of kVec consecutive elements from flat index e (e % 8 == 0 when kVec == 8): bit i for
// element e + i.
template <int kVec>
__device__ __forceinline__ uint32_t keep_bits(const DropoutSite& d, uint64_t e) {
  if constexpr (kVec == kVecElems) {
    return dropout_mask_byte(d.seed, d.offset, e >> 3, d.ratio);
  } else {
    static_assert(kVec == 1, "kVec is 8 or 1");
    return keep_bit_scalar(d, e);
  }
}

// Stored keep bits of kVec elements from flat index e.
template <int kVec>
__device__ __forceinline__ uint32_t stored_bits(const uint8_t* mask, uint64_t e) {
  if constexpr (kVec == kVecElems) {
    return mask[e >> 3];
  } else {
    return (static_cast<uint32_t>(mask[e >> 3]) >> (e & 7)) & 1u;
  }
}

// ---- host side: row shapes ----

// Largest block of the row kernels (LayerNorm, bias+GELU backward, dropout column sums).
constexpr int kRowMaxThreads = 512;

struct RowShape {
  bool vec = false;  // kVec == 8
  int iters = 1;     // kIters
  int threads = 32;
};

inline bool aligned16(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// kIters from {1, 2, 4} (vector) or {2, 8, 32} (scalar): at most 32 values of one tensor per thread;
// the fewest iterations that keep the block at <= 256 threads, else <= kRowMaxThreads (512). The
// row kernels are compiled with __launch_bounds__(kRowMaxThreads) so every shape chosen here can
// launch (at 640+ threads a kernel using > 102 registers cannot). Empty shape: too long (> 16384).
inline RowShape row_shape(int n, bool all_aligned) {
  RowShape s;
  s.vec = all_aligned && n % kVecElems == 0;
  const int chunks = s.vec ? n / kVecElems : n;
  static constexpr int kVecIters[] = {1, 2, 4};
  static constexpr int kScalarIters[] = {2, 8, 32};
  const int* it = s.vec ? kVecIters : kScalarIters;
  for (int limit : {256, kRowMaxThreads}) {
    for (int k = 0; k < 3; ++k) {
      const int threads = (chunks + it[k] - 1) / it[k];
      if (threads <= limit) {
        s.iters = it[k];
        s.threads = ((threads + 31) / 32) * 32;
        return s;
      }
    }
  }
  s.iters = 0;
  return s;
}

inline void require_row_shape(const RowShape& s, int n, const char* what) {
  if (s.iters == 0)
    throw std::invalid_argument(std::string(what) + ": rows of " + std::to_string(n) +
                                " elements are longer than the row kernels hold (16384)");
}

// Calls f(integral_constant<int, kVec>, integral_constant<int, kIters>) for the shape.
template <typename F>
void dispatch_row_shape(const RowShape& s, F&& f) {
  using std::integral_constant;
  if (s.vec) {
    switch (s.iters) {
      case 1: return f(integral_constant<int, kVecElems>{}, integral_constant<int, 1>{});
      case 2: return f(integral_constant<int, kVecElems>{}, integral_constant<int, 2>{});
      case 4: return f(integral_constant<int, kVecElems>{}, integral_constant<int, 4>{});
      default: break;
    }
  } else {
    switch (s.iters) {
      case 2: return f(integral_constant<int, 1>{}, integral_constant<int, 2>{});
      case 8: return f(integral_constant<int, 1>{}, integral_constant<int, 8>{});
      case 32: return f(integral_constant<int, 1>{}, integral_constant<int, 32>{});
      default: break;
    }
  }
  throw std::logic_error("dispatch_row_shape: no kernel for kIters " + std::to_string(s.iters));
}

inline unsigned grid_1d(int64_t items, int threads, int64_t max_blocks = 65536 * 16) {
  int64_t blocks = (items + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

}  // namespace ds::nn::kern
