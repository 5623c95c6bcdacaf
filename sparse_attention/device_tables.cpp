#include "sparse_attention/device_tables.h"

#include <ATen/ATen.h>

#include <vector>

#include "sparse_attention/blocksparse_tables.h"
#include "sparse_attention/fused/bsa_tables.h"
#include "sparse_attention/layout_tables.h"

namespace ds {

struct DeviceTableCache::Host {
  std::unique_ptr<bsmm::HostTables> matmul;
  std::unique_ptr<bsa::HostTables> fused;
};

namespace {

template <typename T>
at::Tensor upload(const std::vector<T>& v, const at::Device& device) {
  static_assert(sizeof(T) == 4, "int32 tables");
  const auto opts = at::TensorOptions().dtype(at::kInt);
  if (v.empty()) return at::empty({0}, opts.device(device));
  // from_blob does not own the vector; to() copies before it returns.
  return at::from_blob(const_cast<T*>(v.data()), {static_cast<int64_t>(v.size())}, opts).to(device);
}

DeviceTileTable upload_tiles(const bsmm::TileTable& t, const at::Device& device) {
  DeviceTileTable d;
  d.ptr = upload(t.ptr, device);
  d.chunk = upload(t.chunk, device);
  d.mask = upload(t.mask, device);
  d.nnz = upload(t.nnz, device);
  d.order = upload(t.order, device);
  d.num_tiles = t.num_tiles;
  return d;
}

}  // namespace

DeviceTableCache::DeviceTableCache() : host_(std::make_unique<Host>()) {}
DeviceTableCache::~DeviceTableCache() = default;

const DeviceMatmulTables& DeviceTableCache::matmul(const LayoutTables& t, const at::Device& device) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = matmul_.find(key_of(device));
  if (it != matmul_.end()) return it->second;
  if (!host_->matmul) {
    host_->matmul = std::make_unique<bsmm::HostTables>(
        bsmm::build_tables(t.layout.data_ptr<int64_t>(), static_cast<int>(t.heads), static_cast<int>(t.rows),
                           static_cast<int>(t.cols), static_cast<int>(t.block)));
  }
  const bsmm::HostTables& h = *host_->matmul;
  DeviceMatmulTables d;
  d.row_ptr = upload(h.row_ptr, device);
  d.col = upload(h.col, device);
  d.by_row = upload_tiles(h.by_row, device);
  d.by_col = upload_tiles(h.by_col, device);
  d.layout_heads = h.layout_heads;
  d.chunk = h.chunk;
  d.nnz_head_stride = h.nnz_head_stride;
  ++uploads_;
  return matmul_.emplace(key_of(device), std::move(d)).first->second;
}

const DeviceFusedTables& DeviceTableCache::fused(const LayoutTables& t, const at::Device& device) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = fused_.find(key_of(device));
  if (it != fused_.end()) return it->second;
  TORCH_CHECK(t.rows == t.cols, "fused block-sparse attention needs a square layout, got ", t.rows, " x ", t.cols,
              " blocks");
  if (!host_->fused) {
    // Heads that all repeat head 0 share one table (and one work list per tile).
    const int64_t per_head = t.rows * t.cols;
    const at::Tensor flat = t.layout.view({t.heads, per_head});
    const bool same = t.heads == 1 || flat.eq(flat[0].unsqueeze(0)).all().item<bool>();
    host_->fused = std::make_unique<bsa::HostTables>(bsa::build_tables(
        t.layout.data_ptr<int64_t>(), same ? 1 : static_cast<int>(t.heads), static_cast<int>(t.rows),
        static_cast<int>(t.block)));
  }
  const bsa::HostTables& h = *host_->fused;
  DeviceFusedTables d;
  d.q_ptr = upload(h.q.ptr, device);
  d.q_chunk = upload(h.q.chunk, device);
  d.q_mask = upload(h.q.mask, device);
  d.k_ptr = upload(h.k.ptr, device);
  d.k_chunk = upload(h.k.chunk, device);
  d.k_mask = upload(h.k.mask, device);
  d.layout_heads = h.layout_heads;
  d.num_tiles = h.num_tiles;
  d.chunk = h.chunk;
  ++uploads_;
  return fused_.emplace(key_of(device), std::move(d)).first->second;
}

std::pair<at::Tensor, at::Tensor> DeviceTableCache::fused_order(const LayoutTables& t, const at::Device& device,
                                                                int64_t B) {
  fused(t, device);  // host tables exist from here on
  std::lock_guard<std::mutex> lock(mu_);
  const auto key = std::make_tuple(static_cast<int>(device.type()), static_cast<int>(device.index()), B);
  auto it = orders_.find(key);
  if (it != orders_.end()) return it->second;
  const bsa::HostTables& h = *host_->fused;
  TORCH_CHECK(B > 0 && B <= INT32_MAX, "fused block-sparse attention: batch ", B, " out of range");
  const auto q = bsa::build_order(h.q, h.layout_heads, h.num_tiles, static_cast<int>(B), static_cast<int>(t.heads));
  const auto k = bsa::build_order(h.k, h.layout_heads, h.num_tiles, static_cast<int>(B), static_cast<int>(t.heads));
  ++uploads_;
  return orders_.emplace(key, std::make_pair(upload(q, device), upload(k, device))).first->second;
}

const at::Tensor& DeviceTableCache::tile(const LayoutTables& t, const at::Device& device) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tile_.find(key_of(device));
  if (it != tile_.end()) return it->second;
  ++uploads_;
  return tile_.emplace(key_of(device), t.tile.to(device)).first->second;
}

int64_t DeviceTableCache::uploads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return uploads_;
}

}  // namespace ds
