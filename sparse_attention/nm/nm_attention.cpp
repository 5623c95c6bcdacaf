#include "sparse_attention/nm/nm_attention.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "sparse_attention/nm/nm_fused.h"

namespace ds {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A mask's values as additive scores: add mode keeps them, mul mode maps 0 -> -inf, else 0.
at::Tensor additive(const at::Tensor& mask, MaskMode mode, at::ScalarType dtype) {
  const at::Tensor m = mask.to(dtype);
  if (mode == MaskMode::Add) return m;
  return at::zeros_like(m).masked_fill(m == 0, -kInf);
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const NMOptions& o) {
  check_nm(o.n, o.m);
  TORCH_CHECK_VALUE(q.dim() == 4, "nm_sparse_attention: q must be [B, H, S, D], got shape ", q.sizes());
  TORCH_CHECK_VALUE(k.sizes() == q.sizes() && v.sizes() == q.sizes(),
                    "nm_sparse_attention: only self-attention is supported: q, k, v must have one shape; got ",
                    q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK_VALUE(k.device() == q.device() && v.device() == q.device(),
                    "nm_sparse_attention: q, k, v must be on one device; got ", q.device(), ", ", k.device(), ", ",
                    v.device());
  TORCH_CHECK_VALUE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
                    "nm_sparse_attention: q, k, v must have one dtype; got ", q.scalar_type(), ", ",
                    k.scalar_type(), ", ", v.scalar_type());
  const int64_t B = q.size(0), S = q.size(2);
  if (o.key_padding_mask.defined())
    TORCH_CHECK_VALUE(o.key_padding_mask.dim() == 2 && o.key_padding_mask.size(0) == B &&
                          o.key_padding_mask.size(1) == S,
                      "nm_sparse_attention: key_padding_mask must be [B, S] = [", B, ", ", S, "], got ",
                      o.key_padding_mask.sizes());
  if (o.attn_mask.defined())
    TORCH_CHECK_VALUE(o.attn_mask.dim() == 2 && o.attn_mask.size(0) == S && o.attn_mask.size(1) == S,
                      "nm_sparse_attention: attn_mask must be [S, S] = [", S, ", ", S, "], got ", o.attn_mask.sizes());
}

std::string forced_path() {
  const char* env = std::getenv("DS_NM_ATTENTION_PATH");
  std::string p = env ? env : "auto";
  TORCH_CHECK_VALUE(p == "auto" || p == "fused" || p == "reference",
                    "DS_NM_ATTENTION_PATH must be auto, fused or reference; got '", p, "'");
  return p;
}

}  // namespace

void check_nm(int64_t n, int64_t m) {
  TORCH_CHECK_VALUE((n == 1 && m == 2) || (n == 2 && m == 4),
                    "dynamic N:M attention supports 1:2 and 2:4 (n:m); got ", n, ":", m);
}

at::Tensor nm_select_mask(const at::Tensor& scores, int64_t n, int64_t m) {
  check_nm(n, m);
  const int64_t L = scores.size(-1);
  const int64_t pad = (m - L % m) % m;
  at::Tensor s = scores;
  if (pad > 0) s = at::constant_pad_nd(s, {0, pad}, -kInf);
  auto sizes = s.sizes().vec();
  sizes.back() /= m;
  sizes.push_back(m);
  const at::Tensor g = s.reshape(sizes);                  // [..., G, M]
  const at::Tensor vi = g.unsqueeze(-1), vj = g.unsqueeze(-2);  // [..., M(i), 1], [..., 1, M(j)]
  const at::Tensor idx = at::arange(m, scores.options().dtype(at::kLong));
  const at::Tensor j_before_i = idx.unsqueeze(0) < idx.unsqueeze(1);  // [i, j]: j < i
  // rank of i = #{j: v_j > v_i} + #{j < i: v_j == v_i}
  const at::Tensor rank = ((vj > vi) | ((vj == vi) & j_before_i)).sum(-1);
  at::Tensor keep = (rank < n).reshape(s.sizes());
  if (pad > 0) keep = keep.narrow(-1, 0, L);
  return keep;
}

at::Tensor nm_scores(const at::Tensor& q, const at::Tensor& k, const NMOptions& o) {
  const at::ScalarType cd = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t S = q.size(2), D = q.size(3);
  const double scale = o.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  at::Tensor s = at::matmul(q.to(cd), k.to(cd).transpose(-1, -2)) * scale;  // [B, H, S, S]
  if (o.key_padding_mask.defined())
    s = s + additive(o.key_padding_mask, o.key_padding_mask_mode, cd).unsqueeze(1).unsqueeze(1);
  if (o.attn_mask.defined()) s = s + additive(o.attn_mask, o.attn_mask_mode, cd);
  if (o.causal) {
    const at::Tensor upper = at::ones({S, S}, q.options().dtype(at::kBool)).triu(1);
    s = s.masked_fill(upper, -kInf);
  }
  return s;
}

at::Tensor nm_sparse_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const NMOptions& o) {
  check_inputs(q, k, v, o);
  const at::ScalarType cd = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor s = nm_scores(q, k, o);
  const at::Tensor keep = nm_select_mask(s.detach(), o.n, o.m);
  s = s.masked_fill(keep.logical_not(), -kInf);
  // Rows with nothing allowed: softmax over all -inf is NaN; give zeros (and zero gradients).
  const at::Tensor empty = s.amax(-1, true) == -kInf;
  at::Tensor p = at::softmax(s.masked_fill(empty, 0.0), -1).masked_fill(empty, 0.0);
  return at::matmul(p, v.to(cd)).to(q.scalar_type());
}

at::Tensor nm_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const NMOptions& o) {
  check_inputs(q, k, v, o);
  const std::string path = forced_path();
  const std::string why = nm_fused_unsupported_reason(q, o);
  if (path == "fused") {
    TORCH_CHECK(why.empty(), "DS_NM_ATTENTION_PATH=fused but the fused kernel cannot run these arguments: ", why);
    return nm_fused_attention(q, k, v, o);
  }
  if (path == "auto" && why.empty()) return nm_fused_attention(q, k, v, o);
  return nm_sparse_attention_reference(q, k, v, o);
}

}  // namespace ds
