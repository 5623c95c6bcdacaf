// Look-up tables of the fused block-sparse attention kernels, derived from a layout once (then cached
// with the layout) — pure C++, no Torch, no CUDA.
//
// A CTA owns a tile of kTileRows (64) rows: query rows in forward/dQ, key rows in dK/dV. It walks the
// chunks of the other axis present in at least one of its rows. A chunk is min(block, 64) consecutive
// positions; with blocks of 16 or 32 a tile spans several layout rows ("row groups"), and each chunk
// carries a bit per group so a warp skips chunks its rows do not attend (warp-uniform, no waste of
// tensor-core work; only the shared K/V loads are a union).
#pragma once

#include <cstdint>
#include <vector>

namespace ds::bsa {

struct TileTable {
  std::vector<int32_t> ptr;    // [layout_heads * num_tiles + 1]
  std::vector<int32_t> chunk;  // chunk index on the other axis
  std::vector<uint32_t> mask;  // bit g: row group g of the tile has the chunk
};

struct HostTables {
  int layout_heads = 0, num_blocks = 0, block = 0, chunk = 0, num_tiles = 0;
  TileTable q;  // query tiles -> key chunks (layout rows)
  TileTable k;  // key tiles -> query chunks (layout columns)
  int64_t present_blocks = 0;  // layout.sum(): for FLOP counts
};

// layout: [layout_heads, num_blocks, num_blocks] of 0/1, row-major (int64 as Torch keeps it).
HostTables build_tables(const int64_t* layout, int layout_heads, int num_blocks, int block);

// Work items (b, h, tile) packed as (b * H + h) * num_tiles + tile, ordered heaviest first (most
// chunks, then lowest index) so long rows start early and do not straggle at the end of the grid.
std::vector<int32_t> build_order(const TileTable& t, int layout_heads, int num_tiles, int B, int H);

}  // namespace ds::bsa
