#include "sparse_attention/layout_tables.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "sparse_attention/device_tables.h"

namespace ds {
namespace {

at::Tensor to_tensor(const std::vector<int64_t>& v) {
  return at::tensor(at::ArrayRef<int64_t>(v), at::dtype(at::kLong));
}

}  // namespace

LayoutTables LayoutTables::build(const at::Tensor& layout_in, int64_t block) {
  TORCH_CHECK(layout_in.defined(), "layout is undefined; pass an int64 [heads, rows, cols] tensor of 0s and 1s");
  TORCH_CHECK(layout_in.dim() == 2 || layout_in.dim() == 3,
              "Layout should be a 2 or 3 dimensional tensor of 0s and 1s; got shape ", layout_in.sizes());
  // Any real dtype, as DeepSpeed's MatMul (layout.long()): LibTorch's Module::to(dtype) also converts
  // integer buffers, so a module's master_layout may arrive as float.
  TORCH_CHECK(!at::isComplexType(layout_in.scalar_type()), "layout must have a real dtype, got ",
              layout_in.scalar_type());
  TORCH_CHECK(block == 16 || block == 32 || block == 64 || block == 128, "block ", block,
              " is not supported; use 16, 32, 64 or 128");

  LayoutTables t;
  t.block = block;
  at::Tensor l = layout_in.dim() == 2 ? layout_in.unsqueeze(0) : layout_in;
  t.layout = l.to(at::kCPU).ne(0).to(at::kLong).contiguous();
  t.heads = t.layout.size(0);
  t.rows = t.layout.size(1);
  t.cols = t.layout.size(2);
  TORCH_CHECK(t.heads > 0 && t.rows > 0 && t.cols > 0, "layout must not be empty; got shape ", layout_in.sizes());

  const int64_t H = t.heads, R = t.rows, C = t.cols;
  const int64_t* p = t.layout.data_ptr<int64_t>();
  std::vector<int64_t> head, row, col, row_seg, col_seg, tile;
  std::vector<int64_t> row_ptr(static_cast<size_t>(H * R + 1), 0), col_count(static_cast<size_t>(H * C), 0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t c = 0; c < C; ++c) {
        if (!p[(h * R + r) * C + c]) continue;
        head.push_back(h);
        row.push_back(r);
        col.push_back(c);
        row_seg.push_back(h * R + r);
        col_seg.push_back(h * C + c);
        tile.push_back((h * R + r) * C + c);
        ++col_count[static_cast<size_t>(h * C + c)];
      }
      row_ptr[static_cast<size_t>(h * R + r + 1)] = static_cast<int64_t>(head.size());
    }
  t.nnz = static_cast<int64_t>(head.size());

  std::vector<int64_t> row_count(static_cast<size_t>(H * R));
  for (size_t s = 0; s < row_count.size(); ++s) row_count[s] = row_ptr[s + 1] - row_ptr[s];
  std::vector<int64_t> col_ptr(static_cast<size_t>(H * C + 1), 0);
  for (size_t s = 0; s < col_count.size(); ++s) col_ptr[s + 1] = col_ptr[s] + col_count[s];
  // Blocks are visited row-major, so filling each column's slots in visit order sorts them by row.
  std::vector<int64_t> col_nnz(static_cast<size_t>(t.nnz));
  std::vector<int64_t> fill(col_ptr.begin(), col_ptr.end() - 1);
  for (int64_t n = 0; n < t.nnz; ++n) col_nnz[static_cast<size_t>(fill[static_cast<size_t>(col_seg[n])]++)] = n;

  t.max_row_blocks = row_count.empty() ? 0 : *std::max_element(row_count.begin(), row_count.end());
  t.max_col_blocks = col_count.empty() ? 0 : *std::max_element(col_count.begin(), col_count.end());
  t.head = to_tensor(head);
  t.row = to_tensor(row);
  t.col = to_tensor(col);
  t.row_seg = to_tensor(row_seg);
  t.col_seg = to_tensor(col_seg);
  t.tile = to_tensor(tile);
  t.row_ptr = to_tensor(row_ptr);
  t.row_count = to_tensor(row_count);
  t.col_ptr = to_tensor(col_ptr);
  t.col_count = to_tensor(col_count);
  t.col_nnz = to_tensor(col_nnz);
  t.device_cache = std::make_shared<DeviceTableCache>();
  return t;
}

DeviceTableCache& LayoutTables::cache() const {
  TORCH_CHECK(device_cache != nullptr, "LayoutTables without a device cache: build them with LayoutTables::build");
  return *device_cache;
}

const at::Tensor& LayoutTables::tile_on(const at::Device& device) const {
  return device.is_cpu() ? tile : cache().tile(*this, device);
}

at::Tensor dense_to_sparse(const at::Tensor& dense, const LayoutTables& t) {
  TORCH_CHECK(dense.dim() == 4 && dense.size(1) == t.heads && dense.size(2) == t.seq_rows() &&
                  dense.size(3) == t.seq_cols(),
              "dense_to_sparse: expected a [Z, ", t.heads, ", ", t.seq_rows(), ", ", t.seq_cols(),
              "] tensor for this layout, got ", dense.sizes());
  const int64_t Z = dense.size(0), b = t.block;
  // [Z, H, R, b, C, b] -> tiles [Z, H*R*C, b, b] -> present tiles.
  at::Tensor tiles = dense.reshape({Z, t.heads, t.rows, b, t.cols, b})
                         .permute({0, 1, 2, 4, 3, 5})
                         .reshape({Z, t.heads * t.rows * t.cols, b, b});
  return tiles.index_select(1, t.tile_on(dense.device()));
}

at::Tensor sparse_to_dense(const at::Tensor& sparse, const LayoutTables& t, double fill) {
  TORCH_CHECK(sparse.dim() == 4 && sparse.size(1) == t.nnz && sparse.size(2) == t.block && sparse.size(3) == t.block,
              "sparse_to_dense: expected a [Z, ", t.nnz, ", ", t.block, ", ", t.block,
              "] block-sparse tensor for this layout, got ", sparse.sizes());
  const int64_t Z = sparse.size(0), b = t.block;
  at::Tensor tiles = at::full({Z, t.heads * t.rows * t.cols, b, b}, fill, sparse.options());
  tiles = tiles.index_copy(1, t.tile_on(sparse.device()), sparse);
  return tiles.view({Z, t.heads, t.rows, t.cols, b, b})
      .permute({0, 1, 2, 4, 3, 5})
      .reshape({Z, t.heads, t.seq_rows(), t.seq_cols()});
}

at::Tensor expand_layout(const LayoutTables& t) {
  return t.layout.ne(0)
      .repeat_interleave(t.block, 1)
      .repeat_interleave(t.block, 2);
}

}  // namespace ds
