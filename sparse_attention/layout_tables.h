// Look-up tables derived from a block layout, built once per layout and shared by every block-sparse
// op on it (forward and backward, CPU and, later, CUDA).
//
// Block-sparse tensor format (DeepSpeed's): [Z, nnz, block, block], the present blocks of a layout
// [H, R, C] in layout.nonzero() order, i.e. by (head, block row, block column). A "row segment"
// s = h*R + r names one block row of one head; a "column segment" h*C + c one block column.
//
// Why one struct, built once: DeepSpeed rebuilds its Triton LUTs per MatMul object and caches ops in
// a class-level dict keyed by sequence length only (shared by modules with different layouts). The
// owner of a layout (MatMul/Softmax objects, SparseSelfAttention's per-module cache) builds this
// once; the ops take it by reference. All tables are int64 CPU tensors; the CUDA kernels' tables are
// derived and uploaded once per device into `device_cache` (device_tables.h), which every copy of a
// LayoutTables shares.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>

namespace ds {

class DeviceTableCache;

struct LayoutTables {
  int64_t block = 0;
  int64_t heads = 0, rows = 0, cols = 0;  // layout [heads, rows, cols] (block units)
  int64_t nnz = 0;                        // present blocks
  int64_t max_row_blocks = 0;             // most blocks in one row segment (load balancing)
  int64_t max_col_blocks = 0;             // most blocks in one column segment

  at::Tensor layout;   // int64 [H, R, C], 0/1, contiguous CPU
  // Per block, nnz order.
  at::Tensor head;     // [nnz]
  at::Tensor row;      // [nnz]
  at::Tensor col;      // [nnz]
  at::Tensor row_seg;  // [nnz] h*R + r
  at::Tensor col_seg;  // [nnz] h*C + c
  at::Tensor tile;     // [nnz] (h*R + r)*C + c: the block's index in the dense grid of tiles
  // Row view (CSR). nnz order is row-major, so the blocks of row segment s are the nnz indices
  // [row_ptr[s], row_ptr[s+1]), by increasing column.
  at::Tensor row_ptr;    // [H*R + 1]
  at::Tensor row_count;  // [H*R]
  // Column view (CSC), for the transposed products (dsd with trans_a, dds, and their backward):
  // the blocks of column segment s are col_nnz[col_ptr[s] .. col_ptr[s+1]), by increasing row.
  at::Tensor col_ptr;    // [H*C + 1]
  at::Tensor col_count;  // [H*C]
  at::Tensor col_nnz;    // [nnz]

  // The kernels' tables on each device, built on first use (shared by copies; set by build()).
  std::shared_ptr<DeviceTableCache> device_cache;

  // layout: 2-D [R, C] (one head, as DeepSpeed's MatMul accepts) or 3-D [H, R, C]; any real dtype,
  // any device (read once on the CPU); a block is present where the value is non-zero.
  // block: 16, 32, 64 or 128 (DeepSpeed's kernels support exactly these).
  static LayoutTables build(const at::Tensor& layout, int64_t block);

  int64_t seq_rows() const { return rows * block; }  // dense extent of the row dimension
  int64_t seq_cols() const { return cols * block; }
  // device_cache, or an error naming how the tables were made wrong.
  DeviceTableCache& cache() const;
  // `tile` on x's device (uploaded once per device).
  const at::Tensor& tile_on(const at::Device& device) const;
};

// Gathers the present blocks of a dense [Z, H, R*block, C*block] tensor -> [Z, nnz, block, block]
// (differentiable).
at::Tensor dense_to_sparse(const at::Tensor& dense, const LayoutTables& t);
// Scatters [Z, nnz, block, block] into a dense [Z, H, R*block, C*block] tensor whose absent blocks
// hold `fill` (0, or -inf for scores) (differentiable w.r.t. the blocks).
at::Tensor sparse_to_dense(const at::Tensor& sparse, const LayoutTables& t, double fill = 0.0);
// The element mask of the layout: bool [H, R*block, C*block].
at::Tensor expand_layout(const LayoutTables& t);

}  // namespace ds
