// The CUDA kernels' look-up tables (blocksparse_tables.h, pure C++) against brute force over the
// layout: every present (tile group, chunk) pair is listed exactly once with the right nnz index,
// nothing absent is listed, chunks are sorted, the work order is a heaviest-first permutation; heads
// that repeat head 0 share one table. And the device cache builds each device's tables once.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "dense_reference.h"
#include "sparse_attention/blocksparse_tables.h"
#include "sparse_attention/device_tables.h"
#include "sparse_attention/layout_tables.h"

namespace ds {
namespace {

// Checks one TileTable against the layout. by_row: tiles over rows; else over columns.
void check_tile_table(const bsmm::TileTable& tt, const LayoutTables& t, const bsmm::HostTables& h, bool by_row) {
  const int64_t tile_blocks = by_row ? t.rows : t.cols, other_blocks = by_row ? t.cols : t.rows;
  const int64_t b = t.block, chunk = std::min<int64_t>(b, 64), cpb = b / chunk;
  ASSERT_EQ(tt.num_tiles, (tile_blocks * b + 63) / 64);
  ASSERT_EQ(tt.ptr.size(), static_cast<size_t>(h.layout_heads * tt.num_tiles + 1));
  ASSERT_EQ(tt.nnz.size(), tt.chunk.size() * bsmm::kMaxGroups);
  const auto* L = t.layout.data_ptr<int64_t>();
  // nnz index of (h, r, c) from LayoutTables' CSR.
  std::map<std::tuple<int64_t, int64_t, int64_t>, int64_t> index;
  for (int64_t n = 0; n < t.nnz; ++n)
    index[{t.head[n].item<int64_t>(), t.row[n].item<int64_t>(), t.col[n].item<int64_t>()}] = n;
  for (int64_t lh = 0; lh < h.layout_heads; ++lh)
    for (int64_t tile = 0; tile < tt.num_tiles; ++tile) {
      std::set<int64_t> expected_chunks;
      const int64_t groups = b >= 64 ? 1 : 64 / b;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t a = b >= 64 ? tile * 64 / b : tile * groups + g;
        if (a >= tile_blocks) continue;
        for (int64_t o = 0; o < other_blocks; ++o) {
          const int64_t r = by_row ? a : o, c = by_row ? o : a;
          if (L[(lh * t.rows + r) * t.cols + c] != 0)
            for (int64_t s = 0; s < cpb; ++s) expected_chunks.insert(o * cpb + s);
        }
      }
      const int32_t e0 = tt.ptr[static_cast<size_t>(lh * tt.num_tiles + tile)];
      const int32_t e1 = tt.ptr[static_cast<size_t>(lh * tt.num_tiles + tile + 1)];
      ASSERT_EQ(static_cast<size_t>(e1 - e0), expected_chunks.size()) << "lh " << lh << " tile " << tile;
      auto it = expected_chunks.begin();
      for (int32_t e = e0; e < e1; ++e, ++it) {
        ASSERT_EQ(tt.chunk[static_cast<size_t>(e)], *it) << "chunks sorted, none missing";
        const int64_t o = *it / cpb;
        for (int64_t g = 0; g < bsmm::kMaxGroups; ++g) {
          const int64_t a = b >= 64 ? tile * 64 / b : tile * groups + g;
          const int64_t r = by_row ? a : o, c = by_row ? o : a;
          const bool present = g < groups && a < tile_blocks && L[(lh * t.rows + r) * t.cols + c] != 0;
          EXPECT_EQ(((tt.mask[static_cast<size_t>(e)] >> g) & 1u) != 0, present) << "mask bit " << g;
          const int32_t n = tt.nnz[static_cast<size_t>(e) * bsmm::kMaxGroups + static_cast<size_t>(g)];
          if (present) {
            EXPECT_EQ(n, index.at({lh, r, c})) << "nnz of (" << lh << ", " << r << ", " << c << ")";
          } else {
            EXPECT_EQ(n, -1);
          }
        }
      }
    }
  // Order: a permutation of the (head, tile) items, work non-increasing.
  std::vector<int32_t> sorted = tt.order;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) ASSERT_EQ(sorted[i], static_cast<int32_t>(i));
  ASSERT_EQ(sorted.size(), static_cast<size_t>(t.heads * tt.num_tiles));
  auto work = [&](int32_t item) {
    const int64_t lh = (item / tt.num_tiles) % h.layout_heads, tile = item % tt.num_tiles;
    return tt.ptr[static_cast<size_t>(lh * tt.num_tiles + tile + 1)] - tt.ptr[static_cast<size_t>(lh * tt.num_tiles + tile)];
  };
  for (size_t i = 1; i < tt.order.size(); ++i) EXPECT_GE(work(tt.order[i - 1]), work(tt.order[i]));
}

void check_layout(const torch::Tensor& layout, int64_t block, bool expect_shared) {
  LayoutTables t = LayoutTables::build(layout, block);
  const bsmm::HostTables h = bsmm::build_tables(t.layout.data_ptr<int64_t>(), static_cast<int>(t.heads),
                                                static_cast<int>(t.rows), static_cast<int>(t.cols),
                                                static_cast<int>(block));
  EXPECT_EQ(h.layout_heads, expect_shared ? 1 : t.heads);
  EXPECT_EQ(h.nnz, t.nnz);
  EXPECT_EQ(h.nnz_head_stride, expect_shared && t.heads > 1 ? t.nnz / t.heads : 0);
  EXPECT_EQ(h.chunk, std::min<int64_t>(block, 64));
  ASSERT_EQ(h.row_ptr.size(), static_cast<size_t>(t.heads * t.rows + 1));
  for (size_t s = 0; s < h.row_ptr.size(); ++s) EXPECT_EQ(h.row_ptr[s], t.row_ptr[static_cast<int64_t>(s)].item<int64_t>());
  for (int64_t n = 0; n < t.nnz; ++n) EXPECT_EQ(h.col[static_cast<size_t>(n)], t.col[n].item<int64_t>());
  check_tile_table(h.by_row, t, h, true);
  check_tile_table(h.by_col, t, h, false);
}

TEST(BlockSparseTables, RandomRectangularLayoutsEveryBlockSize) {
  for (int64_t block : {16, 32, 64, 128})
    for (double p : {0.05, 0.4, 0.9}) {
      check_layout(test::random_layout(3, 7, 5, p, 17 + block, /*allow_empty_rows=*/true), block, false);
      check_layout(test::random_layout(1, 9, 4, p, 19 + block), block, true);
    }
}

TEST(BlockSparseTables, HeadsRepeatingHeadZeroShareOneTable) {
  torch::Tensor one = test::random_layout(1, 10, 10, 0.3, 23);
  check_layout(one.expand({4, 10, 10}).contiguous(), 16, true);
  check_layout(one.expand({4, 10, 10}).contiguous(), 128, true);
  torch::Tensor differ = one.expand({4, 10, 10}).contiguous();
  differ[3][0][9] = 1 - differ[3][0][9].item<int64_t>();
  check_layout(differ, 32, false);
}

TEST(BlockSparseTables, EmptyLayoutAndErrors) {
  check_layout(torch::zeros({2, 3, 3}, torch::kLong), 16, true);
  const int64_t one = 1;
  EXPECT_THROW(bsmm::build_tables(&one, 1, 1, 1, 24), std::invalid_argument);
  EXPECT_THROW(bsmm::build_tables(&one, 0, 1, 1, 16), std::invalid_argument);
}

TEST(BlockSparseTables, LayoutTablesCopiesShareOneDeviceCache) {
  LayoutTables t = LayoutTables::build(test::random_layout(2, 4, 4, 0.5, 29), 32);
  LayoutTables copy = t;
  ASSERT_NE(t.device_cache, nullptr);
  EXPECT_EQ(copy.device_cache.get(), t.device_cache.get());
  // The cache works for any device; on the CPU it is what a CUDA device would get.
  const DeviceMatmulTables& d = t.cache().matmul(t, torch::kCPU);
  EXPECT_EQ(d.row_ptr.scalar_type(), torch::kInt);
  EXPECT_EQ(d.row_ptr.numel(), t.heads * t.rows + 1);
  EXPECT_EQ(&copy.cache().matmul(copy, torch::kCPU), &d);
  const DeviceFusedTables& f = t.cache().fused(t, torch::kCPU);
  EXPECT_EQ(f.num_tiles, 2);
  auto orders = t.cache().fused_order(t, torch::kCPU, 3);
  EXPECT_EQ(orders.first.numel(), 3 * 2 * 2);
  const int64_t uploads = t.cache().uploads();
  t.cache().matmul(t, torch::kCPU);
  t.cache().fused(t, torch::kCPU);
  t.cache().fused_order(t, torch::kCPU, 3);
  EXPECT_EQ(t.cache().uploads(), uploads) << "built once, then reused";
  t.cache().fused_order(t, torch::kCPU, 4);
  EXPECT_EQ(t.cache().uploads(), uploads + 1) << "orders depend on the batch size";
}

}  // namespace
}  // namespace ds
