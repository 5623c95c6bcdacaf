// Block-sparse MatMul (sdd / dsd / dds) and Softmax, and the sparse attention they compose, as
// differentiable functions on a LayoutTables; DeepSpeed's MatMul/Softmax objects on top.
//
// Device dispatch: every function dispatches on its inputs' device. CPU runs the reference path in
// this folder (batched block GEMMs and segment reductions: the oracle the CUDA kernels are checked
// against); CUDA tensors run the kernels of blocksparse_matmul.cu / blocksparse_softmax.cu (and, for
// sparse_attention, the fused kernel of fused/ when it supports the arguments), with the layout's
// device tables built once per device (device_tables.h).
//
// dtypes: on CPU float32 and float64 are computed as is, float16 and bfloat16 in float32 and rounded
// back; on CUDA float32, float16 and bfloat16 run natively with float32 accumulation (float64 is not
// supported there). DeepSpeed's kernels accumulate in float32 too.
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
  // Our extension: in the blocks on the layout's diagonal (block row == block column) a query does not
  // see later keys (a unidirectional layout's meaning; see AttentionOptions::causal_diagonal).
  bool causal_diagonal = false;
};

// x: [Z, nnz, b, b] block-sparse scores -> probabilities over the present blocks of each row.
// Out of place (DeepSpeed writes into x). Rows with no allowed entry give 0 (DeepSpeed: NaN).
// Masks and rpe must have x's dtype (DeepSpeed's ValueErrors).
at::Tensor blocksparse_softmax(const at::Tensor& x, const LayoutTables& t, const SoftmaxOptions& options = {});

at::Tensor blocksparse_matmul(const at::Tensor& a, const at::Tensor& b, const LayoutTables& t, MatMulMode mode,
                              bool trans_a = false, bool trans_b = false);

// Which implementation sparse_attention runs on CUDA tensors: the fused kernel (fused/: online
// softmax, scores never leave the chip) or the block-sparse ops above (sdd -> softmax -> dsd, as
// DeepSpeed). Auto takes the fused kernel whenever it supports the arguments. The environment variable
// DS_SPARSE_ATTENTION_PATH=auto|fused|unfused applies when the option is Auto. Forcing Fused for
// arguments it does not support is an error saying why. CPU tensors always run the reference path
// (the environment variable is ignored there; the Fused option is an error).
enum class AttentionPath { Auto, Fused, Unfused };
AttentionPath parse_attention_path(const std::string& path, const char* what = "path");
const char* attention_path_name(AttentionPath p);

struct AttentionOptions {
  std::optional<double> scale;  // default head_dim^-0.5
  at::Tensor rpe;               // [Z, H, S, S]
  at::Tensor key_padding_mask;  // [Z, S]
  at::Tensor attn_mask;         // [S, S]
  MaskMode key_padding_mask_mode = MaskMode::Add;
  MaskMode attn_mask_mode = MaskMode::Mul;  // SparseSelfAttention's defaults
  // Blocks on the layout's diagonal are causal inside the block (key > query excluded): what a
  // unidirectional layout means (DeepSpeed's kernels attend the whole diagonal block unless the user
  // passes a causal attn_mask; SparseSelfAttention sets this from its config's attention).
  bool causal_diagonal = false;
  AttentionPath path = AttentionPath::Auto;
};

// softmax(q k^T * scale + rpe + masks, over the layout) v for q, k, v [Z, H, S, D] (k not
// transposed). Any S: the layout must have ceil(S / b) block rows and columns; inside, the
// sequence is padded to whole blocks, padded keys are excluded and the output is cut back to S.
// Masks of another dtype are cast to q's (as SparseSelfAttention does). Differentiable in q, k, v
// and rpe (the fused path gives rpe no gradient, so an rpe that requires grad takes the unfused path).
at::Tensor sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const LayoutTables& t,
                            const AttentionOptions& options = {});

// Why the fused kernel cannot take these arguments ("" when it can): CUDA tensors of float16 or
// bfloat16, head size 32, 64 or 128, a square layout, rpe without gradient.
std::string fused_attention_unsupported(const at::Tensor& q, const LayoutTables& t, const AttentionOptions& options);
// The path sparse_attention takes for these arguments: Fused, or Unfused (on CPU: the reference).
AttentionPath resolve_attention_path(const at::Tensor& q, const LayoutTables& t, const AttentionOptions& options);

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
