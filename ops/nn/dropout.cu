// Dropout kernels: the flat form (draw or apply a packed mask over any tensor) and the row form with
// column sums (the dropout backward fused with the bias gradient). Contracts in nn_kernels.h.
#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "ops/nn/row_kernels.cuh"

namespace ds::nn::kern {
namespace {

// One thread per mask byte (8 elements): the byte is drawn or read once, and with aligned pointers
// the 8 elements move as 16-byte vectors.
template <typename T, bool kAligned>
__global__ void dropout_flat_kernel(const DropoutFlatParams p) {
  const uint64_t numel = static_cast<uint64_t>(p.numel);
  const uint64_t nbytes = (numel + 7) / 8;
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < nbytes; i += stride) {
    const uint32_t bits = p.mask_in ? p.mask_in[i] : mask_byte_clipped(p.drop, i, numel);
    if (p.mask_out) p.mask_out[i] = static_cast<uint8_t>(bits);
    if (x == nullptr) continue;
    const uint64_t e = i * 8;
    if (kAligned && e + 8 <= numel) {
      float v[kVecElems];
      load_f<T, kVecElems>(x + e, v);
#pragma unroll
      for (int j = 0; j < kVecElems; ++j) v[j] *= ((bits >> j) & 1u) ? p.drop.scale : 0.f;
      store_f<T, kVecElems>(y + e, v);
    } else {
      for (uint64_t j = 0; j < 8 && e + j < numel; ++j)
        y[e + j] = from_float<T>(to_float(x[e + j]) * (((bits >> j) & 1u) ? p.drop.scale : 0.f));
    }
  }
}

template <typename T, int kVec, int kIters>
__global__ void __launch_bounds__(kRowMaxThreads) dropout_colsum_kernel(const DropoutColsumParams p, float* part) {
  constexpr int kRows = rows_in_flight<kVec, kIters>();
  const int n = p.n;
  float acc[kIters][kVec];
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[k][i] = 0.f;
  }
  for (int64_t row0 = blockIdx.x; row0 < p.rows; row0 += int64_t(kRows) * gridDim.x) {
    float v[kRows][kIters][kVec];
    uint32_t bits[kRows][kIters];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {  // all loads first
      const int64_t row = row0 + int64_t(r) * gridDim.x;
      if (row >= p.rows) continue;
#pragma unroll
      for (int k = 0; k < kIters; ++k) {
        const int c = (threadIdx.x + k * blockDim.x) * kVec;
        if (c >= n) continue;
        load_f<T, kVec>(static_cast<const T*>(p.x) + row * n + c, v[r][k]);
        bits[r][k] = p.mask ? stored_bits<kVec>(p.mask, static_cast<uint64_t>(row * n + c)) : 0u;
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + int64_t(r) * gridDim.x;
      if (row >= p.rows) continue;
#pragma unroll
      for (int k = 0; k < kIters; ++k) {
        const int c = (threadIdx.x + k * blockDim.x) * kVec;
        if (c >= n) continue;
        if (p.mask) {
#pragma unroll
          for (int i = 0; i < kVec; ++i)
            v[r][k][i] = round_to<T>(v[r][k][i] * (((bits[r][k] >> i) & 1u) ? p.scale : 0.f));
          if (p.y) store_f<T, kVec>(static_cast<T*>(p.y) + row * n + c, v[r][k]);
        }
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[k][i] += v[r][k][i];
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    const int c = (threadIdx.x + k * blockDim.x) * kVec;
    if (c < n) store_f<float, kVec>(part + blockIdx.x * int64_t(n) + c, acc[k]);
  }
}

}  // namespace

void launch_dropout_flat(const DropoutFlatParams& p, cudaStream_t stream) {
  if (p.numel <= 0) return;
  const bool aligned = aligned16(p.x) && aligned16(p.y);
  constexpr int kThreads = 256;
  const unsigned grid = grid_1d((p.numel + 7) / 8, kThreads);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    DS_BOOL_SWITCH(aligned, kAligned, [&] { dropout_flat_kernel<T, kAligned><<<grid, kThreads, 0, stream>>>(p); });
  });
  DS_CUDA_CHECK_LAUNCH();
}

void launch_dropout_colsum(const DropoutColsumParams& p, cudaStream_t stream) {
  if (p.n <= 0) return;
  const int64_t groups = row_groups(p.rows);
  if (p.rows > 0) {
    const bool aligned = aligned16(p.x) && aligned16(p.y) && aligned16(p.workspace);
    const RowShape s = row_shape(p.n, aligned);
    require_row_shape(s, p.n, "dropout_colsum");
    DS_DISPATCH_SCALAR(p.kind, T, [&] {
      dispatch_row_shape(s, [&](auto vec, auto iters) {
        dropout_colsum_kernel<T, decltype(vec)::value, decltype(iters)::value>
            <<<static_cast<unsigned>(groups), s.threads, 0, stream>>>(p, p.workspace);
      });
    });
    DS_CUDA_CHECK_LAUNCH();
  }
  launch_column_reduce(p.kind, p.workspace, groups, p.n, p.colsum, stream);
}

}  // namespace ds::nn::kern
