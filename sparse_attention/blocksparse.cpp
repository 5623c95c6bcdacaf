// Validation (DeepSpeed's messages), device dispatch and autograd of the block-sparse ops.
#include "sparse_attention/blocksparse.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "sparse_attention/blocksparse_cpu.h"
#include "sparse_attention/blocksparse_cuda.h"

namespace ds {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- device dispatch: CPU reference or CUDA kernels ---------------------------------------------
// True for CUDA tensors (when this build has the kernels), false for CPU; other devices are an error.
bool on_cuda(const at::Tensor& x, const char* op) {
  if (x.is_cpu()) return false;
  if (x.is_cuda()) {
#if DS_WITH_CUDA
    return true;
#else
    TORCH_CHECK(false, op, ": this build has no CUDA kernels (configure with a CUDA LibTorch: -DDS_WITH_CUDA=ON); "
                "use CPU tensors");
#endif
  }
  TORCH_CHECK(false, op, ": tensors on ", x.device(), " are not supported; use CPU or CUDA tensors");
  return false;
}

#if DS_WITH_CUDA
#define DS_SPARSE_RUN(cond, cuda_call, cpu_call) return (cond) ? (cuda_call) : (cpu_call)
#else
#define DS_SPARSE_RUN(cond, cuda_call, cpu_call) \
  do {                                            \
    (void)(cond);                                 \
    return cpu_call;                              \
  } while (0)
#endif

at::Tensor run_sdd(const at::Tensor& a, const at::Tensor& b, bool ta, bool tb, const LayoutTables& t) {
  DS_SPARSE_RUN(on_cuda(a, "ds::blocksparse_matmul"), sparse_cuda::sdd(a, b, ta, tb, t), sparse_cpu::sdd(a, b, ta, tb, t));
}
at::Tensor run_dsd(const at::Tensor& s, const at::Tensor& b, bool ta, bool tb, const LayoutTables& t) {
  DS_SPARSE_RUN(on_cuda(s, "ds::blocksparse_matmul"), sparse_cuda::dsd(s, b, ta, tb, t), sparse_cpu::dsd(s, b, ta, tb, t));
}
at::Tensor run_dds(const at::Tensor& a, const at::Tensor& s, bool ta, bool tb, const LayoutTables& t) {
  DS_SPARSE_RUN(on_cuda(a, "ds::blocksparse_matmul"), sparse_cuda::dds(a, s, ta, tb, t), sparse_cpu::dds(a, s, ta, tb, t));
}
at::Tensor run_matmul(MatMulMode m, const at::Tensor& a, const at::Tensor& b, bool ta, bool tb,
                      const LayoutTables& t) {
  switch (m) {
    case MatMulMode::SDD: return run_sdd(a, b, ta, tb, t);
    case MatMulMode::DSD: return run_dsd(a, b, ta, tb, t);
    case MatMulMode::DDS: return run_dds(a, b, ta, tb, t);
  }
  TORCH_INTERNAL_ASSERT(false, "unknown MatMulMode");
  return {};
}
at::Tensor run_softmax_forward(const at::Tensor& x, const LayoutTables& t, const SoftmaxOptions& o) {
  DS_SPARSE_RUN(on_cuda(x, "ds::blocksparse_softmax"), sparse_cuda::softmax_forward(x, t, o),
                sparse_cpu::softmax_forward(x, t, o));
}
at::Tensor run_softmax_backward(const at::Tensor& y, const at::Tensor& dy, const LayoutTables& t) {
  DS_SPARSE_RUN(on_cuda(y, "ds::blocksparse_softmax"), sparse_cuda::softmax_backward(y, dy, t),
                sparse_cpu::softmax_backward(y, dy, t));
}
#undef DS_SPARSE_RUN

// ---- autograd ----------------------------------------------------------------------------------
// The tables travel with the autograd graph (a backward may run after the op's owner is gone).
struct TablesHolder : torch::CustomClassHolder {
  explicit TablesHolder(LayoutTables t) : tables(std::move(t)) {}
  LayoutTables tables;
};
using TablesPtr = c10::intrusive_ptr<TablesHolder>;

const LayoutTables& saved_tables(AutogradContext* ctx) {
  return static_cast<TablesHolder*>(ctx->saved_data["tables"].toCapsule().get())->tables;
}

// For C = op(A) op(B) in mode m, dA uses mode m[1]m[0]m[2] and dB mode m[2]m[1]m[0] (DeepSpeed's
// rule); the transposes follow from d op(A) = G op(B)^T and d op(B) = op(A)^T G.
struct MatMulFunction : torch::autograd::Function<MatMulFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, TablesPtr tables,
                            MatMulMode mode, bool ta, bool tb) {
    ctx->saved_data["tables"] = at::IValue::make_capsule(tables);
    ctx->saved_data["mode"] = static_cast<int64_t>(mode);
    ctx->saved_data["ta"] = ta;
    ctx->saved_data["tb"] = tb;
    ctx->save_for_backward({a, b});
    return run_matmul(mode, a, b, ta, tb, tables->tables);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const LayoutTables& t = saved_tables(ctx);
    const auto mode = static_cast<MatMulMode>(ctx->saved_data["mode"].toInt());
    const bool ta = ctx->saved_data["ta"].toBool(), tb = ctx->saved_data["tb"].toBool();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &a = saved[0], &b = saved[1];
    const at::Tensor g = grads[0].contiguous();
    at::Tensor da, db;
    const bool need_a = ctx->needs_input_grad(0), need_b = ctx->needs_input_grad(1);
    switch (mode) {
      case MatMulMode::SDD:  // C sparse = op(A) op(B)
        if (need_a) da = ta ? run_dds(b, g, tb, true, t) : run_dsd(g, b, false, !tb, t);
        if (need_b) db = tb ? run_dsd(g, a, true, ta, t) : run_dds(a, g, !ta, false, t);
        break;
      case MatMulMode::DSD:  // C = op(S) op(B)
        if (need_a) da = ta ? run_sdd(b, g, tb, true, t) : run_sdd(g, b, false, !tb, t);
        if (need_b) db = tb ? run_dds(g, a, true, ta, t) : run_dsd(a, g, !ta, false, t);
        break;
      case MatMulMode::DDS:  // C = op(A) op(S)
        if (need_a) da = ta ? run_dsd(b, g, tb, true, t) : run_dds(g, b, false, !tb, t);
        if (need_b) db = tb ? run_sdd(g, a, true, ta, t) : run_sdd(a, g, !ta, false, t);
        break;
    }
    return {da, db, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// dx = y * (dy - rowsum(y * dy)) * scale (DeepSpeed's); rpe, which DeepSpeed gives no gradient,
// gets the same thing without the scale, scattered to its dense shape.
struct SoftmaxFunction : torch::autograd::Function<SoftmaxFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const c10::optional<at::Tensor>& rpe,
                            TablesPtr tables, const SoftmaxOptions* options) {
    SoftmaxOptions o = *options;
    o.rpe = rpe ? *rpe : at::Tensor();
    at::Tensor y = run_softmax_forward(x, tables->tables, o);
    ctx->saved_data["tables"] = at::IValue::make_capsule(tables);
    ctx->saved_data["scale"] = o.scale;
    if (o.rpe.defined()) ctx->saved_data["rpe_sizes"] = o.rpe.sizes().vec();
    ctx->save_for_backward({y});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const LayoutTables& t = saved_tables(ctx);
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor y = ctx->get_saved_variables()[0];
    const bool has_rpe = ctx->saved_data.count("rpe_sizes") > 0;
    at::Tensor dv = run_softmax_backward(y, grads[0].contiguous(), t);
    at::Tensor drpe;
    if (has_rpe && ctx->needs_input_grad(1)) {
      drpe = sparse_to_dense(dv, t).sum_to_size(ctx->saved_data["rpe_sizes"].toIntVector());
    }
    at::Tensor dx = ctx->needs_input_grad(0) ? (scale != 1.0 ? dv * scale : dv) : at::Tensor();
    return {dx, drpe, at::Tensor(), at::Tensor()};
  }
};

// ---- validation helpers ---------------------------------------------------------------------------
std::string torch_dtype_name(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(s);
  }
}

void check_float_dtype(const at::Tensor& x, const char* name) {
  const auto s = x.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, name, ": dtype ",
              torch_dtype_name(s), " is not supported; use float32, float64, float16 or bfloat16");
}

// CPU: float16/bfloat16 are computed in float32 (and rounded back by the caller). CUDA: every
// supported dtype natively (float32 accumulation inside the kernels); float64 is not supported there.
at::ScalarType compute_dtype(const at::Tensor& x, const char* op) {
  const at::ScalarType s = x.scalar_type();
  if (on_cuda(x, op)) {
    TORCH_CHECK_VALUE(s != at::kDouble, op, ": float64 is not supported on CUDA; use float32, float16 or bfloat16");
    return s;
  }
  return (s == at::kHalf || s == at::kBFloat16) ? at::kFloat : s;
}

at::Tensor add_extra_dims(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() <= 4, "Tensors with more than 4 dimensions are not currently supported");
  std::vector<int64_t> shape(static_cast<size_t>(4 - x.dim()), 1);
  for (int64_t s : x.sizes()) shape.push_back(s);
  return x.view(shape);
}

std::string shape_tuple(int64_t nnz, int64_t b) {
  return "(" + std::to_string(nnz) + ", " + std::to_string(b) + ", " + std::to_string(b) + ")";
}

void check_dense_operand(const at::Tensor& x, const char* name, int64_t rows_dim, int64_t rows, int64_t heads) {
  TORCH_CHECK_VALUE(x.size(1) == heads, "tensor ", name, " has ", x.size(1), " heads (dim 1) but the layout has ",
                    heads);
  TORCH_CHECK_VALUE(x.size(rows_dim) == rows, "tensor ", name, " has size ", x.size(rows_dim), " at dim ", rows_dim,
                    " but the layout needs ", rows, " (its block count times the block size)");
}

void check_matmul_inputs(const at::Tensor& a, const at::Tensor& b, const LayoutTables& t, MatMulMode mode, bool ta,
                         bool tb) {
  TORCH_CHECK(a.defined() && b.defined(), "ds::blocksparse_matmul: A and B must be defined tensors");
  TORCH_CHECK_VALUE(a.device() == b.device(), "Inputs must be on the same device; got ", a.device(),
                    " for tensor A and ", b.device(), " for tensor B");
  TORCH_CHECK_VALUE(a.scalar_type() == b.scalar_type(), "Inputs must be the same dtype; got ",
                    torch_dtype_name(a.scalar_type()), " for A and ", torch_dtype_name(b.scalar_type()), " for B");
  check_float_dtype(a, "ds::blocksparse_matmul");
  if (mode != MatMulMode::SDD) {
    const bool dds = mode == MatMulMode::DDS;
    const at::Tensor& dense = dds ? a : b;
    const at::Tensor& sparse = dds ? b : a;
    const char* dense_name = dds ? "A" : "B";
    const char* sparse_name = dds ? "B" : "A";
    const bool trans_dense = dds ? ta : tb, trans_sparse = dds ? tb : ta;
    // DeepSpeed's rule: the dense operand's reduction dim must span the sparse operand's inner blocks.
    const int64_t dense_inner_dim = dds ? (trans_dense ? -2 : -1) : (trans_dense ? -1 : -2);
    const int64_t inner_blocks = dds ? (trans_sparse ? t.cols : t.rows) : (trans_sparse ? t.rows : t.cols);
    TORCH_CHECK_VALUE(dense.dim() >= 2, "tensor ", dense_name, " must have at least 2 dims, got ", dense.sizes());
    const int64_t d = dense.dim() + dense_inner_dim;
    TORCH_CHECK_VALUE(dense.size(d) == inner_blocks * t.block, "Expected tensor ", dense_name, " to have size ",
                      inner_blocks * t.block, " at dim ", d, ", got ", dense.size(d), ".");
    const bool trailing_ok = sparse.dim() >= 3 && sparse.size(-3) == t.nnz && sparse.size(-2) == t.block &&
                             sparse.size(-1) == t.block;
    TORCH_CHECK_VALUE(trailing_ok, "Expected tensor with trailing dimensions of shape ", shape_tuple(t.nnz, t.block),
                      " for argument ", sparse_name, ", got ", sparse.sizes());
  } else {
    TORCH_CHECK_VALUE(a.dim() >= 2 && b.dim() >= 2, "sdd needs A and B with at least 2 dims, got ", a.sizes(),
                      " and ", b.sizes());
    const int64_t a_dim = ta ? -2 : -1, b_dim = tb ? -1 : -2;
    const int64_t ka = a.size(a_dim), kb = b.size(b_dim);
    TORCH_CHECK_VALUE(ka == kb, "Size of tensor A along the ", a_dim, " dim (", ka,
                      ") must match size of tensor B along the ", b_dim, " dim (", kb, ")");
  }
}

}  // namespace

// ---- public API ------------------------------------------------------------------------------------
MatMulMode parse_matmul_mode(const std::string& mode) {
  if (mode == "sdd") return MatMulMode::SDD;
  if (mode == "dsd") return MatMulMode::DSD;
  if (mode == "dds") return MatMulMode::DDS;
  TORCH_CHECK_NOT_IMPLEMENTED(false, "Supported modes are: sdd, dsd, dds (got '", mode, "')");
  return MatMulMode::SDD;
}

const char* matmul_mode_name(MatMulMode m) {
  switch (m) {
    case MatMulMode::SDD: return "sdd";
    case MatMulMode::DSD: return "dsd";
    case MatMulMode::DDS: return "dds";
  }
  return "?";
}

MaskMode parse_mask_mode(const std::string& mode, const char* what) {
  if (mode == "add") return MaskMode::Add;
  if (mode == "mul") return MaskMode::Mul;
  TORCH_CHECK_VALUE(false, what, " must be 'add' or 'mul', got '", mode, "'");
  return MaskMode::Add;
}

const char* mask_mode_name(MaskMode m) { return m == MaskMode::Add ? "add" : "mul"; }

AttentionPath parse_attention_path(const std::string& path, const char* what) {
  if (path == "auto") return AttentionPath::Auto;
  if (path == "fused") return AttentionPath::Fused;
  if (path == "unfused") return AttentionPath::Unfused;
  TORCH_CHECK_VALUE(false, what, " must be 'auto', 'fused' or 'unfused', got '", path, "'");
  return AttentionPath::Auto;
}

const char* attention_path_name(AttentionPath p) {
  switch (p) {
    case AttentionPath::Auto: return "auto";
    case AttentionPath::Fused: return "fused";
    case AttentionPath::Unfused: return "unfused";
  }
  return "?";
}

std::string fused_attention_unsupported(const at::Tensor& q, const LayoutTables& t, const AttentionOptions& o) {
  if (!q.is_cuda()) return "the fused kernel runs on CUDA tensors (q is on " + q.device().str() + ")";
#if !DS_WITH_CUDA
  return "this build has no CUDA kernels";
#endif
  if (q.scalar_type() != at::kHalf && q.scalar_type() != at::kBFloat16)
    return "the fused kernel takes float16 or bfloat16, q is " + torch_dtype_name(q.scalar_type());
  const int64_t D = q.size(-1);
  if (D != 32 && D != 64 && D != 128)
    return "the fused kernel supports head sizes 32, 64 and 128, q has " + std::to_string(D);
  if (t.rows != t.cols)
    return "the fused kernel needs a square layout, got " + std::to_string(t.rows) + " x " + std::to_string(t.cols);
  if (o.rpe.defined() && o.rpe.requires_grad() && at::GradMode::is_enabled())
    return "rpe requires grad and the fused kernel gives rpe no gradient";
  return "";
}

AttentionPath resolve_attention_path(const at::Tensor& q, const LayoutTables& t, const AttentionOptions& o) {
  if (!q.is_cuda()) {
    TORCH_CHECK_VALUE(o.path != AttentionPath::Fused, "ds::sparse_attention: path 'fused' needs CUDA tensors, q is on ",
                      q.device());
    return AttentionPath::Unfused;
  }
  AttentionPath path = o.path;
  const char* source = "by the path option";
  if (path == AttentionPath::Auto) {
    const char* env = std::getenv("DS_SPARSE_ATTENTION_PATH");
    if (env != nullptr && *env != '\0') {
      path = parse_attention_path(env, "DS_SPARSE_ATTENTION_PATH");
      source = "by DS_SPARSE_ATTENTION_PATH";
    }
  }
  if (path == AttentionPath::Unfused) return AttentionPath::Unfused;
  const std::string why = fused_attention_unsupported(q, t, o);
  if (path == AttentionPath::Fused) {
    TORCH_CHECK_VALUE(why.empty(), "ds::sparse_attention: the fused path is forced ", source, " but ", why,
                      "; use path 'auto' or 'unfused'");
    return AttentionPath::Fused;
  }
  return why.empty() ? AttentionPath::Fused : AttentionPath::Unfused;
}

at::Tensor blocksparse_matmul(const at::Tensor& a, const at::Tensor& b, const LayoutTables& t, MatMulMode mode,
                              bool trans_a, bool trans_b) {
  check_matmul_inputs(a, b, t, mode, trans_a, trans_b);
  const int64_t original_dims = std::max(a.dim(), b.dim());
  at::Tensor a4 = add_extra_dims(a), b4 = add_extra_dims(b);
  TORCH_CHECK_VALUE(a4.size(0) == b4.size(0), "tensor A has batch size ", a4.size(0),
                    " (dim 0) but tensor B has ", b4.size(0));
  const int64_t M_dim_a = trans_a ? 3 : 2, N_dim_b = trans_b ? 2 : 3;
  switch (mode) {
    case MatMulMode::SDD:
      check_dense_operand(a4, "A", M_dim_a, t.seq_rows(), t.heads);
      check_dense_operand(b4, "B", N_dim_b, t.seq_cols(), t.heads);
      break;
    case MatMulMode::DSD:
      TORCH_CHECK_VALUE(b4.size(1) == t.heads, "tensor B has ", b4.size(1), " heads (dim 1) but the layout has ",
                        t.heads);
      break;
    case MatMulMode::DDS:
      TORCH_CHECK_VALUE(a4.size(1) == t.heads, "tensor A has ", a4.size(1), " heads (dim 1) but the layout has ",
                        t.heads);
      break;
  }
  const at::ScalarType dtype = a.scalar_type(), cd = compute_dtype(a4, "ds::blocksparse_matmul");
  at::Tensor c = MatMulFunction::apply(a4.to(cd), b4.to(cd), c10::make_intrusive<TablesHolder>(t), mode, trans_a,
                                       trans_b);
  c = c.to(dtype);
  for (int64_t i = c.dim(); i > original_dims; --i) c = c.squeeze(0);
  return c;
}

namespace {

// Validates and casts the softmax's extra inputs to `cd`; shapes against the layout's dense extent.
SoftmaxOptions prepare_softmax_options(const at::Tensor& x, const LayoutTables& t, const SoftmaxOptions& o,
                                       at::ScalarType cd) {
  const int64_t Z = x.size(0), S_rows = t.seq_rows(), S_cols = t.seq_cols();
  SoftmaxOptions p = o;
  auto same_device = [&](const at::Tensor& m, const char* name) {
    TORCH_CHECK_VALUE(m.device() == x.device(), name, " must be on x's device ", x.device(), ", got ", m.device());
  };
  if (o.rpe.defined()) {
    TORCH_CHECK_VALUE(o.rpe.scalar_type() == x.scalar_type(), "relative position embedding must be ",
                      torch_dtype_name(x.scalar_type()), " (got ", torch_dtype_name(o.rpe.scalar_type()), ")");
    same_device(o.rpe, "relative position embedding");
    const bool ok = o.rpe.dim() == 4 && (o.rpe.size(0) == Z || o.rpe.size(0) == 1) &&
                    (o.rpe.size(1) == t.heads || o.rpe.size(1) == 1) && o.rpe.size(2) == S_rows &&
                    o.rpe.size(3) == S_cols;
    TORCH_CHECK_VALUE(ok, "relative position embedding must have shape [", Z, ", ", t.heads, ", ", S_rows, ", ",
                      S_cols, "] (size-1 batch/head dims broadcast), got ", o.rpe.sizes());
    p.rpe = o.rpe.to(cd);
  }
  if (o.attn_mask.defined()) {
    TORCH_CHECK_VALUE(o.attn_mask.scalar_type() == x.scalar_type(), "Attention mask must be ",
                      torch_dtype_name(x.scalar_type()), " (got ", torch_dtype_name(o.attn_mask.scalar_type()), ")");
    same_device(o.attn_mask, "Attention mask");
    TORCH_CHECK_VALUE(o.attn_mask.dim() == 2 && o.attn_mask.size(0) == S_rows && o.attn_mask.size(1) == S_cols,
                      "Attention mask must have shape [", S_rows, ", ", S_cols, "] (only 2-D masks shared by the "
                      "batch and heads are supported), got ", o.attn_mask.sizes());
    p.attn_mask = o.attn_mask.to(cd);
  }
  if (o.key_padding_mask.defined()) {
    TORCH_CHECK_VALUE(o.key_padding_mask.scalar_type() == x.scalar_type(), "Key padding mask must be ",
                      torch_dtype_name(x.scalar_type()), " (got ",
                      torch_dtype_name(o.key_padding_mask.scalar_type()), ")");
    same_device(o.key_padding_mask, "Key padding mask");
    TORCH_CHECK_VALUE(o.key_padding_mask.dim() == 2 && o.key_padding_mask.size(0) == Z &&
                          o.key_padding_mask.size(1) == S_cols,
                      "Key padding mask must have shape [", Z, ", ", S_cols, "], got ", o.key_padding_mask.sizes());
    p.key_padding_mask = o.key_padding_mask.to(cd);
  }
  return p;
}

}  // namespace

at::Tensor blocksparse_softmax(const at::Tensor& x, const LayoutTables& t, const SoftmaxOptions& options) {
  TORCH_CHECK(x.defined(), "ds::blocksparse_softmax: x is undefined");
  check_float_dtype(x, "ds::blocksparse_softmax");
  TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) == t.nnz && x.size(2) == t.block && x.size(3) == t.block,
                    "ds::blocksparse_softmax: x must be a block-sparse [Z, ", t.nnz, ", ", t.block, ", ", t.block,
                    "] tensor for this layout, got ", x.sizes());
  const at::ScalarType dtype = x.scalar_type(), cd = compute_dtype(x, "ds::blocksparse_softmax");
  SoftmaxOptions o = prepare_softmax_options(x, t, options, cd);
  c10::optional<at::Tensor> rpe;
  if (o.rpe.defined()) rpe = o.rpe;
  o.rpe = at::Tensor();
  return SoftmaxFunction::apply(x.to(cd), rpe, c10::make_intrusive<TablesHolder>(t), &o).to(dtype);
}

at::Tensor sparse_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                            const LayoutTables& t, const AttentionOptions& options) {
  TORCH_CHECK(q_in.defined() && k_in.defined() && v_in.defined(), "ds::sparse_attention: q, k and v must be defined");
  TORCH_CHECK_VALUE(q_in.dim() == 4, "ds::sparse_attention: q must be [batch, heads, seq, head_dim], got ",
                    q_in.sizes());
  TORCH_CHECK_NOT_IMPLEMENTED(q_in.sizes() == k_in.sizes() && k_in.sizes() == v_in.sizes(),
                              "only self-attention is supported for now (q ", q_in.sizes(), ", k ", k_in.sizes(),
                              ", v ", v_in.sizes(), " must have the same shape)");
  TORCH_CHECK_VALUE(q_in.device() == k_in.device() && k_in.device() == v_in.device(),
                    "ds::sparse_attention: q, k and v must be on one device; got ", q_in.device(), ", ",
                    k_in.device(), ", ", v_in.device());
  TORCH_CHECK_VALUE(q_in.scalar_type() == k_in.scalar_type() && k_in.scalar_type() == v_in.scalar_type(),
                    "ds::sparse_attention: q, k and v must have one dtype; got ",
                    torch_dtype_name(q_in.scalar_type()), ", ", torch_dtype_name(k_in.scalar_type()), ", ",
                    torch_dtype_name(v_in.scalar_type()));
  check_float_dtype(q_in, "ds::sparse_attention");
  const int64_t Z = q_in.size(0), H = q_in.size(1), S = q_in.size(2), D = q_in.size(3);
  const int64_t nb = (S + t.block - 1) / t.block;
  TORCH_CHECK_VALUE(H == t.heads, "ds::sparse_attention: q has ", H, " heads (dim 1) but the layout has ", t.heads,
                    "; build the layout with num_heads=", H);
  TORCH_CHECK_VALUE(t.rows == nb && t.cols == nb, "ds::sparse_attention: a sequence of ", S, " with block ",
                    t.block, " needs a layout of ", nb, " x ", nb, " blocks, got ", t.rows, " x ", t.cols);
  TORCH_CHECK_VALUE(S > 0 && D > 0, "ds::sparse_attention: empty sequence or head_dim (q ", q_in.sizes(), ")");
  const at::ScalarType dtype = q_in.scalar_type(), cd = compute_dtype(q_in, "ds::sparse_attention");
  auto same_device = [&](const at::Tensor& m, const char* name) {
    TORCH_CHECK_VALUE(m.device() == q_in.device(), "ds::sparse_attention: ", name, " must be on q's device ",
                      q_in.device(), ", got ", m.device());
  };
  if (options.key_padding_mask.defined()) {
    const at::Tensor& m = options.key_padding_mask;
    same_device(m, "key_padding_mask");
    TORCH_CHECK_VALUE(m.dim() == 2 && m.size(0) == Z && m.size(1) == S,
                      "ds::sparse_attention: key_padding_mask must be [", Z, ", ", S, "], got ", m.sizes());
  }
  if (options.attn_mask.defined()) {
    const at::Tensor& m = options.attn_mask;
    same_device(m, "attn_mask");
    TORCH_CHECK_VALUE(m.dim() == 2 && m.size(0) == S && m.size(1) == S,
                      "ds::sparse_attention: attn_mask must be [", S, ", ", S, "], got ", m.sizes());
  }
  if (options.rpe.defined()) {
    const at::Tensor& r = options.rpe;
    same_device(r, "rpe");
    TORCH_CHECK_VALUE(r.dim() == 4 && (r.size(0) == Z || r.size(0) == 1) && (r.size(1) == H || r.size(1) == 1) &&
                          r.size(2) == S && r.size(3) == S,
                      "ds::sparse_attention: rpe must be [", Z, ", ", H, ", ", S, ", ", S,
                      "] (size-1 batch/head dims broadcast), got ", r.sizes());
    check_float_dtype(r, "ds::sparse_attention: rpe");
  }
#if DS_WITH_CUDA
  if (resolve_attention_path(q_in, t, options) == AttentionPath::Fused)
    return sparse_cuda::fused_attention(q_in, k_in, v_in, t, options);
#else
  resolve_attention_path(q_in, t, options);  // rejects a Fused option on CPU tensors
#endif

  // Part 1's path: sdd -> softmax -> dsd on the sequence padded to whole blocks.
  const int64_t pad = nb * t.block - S;
  auto pad_seq = [&](const at::Tensor& x) {  // [Z, H, S, D] -> [Z, H, S + pad, D]
    return pad ? at::constant_pad_nd(x.to(cd), {0, 0, 0, pad}) : x.to(cd);
  };
  at::Tensor q = pad_seq(q_in), k = pad_seq(k_in), v = pad_seq(v_in);
  SoftmaxOptions so;
  so.scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  so.key_padding_mask_mode = options.key_padding_mask_mode;
  so.attn_mask_mode = options.attn_mask_mode;
  so.valid_keys = pad ? S : -1;
  so.causal_diagonal = options.causal_diagonal;
  if (options.key_padding_mask.defined()) {
    const at::Tensor m = options.key_padding_mask.to(cd);
    so.key_padding_mask = pad ? at::constant_pad_nd(m, {0, pad}) : m;
  }
  if (options.attn_mask.defined()) {
    const at::Tensor m = options.attn_mask.to(cd);
    so.attn_mask = pad ? at::constant_pad_nd(m, {0, pad, 0, pad}) : m;
  }
  c10::optional<at::Tensor> rpe;
  if (options.rpe.defined()) {
    const at::Tensor r = options.rpe.to(cd);
    rpe = pad ? at::constant_pad_nd(r, {0, pad, 0, pad}) : r;
  }

  auto tables = c10::make_intrusive<TablesHolder>(t);
  at::Tensor scores = MatMulFunction::apply(q, k, tables, MatMulMode::SDD, false, true);  // [Z, nnz, b, b]
  at::Tensor probs = SoftmaxFunction::apply(scores, rpe, tables, &so);
  at::Tensor out = MatMulFunction::apply(probs, v, tables, MatMulMode::DSD, false, false);  // [Z, H, S+pad, D]
  if (pad) out = out.narrow(2, 0, S);
  return out.to(dtype);
}

// ---- DeepSpeed's op objects -----------------------------------------------------------------------
MatMul::MatMul(const at::Tensor& layout, int64_t block, const std::string& mode, bool trans_a, bool trans_b)
    : mode_(parse_matmul_mode(mode)), trans_a_(trans_a), trans_b_(trans_b) {
  tables_ = std::make_shared<const LayoutTables>(LayoutTables::build(layout, block));
}

at::Tensor MatMul::operator()(const at::Tensor& a, const at::Tensor& b) const {
  return blocksparse_matmul(a, b, *tables_, mode_, trans_a_, trans_b_);
}

Softmax::Softmax(const at::Tensor& layout, int64_t block) {
  TORCH_CHECK_VALUE(layout.defined() && layout.dim() == 3,
                    "Softmax: layout must be a 3 dimensional [heads, rows, cols] tensor of 0s and 1s, got shape ",
                    layout.defined() ? layout.sizes() : at::IntArrayRef{});
  tables_ = std::make_shared<const LayoutTables>(LayoutTables::build(layout, block));
}

at::Tensor Softmax::operator()(const at::Tensor& x, const SoftmaxOptions& options) const {
  return blocksparse_softmax(x, *tables_, options);
}

}  // namespace ds
