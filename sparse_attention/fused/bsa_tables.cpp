#include "sparse_attention/fused/bsa_tables.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "sparse_attention/fused/bsa_params.h"

namespace ds::bsa {
namespace {

// present(h, r, c) over a layout or its transpose.
template <typename Present>
TileTable build(Present present, int layout_heads, int nb, int block, int chunk, int num_tiles) {
  TileTable t;
  t.ptr.reserve(static_cast<size_t>(layout_heads) * num_tiles + 1);
  t.ptr.push_back(0);
  const int chunks_per_block = block / chunk;  // > 1 only for block 128
  std::vector<uint32_t> mask_of_chunk;
  for (int h = 0; h < layout_heads; ++h) {
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int row0 = tile * kTileRows;
      mask_of_chunk.assign(static_cast<size_t>(nb) * chunks_per_block, 0u);
      if (block >= kTileRows) {
        const int r = row0 / block;
        for (int c = 0; c < nb; ++c)
          if (present(h, r, c))
            for (int s = 0; s < chunks_per_block; ++s) mask_of_chunk[c * chunks_per_block + s] = 1u;
      } else {
        const int groups = kTileRows / block;
        for (int g = 0; g < groups; ++g) {
          const int r = row0 / block + g;
          if (r >= nb) break;
          for (int c = 0; c < nb; ++c)
            if (present(h, r, c)) mask_of_chunk[c] |= 1u << g;
        }
      }
      for (size_t c = 0; c < mask_of_chunk.size(); ++c) {
        if (mask_of_chunk[c]) {
          t.chunk.push_back(static_cast<int32_t>(c));
          t.mask.push_back(mask_of_chunk[c]);
        }
      }
      t.ptr.push_back(static_cast<int32_t>(t.chunk.size()));
    }
  }
  return t;
}

}  // namespace

HostTables build_tables(const int64_t* layout, int layout_heads, int num_blocks, int block) {
  if (block != 16 && block != 32 && block != 64 && block != 128)
    throw std::invalid_argument("fused block-sparse attention: block " + std::to_string(block) +
                                " is not supported; use 16, 32, 64 or 128");
  HostTables t;
  t.layout_heads = layout_heads;
  t.num_blocks = num_blocks;
  t.block = block;
  t.chunk = std::min(block, kTileRows);
  const int64_t seq = static_cast<int64_t>(num_blocks) * block;
  t.num_tiles = static_cast<int>((seq + kTileRows - 1) / kTileRows);
  const int64_t hs = static_cast<int64_t>(num_blocks) * num_blocks;
  auto at = [&](int h, int r, int c) { return layout[h * hs + static_cast<int64_t>(r) * num_blocks + c] != 0; };
  t.q = build(at, layout_heads, num_blocks, block, t.chunk, t.num_tiles);
  t.k = build([&](int h, int r, int c) { return at(h, c, r); }, layout_heads, num_blocks, block, t.chunk,
              t.num_tiles);
  for (int64_t i = 0; i < layout_heads * hs; ++i) t.present_blocks += layout[i] != 0;
  return t;
}

std::vector<int32_t> build_order(const TileTable& t, int layout_heads, int num_tiles, int B, int H) {
  const int64_t n = static_cast<int64_t>(B) * H * num_tiles;
  if (n > INT32_MAX) throw std::invalid_argument("fused block-sparse attention: too many tiles (B*H*S/64 > 2^31)");
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  auto work = [&](int32_t item) {
    const int tile = item % num_tiles;
    const int h = (item / num_tiles) % H;
    const int lh = h % layout_heads;
    return t.ptr[lh * num_tiles + tile + 1] - t.ptr[lh * num_tiles + tile];
  };
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return work(a) > work(b); });
  return order;
}

}  // namespace ds::bsa
