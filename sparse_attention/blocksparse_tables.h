// Look-up tables of the block-sparse MatMul and Softmax CUDA kernels, derived from a layout once (then
// cached with the layout, see device_tables.h) — pure C++, no Torch, no CUDA, so the standalone kernel
// harness builds them too.
//
// A CTA of the matmul kernels owns a tile of kTileRows (64) positions on one axis of the layout (the
// rows of the sparse operand or result, or its columns for the transposed products) and walks the
// "chunks" of the other axis present in at least one of its positions, as the fused attention's
// tables (fused/bsa_tables.h) do: a chunk is min(block, 64) consecutive positions; with blocks of 16 or
// 32 a tile spans several block rows ("groups", one per 16 or 32 positions), and each chunk carries a
// bit per group plus, per group, the index of the block it belongs to in nnz order, so a kernel finds
// the block's data (and writes a result block) without searching. Unlike bsa_tables.h, layouts may be
// rectangular (a MatMul's [H, M/b, N/b]).
#pragma once

#include <cstdint>
#include <vector>

namespace ds::bsmm {

constexpr int kTileRows = 64;
constexpr int kMaxGroups = 4;  // kTileRows / 16: row groups of a tile at block 16

struct TileTable {
  int num_tiles = 0;           // ceil(axis positions / 64)
  std::vector<int32_t> ptr;    // [layout_heads * num_tiles + 1]: entries of (layout head, tile)
  std::vector<int32_t> chunk;  // [entries] chunk index on the other axis (start = chunk * chunk_size)
  std::vector<uint32_t> mask;  // [entries] bit g: group g of the tile has a block there
  std::vector<int32_t> nnz;    // [entries * kMaxGroups] that block's nnz index (in head 0's numbering
                               // when heads share one table), -1 where the group has none
  std::vector<int32_t> order;  // [heads * num_tiles] work items h * num_tiles + tile, heaviest first
};

struct HostTables {
  int heads = 0, rows = 0, cols = 0;  // layout [heads, rows, cols] in blocks
  int block = 0, chunk = 0;           // chunk = min(block, 64)
  int layout_heads = 0;               // 1 when every head has head 0's layout, else heads
  int64_t nnz = 0;                    // present blocks, all heads
  int64_t nnz_head_stride = 0;        // nnz / heads when layout_heads == 1 (added per head), else 0
  TileTable by_row;  // tiles over rows (positions of M), chunks over columns
  TileTable by_col;  // tiles over columns, chunks over rows (the transposed products)
  std::vector<int32_t> row_ptr;  // [heads * rows + 1] CSR over all heads (softmax)
  std::vector<int32_t> col;      // [nnz] block column of each block
};

// layout: [heads, rows, cols] row-major, non-zero = present (int64 as Torch keeps it).
// block: 16, 32, 64 or 128. Throws std::invalid_argument otherwise or when nnz exceeds int32.
HostTables build_tables(const int64_t* layout, int heads, int rows, int cols, int block);

}  // namespace ds::bsmm
