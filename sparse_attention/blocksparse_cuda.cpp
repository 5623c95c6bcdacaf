// Torch boundary of the block-sparse MatMul and Softmax CUDA kernels (blocksparse_kernels.h): checks
// what the kernels rely on, makes operands contiguous and 16-byte aligned, zero-pads dense dimensions
// that are not a multiple of 8 (head sizes 8k run without copies), fills the params from the layout's
// device tables (built once per device, device_tables.h) and launches on the current stream.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "ops/common/torch_utils.h"
#include "sparse_attention/blocksparse_cuda.h"
#include "sparse_attention/blocksparse_kernels.h"
#include "sparse_attention/device_tables.h"

namespace ds::sparse_cuda {
namespace {

constexpr int64_t kVec = 8;  // elements: the kernels move 16 bytes at a time

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

ScalarKind kind_of(const at::Tensor& x, const char* op) {
  switch (x.scalar_type()) {
    case at::kFloat: return ScalarKind::F32;
    case at::kHalf: return ScalarKind::F16;
    case at::kBFloat16: return ScalarKind::BF16;
    default: break;
  }
  TORCH_CHECK(false, op, ": dtype ", x.scalar_type(), " is not supported on CUDA; use float32, float16 or bfloat16");
  return ScalarKind::F32;
}

// Contiguous and 16-byte aligned (a copy only when not).
at::Tensor ready(const at::Tensor& x) {
  at::Tensor c = x.contiguous();
  if (reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 != 0) c = c.clone();
  return c;
}

// x with dim d zero-padded at the end to `size`.
at::Tensor pad_dim(const at::Tensor& x, int64_t d, int64_t size) {
  if (x.size(d) == size) return x;
  std::vector<int64_t> pad(static_cast<size_t>(2 * (x.dim() - d)), 0);  // pairs from the last dim backwards
  pad.back() = size - x.size(d);
  return at::constant_pad_nd(x, pad);
}

int to_int(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= INT32_MAX, "block-sparse CUDA kernels: ", what, " = ", v, " exceeds 2^31");
  return static_cast<int>(v);
}

void check_operand(const at::Tensor& x, const at::Tensor& ref, const char* op, const char* name, int64_t dim) {
  DS_CHECK_CUDA(x, name);
  DS_CHECK_SAME_DEVICE(x, ref, name, "the first operand");
  DS_CHECK_SAME_DTYPE(x, ref, name, "the first operand");
  TORCH_CHECK(x.dim() == dim, op, ": ", name, " must have ", dim, " dims, got ", shape_str(x));
}

void check_shape(const at::Tensor& x, const char* op, const char* name, std::vector<int64_t> shape) {
  TORCH_CHECK(x.sizes() == at::IntArrayRef(shape), op, ": ", name, " must have shape ", at::IntArrayRef(shape),
              " for this layout, got ", shape_str(x));
}

bsmm::LayoutView layout_view(const LayoutTables& t, const DeviceMatmulTables& d) {
  bsmm::LayoutView v;
  v.heads = to_int(t.heads, "heads");
  v.rows = to_int(t.rows, "layout rows");
  v.cols = to_int(t.cols, "layout columns");
  v.block = static_cast<int>(t.block);
  v.chunk = d.chunk;
  v.layout_heads = d.layout_heads;
  v.nnz = t.nnz;
  v.nnz_head_stride = d.nnz_head_stride;
  return v;
}

bsmm::TileTableView tiles_view(const DeviceTileTable& d) {
  bsmm::TileTableView v;
  v.ptr = d.ptr.data_ptr<int32_t>();
  v.chunk = d.chunk.data_ptr<int32_t>();
  v.mask = reinterpret_cast<const uint32_t*>(d.mask.data_ptr<int32_t>());
  v.nnz = d.nnz.data_ptr<int32_t>();
  v.order = d.order.data_ptr<int32_t>();
  v.num_tiles = d.num_tiles;
  return v;
}

// The dense-result product: C' = op(S) op(B) (see bsmm::DxdParams), B already padded.
void run_dxd(const at::Tensor& s, const at::Tensor& B, at::Tensor& c, bool trans_s, bool b_kmajor, bool trans_out,
             int64_t M, int64_t N, int64_t K, const LayoutTables& t) {
  const DeviceMatmulTables& d = t.cache().matmul(t, s.device());
  bsmm::DxdParams p;
  p.kind = kind_of(s, "ds::blocksparse_matmul");
  p.Z = to_int(s.size(0), "batch");
  p.layout = layout_view(t, d);
  p.M = to_int(M, "M");
  p.N = to_int(N, "N");
  p.K = to_int(K, "K");
  p.trans_s = trans_s;
  p.b_kmajor = b_kmajor;
  p.trans_out = trans_out;
  p.s = s.data_ptr();
  p.b = B.data_ptr();
  p.c = c.data_ptr();
  p.tiles = tiles_view(trans_s ? d.by_col : d.by_row);
  bsmm::launch_dxd(p, current_stream());
}

}  // namespace

at::Tensor sdd(const at::Tensor& a, const at::Tensor& b, bool trans_a, bool trans_b, const LayoutTables& t) {
  constexpr const char* op = "ds::blocksparse_matmul (sdd, CUDA)";
  check_operand(a, a, op, "A", 4);
  check_operand(b, a, op, "B", 4);
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t Z = a.size(0), H = t.heads, M = t.seq_rows(), N = t.seq_cols(), K = a.size(trans_a ? 2 : 3);
  check_shape(a, op, "A", trans_a ? std::vector<int64_t>{Z, H, K, M} : std::vector<int64_t>{Z, H, M, K});
  check_shape(b, op, "B", trans_b ? std::vector<int64_t>{Z, H, N, K} : std::vector<int64_t>{Z, H, K, N});
  // K must be a multiple of 8 for the 16-byte loads: zero-pad it (a zero product adds nothing).
  const int64_t K8 = round_up(K, kVec);
  const at::Tensor A = ready(pad_dim(a, trans_a ? 2 : 3, K8)), B = ready(pad_dim(b, trans_b ? 3 : 2, K8));
  at::Tensor c = at::empty({Z, t.nnz, t.block, t.block}, a.options());
  const DeviceMatmulTables& d = t.cache().matmul(t, a.device());
  bsmm::SddParams p;
  p.kind = kind_of(a, op);
  p.Z = to_int(Z, "batch");
  p.layout = layout_view(t, d);
  p.K = to_int(K8, "K");
  p.a_kmajor = !trans_a;
  p.b_kmajor = trans_b;
  p.a = A.data_ptr();
  p.b = B.data_ptr();
  p.c = c.data_ptr();
  p.tiles = tiles_view(d.by_row);
  bsmm::launch_sdd(p, current_stream());
  return c;
}

at::Tensor dsd(const at::Tensor& s, const at::Tensor& b, bool trans_a, bool trans_b, const LayoutTables& t) {
  constexpr const char* op = "ds::blocksparse_matmul (dsd, CUDA)";
  check_operand(s, s, op, "A", 4);
  check_operand(b, s, op, "B", 4);
  const c10::cuda::CUDAGuard guard(s.device());
  const int64_t Z = s.size(0), H = t.heads;
  const int64_t M = (trans_a ? t.cols : t.rows) * t.block, K = (trans_a ? t.rows : t.cols) * t.block;
  const int64_t N = b.size(trans_b ? 2 : 3);
  check_shape(s, op, "A", {Z, t.nnz, t.block, t.block});
  check_shape(b, op, "B", trans_b ? std::vector<int64_t>{Z, H, N, K} : std::vector<int64_t>{Z, H, K, N});
  const int64_t N8 = round_up(N, kVec);
  const at::Tensor S = ready(s), B = ready(pad_dim(b, trans_b ? 2 : 3, N8));
  at::Tensor c = at::empty({Z, H, M, N8}, s.options());
  run_dxd(S, B, c, trans_a, trans_b, false, M, N8, K, t);
  return N8 == N ? c : c.narrow(3, 0, N);
}

at::Tensor dds(const at::Tensor& a, const at::Tensor& s, bool trans_a, bool trans_b, const LayoutTables& t) {
  constexpr const char* op = "ds::blocksparse_matmul (dds, CUDA)";
  check_operand(a, a, op, "A", 4);
  check_operand(s, a, op, "B", 4);
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t Z = a.size(0), H = t.heads;
  const int64_t K = (trans_b ? t.cols : t.rows) * t.block, N = (trans_b ? t.rows : t.cols) * t.block;
  const int64_t M = a.size(trans_a ? 3 : 2);
  check_shape(a, op, "A", trans_a ? std::vector<int64_t>{Z, H, K, M} : std::vector<int64_t>{Z, H, M, K});
  check_shape(s, op, "B", {Z, t.nnz, t.block, t.block});
  // (op(A) op(S))^T = op(S)^T op(A)^T: the dense-result kernel with op(S)^T as its sparse operand and
  // op(A)^T [K, M] as its dense one, written out transposed into C [M, N].
  const int64_t M8 = round_up(M, kVec);
  const at::Tensor S = ready(s), A = ready(pad_dim(a, trans_a ? 3 : 2, M8));
  at::Tensor c = at::empty({Z, H, M8, N}, a.options());
  run_dxd(S, A, c, !trans_b, !trans_a, true, N, M8, K, t);
  return M8 == M ? c : c.narrow(2, 0, M);
}

at::Tensor softmax_forward(const at::Tensor& x_in, const LayoutTables& t, const SoftmaxOptions& o) {
  constexpr const char* op = "ds::blocksparse_softmax (CUDA)";
  check_operand(x_in, x_in, op, "x", 4);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t Z = x_in.size(0), Sr = t.seq_rows(), Sc = t.seq_cols();
  check_shape(x_in, op, "x", {Z, t.nnz, t.block, t.block});
  const at::Tensor x = ready(x_in);
  at::Tensor y = at::empty_like(x);
  const DeviceMatmulTables& d = t.cache().matmul(t, x.device());
  bsmm::SoftmaxParams p;
  p.kind = kind_of(x, op);
  p.Z = to_int(Z, "batch");
  p.layout = layout_view(t, d);
  p.row_ptr = d.row_ptr.data_ptr<int32_t>();
  p.col = d.col.data_ptr<int32_t>();
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  p.scale = static_cast<float>(o.scale);
  at::Tensor rpe, kp, am;  // keep the prepared copies alive until the launch
  if (o.rpe.defined()) {
    check_operand(o.rpe, x, op, "rpe", 4);
    const int64_t Zr = o.rpe.size(0), Hr = o.rpe.size(1);
    TORCH_CHECK((Zr == 1 || Zr == Z) && (Hr == 1 || Hr == t.heads) && o.rpe.size(2) == Sr && o.rpe.size(3) == Sc,
                op, ": rpe must be [", Z, "|1, ", t.heads, "|1, ", Sr, ", ", Sc, "], got ", shape_str(o.rpe));
    rpe = ready(o.rpe);
    p.rpe = rpe.data_ptr();
    p.rpe_hs = Hr == 1 ? 0 : Sr * Sc;
    p.rpe_zs = Zr == 1 ? 0 : Hr * Sr * Sc;
  }
  if (o.key_padding_mask.defined()) {
    check_operand(o.key_padding_mask, x, op, "key_padding_mask", 2);
    check_shape(o.key_padding_mask, op, "key_padding_mask", {Z, Sc});
    kp = ready(o.key_padding_mask);
    p.key_padding = kp.data_ptr();
    p.key_padding_mode = o.key_padding_mask_mode == MaskMode::Mul ? 1 : 0;
  }
  if (o.attn_mask.defined()) {
    check_operand(o.attn_mask, x, op, "attn_mask", 2);
    check_shape(o.attn_mask, op, "attn_mask", {Sr, Sc});
    am = ready(o.attn_mask);
    p.attn_mask = am.data_ptr();
    p.attn_mask_mode = o.attn_mask_mode == MaskMode::Mul ? 1 : 0;
  }
  p.valid_keys = o.valid_keys < 0 || o.valid_keys >= Sc ? -1 : static_cast<int>(o.valid_keys);
  p.causal_diagonal = o.causal_diagonal;
  bsmm::launch_softmax_forward(p, current_stream());
  return y;
}

at::Tensor softmax_backward(const at::Tensor& y_in, const at::Tensor& dy_in, const LayoutTables& t) {
  constexpr const char* op = "ds::blocksparse_softmax backward (CUDA)";
  check_operand(y_in, y_in, op, "y", 4);
  check_operand(dy_in, y_in, op, "dy", 4);
  const c10::cuda::CUDAGuard guard(y_in.device());
  const int64_t Z = y_in.size(0);
  check_shape(y_in, op, "y", {Z, t.nnz, t.block, t.block});
  check_shape(dy_in, op, "dy", {Z, t.nnz, t.block, t.block});
  const at::Tensor y = ready(y_in), dy = ready(dy_in);
  at::Tensor dx = at::empty_like(y);
  const DeviceMatmulTables& d = t.cache().matmul(t, y.device());
  bsmm::SoftmaxParams p;
  p.kind = kind_of(y, op);
  p.Z = to_int(Z, "batch");
  p.layout = layout_view(t, d);
  p.row_ptr = d.row_ptr.data_ptr<int32_t>();
  p.col = d.col.data_ptr<int32_t>();
  p.x = y.data_ptr();
  p.dy = dy.data_ptr();
  p.y = dx.data_ptr();
  bsmm::launch_softmax_backward(p, current_stream());
  return dx;
}

}  // namespace ds::sparse_cuda
