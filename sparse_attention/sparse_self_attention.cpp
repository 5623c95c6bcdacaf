#include "sparse_attention/sparse_self_attention.h"

#include <torch/torch.h>

#include "sparse_attention/nm/nm_attention.h"
#include "sparse_attention/nm/nm_fused.h"

namespace ds {
namespace {

// DeepSpeed's mask preparation, shared by the block-sparse and the N:M path: cast to the query's
// dtype; key_padding_mask squeezed on dims ndim-1..1 ([B,1,1,S] -> [B,S]), attn_mask fully squeezed.
at::Tensor prepare_key_padding_mask(const at::Tensor& mask, at::ScalarType dtype) {
  if (!mask.defined()) return {};
  at::Tensor m = mask.to(dtype);
  for (int64_t d = m.dim() - 1; d > 0; --d) m = m.squeeze(d);
  return m;
}

at::Tensor prepare_attn_mask(const at::Tensor& mask, at::ScalarType dtype) {
  return mask.defined() ? mask.to(dtype).squeeze() : at::Tensor();
}

}  // namespace

SparseSelfAttentionImpl::SparseSelfAttentionImpl(std::shared_ptr<const SparsityConfig> sparsity_config,
                                                 const std::string& key_padding_mask_mode,
                                                 const std::string& attn_mask_mode, int64_t max_seq_length)
    : config_(std::move(sparsity_config)),
      kp_mode_(parse_mask_mode(key_padding_mask_mode, "key_padding_mask_mode")),
      attn_mode_(parse_mask_mode(attn_mask_mode, "attn_mask_mode")),
      max_seq_length_(max_seq_length) {
  TORCH_CHECK_VALUE(config_ != nullptr,
                    "SparseSelfAttention needs a sparsity config (e.g. FixedSparsityConfig(num_heads)); "
                    "DeepSpeed's default SparsityConfig(num_heads=4) has no layout");
  if (config_->has_block_layout())
    master_layout = register_buffer("master_layout", config_->make_layout(max_seq_length));
}

int64_t SparseSelfAttentionImpl::num_blocks_for(int64_t L) const {
  TORCH_CHECK_VALUE(config_->has_block_layout(), "SparseSelfAttention: sparsity config '", config_->name(),
                    "' has no block layout (its sparsity is chosen per input at run time), so there are no "
                    "layouts or tables to get");
  const int64_t block = config_->block();
  TORCH_CHECK_VALUE(L > 0, "Sequence Length must be positive, got ", L);
  const int64_t nb = (L + block - 1) / block;
  TORCH_CHECK_VALUE(nb <= master_layout.size(1), "Sequence Length, ", L, ", is longer than max_seq_length ",
                    max_seq_length_, " of this SparseSelfAttention; construct it with max_seq_length >= ",
                    nb * block);
  return nb;
}

at::Tensor SparseSelfAttentionImpl::get_layout(int64_t L) const {
  const int64_t nb = num_blocks_for(L);
  return master_layout.slice(1, 0, nb).slice(2, 0, nb).to(at::kCPU, at::kLong);
}

std::shared_ptr<const LayoutTables> SparseSelfAttentionImpl::get_tables(int64_t L) {
  const int64_t nb = num_blocks_for(L);
  std::lock_guard<std::mutex> lock(mutex_);
  // A replaced or modified master layout (load_state_dict copies in place and bumps the version;
  // to(device) replaces the tensor) invalidates every cached table.
  if (master_layout.data_ptr() != cached_data_ || master_layout._version() != cached_version_) {
    cache_.clear();
    cached_data_ = master_layout.data_ptr();
    cached_version_ = master_layout._version();
  }
  auto it = cache_.find(nb);
  if (it == cache_.end()) {
    auto tables = std::make_shared<const LayoutTables>(LayoutTables::build(get_layout(L), config_->block()));
    it = cache_.emplace(nb, std::move(tables)).first;
  }
  return it->second;
}

size_t SparseSelfAttentionImpl::cached_layouts() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.size();
}

at::Tensor SparseSelfAttentionImpl::forward(const at::Tensor& query, const at::Tensor& key_in,
                                            const at::Tensor& value, const at::Tensor& rpe,
                                            const at::Tensor& key_padding_mask, const at::Tensor& attn_mask) {
  TORCH_CHECK_VALUE(query.defined() && query.dim() == 4,
                    "SparseSelfAttention: query must be [batch, heads, seq, head_dim], got ",
                    query.defined() ? query.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(key_in.defined() && key_in.dim() == 4 && value.defined(),
                    "SparseSelfAttention: key and value must be 4-D tensors");
  const int64_t tgt_len = query.size(2);
  // DeepSpeed accepts keys pre-transposed for q k^T: [B, H, D, S].
  at::Tensor key = key_in.size(2) != tgt_len ? key_in.transpose(-1, -2) : key_in;
  TORCH_CHECK_NOT_IMPLEMENTED(query.sizes() == key.sizes() && key.sizes() == value.sizes(),
                              "only self-attention is supported for now (query ", query.sizes(), ", key ",
                              key_in.sizes(), ", value ", value.sizes(), ")");

  if (!config_->has_block_layout()) {
    TORCH_CHECK_NOT_IMPLEMENTED(!rpe.defined(), "SparseSelfAttention: sparsity config '", config_->name(),
                                "' (dynamic N:M) does not take a relative position embedding (rpe) yet");
    return forward_nm(query, key, value, key_padding_mask, attn_mask);
  }

  AttentionOptions o;
  o.key_padding_mask_mode = kp_mode_;
  o.attn_mask_mode = attn_mode_;
  o.causal_diagonal = config_->unidirectional();
  o.path = path_;
  o.rpe = rpe;
  o.key_padding_mask = prepare_key_padding_mask(key_padding_mask, query.scalar_type());
  o.attn_mask = prepare_attn_mask(attn_mask, query.scalar_type());
  std::shared_ptr<const LayoutTables> tables = get_tables(tgt_len);
  return sparse_attention(query, key, value, *tables, o);
}

at::Tensor SparseSelfAttentionImpl::forward_nm(const at::Tensor& query, const at::Tensor& key,
                                               const at::Tensor& value, const at::Tensor& key_padding_mask,
                                               const at::Tensor& attn_mask) const {
  const auto* nm = dynamic_cast<const NMSparsityConfig*>(config_.get());
  TORCH_CHECK_VALUE(nm != nullptr, "SparseSelfAttention: sparsity config '", config_->name(),
                    "' has no block layout and is not an NMSparsityConfig; no attention can run it");
  // A head count that differs from the config's is a wiring error, as it is for the block layouts.
  TORCH_CHECK_VALUE(query.size(1) == nm->num_heads(), "SparseSelfAttention: query has ", query.size(1),
                    " heads, the sparsity config ", nm->num_heads());
  NMOptions o;
  o.n = nm->n();
  o.m = nm->m();
  o.key_padding_mask = prepare_key_padding_mask(key_padding_mask, query.scalar_type());
  o.attn_mask = prepare_attn_mask(attn_mask, query.scalar_type());
  o.key_padding_mask_mode = kp_mode_;
  o.attn_mask_mode = attn_mode_;
  o.causal = nm->unidirectional();
  switch (path_) {
    case AttentionPath::Auto:
      break;
    case AttentionPath::Unfused:
      return nm_sparse_attention_reference(query, key, value, o);
    case AttentionPath::Fused: {
      const std::string why = nm_fused_unsupported_reason(query, o);
      TORCH_CHECK(why.empty(), "SparseSelfAttention: attention path 'fused' but the fused N:M kernel cannot run "
                  "these arguments: ", why);
      return nm_fused_attention(query, key, value, o);
    }
  }
  return nm_sparse_attention(query, key, value, o);
}

// ---------------------------------------------------------------------------------------------
BertSparseSelfAttentionImpl::BertSparseSelfAttentionImpl(int64_t hidden_size, int64_t num_attention_heads,
                                                         std::shared_ptr<const SparsityConfig> sparsity_config,
                                                         int64_t max_seq_length)
    : num_heads_(num_attention_heads), head_size_(0), hidden_(hidden_size) {
  TORCH_CHECK_VALUE(num_attention_heads > 0 && hidden_size % num_attention_heads == 0, "The hidden size (",
                    hidden_size, ") is not a multiple of the number of attention heads (", num_attention_heads, ")");
  head_size_ = hidden_size / num_attention_heads;
  if (!sparsity_config) sparsity_config = std::make_shared<FixedSparsityConfig>(num_attention_heads);
  query = register_module("query", torch::nn::Linear(hidden_size, hidden_size));
  key = register_module("key", torch::nn::Linear(hidden_size, hidden_size));
  value = register_module("value", torch::nn::Linear(hidden_size, hidden_size));
  sparse_self_attention = register_module(
      "sparse_self_attention", SparseSelfAttention(std::move(sparsity_config), "add", "mul", max_seq_length));
}

at::Tensor BertSparseSelfAttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& attention_mask) {
  TORCH_CHECK_VALUE(hidden_states.dim() == 3 && hidden_states.size(2) == hidden_,
                    "BertSparseSelfAttention: hidden_states must be [batch, seq, ", hidden_, "], got ",
                    hidden_states.sizes());
  const int64_t B = hidden_states.size(0), S = hidden_states.size(1);
  auto split_heads = [&](const at::Tensor& x) {  // [B, S, hidden] -> [B, H, S, D]
    return x.view({B, S, num_heads_, head_size_}).permute({0, 2, 1, 3});
  };
  at::Tensor q = split_heads(query->forward(hidden_states));
  at::Tensor k = split_heads(key->forward(hidden_states));
  at::Tensor v = split_heads(value->forward(hidden_states));
  at::Tensor ctx = sparse_self_attention->forward(q, k, v, {}, attention_mask);  // [B, H, S, D]
  return ctx.permute({0, 2, 1, 3}).contiguous().view({B, S, hidden_});
}

}  // namespace ds
