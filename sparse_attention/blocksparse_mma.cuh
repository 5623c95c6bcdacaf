// Building blocks of the block-sparse MatMul kernels: tile loads into padded shared memory with
// cp.async, and one warp-level product step for every element type and operand orientation.
//
// A warp owns 16 rows of a 64-row tile and accumulates C[16 x 16*kN16] in the mma.sync m16n8k16
// accumulator layout (ops/common/mma.cuh): acc[j] is the n8 tile j, thread (g = lane/4, t = lane%4)
// holds rows g, g+8 and columns 8j+2t, 8j+2t+1. fp16/bf16 run on tensor cores (mma.sync, which also
// runs on sm_90); fp32 runs the same step as SIMT FFMAs into the same accumulator layout, so every
// kernel shares its masks and epilogues across element types.
//
// Shared-memory tiles are row-major with rows padded by 16 bytes: the 8 row addresses of one ldmatrix
// then fall into 8 distinct 16-byte bank groups (row pitch = an odd multiple of 16 bytes modulo 128).
// An operand is "K-major" when the reduction dimension is contiguous in its tile, else "M-major" (A)
// or "N-major" (B); the fragment loads differ (ldmatrix vs ldmatrix.trans), nothing else does:
//   A K-major [m][k]: ldmatrix          A M-major [k][m]: ldmatrix.trans
//   B K-major [n][k]: ldmatrix          B N-major [k][n]: ldmatrix.trans
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/common/mma.cuh"
#include "sparse_attention/blocksparse_tables.h"

namespace ds::bsmm {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kStepCols = 64;  // chunk positions gathered per pipeline step (kStepCols / chunk slots)

// Elements per 16-byte copy; also the row padding of shared-memory tiles.
template <typename T> __host__ __device__ constexpr int vec_elems() { return 16 / static_cast<int>(sizeof(T)); }

// Copies a rows x cols tile (cols a multiple of vec_elems) into shared memory with row pitch `pitch`,
// 16 bytes per cp.async, all threads of the CTA cooperating. src(r, c) gives the global address of
// the 16 bytes at tile row r, column c, or nullptr for zeros. `fallback` is any valid global address
// (cp.async with a zero source size reads nothing but wants a real address). Pieces are numbered
// row-major over a power-of-two row width so no integer division is needed (the few pieces past
// `cols` in a row are skipped).
template <typename T, typename Src>
__device__ __forceinline__ void load_tile(T* smem, int pitch, int rows, int cols, const void* fallback, Src src) {
  constexpr int V = vec_elems<T>();
  const int per_row = cols / V;
  const int lg = 32 - __clz(per_row - 1);  // ceil(log2(per_row)); 0 for one piece per row
  const int pieces = rows << lg;
  for (int i = threadIdx.x; i < pieces; i += kThreads) {
    const int r = i >> lg;
    const int c = (i & ((1 << lg) - 1)) * V;
    if (c >= cols) continue;
    const T* g = src(r, c);
    mma::cp_async_16(smem + r * pitch + c, g != nullptr ? static_cast<const void*>(g) : fallback, g != nullptr);
  }
}

template <typename T> __device__ __forceinline__ void store2(T* dst, float a, float b) {
  *reinterpret_cast<uint32_t*>(dst) = mma::pack2<T>(a, b);
}
template <> __device__ __forceinline__ void store2<float>(float* dst, float a, float b) {
  *reinterpret_cast<float2*>(dst) = make_float2(a, b);
}

template <typename T> __device__ __forceinline__ void store1(T* dst, float a);
template <> __device__ __forceinline__ void store1<float>(float* dst, float a) { *dst = a; }
template <> __device__ __forceinline__ void store1<__half>(__half* dst, float a) { *dst = __float2half_rn(a); }
template <> __device__ __forceinline__ void store1<__nv_bfloat16>(__nv_bfloat16* dst, float a) {
  *dst = __float2bfloat16_rn(a);
}

// One k16 step of a warp: acc[2p], acc[2p+1] += A[m0 .. m0+16, k0 .. k0+16) . B[k0 .. k0+16, 16p .. 16p+16)
// for every p < kN16 whose bit is set in n16_mask (warp-uniform). sA/sB: smem tiles with pitches
// ap/bp in the orientation given by kAKMajor/kBKMajor (see the header comment).
template <typename T, bool kAKMajor, bool kBKMajor>
struct WarpMma {
  template <int kN16>
  __device__ __forceinline__ static void k16(float (&acc)[2 * kN16][4], const T* sA, int ap, int m0, int k0,
                                             const T* sB, int bp, uint32_t n16_mask) {
    const int lane = threadIdx.x & 31;
    uint32_t a[4];
    // a0 (rows 0-7, k 0-7), a1 (rows 8-15, k 0-7), a2 (rows 0-7, k 8-15), a3 (rows 8-15, k 8-15).
    if constexpr (kAKMajor) {
      mma::ldmatrix_x4(a, sA + (m0 + (lane & 15)) * ap + k0 + ((lane >> 4) << 3));
    } else {
      mma::ldmatrix_x4_trans(a, sA + (k0 + (lane & 7) + ((lane >> 4) << 3)) * ap + m0 + (((lane >> 3) & 1) << 3));
    }
#pragma unroll
    for (int p = 0; p < kN16; ++p) {
      if (!((n16_mask >> p) & 1u)) continue;
      const int n0 = 16 * p;
      uint32_t b[4];  // b0, b1 of n8 tile n0, then of n0 + 8
      if constexpr (kBKMajor) {
        mma::ldmatrix_x4(b, sB + (n0 + (lane & 7) + ((lane >> 4) << 3)) * bp + k0 + (((lane >> 3) & 1) << 3));
      } else {
        mma::ldmatrix_x4_trans(b, sB + (k0 + (lane & 7) + (((lane >> 3) & 1) << 3)) * bp + n0 + ((lane >> 4) << 3));
      }
      const uint32_t b0[2] = {b[0], b[1]};
      const uint32_t b1[2] = {b[2], b[3]};
      mma::Mma16816<T>::run(acc[2 * p], a, b0);
      mma::Mma16816<T>::run(acc[2 * p + 1], a, b1);
    }
  }
};

// fp32: SIMT FFMAs in the same accumulator layout (exact fp32 products, fp32 sums: no tf32 rounding).
template <bool kAKMajor, bool kBKMajor>
struct WarpMma<float, kAKMajor, kBKMajor> {
  template <int kN16>
  __device__ __forceinline__ static void k16(float (&acc)[2 * kN16][4], const float* sA, int ap, int m0, int k0,
                                             const float* sB, int bp, uint32_t n16_mask) {
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
#pragma unroll 4
    for (int kk = 0; kk < 16; ++kk) {
      const int k = k0 + kk;
      const float a_lo = kAKMajor ? sA[(m0 + g) * ap + k] : sA[k * ap + m0 + g];
      const float a_hi = kAKMajor ? sA[(m0 + g + 8) * ap + k] : sA[k * ap + m0 + g + 8];
#pragma unroll
      for (int p = 0; p < kN16; ++p) {
        if (!((n16_mask >> p) & 1u)) continue;
#pragma unroll
        for (int jn = 0; jn < 2; ++jn) {
          const int n = 16 * p + 8 * jn + 2 * t;
          const float b0 = kBKMajor ? sB[n * bp + k] : sB[k * bp + n];
          const float b1 = kBKMajor ? sB[(n + 1) * bp + k] : sB[k * bp + n + 1];
          float* c = acc[2 * p + jn];
          c[0] = fmaf(a_lo, b0, c[0]);
          c[1] = fmaf(a_lo, b1, c[1]);
          c[2] = fmaf(a_hi, b0, c[2]);
          c[3] = fmaf(a_hi, b1, c[3]);
        }
      }
    }
  }
};

// Bit p (p < 4) set when the 16 positions [16p, 16p+16) of a step starting at entry e0 belong to a
// chunk (of 2^lg_chunk positions) that row group `group` has. Warp-uniform.
__device__ __forceinline__ uint32_t step_mask16(const uint32_t* mask, int e0, int e_end, int lg_chunk, int group) {
  uint32_t bits = 0u;
#pragma unroll
  for (int p = 0; p < kStepCols / 16; ++p) {
    const int e = e0 + ((16 * p) >> lg_chunk);
    if (e < e_end && ((mask[e] >> group) & 1u)) bits |= 1u << p;
  }
  return bits;
}

}  // namespace ds::bsmm
