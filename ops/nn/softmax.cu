// Attention softmax with the additive mask and the attention-probability dropout in one pass, and
// its backward fused with the dropout backward. One warp per row, the row in registers (rows of up
// to kAttnSoftmaxMaxCols). Contracts in nn_kernels.h.
#include <cmath>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "ops/nn/row_kernels.cuh"

namespace ds::nn::kern {
namespace {

constexpr int kWarpsPerBlock = 4;

// Lane l holds chunks l, l + 32, ... (kPer / kVec of them) of kVec elements.
template <typename T, int kVec, int kPer>
__global__ void attn_softmax_forward_kernel(const AttnSoftmaxParams p) {
  constexpr int kChunks = kPer / kVec;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= p.rows) return;  // whole warps only; no block barriers below
  const int cols = p.cols;
  const int64_t base = row * cols;
  const T* in = static_cast<const T*>(p.scores) + base;
  const float* mrow = p.mask ? p.mask + (row / p.rows_per_batch) * cols : nullptr;
  float v[kChunks][kVec];
  float mx = -INFINITY;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int c = (lane + 32 * k) * kVec;
    if (c < cols) {
      load_f<T, kVec>(in + c, v[k]);
      if (mrow) {
        float m[kVec];
        load_f<float, kVec>(mrow + c, m);
#pragma unroll
        for (int i = 0; i < kVec; ++i) v[k][i] += m[i];
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) mx = fmaxf(mx, v[k][i]);
    }
  }
  mx = warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    if ((lane + 32 * k) * kVec >= cols) continue;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      v[k][i] = exp_acc<T>(v[k][i] - mx);
      sum += v[k][i];
    }
  }
  const float inv = 1.f / warp_sum(sum);
  const bool drop = p.dropped != nullptr;
  const uint64_t numel = static_cast<uint64_t>(p.rows) * static_cast<uint64_t>(cols);
  T* probs = static_cast<T*>(p.probs) + base;
  T* dropped = drop ? static_cast<T*>(p.dropped) + base : nullptr;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int c = (lane + 32 * k) * kVec;
    if (c >= cols) continue;
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[k][i] = round_to<T>(v[k][i] * inv);
    store_f<T, kVec>(probs + c, v[k]);
    if (!drop) continue;
    // Dropout of the stored probabilities, as the CPU path drops the rounded soft_out.
    const uint64_t e = static_cast<uint64_t>(base + c);
    const uint32_t bits = keep_bits<kVec>(p.drop, e);
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[k][i] *= ((bits >> i) & 1u) ? p.drop.scale : 0.f;
    store_f<T, kVec>(dropped + c, v[k]);
    if constexpr (kVec == kVecElems) {
      p.mask_bits[e >> 3] = static_cast<uint8_t>(bits);
    } else if ((e & 7) == 0) {
      // The byte's first element is ours; it may reach into the next row, whose bits any thread can
      // draw from (seed, offset, index).
      p.mask_bits[e >> 3] = mask_byte_clipped(p.drop, e >> 3, numel);
    }
  }
}

template <typename T, int kVec, int kPer>
__global__ void attn_softmax_backward_kernel(const AttnSoftmaxBackwardParams p) {
  constexpr int kChunks = kPer / kVec;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= p.rows) return;
  const int cols = p.cols;
  const int64_t base = row * cols;
  float gd[kChunks][kVec], pr[kChunks][kVec];
  float dot = 0.f;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int c = (lane + 32 * k) * kVec;
    if (c >= cols) continue;
    load_f<T, kVec>(static_cast<const T*>(p.grad) + base + c, gd[k]);
    load_f<T, kVec>(static_cast<const T*>(p.probs) + base + c, pr[k]);
    if (p.mask_bits) {
      const uint32_t bits = stored_bits<kVec>(p.mask_bits, static_cast<uint64_t>(base + c));
#pragma unroll
      for (int i = 0; i < kVec; ++i) gd[k][i] *= ((bits >> i) & 1u) ? p.scale : 0.f;
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) dot += gd[k][i] * pr[k][i];
  }
  dot = warp_sum(dot);
  T* out = static_cast<T*>(p.grad_scores) + base;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int c = (lane + 32 * k) * kVec;
    if (c >= cols) continue;
#pragma unroll
    for (int i = 0; i < kVec; ++i) gd[k][i] = pr[k][i] * (gd[k][i] - dot);
    store_f<T, kVec>(out + c, gd[k]);
  }
}

// Calls f(integral_constant kVec, integral_constant kPer) with kPer the smallest power of two
// >= cols / 32 (at least kVec).
template <typename F>
void dispatch_cols(int cols, bool vec, F&& f) {
  using std::integral_constant;
  const int per = (cols + 31) / 32;
  if (vec) {
    if (per <= 8) return f(integral_constant<int, 8>{}, integral_constant<int, 8>{});
    if (per <= 16) return f(integral_constant<int, 8>{}, integral_constant<int, 16>{});
    if (per <= 32) return f(integral_constant<int, 8>{}, integral_constant<int, 32>{});
    if (per <= 64) return f(integral_constant<int, 8>{}, integral_constant<int, 64>{});
  } else {
    if (per <= 1) return f(integral_constant<int, 1>{}, integral_constant<int, 1>{});
    if (per <= 2) return f(integral_constant<int, 1>{}, integral_constant<int, 2>{});
    if (per <= 4) return f(integral_constant<int, 1>{}, integral_constant<int, 4>{});
    if (per <= 8) return f(integral_constant<int, 1>{}, integral_constant<int, 8>{});
    if (per <= 16) return f(integral_constant<int, 1>{}, integral_constant<int, 16>{});
    if (per <= 32) return f(integral_constant<int, 1>{}, integral_constant<int, 32>{});
    if (per <= 64) return f(integral_constant<int, 1>{}, integral_constant<int, 64>{});
  }
  throw std::invalid_argument("attn_softmax: rows of " + std::to_string(cols) + " scores are longer than " +
                              std::to_string(kAttnSoftmaxMaxCols));
}

unsigned softmax_grid(int64_t rows) { return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

void launch_attn_softmax_forward(const AttnSoftmaxParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.cols <= 0) return;
  const bool vec = p.cols % kVecElems == 0 && aligned16(p.scores) && aligned16(p.probs) && aligned16(p.dropped) &&
                   aligned16(p.mask);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    dispatch_cols(p.cols, vec, [&](auto v, auto per) {
      attn_softmax_forward_kernel<T, decltype(v)::value, decltype(per)::value>
          <<<softmax_grid(p.rows), 32 * kWarpsPerBlock, 0, stream>>>(p);
    });
  });
  DS_CUDA_CHECK_LAUNCH();
}

void launch_attn_softmax_backward(const AttnSoftmaxBackwardParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.cols <= 0) return;
  const bool vec = p.cols % kVecElems == 0 && aligned16(p.grad) && aligned16(p.probs) && aligned16(p.grad_scores);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    dispatch_cols(p.cols, vec, [&](auto v, auto per) {
      attn_softmax_backward_kernel<T, decltype(v)::value, decltype(per)::value>
          <<<softmax_grid(p.rows), 32 * kWarpsPerBlock, 0, stream>>>(p);
    });
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::nn::kern
