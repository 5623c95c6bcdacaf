// Block-sparse MatMul (sdd / dsd / dds) and Softmax, and the sparse attention they compose, as
// differentiable functions on a LayoutTables; DeepSpeed's MatMul/Softmax objects on top.
//
// Device dispatch: every function dispatches on its inputs' device. CPU runs the reference path in
// this folder (batched block GEMMs and segment reductions: the oracle the CUDA kernels are checked
// against). CUDA tensors raise "CUDA path not built yet" until the kernels land behind these same
// functions.
//
// dtypes: float32 and float64 are computed as is; float16 and bfloat16 are computed in float32 and
// rounded back (DeepSpeed's kernels accumulate in float32 too).
//
// Shapes (Z = batch, H = heads, b = block; the layout [H, R, C] describes the stored sparse operand
// or result, before any transpose, as in DeepSpeed):
//   sdd: C[Z, nnz, b, b] = mask(op(A) op(B)),  op(A) [Z,H,M,K] with M = R*b, op(B) [Z,H,K,N], N = C*b
//   dsd: C[Z, H, M, N]   = op(S) op(B),        S [Z, nnz, b, b], op(S) [H, M, K]
//   dds: C[Z, H, M, N]   = op(A) op(S),        op(S) [H, K, N]
// where op(X) = X^T when its trans flag is set. Dense inputs with fewer than 4 dims get leading
// singleton dims, removed again from the result (DeepSpeed's rule).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "sparse_attention/layout_tables.h"

namespace ds {

enum class MatMulMode { SDD, DSD, DDS };
// "sdd" | "dsd" | "dds"; anything else: DeepSpeed's NotImplementedError('Supported modes are: ...').
MatMulMode parse_matmul_mode(const std::string& mode);
const char* matmul_mode_name(MatMulMode m);

// How a mask's values enter the scores: Add adds them; Mul turns 0 into -inf and anything else into 0
// (DeepSpeed's 'mul', which is a masking rule, not a product).
enum class MaskMode { Add, Mul };
MaskMode parse_mask_mode(const std::string& mode, const char* what);
const char* mask_mode_name(MaskMode m);

struct SoftmaxOptions {
  double scale = 1.0;          // multiplies x only (not rpe or masks)
  at::Tensor rpe;              // [Z, H, S, S] (size-1 Z/H broadcast), added; receives a gradient
  at::Tensor key_padding_mask; // [Z, S], per key column
  at::Tensor attn_mask;        // [S, S], shared by batch and heads
  MaskMode key_padding_mask_mode = MaskMode::Add;
  MaskMode attn_mask_mode = MaskMode::Add;  // DeepSpeed's Softmax default (SparseSelfAttention uses Mul)
  // Our extension: key columns >= valid_keys are excluded (used by sparse_attention for the keys it
  // pads up to a whole block); -1 means all.
  int64_t valid_keys = -1;
};

// x: [Z, nnz, b, b] block-sparse scores -> probabilities over the present blocks of each row.
// Out of place (DeepSpeed writes into x). Rows with no allowed entry give 0 (DeepSpeed: NaN).
// Masks and rpe must have x's dtype (DeepSpeed's ValueErrors).
at::Tensor blocksparse_softmax(const at::Tensor& x, const LayoutTables& t, const SoftmaxOptions& options = {});

at::Tensor blocksparse_matmul(const at::Tensor& a, const at::Tensor& b, const LayoutTables& t, MatMulMode mode,
                              bool trans_a = false, bool trans_b = false);

struct AttentionOptions {
  std::optional<double> scale;  // default head_dim^-0.5
  at::Tensor rpe;               // [Z, H, S, S]
  at::Tensor key_padding_mask;  // [Z, S]
  at::Tensor attn_mask;         // [S, S]
  MaskMode key_padding_mask_mode = MaskMode::Add;
  MaskMode attn_mask_mode = MaskMode::Mul;  // SparseSelfAttention's defaults
};

// softmax(q k^T * scale + rpe + masks, over the layout) v for q, k, v [Z, H, S, D] (k not
// transposed). Any S: the layout must have ceil(S / b) block rows and columns; inside, the
// sequence is padded to whole blocks, padded keys are excluded and the output is cut back to S.
// Masks of another dtype are cast to q's (as SparseSelfAttention does). Differentiable in q, k, v
// and rpe.
at::Tensor sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const LayoutTables& t,
                            const AttentionOptions& options = {});

// DeepSpeed's MatMul object: a layout, block, mode and transposes fixed at construction; its
// tables are built here, once.
class MatMul {
 public:
  MatMul(const at::Tensor& layout, int64_t block, const std::string& mode, bool trans_a = false,
         bool trans_b = false);
  at::Tensor operator()(const at::Tensor& a, const at::Tensor& b) const;
  const LayoutTables& tables() const { return *tables_; }
  MatMulMode mode() const { return mode_; }

 private:
  std::shared_ptr<const LayoutTables> tables_;
  MatMulMode mode_;
  bool trans_a_, trans_b_;
};

// DeepSpeed's Softmax object (layout must be 3-D).
class Softmax {
 public:
  Softmax(const at::Tensor& layout, int64_t block);
  at::Tensor operator()(const at::Tensor& x, const SoftmaxOptions& options = {}) const;
  const LayoutTables& tables() const { return *tables_; }

 private:
  std::shared_ptr<const LayoutTables> tables_;
};

}  // namespace ds
