#include "sparse_attention/blocksparse_tables.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace ds::bsmm {
namespace {

// Tiles over `tile_blocks` blocks of one axis; for_each(lh, a, f) calls f(other, n) for every
// present block (other-axis block index, nnz index) of axis block a of layout head lh.
template <typename ForEach>
TileTable build_tile_table(ForEach for_each, int layout_heads, int heads, int tile_blocks, int other_blocks,
                           int block, int chunk) {
  TileTable t;
  t.num_tiles = static_cast<int>((static_cast<int64_t>(tile_blocks) * block + kTileRows - 1) / kTileRows);
  const int chunks_per_block = block / chunk;  // 2 at block 128, else 1
  const size_t num_chunks = static_cast<size_t>(other_blocks) * chunks_per_block;
  std::vector<uint32_t> mask(num_chunks, 0u);
  std::vector<int32_t> nnz(num_chunks * kMaxGroups, -1);
  std::vector<int32_t> touched;
  t.ptr.reserve(static_cast<size_t>(layout_heads) * t.num_tiles + 1);
  t.ptr.push_back(0);
  const int groups = block >= kTileRows ? 1 : kTileRows / block;
  for (int lh = 0; lh < layout_heads; ++lh) {
    for (int tile = 0; tile < t.num_tiles; ++tile) {
      for (int g = 0; g < groups; ++g) {
        const int a = block >= kTileRows ? (tile * kTileRows) / block : tile * groups + g;
        if (a >= tile_blocks) break;
        for_each(lh, a, [&](int other, int32_t n) {
          for (int s = 0; s < chunks_per_block; ++s) {
            const int32_t ch = other * chunks_per_block + s;
            if (mask[static_cast<size_t>(ch)] == 0u) touched.push_back(ch);
            mask[static_cast<size_t>(ch)] |= 1u << g;
            nnz[static_cast<size_t>(ch) * kMaxGroups + g] = n;
          }
        });
      }
      std::sort(touched.begin(), touched.end());
      for (int32_t ch : touched) {
        t.chunk.push_back(ch);
        t.mask.push_back(mask[static_cast<size_t>(ch)]);
        for (int g = 0; g < kMaxGroups; ++g) t.nnz.push_back(nnz[static_cast<size_t>(ch) * kMaxGroups + g]);
        mask[static_cast<size_t>(ch)] = 0u;
        std::fill_n(nnz.begin() + static_cast<std::ptrdiff_t>(ch) * kMaxGroups, kMaxGroups, -1);
      }
      touched.clear();
      if (t.chunk.size() > static_cast<size_t>(INT32_MAX))
        throw std::invalid_argument("block-sparse tables: more than 2^31 tile entries");
      t.ptr.push_back(static_cast<int32_t>(t.chunk.size()));
    }
  }
  // Heaviest tiles first (then lowest index) so long tiles start early and do not straggle.
  const int64_t items = static_cast<int64_t>(heads) * t.num_tiles;
  if (items > INT32_MAX) throw std::invalid_argument("block-sparse tables: more than 2^31 tiles");
  t.order.resize(static_cast<size_t>(items));
  std::iota(t.order.begin(), t.order.end(), 0);
  auto work = [&](int32_t item) {
    const int lh = (item / t.num_tiles) % layout_heads, tile = item % t.num_tiles;
    return t.ptr[static_cast<size_t>(lh) * t.num_tiles + tile + 1] - t.ptr[static_cast<size_t>(lh) * t.num_tiles + tile];
  };
  std::stable_sort(t.order.begin(), t.order.end(), [&](int32_t x, int32_t y) { return work(x) > work(y); });
  return t;
}

}  // namespace

HostTables build_tables(const int64_t* layout, int heads, int rows, int cols, int block) {
  if (block != 16 && block != 32 && block != 64 && block != 128)
    throw std::invalid_argument("block-sparse tables: block " + std::to_string(block) +
                                " is not supported; use 16, 32, 64 or 128");
  if (heads <= 0 || rows <= 0 || cols <= 0)
    throw std::invalid_argument("block-sparse tables: empty layout [" + std::to_string(heads) + ", " +
                                std::to_string(rows) + ", " + std::to_string(cols) + "]");
  HostTables t;
  t.heads = heads;
  t.rows = rows;
  t.cols = cols;
  t.block = block;
  t.chunk = std::min(block, kTileRows);
  const int64_t per_head = static_cast<int64_t>(rows) * cols;
  auto present = [&](int h, int r, int c) { return layout[h * per_head + static_cast<int64_t>(r) * cols + c] != 0; };

  // CSR over all heads, in nnz order (head, row, column).
  t.row_ptr.assign(static_cast<size_t>(heads) * rows + 1, 0);
  for (int h = 0; h < heads; ++h)
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c)
        if (present(h, r, c)) t.col.push_back(c);
      if (t.col.size() > static_cast<size_t>(INT32_MAX))
        throw std::invalid_argument("block-sparse tables: more than 2^31 present blocks");
      t.row_ptr[static_cast<size_t>(h) * rows + r + 1] = static_cast<int32_t>(t.col.size());
    }
  t.nnz = static_cast<int64_t>(t.col.size());

  // Heads that all repeat head 0 (DeepSpeed's default) share one set of tile tables.
  bool same = true;
  for (int h = 1; h < heads && same; ++h) same = std::equal(layout, layout + per_head, layout + h * per_head,
                                                            [](int64_t x, int64_t y) { return (x != 0) == (y != 0); });
  t.layout_heads = same ? 1 : heads;
  t.nnz_head_stride = same && heads > 1 ? t.nnz / heads : 0;

  // CSC of the layout heads: blocks of column c by increasing row, with their nnz index.
  const int LH = t.layout_heads;
  std::vector<int32_t> col_ptr(static_cast<size_t>(LH) * cols + 1, 0), col_nnz, col_row;
  {
    std::vector<int32_t> count(static_cast<size_t>(LH) * cols, 0);
    for (int h = 0; h < LH; ++h)
      for (int r = 0; r < rows; ++r)
        for (int32_t n = t.row_ptr[static_cast<size_t>(h) * rows + r]; n < t.row_ptr[static_cast<size_t>(h) * rows + r + 1]; ++n)
          ++count[static_cast<size_t>(h) * cols + t.col[static_cast<size_t>(n)]];
    for (size_t s = 0; s < count.size(); ++s) col_ptr[s + 1] = col_ptr[s] + count[s];
    col_nnz.resize(static_cast<size_t>(col_ptr.back()));
    col_row.resize(col_nnz.size());
    std::vector<int32_t> fill(col_ptr.begin(), col_ptr.end() - 1);
    for (int h = 0; h < LH; ++h)
      for (int r = 0; r < rows; ++r)
        for (int32_t n = t.row_ptr[static_cast<size_t>(h) * rows + r]; n < t.row_ptr[static_cast<size_t>(h) * rows + r + 1]; ++n) {
          const size_t slot = static_cast<size_t>(fill[static_cast<size_t>(h) * cols + t.col[static_cast<size_t>(n)]]++);
          col_nnz[slot] = n;
          col_row[slot] = r;
        }
  }

  t.by_row = build_tile_table(
      [&](int lh, int r, auto&& f) {
        const size_t s = static_cast<size_t>(lh) * rows + r;
        for (int32_t n = t.row_ptr[s]; n < t.row_ptr[s + 1]; ++n) f(t.col[static_cast<size_t>(n)], n);
      },
      LH, heads, rows, cols, block, t.chunk);
  t.by_col = build_tile_table(
      [&](int lh, int c, auto&& f) {
        const size_t s = static_cast<size_t>(lh) * cols + c;
        for (int32_t i = col_ptr[s]; i < col_ptr[s + 1]; ++i) f(col_row[static_cast<size_t>(i)], col_nnz[static_cast<size_t>(i)]);
      },
      LH, heads, cols, rows, block, t.chunk);
  return t;
}

}  // namespace ds::bsmm
