// DeepSpeed's SparseSelfAttention and BertSparseSelfAttention modules (torch::nn), on the
// block-sparse ops of blocksparse.h.
//
// SparseSelfAttention(config, key_padding_mask_mode="add", attn_mask_mode="mul", max_seq_length=2048):
//  - builds ONE master layout for max_seq_length at construction, registered as the persistent
//    buffer `master_layout` (so checkpoints carry it), and slices master_layout[:, :nb, :nb] for a
//    sequence of nb blocks (DeepSpeed's semantics: not the same as make_layout(L));
//  - caches the LayoutTables per block count in THIS module (DeepSpeed: a class-level dict keyed by
//    sequence length only, shared by every instance whatever its layout); the cache is dropped when
//    master_layout is replaced or modified (load_state_dict, to(device));
//  - forward(q, k, v, rpe, key_padding_mask, attn_mask) on [B, H, S, D]: a key given as
//    [B, H, D, S] is transposed back, key_padding_mask is cast to q's dtype and squeezed on dims
//    ndim-1..1 ([B,1,1,S] -> [B,S]), attn_mask cast and fully squeezed, scale D^-0.5.
//  Beyond DeepSpeed: any S <= max_seq_length (padded to whole blocks inside, padded keys masked,
//  output cut back), float32/float64/bfloat16/float16 (DeepSpeed: float16 only), no layout broadcast
//  (layouts are deterministic; see sparsity_config.h). A unidirectional config makes the diagonal
//  blocks causal inside the block (AttentionOptions::causal_diagonal; DeepSpeed attends the whole
//  diagonal block, leaking up to block-1 future tokens, unless the user passes a causal attn_mask).
//  On CUDA the fused kernel runs whenever it supports the arguments (ds::sparse_attention's rule);
//  set_attention_path forces a path.
// Dynamic N:M (an NMSparsityConfig, mode "dynamic_nm"): no master layout, no tables, no block padding;
//  forward runs ds::nm_sparse_attention (sparse_attention/nm) with the same mask handling, modes and
//  scale, causal when the config is unidirectional. The path: Auto = nm_sparse_attention's dispatch
//  (fused CUDA kernel when it supports the arguments, else the reference), Fused = the fused kernel
//  or an error, Unfused = the reference. No rpe (the N:M op has none yet). max_seq_length is not a
//  limit there (nothing is sized by it).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "sparse_attention/blocksparse.h"
#include "sparse_attention/layout_tables.h"
#include "sparse_attention/sparsity_config.h"

namespace ds {

class SparseSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SparseSelfAttentionImpl(std::shared_ptr<const SparsityConfig> sparsity_config,
                                   const std::string& key_padding_mask_mode = "add",
                                   const std::string& attn_mask_mode = "mul", int64_t max_seq_length = 2048);

  // query/key/value: [B, H, S, D] (key may be [B, H, D, S]); rpe [B, H, S, S]; key_padding_mask
  // [B, S] (or [B, 1, 1, S]); attn_mask [S, S] (or with extra size-1 dims). Returns [B, H, S, D].
  at::Tensor forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                     const at::Tensor& rpe = {}, const at::Tensor& key_padding_mask = {},
                     const at::Tensor& attn_mask = {});

  // The layout used for a sequence of L tokens: master_layout[:, :nb, :nb], nb = ceil(L / block).
  // Both throw for a config without block layout (dynamic N:M).
  at::Tensor get_layout(int64_t L) const;
  // The cached tables of that layout (built on first use per block count).
  std::shared_ptr<const LayoutTables> get_tables(int64_t L);

  const SparsityConfig& sparsity_config() const { return *config_; }
  int64_t max_seq_length() const { return max_seq_length_; }
  MaskMode key_padding_mask_mode() const { return kp_mode_; }
  MaskMode attn_mask_mode() const { return attn_mode_; }
  size_t cached_layouts() const;
  // Auto (default), Fused or Unfused: see AttentionPath in blocksparse.h.
  void set_attention_path(AttentionPath path) { path_ = path; }
  AttentionPath attention_path() const { return path_; }

  // int64 [heads, max_seq_length/block, max_seq_length/block]; undefined (and not a buffer, so not in
  // the state dict) for dynamic N:M.
  at::Tensor master_layout;

 private:
  int64_t num_blocks_for(int64_t L) const;  // ceil(L / block), checked against the master layout
  at::Tensor forward_nm(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                        const at::Tensor& key_padding_mask, const at::Tensor& attn_mask) const;

  std::shared_ptr<const SparsityConfig> config_;
  MaskMode kp_mode_, attn_mode_;
  int64_t max_seq_length_;
  AttentionPath path_ = AttentionPath::Auto;
  mutable std::mutex mutex_;
  std::map<int64_t, std::shared_ptr<const LayoutTables>> cache_;  // by block count
  // Identity of the master layout the cache was built from.
  const void* cached_data_ = nullptr;
  int64_t cached_version_ = -1;
};
TORCH_MODULE(SparseSelfAttention);

// query/key/value Linear(hidden, hidden) + SparseSelfAttention. No attention-probability dropout
// (as DeepSpeed). State-dict keys: query.*, key.*, value.*, sparse_self_attention.master_layout.
class BertSparseSelfAttentionImpl : public torch::nn::Module {
 public:
  // sparsity_config null: FixedSparsityConfig(num_heads = num_attention_heads). An NMSparsityConfig
  // runs dynamic N:M attention (no master_layout key in the state dict then). (DeepSpeed's
  // default is FixedSparsityConfig(num_heads=4), which fails for any model without 4 heads.)
  BertSparseSelfAttentionImpl(int64_t hidden_size, int64_t num_attention_heads,
                              std::shared_ptr<const SparsityConfig> sparsity_config = nullptr,
                              int64_t max_seq_length = 2048);

  // hidden_states [B, S, hidden]; attention_mask: BERT's additive mask [B, 1, 1, S] (0 / -10000),
  // used as the key padding mask in 'add' mode. Returns [B, S, hidden].
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask = {});

  int64_t num_attention_heads() const { return num_heads_; }
  int64_t attention_head_size() const { return head_size_; }

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  SparseSelfAttention sparse_self_attention{nullptr};

 private:
  int64_t num_heads_, head_size_, hidden_;
};
TORCH_MODULE(BertSparseSelfAttention);

}  // namespace ds
