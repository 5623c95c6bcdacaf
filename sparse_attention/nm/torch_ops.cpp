// torch.ops.ds.nm_sparse_attention (part of build/lib/libds_torch.so). Registered without a dispatch
// key: autograd flows through the reference's ATen ops or the fused path's autograd function.
#include <torch/library.h>
#include <torch/torch.h>

#include <string>

#include "sparse_attention/nm/nm_attention.h"

namespace ds {
namespace {

at::Tensor nm_sparse_attention_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n, int64_t m,
                                  c10::optional<double> scale, const c10::optional<at::Tensor>& key_padding_mask,
                                  const c10::optional<at::Tensor>& attn_mask, const std::string& key_padding_mask_mode,
                                  const std::string& attn_mask_mode, bool causal) {
  NMOptions o;
  o.n = n;
  o.m = m;
  if (scale) o.scale = *scale;
  if (key_padding_mask) o.key_padding_mask = *key_padding_mask;
  if (attn_mask) o.attn_mask = *attn_mask;
  o.key_padding_mask_mode = parse_mask_mode(key_padding_mask_mode, "key_padding_mask_mode");
  o.attn_mask_mode = parse_mask_mode(attn_mask_mode, "attn_mask_mode");
  o.causal = causal;
  return nm_sparse_attention(q, k, v, o);
}

}  // namespace
}  // namespace ds

TORCH_LIBRARY_FRAGMENT(ds, m) {
  m.def(
      "nm_sparse_attention(Tensor q, Tensor k, Tensor v, int n, int m, float? scale=None, "
      "Tensor? key_padding_mask=None, Tensor? attn_mask=None, str key_padding_mask_mode=\"add\", "
      "str attn_mask_mode=\"mul\", bool causal=False) -> Tensor",
      &ds::nm_sparse_attention_op);
}
