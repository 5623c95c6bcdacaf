// Building blocks of the Hopper (wgmma) attention kernels.
//
// Shared-memory tiles hold kRows rows x D of 16-bit elements in the canonical swizzled layouts that
// wgmma reads (PTX ISA "Shared Memory Matrix Layout"):
//   D >= 64: column blocks of 64 elements (128-byte rows), 128-byte swizzle, blocks one after another
//   D == 32: 64-byte rows, 64-byte swizzle
// A tile is read two ways:
//   K-major  (rows = M or N, head dim = K): S = Q K^T (both operands), dP = dO V^T
//   MN-major (rows = K, head dim = N):       O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q
// Rows are gathered chunk by chunk from the tile tables with cp.async, 16 bytes per copy, and one
// address computation serves the two tensors that share the rows (K and V, or Q and dO).
#pragma once

#include <cstdint>

#include "ops/common/mma.cuh"
#include "ops/common/wgmma.cuh"
#include "sparse_attention/fused/bsa_common.cuh"

namespace ds::bsa {

// Columns per pipeline step of the Hopper kernels: 128 for D <= 64 (two 64-wide wgmma N extents of
// scores per step halve the per-step fixed costs), 64 for D = 128 (registers and shared memory).
template <int D> constexpr int sm90_step_cols() { return D <= 64 ? 128 : 64; }

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int D, int kRows>
struct Sm90Tile {
  static constexpr int kColBlockElems = D >= 64 ? 64 : 32;
  static constexpr int kColBlocks = D / kColBlockElems;
  static constexpr int kElems = kRows * D;
  static constexpr int kRowBytes = kColBlockElems * 2;      // 128 or 64
  static constexpr int kSwizzleMode = D >= 64 ? 1 : 2;      // 128B or 64B swizzle
  static constexpr int kGroupBytes = 8 * kRowBytes;         // 8-row group: SBO
  static constexpr int kBlockBytes = kRows * kRowBytes;     // column-block stride: LBO (MN-major)
  static_assert(D == 32 || D == 64 || D == 128, "head size 32, 64 or 128");
  static_assert(kRows % 64 == 0, "rows in multiples of 64");

  // Element offset of 16-byte chunk c (0 .. D/8-1) of row r.
  __device__ __forceinline__ static int offset(int r, int c) {
    constexpr int kChunksPerBlock = kColBlockElems / 8;
    const int cb = c / kChunksPerBlock, cc = c % kChunksPerBlock;
    const int sw = kSwizzleMode == 1 ? (cc ^ (r & 7)) : (cc ^ ((r >> 1) & 3));
    return cb * kRows * kColBlockElems + r * kColBlockElems + sw * 8;
  }

  // Tile row r <- global row row_of(r) (< 0: zeros) of two tensors with the same row stride.
  template <typename T, typename RowOf>
  __device__ __forceinline__ static void load2_async(T* s1, T* s2, const T* g1, const T* g2, int row_stride,
                                                     RowOf row_of) {
    constexpr int kPieces = kRows * (D / 8);
    static_assert(kPieces % kThreads == 0, "pieces per thread");
#pragma unroll
    for (int i = 0; i < kPieces / kThreads; ++i) {
      const int piece = threadIdx.x + i * kThreads;
      const int r = piece / (D / 8), c = piece % (D / 8);
      const int grow = row_of(r);
      const int off = grow >= 0 ? grow * row_stride + c * 8 : 0;
      const int so = offset(r, c);
      mma::cp_async_16(s1 + so, g1 + off, grow >= 0);
      if (s2 != nullptr) mma::cp_async_16(s2 + so, g2 + off, grow >= 0);
    }
  }

  // Descriptor of the tile's first K-major k16 step; later steps add kmajor_step(kk) (16-byte units).
  template <typename T>
  __device__ __forceinline__ static uint64_t kmajor_desc(const T* tile) {
    return wgmma::make_desc(tile, 16, kGroupBytes, kSwizzleMode);
  }
  __device__ __forceinline__ static constexpr uint64_t kmajor_step(int kk) {
    return static_cast<uint64_t>(((kk * 16) / kColBlockElems) * kRows * kRowBytes + ((kk * 16) % kColBlockElems) * 2) >> 4;
  }
  // MN-major: rows 16kk .. 16kk+15 of the tile are K, column block nb is N.
  template <typename T>
  __device__ __forceinline__ static uint64_t mnmajor_desc(const T* tile) {
    return wgmma::make_desc(tile, kBlockBytes, kGroupBytes, kSwizzleMode);
  }
  __device__ __forceinline__ static constexpr uint64_t mnmajor_step(int kk, int nb) {
    return static_cast<uint64_t>(nb * kRows * kRowBytes + kk * 16 * kRowBytes) >> 4;
  }
};

// P (or dS) accumulators of a 64 x 16k slice -> the A operand of the next wgmma (mma.sync A layout):
// n8 tile j of the accumulators is acc[4j .. 4j+3].
template <typename T, int kN8>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[kN8 / 2][4], const float* acc) {
#pragma unroll
  for (int kk = 0; kk < kN8 / 2; ++kk) {
    a[kk][0] = mma::pack2<T>(acc[8 * kk + 0], acc[8 * kk + 1]);
    a[kk][1] = mma::pack2<T>(acc[8 * kk + 2], acc[8 * kk + 3]);
    a[kk][2] = mma::pack2<T>(acc[8 * kk + 4], acc[8 * kk + 5]);
    a[kk][3] = mma::pack2<T>(acc[8 * kk + 6], acc[8 * kk + 7]);
  }
}

// acc[D-wide] (+)= A[64 x kCols] . tile rows [kCols x D] (MN-major), per column block.
template <typename T, int D, int kRows, int kCols>
__device__ __forceinline__ void wg_product(float (&acc)[Sm90Tile<D, kRows>::kColBlocks][Sm90Tile<D, kRows>::kColBlockElems / 2],
                                           const uint32_t (&a)[kCols / 16][4], uint64_t desc) {
  using L = Sm90Tile<D, kRows>;
#pragma unroll
  for (int kk = 0; kk < kCols / 16; ++kk)
#pragma unroll
    for (int nb = 0; nb < L::kColBlocks; ++nb)
      wgmma::RS<T, L::kColBlockElems, 1>::run(acc[nb], a[kk], desc + L::mnmajor_step(kk, nb), 1);
}

// acc[64 x kCols] = A tile (64 rows, K-major) . B tile (kCols rows, K-major)^T over the head dim.
template <typename T, int D, int kARows, int kBRows, int kCols>
__device__ __forceinline__ void wg_scores(float (&acc)[kCols / 2], uint64_t desc_a, uint64_t desc_b) {
  using LA = Sm90Tile<D, kARows>;
  using LB = Sm90Tile<D, kBRows>;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma::SS<T, kCols>::run(acc, desc_a + LA::kmajor_step(kk), desc_b + LB::kmajor_step(kk), kk > 0);
}

}  // namespace ds::bsa
