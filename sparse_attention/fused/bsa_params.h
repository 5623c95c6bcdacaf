// Parameters of the fused block-sparse attention kernels (FlashAttention-style: online softmax, scores
// never leave the chip). Plain C++: shared by the *.cu kernels and the Torch boundary.
//
// Shapes (all row-major, last dim contiguous; strides in elements):
//   q, k, v, o, do, dq, dk, dv : [B, H, S, D]     S a multiple of the layout block
//   lse, delta                  : [B, H, S] fp32  (log-sum-exp of the scaled scores, rowsum(dO * O))
//   key_padding                 : [B, S] fp32 additive (mul-mode masks are turned into 0 / -inf first)
//   attn_bias                   : [S, S] fp32 additive, shared by batch and heads
//   rpe                         : [B, H, S, S] fp32 additive
// The layout enters as tile tables (bsa_tables.h): per (layout head, 64-row tile) the list of key
// chunks present in at least one of the tile's rows, each with a bit per row group saying which rows
// have it. Heads map to layout heads as h % layout_heads (layout_heads is 1 or H).
#pragma once

#include <cstdint>

#include "ops/common/scalar_kind.h"

namespace ds::bsa {

constexpr int kTileRows = 64;  // query rows (forward, dQ) or key rows (dK/dV) per CTA: 4 warps x 16

struct TileList {
  const int32_t* ptr = nullptr;    // [layout_heads * num_tiles + 1]
  const int32_t* chunk = nullptr;  // chunk index on the other axis (start = chunk * chunk_size)
  const uint32_t* mask = nullptr;  // bit g: row group g of the tile has this chunk
  const int32_t* order = nullptr;  // [B * H * num_tiles] work items, heaviest first (b, h, tile packed)
};

struct Params {
  ScalarKind kind = ScalarKind::BF16;
  int B = 0, H = 0, S = 0, D = 0;
  int s_valid = 0;          // keys/queries at >= s_valid are padding: never attended, outputs zero
  int block = 16;           // layout block
  int chunk = 16;           // min(block, 64): keys gathered per chunk
  int layout_heads = 1;
  int num_tiles = 0;        // ceil(S / kTileRows)
  bool causal_diagonal = false;  // unidirectional layout: diagonal blocks are causal inside the block
  float scale = 1.f;
  // Dynamic N:M selection (DFSS) on top of the layout: 0 none, 12 = 1:2, 24 = 2:4 (chunk must be 64;
  // the N:M op runs a dense or lower-triangular layout of 64-blocks).
  int nm = 0;

  const void *q = nullptr, *k = nullptr, *v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;
  int64_t q_bs = 0, q_hs = 0, q_rs = 0;  // batch / head / row strides of q (and o, do, dq: same shape)
  int64_t k_bs = 0, k_hs = 0, k_rs = 0;  // of k and v (and dk, dv)
  int64_t o_bs = 0, o_hs = 0, o_rs = 0;

  const float* key_padding = nullptr;
  const float* attn_bias = nullptr;
  const float* rpe = nullptr;

  // backward
  const void* dout = nullptr;
  float* delta = nullptr;
  void *dq = nullptr, *dk = nullptr, *dv = nullptr;

  TileList q_tiles;  // forward and dQ: query tiles -> key chunks
  TileList k_tiles;  // dK/dV: key tiles -> query chunks
};

void launch_forward(const Params& p, void* stream);        // sm_80 path (mma.sync), any sm >= 80
void launch_forward_sm90(const Params& p, void* stream);   // Hopper path (wgmma), sm_90a only
// Backward: delta = rowsum(dO * O), then dQ (per query tile) and dK/dV (per key tile).
void launch_backward(const Params& p, void* stream);       // sm_80 path
void launch_backward_sm90(const Params& p, void* stream);  // Hopper path
void launch_delta(const Params& p, void* stream);          // delta = rowsum(dO * O), both paths

// Dynamic shared memory the kernels need (bytes), for the boundary's checks.
int forward_smem_bytes(int head_dim);

}  // namespace ds::bsa
