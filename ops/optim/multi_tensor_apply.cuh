// Chunked tensor-list launches (the idea of apex's multi_tensor_apply, written for this project):
// each thread block processes one chunk of kChunkSize elements of one tensor; the (tensor, chunk)
// table of a launch travels in the kernel's by-value argument, so one launch covers many tensors
// without a device-side table or a host-to-device copy.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "ops/common/cuda_check.h"
#include "ops/optim/optim_kernels.h"

namespace ds::optim_kernels {

constexpr int kBlockThreads = 512;  // 16 warps: enough loads in flight per SM at 64 Ki elements per block
// Elements per thread per iteration on the vector path: 16-byte fp32 loads (8-byte for half types).
constexpr int kILP = 4;

// Tensors per launch by list depth: the largest counts whose table stays under the classic 4 KiB
// kernel-argument limit together with a functor of up to 256 bytes (checked by static_assert).
template <int D> struct ListCapacity;
template <> struct ListCapacity<1> { static constexpr int kTensors = 96; };
template <> struct ListCapacity<2> { static constexpr int kTensors = 64; };
template <> struct ListCapacity<3> { static constexpr int kTensors = 48; };
template <> struct ListCapacity<4> { static constexpr int kTensors = 36; };
template <> struct ListCapacity<5> { static constexpr int kTensors = 28; };
constexpr int kBlocksPerLaunch = 320;

template <int D>
struct ListMeta {
  static constexpr int kTensors = ListCapacity<D>::kTensors;
  void* addr[D][kTensors];
  int64_t sizes[kTensors];
  unsigned char block_tensor[kBlocksPerLaunch];  // local tensor slot of each block
  int block_chunk[kBlocksPerLaunch];              // chunk index within that tensor
  int tensor_base;                                // global index of slot 0
};
static_assert(ListCapacity<5>::kTensors < 256 && ListCapacity<1>::kTensors < 256, "block_tensor is a byte");

template <int D, class F>
__global__ void __launch_bounds__(kBlockThreads) multi_tensor_kernel(ListMeta<D> meta, F f) {
  const int slot = meta.block_tensor[blockIdx.x];
  const int chunk = meta.block_chunk[blockIdx.x];
  const int64_t start = static_cast<int64_t>(chunk) * kChunkSize;
  const int64_t left = meta.sizes[slot] - start;
  const int64_t len = left < kChunkSize ? left : kChunkSize;
  void* ptrs[D];
#pragma unroll
  for (int d = 0; d < D; ++d) ptrs[d] = meta.addr[d][slot];
  f(ptrs, start, len, meta.tensor_base + slot, chunk);
}

// Runs f over every chunk of every tensor of `lists` (depth D), packing launches.
// F: __device__ void operator()(void* const* ptrs, int64_t start, int64_t len, int tensor, int chunk),
// called by all threads of the block (so it may use __syncthreads and shared memory).
template <int D, class F>
void multi_tensor_apply(const TensorLists& lists, const F& f, cudaStream_t stream) {
  static_assert(sizeof(ListMeta<D>) + sizeof(F) <= 4096, "kernel arguments over 4 KiB: lower ListCapacity");
  if (lists.depth != D) {
    throw std::invalid_argument("multi_tensor_apply: lists have depth " + std::to_string(lists.depth) +
                                ", the kernel expects " + std::to_string(D));
  }
  const int64_t n = lists.num_tensors();
  ListMeta<D> meta;
  int slots = 0, blocks = 0;
  meta.tensor_base = 0;
  auto launch = [&] {
    multi_tensor_kernel<D, F><<<blocks, kBlockThreads, 0, stream>>>(meta, f);
    DS_CUDA_CHECK_LAUNCH();
  };
  for (int64_t t = 0; t < n; ++t) {
    // An empty tensor still takes a slot (global indices stay contiguous) but no block.
    for (int d = 0; d < D; ++d) meta.addr[d][slots] = lists.ptrs[d][t];
    meta.sizes[slots] = lists.sizes[t];
    ++slots;
    const int64_t chunks = (lists.sizes[t] + kChunkSize - 1) / kChunkSize;
    for (int64_t c = 0; c < chunks; ++c) {
      meta.block_tensor[blocks] = static_cast<unsigned char>(slots - 1);
      meta.block_chunk[blocks] = static_cast<int>(c);
      ++blocks;
      const bool blocks_full = blocks == kBlocksPerLaunch;
      const bool slots_full = slots == ListMeta<D>::kTensors && c == chunks - 1;
      if (blocks_full || slots_full) {
        launch();
        blocks = 0;
        if (c == chunks - 1) {  // tensor finished: start the next launch empty
          meta.tensor_base = static_cast<int>(t + 1);
          slots = 0;
        } else {                // tensor continues: it becomes slot 0 of the next launch
          for (int d = 0; d < D; ++d) meta.addr[d][0] = meta.addr[d][slots - 1];
          meta.sizes[0] = meta.sizes[slots - 1];
          meta.tensor_base = static_cast<int>(t);
          slots = 1;
        }
      }
    }
    if (slots == ListMeta<D>::kTensors) {  // only reachable through empty tensors (no chunk launched them)
      if (blocks > 0) launch();
      blocks = 0;
      meta.tensor_base = static_cast<int>(t + 1);
      slots = 0;
    }
  }
  if (blocks > 0) launch();
}

// kILP consecutive elements, loaded and stored as one aligned vector.
template <typename T>
struct alignas(sizeof(T) * kILP) Pack {
  T v[kILP];
};

template <typename T>
__device__ __forceinline__ bool pack_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kILP) == 0;
}
template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& v) {
  *reinterpret_cast<Pack<T>*>(p) = v;
}

// Sum of one value per thread over the block (blockDim.x == kBlockThreads); every thread gets it.
// Fixed order (warp shuffles, then warp 0 over the per-warp sums), so results are deterministic.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared /* [kBlockThreads / 32] */) {
  static_assert(kBlockThreads / 32 <= 32, "one warp reduces the per-warp sums");
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < kBlockThreads / 32 ? shared[lane] : T(0);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace ds::optim_kernels
