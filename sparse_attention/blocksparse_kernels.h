// Parameters of the block-sparse MatMul and Softmax CUDA kernels (raw pointers, no Torch). Plain C++:
// shared by the *.cu kernels, the Torch boundary (blocksparse_cuda.cpp) and the standalone harness.
//
// Tensors are contiguous, row-major, 16-byte aligned; every contiguous (last) dimension of a dense
// operand is a multiple of 8 elements (the boundary zero-pads other sizes). Block-sparse tensors are
// [Z, nnz, block, block] in nnz order (blocksparse_tables.h). Element types: fp32, fp16, bf16;
// accumulation always in fp32.
#pragma once

#include <cstdint>

#include "ops/common/scalar_kind.h"

namespace ds::bsmm {

// Device copies of one TileTable (blocksparse_tables.h).
struct TileTableView {
  const int32_t* ptr = nullptr;
  const int32_t* chunk = nullptr;
  const uint32_t* mask = nullptr;
  const int32_t* nnz = nullptr;
  const int32_t* order = nullptr;
  int num_tiles = 0;
};

struct LayoutView {
  int heads = 0, rows = 0, cols = 0, block = 0, chunk = 0, layout_heads = 1;
  int64_t nnz = 0, nnz_head_stride = 0;
};

// sdd: C[z, n] = (op(A) op(B)) restricted to the present blocks, for op(A) [M, K], op(B) [K, N] per
// (z, h) with M = rows * block, N = cols * block. Tiles walk by_row.
struct SddParams {
  ScalarKind kind = ScalarKind::F32;
  int Z = 0;
  LayoutView layout;
  int K = 0;
  bool a_kmajor = true;  // A stored [Z, H, M, K] (not transposed); false: [Z, H, K, M]
  bool b_kmajor = true;  // B stored [Z, H, N, K] (op(B) = B^T); false: [Z, H, K, N]
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;  // [Z, nnz, block, block]
  TileTableView tiles;
};

// dsd-like: C'[M, N] = op(S) op(B) per (z, h), S block-sparse [Z, nnz, b, b] and op(S) [M, K]:
//   trans_s false: op(S) = S, M = rows * b, K = cols * b, tiles walk by_row
//   trans_s true:  op(S) = S^T, M = cols * b, K = rows * b, tiles walk by_col
// C' is written to c as [Z, H, M, N], or transposed as [Z, H, N, M] when trans_out (dds runs as
// (op(A) op(S))^T = op'(S) op'(A): one kernel for both modes, the boundary flips the transposes).
struct DxdParams {
  ScalarKind kind = ScalarKind::F32;
  int Z = 0;
  LayoutView layout;
  int M = 0, N = 0, K = 0;
  bool trans_s = false;
  bool b_kmajor = false;  // B stored [Z, H, N, K] (op(B) = B^T); false: [Z, H, K, N]
  bool trans_out = false;
  const void* s = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  TileTableView tiles;
};

// Softmax over the present blocks of each row of x*scale + rpe + key padding + attn mask (+ the
// structural exclusions), DeepSpeed's semantics (sparse_attention/blocksparse.h), rows with nothing
// allowed give 0. Masks and rpe have x's element type; mask_mode 0 = add, 1 = mul (0 -> -inf,
// anything else -> 0).
struct SoftmaxParams {
  ScalarKind kind = ScalarKind::F32;
  int Z = 0;
  LayoutView layout;
  const int32_t* row_ptr = nullptr;  // [heads * rows + 1]
  const int32_t* col = nullptr;      // [nnz]
  const void* x = nullptr;           // forward input; backward: y
  void* y = nullptr;                 // forward output; backward: dx (w.r.t. the pre-softmax scores, unscaled)
  const void* dy = nullptr;          // backward only
  float scale = 1.f;
  const void* rpe = nullptr;         // [Zr, Hr, rows * b, cols * b]
  int64_t rpe_zs = 0, rpe_hs = 0;    // batch / head strides (0: broadcast)
  const void* key_padding = nullptr; // [Z, cols * b]
  int key_padding_mode = 0;
  const void* attn_mask = nullptr;   // [rows * b, cols * b]
  int attn_mask_mode = 0;
  int valid_keys = -1;               // key positions >= valid_keys are excluded (-1: none)
  bool causal_diagonal = false;      // in blocks on the diagonal (row == col), keys after the query excluded
};

void launch_sdd(const SddParams& p, void* stream);
void launch_dxd(const DxdParams& p, void* stream);
void launch_softmax_forward(const SoftmaxParams& p, void* stream);
void launch_softmax_backward(const SoftmaxParams& p, void* stream);

// Largest K the sdd kernel keeps resident in shared memory (one A tile for all steps); above it, A and
// B stream in k-slices. Exposed for tests that want both regimes.
int sdd_resident_max_k(ScalarKind kind);

}  // namespace ds::bsmm
