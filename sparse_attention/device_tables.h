// Device copies of a layout's kernel tables, built once per layout and device and shared by every copy
// of its LayoutTables (LayoutTables::build creates one DeviceTableCache; copies share the pointer), so
// the CUDA ops never rebuild or re-upload tables per call.
//
//   matmul(t, device): the block-sparse MatMul/Softmax tables (blocksparse_tables.h) as int32 tensors
//   fused(t, device):  the fused attention's tile tables (fused/bsa_tables.h); its work order depends
//                      on the batch size and is cached per (device, batch)
//   tile(t, device):   LayoutTables::tile on the device (dense_to_sparse / sparse_to_dense)
// Host tables are derived once (first use on any device). Thread-safe: one mutex per cache; returned
// references stay valid for the cache's lifetime (entries are never erased).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>

namespace ds {

struct LayoutTables;

struct DeviceTileTable {
  at::Tensor ptr, chunk, mask, nnz, order;  // int32 (mask: uint32 bits in int32)
  int num_tiles = 0;
};

struct DeviceMatmulTables {
  at::Tensor row_ptr, col;  // int32 CSR over all heads
  DeviceTileTable by_row, by_col;
  int layout_heads = 1, chunk = 16;
  int64_t nnz_head_stride = 0;
};

struct DeviceFusedTables {
  at::Tensor q_ptr, q_chunk, q_mask;  // query tiles -> key chunks
  at::Tensor k_ptr, k_chunk, k_mask;  // key tiles -> query chunks
  int layout_heads = 1, num_tiles = 0, chunk = 16;
};

class DeviceTableCache {
 public:
  DeviceTableCache();
  ~DeviceTableCache();
  DeviceTableCache(const DeviceTableCache&) = delete;
  DeviceTableCache& operator=(const DeviceTableCache&) = delete;

  const DeviceMatmulTables& matmul(const LayoutTables& t, const at::Device& device);
  const DeviceFusedTables& fused(const LayoutTables& t, const at::Device& device);
  // Work order of the fused kernels for batch size B: (query side, key side), int32 [B * heads * tiles].
  std::pair<at::Tensor, at::Tensor> fused_order(const LayoutTables& t, const at::Device& device, int64_t B);
  const at::Tensor& tile(const LayoutTables& t, const at::Device& device);

  // How many (device, kind) uploads happened: tests check that repeated calls do not rebuild.
  int64_t uploads() const;

 private:
  struct Host;  // host-side tables (blocksparse_tables.h, fused/bsa_tables.h)
  using Key = std::pair<int, int>;  // (device type, index)
  static Key key_of(const at::Device& d) { return {static_cast<int>(d.type()), d.index()}; }

  mutable std::mutex mu_;
  std::unique_ptr<Host> host_;
  std::map<Key, DeviceMatmulTables> matmul_;
  std::map<Key, DeviceFusedTables> fused_;
  std::map<std::tuple<int, int, int64_t>, std::pair<at::Tensor, at::Tensor>> orders_;
  std::map<Key, at::Tensor> tile_;
  int64_t uploads_ = 0;
};

}  // namespace ds
