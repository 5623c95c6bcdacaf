// LayerNorm forward (alone, or after bias + dropout + residual in one pass) and backward (both
// forms), and the fixed-order column reduction behind every bias/gamma/beta gradient of ops/nn.
// Contracts in nn_kernels.h; the math is ops/nn/layer_norm.h's and dropout.h's.
#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "ops/nn/row_kernels.cuh"

namespace ds::nn::kern {
namespace {

// Row groups of the column partials: enough blocks to fill an H100 (132 SMs x 4 blocks of <= 256
// threads) while the partials stay small next to the rows they sum; a constant, so the summation
// order, and with it every bit of the result, depends on the shape only, not on the device.
constexpr int64_t kMaxRowGroups = 512;

template <typename T, int kVec, int kIters>
__global__ void __launch_bounds__(kRowMaxThreads) residual_ln_forward_kernel(const ResidualLnParams p) {
  __shared__ float red[32];
  const int n = p.n;
  const int64_t row = blockIdx.x;
  const int64_t base = row * n;
  const uint64_t numel = static_cast<uint64_t>(p.rows) * static_cast<uint64_t>(n);
  const bool drop = p.drop.ratio > 0.f;
  const T* x = static_cast<const T*>(p.x) + base;
  const T* res = p.residual ? static_cast<const T*>(p.residual) + base : nullptr;
  const T* bias = static_cast<const T*>(p.bias);
  float v[kIters][kVec];
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    const int c = (threadIdx.x + k * blockDim.x) * kVec;
    if (c >= n) continue;
    load_f<T, kVec>(x + c, v[k]);
    if (bias) {
      float b[kVec];
      load_f<T, kVec>(bias + c, b);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[k][i] += b[i];
    }
    if (drop) {
      const uint64_t e = static_cast<uint64_t>(base + c);
      const uint32_t bits = keep_bits<kVec>(p.drop, e);
      // x * 0 rather than 0, as the CPU path multiplies by the unpacked mask.
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[k][i] *= ((bits >> i) & 1u) ? p.drop.scale : 0.f;
      if constexpr (kVec == kVecElems) {
        p.mask[e >> 3] = static_cast<uint8_t>(bits);
      } else if ((e & 7) == 0) {
        p.mask[e >> 3] = mask_byte_clipped(p.drop, e >> 3, numel);
      }
    }
    if (res) {
      float r[kVec];
      load_f<T, kVec>(res + c, r);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[k][i] += r[i];
    }
    // The LayerNorm below reads the sum as stored (the CPU path normalises the rounded tensor).
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[k][i] = round_to<T>(v[k][i]);
    if (p.sum) store_f<T, kVec>(static_cast<T*>(p.sum) + base + c, v[k]);
  }
  if (p.gamma == nullptr) return;  // uniform over the block

  float s = 0.f;
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    if ((threadIdx.x + k * blockDim.x) * kVec >= n) continue;
#pragma unroll
    for (int i = 0; i < kVec; ++i) s += v[k][i];
  }
  const float mean = block_sum1(s, red) / n;
  float q = 0.f;
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    if ((threadIdx.x + k * blockDim.x) * kVec >= n) continue;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float d = v[k][i] - mean;
      q += d * d;
    }
  }
  const float var = block_sum1(q, red) / n + p.eps;
  const float rstd = rsqrt_acc<T>(var);
  const T* gamma = static_cast<const T*>(p.gamma);
  const T* beta = static_cast<const T*>(p.beta);
  T* y = static_cast<T*>(p.y) + base;
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    const int c = (threadIdx.x + k * blockDim.x) * kVec;
    if (c >= n) continue;
    float g[kVec], b[kVec], o[kVec];
    load_f<T, kVec>(gamma + c, g);
    load_f<T, kVec>(beta + c, b);
#pragma unroll
    for (int i = 0; i < kVec; ++i) o[i] = (v[k][i] - mean) * rstd * g[i] + b[i];
    store_f<T, kVec>(y + c, o);
  }
  if (threadIdx.x == 0) {
    if (p.mean) p.mean[row] = mean;
    p.var[row] = var;
  }
}

template <typename T, int kVec, int kIters>
__global__ void __launch_bounds__(kRowMaxThreads) ln_backward_kernel(const LnBackwardParams p, float* part_gamma, float* part_beta) {
  constexpr int kRows = rows_in_flight<kVec, kIters>();
  __shared__ float red[2 * kRows * 32];
  const int n = p.n;
  const bool inv = p.x == nullptr;
  const T* gamma = static_cast<const T*>(p.gamma);
  const T* beta = static_cast<const T*>(p.beta);
  float acc_g[kIters][kVec], acc_b[kIters][kVec];
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc_g[k][i] = acc_b[k][i] = 0.f;
  }
  for (int64_t row0 = blockIdx.x; row0 < p.rows; row0 += int64_t(kRows) * gridDim.x) {
    float gg[kRows][kIters][kVec], xh[kRows][kIters][kVec], rstd[kRows];
    float sums[2 * kRows];  // per row: sum(gg), sum(gg * x_hat)
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + int64_t(r) * gridDim.x;
      sums[2 * r] = sums[2 * r + 1] = 0.f;
      if (row >= p.rows) continue;  // uniform over the block
      const int64_t base = row * n;
      rstd[r] = rsqrt_acc<T>(p.var[row]);
      const float mean = inv ? 0.f : p.mean[row];
#pragma unroll
      for (int k = 0; k < kIters; ++k) {
        const int c = (threadIdx.x + k * blockDim.x) * kVec;
        if (c >= n) continue;
        float g[kVec], gm[kVec];
        load_f<T, kVec>(static_cast<const T*>(p.grad_y) + base + c, g);
        if (p.grad_y2) {
          float g2[kVec];
          load_f<T, kVec>(static_cast<const T*>(p.grad_y2) + base + c, g2);
#pragma unroll
          for (int i = 0; i < kVec; ++i) g[i] += g2[i];
        }
        load_f<T, kVec>(gamma + c, gm);
        if (!inv) {
          load_f<T, kVec>(static_cast<const T*>(p.x) + base + c, xh[r][k]);
#pragma unroll
          for (int i = 0; i < kVec; ++i) xh[r][k][i] = (xh[r][k][i] - mean) * rstd[r];
        } else {
          float b[kVec];
          load_f<T, kVec>(static_cast<const T*>(p.y) + base + c, xh[r][k]);
          load_f<T, kVec>(beta + c, b);
#pragma unroll
          for (int i = 0; i < kVec; ++i) xh[r][k][i] = (xh[r][k][i] - b[i]) / gm[i];
        }
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          acc_g[k][i] += g[i] * xh[r][k][i];
          acc_b[k][i] += g[i];
          gg[r][k][i] = g[i] * gm[i];
          sums[2 * r] += gg[r][k][i];
          sums[2 * r + 1] += gg[r][k][i] * xh[r][k][i];
        }
      }
    }
    block_sum<2 * kRows>(sums, red);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + int64_t(r) * gridDim.x;
      if (row >= p.rows) continue;
      const int64_t base = row * n;
      const float a = sums[2 * r] / n, b = sums[2 * r + 1] / n;
#pragma unroll
      for (int k = 0; k < kIters; ++k) {
        const int c = (threadIdx.x + k * blockDim.x) * kVec;
        if (c >= n) continue;
        float dx[kVec];
#pragma unroll
        for (int i = 0; i < kVec; ++i) dx[i] = rstd[r] * (gg[r][k][i] - a - xh[r][k][i] * b);
        if (p.grad_residual) {
          float res[kVec];
          load_f<T, kVec>(static_cast<const T*>(p.grad_residual) + base + c, res);
#pragma unroll
          for (int i = 0; i < kVec; ++i) dx[i] += res[i];
        }
        store_f<T, kVec>(static_cast<T*>(p.grad_x) + base + c, dx);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    const int c = (threadIdx.x + k * blockDim.x) * kVec;
    if (c >= n) continue;
    store_f<float, kVec>(part_gamma + blockIdx.x * int64_t(n) + c, acc_g[k]);
    store_f<float, kVec>(part_beta + blockIdx.x * int64_t(n) + c, acc_b[k]);
  }
}

constexpr int kReduceRows = 16;  // threads per column in the column reduction

template <typename T>
__global__ void column_reduce_kernel(const float* partial, int64_t groups, int n, T* out) {
  __shared__ float s[kReduceRows][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (col < n) {
    for (int64_t g = threadIdx.y; g < groups; g += kReduceRows) acc += partial[g * n + col];
  }
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    float t = 0.f;
#pragma unroll
    for (int j = 0; j < kReduceRows; ++j) t += s[j][threadIdx.x];
    out[col] = from_float<T>(t);
  }
}

}  // namespace

int64_t row_groups(int64_t rows) { return rows < kMaxRowGroups ? rows : kMaxRowGroups; }

int64_t column_partials_floats(int64_t rows, int n, int arrays) { return row_groups(rows) * n * arrays; }

bool row_length_supported(int n) { return n > 0 && row_shape(n, true).iters != 0 && row_shape(n, false).iters != 0; }

void launch_column_reduce(ScalarKind kind, const float* partial, int64_t groups, int n, void* out,
                          cudaStream_t stream) {
  if (n <= 0) return;
  const dim3 block(32, kReduceRows);
  const dim3 grid(static_cast<unsigned>((n + 31) / 32));
  DS_DISPATCH_SCALAR(kind, T, [&] {
    column_reduce_kernel<T><<<grid, block, 0, stream>>>(partial, groups, n, static_cast<T*>(out));
  });
  DS_CUDA_CHECK_LAUNCH();
}

void launch_residual_ln_forward(const ResidualLnParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.n <= 0) return;
  const bool aligned = aligned16(p.x) && aligned16(p.bias) && aligned16(p.residual) && aligned16(p.sum) &&
                       aligned16(p.gamma) && aligned16(p.beta) && aligned16(p.y);
  const RowShape s = row_shape(p.n, aligned);
  require_row_shape(s, p.n, "residual_ln_forward");
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    dispatch_row_shape(s, [&](auto vec, auto iters) {
      residual_ln_forward_kernel<T, decltype(vec)::value, decltype(iters)::value>
          <<<static_cast<unsigned>(p.rows), s.threads, 0, stream>>>(p);
    });
  });
  DS_CUDA_CHECK_LAUNCH();
}

void launch_ln_backward(const LnBackwardParams& p, cudaStream_t stream) {
  if (p.n <= 0) return;
  const int64_t groups = row_groups(p.rows);
  float* part_gamma = p.workspace;
  float* part_beta = p.workspace + groups * p.n;
  if (p.rows > 0) {
    const bool aligned = aligned16(p.grad_y) && aligned16(p.grad_y2) && aligned16(p.x) && aligned16(p.y) &&
                         aligned16(p.beta) && aligned16(p.gamma) && aligned16(p.grad_residual) &&
                         aligned16(p.grad_x) && aligned16(p.workspace);
    const RowShape s = row_shape(p.n, aligned);
    require_row_shape(s, p.n, "ln_backward");
    DS_DISPATCH_SCALAR(p.kind, T, [&] {
      dispatch_row_shape(s, [&](auto vec, auto iters) {
        ln_backward_kernel<T, decltype(vec)::value, decltype(iters)::value>
            <<<static_cast<unsigned>(groups), s.threads, 0, stream>>>(p, part_gamma, part_beta);
      });
    });
    DS_CUDA_CHECK_LAUNCH();
  }
  launch_column_reduce(p.kind, part_gamma, groups, p.n, p.grad_gamma, stream);
  launch_column_reduce(p.kind, part_beta, groups, p.n, p.grad_beta, stream);
}

}  // namespace ds::nn::kern
