// torch.ops.ds.* and torch.classes.ds.* for the sparse attention ops (part of build/lib/libds_torch.so).
//
// The ops are registered without a dispatch key (CompositeImplicitAutograd): autograd flows through
// the C++ autograd functions inside, so ds::sparse_attention, ds::blocksparse_matmul and
// ds::blocksparse_softmax are differentiable from Python. They take the layout tensor and build its
// LayoutTables per call (O(layout size) on the host, plus a fresh upload of the kernels' tables on
// CUDA). Code that runs one layout many times (training loops, benchmarks) uses the TorchScript
// classes instead, which build the tables once and keep their device copies:
//   torch.classes.ds.SparseAttention(layout, block, path="auto", causal_diagonal=False).forward(q, k, v, ...)
//   torch.classes.ds.BlockSparseMatMul(layout, block, mode, trans_a=False, trans_b=False).forward(a, b)
//   torch.classes.ds.BlockSparseSoftmax(layout, block).forward(x, scale=1.0, rpe, key_padding_mask, ...)
#include <torch/library.h>
#include <torch/torch.h>

#include <string>

#include "engine/config/ds_config.h"
#include "sparse_attention/blocksparse.h"
#include "sparse_attention/layout_tables.h"
#include "sparse_attention/sparsity_config.h"

namespace ds {
namespace {

at::Tensor opt(const c10::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); }

at::Tensor make_layout_op(const std::string& sparse_attention_json, int64_t num_heads, int64_t seq_len) {
  SparseAttentionConfig config;
  try {
    config = parse_sparse_attention_section(sparse_attention_json);
  } catch (const ConfigError& e) {
    TORCH_CHECK_VALUE(false, "ds::make_layout: ", e.what());
  }
  return make_sparsity_config(config, num_heads)->make_layout(seq_len);
}

AttentionOptions attention_options(c10::optional<double> scale, const c10::optional<at::Tensor>& rpe,
                                   const c10::optional<at::Tensor>& key_padding_mask,
                                   const c10::optional<at::Tensor>& attn_mask, const std::string& key_padding_mask_mode,
                                   const std::string& attn_mask_mode) {
  AttentionOptions o;
  if (scale) o.scale = *scale;
  o.rpe = opt(rpe);
  o.key_padding_mask = opt(key_padding_mask);
  o.attn_mask = opt(attn_mask);
  o.key_padding_mask_mode = parse_mask_mode(key_padding_mask_mode, "key_padding_mask_mode");
  o.attn_mask_mode = parse_mask_mode(attn_mask_mode, "attn_mask_mode");
  return o;
}

at::Tensor sparse_attention_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& layout, int64_t block, c10::optional<double> scale,
                               const c10::optional<at::Tensor>& rpe, const c10::optional<at::Tensor>& key_padding_mask,
                               const c10::optional<at::Tensor>& attn_mask, const std::string& key_padding_mask_mode,
                               const std::string& attn_mask_mode, const std::string& path, bool causal_diagonal) {
  AttentionOptions o =
      attention_options(scale, rpe, key_padding_mask, attn_mask, key_padding_mask_mode, attn_mask_mode);
  o.path = parse_attention_path(path);
  o.causal_diagonal = causal_diagonal;
  return sparse_attention(q, k, v, LayoutTables::build(layout, block), o);
}

at::Tensor blocksparse_matmul_op(const at::Tensor& a, const at::Tensor& b, const at::Tensor& layout, int64_t block,
                                 const std::string& mode, bool trans_a, bool trans_b) {
  const MatMulMode m = parse_matmul_mode(mode);
  return blocksparse_matmul(a, b, LayoutTables::build(layout, block), m, trans_a, trans_b);
}

SoftmaxOptions softmax_options(double scale, const c10::optional<at::Tensor>& rpe,
                               const c10::optional<at::Tensor>& key_padding_mask,
                               const c10::optional<at::Tensor>& attn_mask, const std::string& key_padding_mask_mode,
                               const std::string& attn_mask_mode) {
  SoftmaxOptions o;
  o.scale = scale;
  o.rpe = opt(rpe);
  o.key_padding_mask = opt(key_padding_mask);
  o.attn_mask = opt(attn_mask);
  o.key_padding_mask_mode = parse_mask_mode(key_padding_mask_mode, "key_padding_mask_mode");
  o.attn_mask_mode = parse_mask_mode(attn_mask_mode, "attn_mask_mode");
  return o;
}

at::Tensor blocksparse_softmax_op(const at::Tensor& x, const at::Tensor& layout, int64_t block, double scale,
                                  const c10::optional<at::Tensor>& rpe,
                                  const c10::optional<at::Tensor>& key_padding_mask,
                                  const c10::optional<at::Tensor>& attn_mask,
                                  const std::string& key_padding_mask_mode, const std::string& attn_mask_mode) {
  TORCH_CHECK_VALUE(layout.dim() == 3, "ds::blocksparse_softmax: layout must be 3-D [heads, rows, cols], got shape ",
                    layout.sizes());
  return blocksparse_softmax(
      x, LayoutTables::build(layout, block),
      softmax_options(scale, rpe, key_padding_mask, attn_mask, key_padding_mask_mode, attn_mask_mode));
}

// torch.classes.ds.SparseAttention: a layout's tables built once (and their device copies cached).
struct SparseAttentionObject : torch::CustomClassHolder {
  SparseAttentionObject(const at::Tensor& layout, int64_t block, const std::string& path, bool causal_diagonal)
      : tables(LayoutTables::build(layout, block)), path(parse_attention_path(path)), causal(causal_diagonal) {}

  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::optional<double> scale,
                     const c10::optional<at::Tensor>& rpe, const c10::optional<at::Tensor>& key_padding_mask,
                     const c10::optional<at::Tensor>& attn_mask, const std::string& key_padding_mask_mode,
                     const std::string& attn_mask_mode) {
    AttentionOptions o =
        attention_options(scale, rpe, key_padding_mask, attn_mask, key_padding_mask_mode, attn_mask_mode);
    o.path = path;
    o.causal_diagonal = causal;
    return sparse_attention(q, k, v, tables, o);
  }
  // The path forward takes for these inputs ("fused" or "unfused"), without running it.
  std::string resolve(const at::Tensor& q) {
    AttentionOptions o;
    o.path = path;
    return attention_path_name(resolve_attention_path(q, tables, o));
  }

  LayoutTables tables;
  AttentionPath path;
  bool causal;
};

struct BlockSparseMatMulObject : torch::CustomClassHolder {
  BlockSparseMatMulObject(const at::Tensor& layout, int64_t block, const std::string& mode, bool trans_a,
                          bool trans_b)
      : op(layout, block, mode, trans_a, trans_b) {}
  at::Tensor forward(const at::Tensor& a, const at::Tensor& b) { return op(a, b); }
  MatMul op;
};

struct BlockSparseSoftmaxObject : torch::CustomClassHolder {
  BlockSparseSoftmaxObject(const at::Tensor& layout, int64_t block) : op(layout, block) {}
  at::Tensor forward(const at::Tensor& x, double scale, const c10::optional<at::Tensor>& rpe,
                     const c10::optional<at::Tensor>& key_padding_mask, const c10::optional<at::Tensor>& attn_mask,
                     const std::string& key_padding_mask_mode, const std::string& attn_mask_mode) {
    return op(x, softmax_options(scale, rpe, key_padding_mask, attn_mask, key_padding_mask_mode, attn_mask_mode));
  }
  Softmax op;
};

}  // namespace
}  // namespace ds

TORCH_LIBRARY_FRAGMENT(ds, m) {
  using torch::arg;
  m.class_<ds::SparseAttentionObject>("SparseAttention")
      .def(torch::init<at::Tensor, int64_t, std::string, bool>(), "",
           {arg("layout"), arg("block"), arg("path") = "auto", arg("causal_diagonal") = false})
      .def("forward", &ds::SparseAttentionObject::forward, "",
           {arg("q"), arg("k"), arg("v"), arg("scale") = arg::none(), arg("rpe") = arg::none(),
            arg("key_padding_mask") = arg::none(), arg("attn_mask") = arg::none(),
            arg("key_padding_mask_mode") = "add", arg("attn_mask_mode") = "mul"})
      .def("resolve_path", &ds::SparseAttentionObject::resolve);
  m.class_<ds::BlockSparseMatMulObject>("BlockSparseMatMul")
      .def(torch::init<at::Tensor, int64_t, std::string, bool, bool>(), "",
           {arg("layout"), arg("block"), arg("mode"), arg("trans_a") = false, arg("trans_b") = false})
      .def("forward", &ds::BlockSparseMatMulObject::forward);
  m.class_<ds::BlockSparseSoftmaxObject>("BlockSparseSoftmax")
      .def(torch::init<at::Tensor, int64_t>())
      .def("forward", &ds::BlockSparseSoftmaxObject::forward, "",
           {arg("x"), arg("scale") = 1.0, arg("rpe") = arg::none(), arg("key_padding_mask") = arg::none(),
            arg("attn_mask") = arg::none(), arg("key_padding_mask_mode") = "add", arg("attn_mask_mode") = "add"});
  m.def("make_layout(str sparse_attention_json, int num_heads, int seq_len) -> Tensor", &ds::make_layout_op);
  m.def(
      "sparse_attention(Tensor q, Tensor k, Tensor v, Tensor layout, int block, float? scale=None, "
      "Tensor? rpe=None, Tensor? key_padding_mask=None, Tensor? attn_mask=None, "
      "str key_padding_mask_mode=\"add\", str attn_mask_mode=\"mul\", str path=\"auto\", "
      "bool causal_diagonal=False) -> Tensor",
      &ds::sparse_attention_op);
  m.def(
      "blocksparse_matmul(Tensor a, Tensor b, Tensor layout, int block, str mode, bool trans_a=False, "
      "bool trans_b=False) -> Tensor",
      &ds::blocksparse_matmul_op);
  m.def(
      "blocksparse_softmax(Tensor x, Tensor layout, int block, float scale=1.0, Tensor? rpe=None, "
      "Tensor? key_padding_mask=None, Tensor? attn_mask=None, str key_padding_mask_mode=\"add\", "
      "str attn_mask_mode=\"add\") -> Tensor",
      &ds::blocksparse_softmax_op);
}
