// Shared pieces of the fused block-sparse attention kernels: tile geometry, the gathered-chunk loads,
// the score epilogue (scale, masks, biases) and the two tensor-core primitives every kernel is made of:
//   scores  S[16 x kBN] = A[16 x D] . B[kBN x D]^T   (A in registers, B rows in smem)
//   product O[16 x D] += P[16 x kBN] . C[kBN x D]    (P in registers, C rows in smem, ldmatrix.trans)
// Forward and dQ use them with queries as rows; dK/dV with keys as rows (the same code, transposed).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ops/common/mma.cuh"
#include "sparse_attention/fused/bsa_params.h"

namespace ds::bsa {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kStepCols = 64;  // columns (keys, or queries for dK/dV) per pipeline step

template <typename T, int D, int kChunk>
struct Geometry {
  static_assert(D == 32 || D == 64 || D == 128, "head size 32, 64 or 128");
  static_assert(kChunk == 16 || kChunk == 32 || kChunk == 64, "chunk 16, 32 or 64");
  static constexpr int kDChunks = D / 8;              // 16-byte pieces per row
  static constexpr int kSlots = kStepCols / kChunk;   // chunks gathered per step
  static constexpr int kN8 = kStepCols / 8;           // n8 score tiles per step
  static constexpr int kK16 = D / 16;                 // k16 steps over the head dim
  static constexpr int kD8 = D / 8;                   // n8 tiles over the head dim
  static constexpr int kTileElems = kTileRows * D;    // one 64-row tile in smem
  // Which row group a warp's 16 rows belong to (a group is min(block, 64) rows = kChunk rows).
  __device__ static int group_of_warp(int warp) { return (warp * 16) / kChunk; }
};

// Copy `rows` rows (row r of the tile = global row row_of(r), or zeros when row_of(r) < 0) of D
// 16-bit elements into a swizzled smem tile, all threads cooperating, 16 bytes per cp.async.
template <int D, typename T, typename RowOf>
__device__ __forceinline__ void load_rows_async(T* smem, const T* base, int64_t row_stride, RowOf row_of) {
  constexpr int kDChunks = D / 8;
  constexpr int kPieces = kTileRows * kDChunks;
  static_assert(kPieces % kThreads == 0, "pieces per thread");
#pragma unroll
  for (int i = 0; i < kPieces / kThreads; ++i) {
    const int piece = threadIdx.x + i * kThreads;
    const int r = piece / kDChunks, c = piece % kDChunks;
    const int64_t grow = row_of(r);
    const T* src = grow >= 0 ? base + grow * row_stride + c * 8 : base;
    mma::cp_async_16(smem + mma::swizzle_offset<kDChunks>(r, c), src, grow >= 0);
  }
}

// A fragments (16 rows x D) of a warp from a swizzled smem tile: frag[k16][4].
template <int D, typename T>
__device__ __forceinline__ void load_a_frags(uint32_t (&frag)[D / 16][4], const T* smem, int row0) {
  const int lane = threadIdx.x & 31;
  const int r = row0 + (lane & 15);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int c = kk * 2 + (lane >> 4);
    mma::ldmatrix_x4(frag[kk], smem + mma::swizzle_offset<D / 8>(r, c));
  }
}

// acc[2*p .. 2*p+1][4] += A[16 x D] . B[rows 16p .. 16p+15 of the smem tile]^T
template <typename T, int D>
__device__ __forceinline__ void mma_scores_pair(float (&acc0)[4], float (&acc1)[4], const uint32_t (&a)[D / 16][4],
                                                const T* smem_b, int col0) {
  const int lane = threadIdx.x & 31;
  const int row = col0 + (lane & 7) + ((lane >> 4) << 3);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t b[4];
    const int c = kk * 2 + ((lane >> 3) & 1);
    mma::ldmatrix_x4(b, smem_b + mma::swizzle_offset<D / 8>(row, c));
    const uint32_t b0[2] = {b[0], b[1]};
    const uint32_t b1[2] = {b[2], b[3]};
    mma::Mma16816<T>::run(acc0, a[kk], b0);
    mma::Mma16816<T>::run(acc1, a[kk], b1);
  }
}

// out[D/8][4] += P[16 x 16 keys starting at smem row col0] . C[those rows x D]
template <typename T, int D>
__device__ __forceinline__ void mma_product_k16(float (&out)[D / 8][4], const uint32_t (&p)[4], const T* smem_c,
                                                int col0) {
  const int lane = threadIdx.x & 31;
  const int row = col0 + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
  for (int dd = 0; dd < D / 16; ++dd) {
    uint32_t b[4];
    const int c = dd * 2 + (lane >> 4);
    mma::ldmatrix_x4_trans(b, smem_c + mma::swizzle_offset<D / 8>(row, c));
    const uint32_t b0[2] = {b[0], b[1]};
    const uint32_t b1[2] = {b[2], b[3]};
    mma::Mma16816<T>::run(out[2 * dd], p, b0);
    mma::Mma16816<T>::run(out[2 * dd + 1], p, b1);
  }
}

// The additive terms of one score (natural-log units), beyond q.k*scale: key padding, attention
// bias, rpe, and the -inf of structural masks. q_pos/k_pos are sequence positions.
struct ScoreBias {
  const float* key_padding;  // [B, S] or null
  const float* attn_bias;    // [S, S] or null
  const float* rpe;          // [B, H, S, S] (this b, h) or null
  int S, s_valid, block;
  bool causal_diagonal;
  __device__ __forceinline__ float operator()(int q_pos, int k_pos) const {
    if (k_pos >= s_valid) return -INFINITY;
    // Same block: the positions agree above the block bits (block is 16, 32, 64 or 128), no division.
    if (causal_diagonal && k_pos > q_pos && ((k_pos ^ q_pos) & -block) == 0) return -INFINITY;
    float v = 0.f;
    if (key_padding) v += key_padding[k_pos];
    if (attn_bias) v += attn_bias[static_cast<int64_t>(q_pos) * S + k_pos];
    if (rpe) v += rpe[static_cast<int64_t>(q_pos) * S + k_pos];
    return v;
  }
  // Only the causal diagonal masks (no padding, bias, rpe or padded keys): the kernels then test
  // positions instead of calling operator(), which keeps the score loop lean (registers).
  __device__ __forceinline__ bool causal_only() const {
    return key_padding == nullptr && attn_bias == nullptr && rpe == nullptr && causal_diagonal && s_valid >= S;
  }
  __device__ __forceinline__ bool causal_masked(int q_pos, int k_pos) const {
    return k_pos > q_pos && ((k_pos ^ q_pos) & -block) == 0;
  }
  __device__ __forceinline__ bool trivial() const {
    return key_padding == nullptr && attn_bias == nullptr && rpe == nullptr && !causal_diagonal && s_valid >= S;
  }
};

// Host: call f(std::integral_constant<int, nm>) for the N:M code of Params::nm (12 = 1:2, 24 = 2:4).
template <typename F>
void dispatch_nm(int nm, F&& f) {
  if (nm == 12) return f(std::integral_constant<int, 12>{});
  if (nm == 24) return f(std::integral_constant<int, 24>{});
  throw std::invalid_argument("dynamic N:M attention: Params::nm must be 12 (1:2) or 24 (2:4), got " +
                              std::to_string(nm));
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffff, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffff, v, 1);
  return v + __shfl_xor_sync(0xffffffff, v, 2);
}

}  // namespace ds::bsa
