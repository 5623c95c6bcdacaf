// Dynamic N:M fine-grained sparse attention (after DFSS, Chen et al., PPoPP'23): in every group of M
// consecutive keys of a query row keep the N largest scores, softmax over what is kept, times V.
// 1:2 and 2:4.
//
// Semantics (defined by the reference below; the CUDA kernel matches it):
//   s = q k^T * scale (+ key padding mask) (+ attention mask) (+ causal: -inf above the diagonal)
//   the key axis is split into consecutive groups of M (padded to a multiple of M with masked keys);
//   in each group the N largest entries are kept, ties broken by the lower key index, the rest set
//   to -inf; softmax over each row (a row with nothing allowed gives zeros, not NaN); times v.
//   Masked keys (-inf) are never kept ahead of unmasked ones. The selection is piecewise constant,
//   so gradients flow through the kept entries only.
// Masks: key_padding_mask [B, S] and attn_mask [S, S], mode "add" (added as is) or "mul" (0 -> -inf,
// anything else -> 0), as in SparseSelfAttention.
#pragma once

#include <torch/types.h>

#include <optional>

#include "sparse_attention/blocksparse.h"  // MaskMode

namespace ds {

struct NMOptions {
  int64_t n = 2;
  int64_t m = 4;
  std::optional<double> scale;      // default head_dim^-0.5
  at::Tensor key_padding_mask;      // [B, S]
  at::Tensor attn_mask;             // [S, S]
  MaskMode key_padding_mask_mode = MaskMode::Add;
  MaskMode attn_mask_mode = MaskMode::Mul;
  bool causal = false;
};

// Throws (c10::ValueError) unless n:m is 1:2 or 2:4.
void check_nm(int64_t n, int64_t m);

// q, k, v: [B, H, S, D] -> [B, H, S, D]. Dispatches on the device: the fused CUDA kernel when it is
// built and supports the arguments (fp16/bf16, head dim 32/64/128), else the reference below (which
// runs on any device). DS_NM_ATTENTION_PATH=auto|fused|reference forces a path.
at::Tensor nm_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const NMOptions& o = {});

// The reference: dense scores in float32 (float64 for float64 inputs), then selection, softmax and
// the product through ATen ops, so autograd differentiates it. O(S^2) memory: the oracle, and the
// unfused DFSS-style baseline of the benchmark.
at::Tensor nm_sparse_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const NMOptions& o = {});

// The additive scores the selection sees (scale, masks, causal), float32/64 [B, H, S, S].
at::Tensor nm_scores(const at::Tensor& q, const at::Tensor& k, const NMOptions& o);

// Selection: bool, same shape as scores; true where the entry is among the N largest of its group of
// M consecutive entries along the last dim (ties -> lower index).
at::Tensor nm_select_mask(const at::Tensor& scores, int64_t n, int64_t m);

}  // namespace ds
