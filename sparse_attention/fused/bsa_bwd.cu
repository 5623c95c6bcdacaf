// Fused block-sparse attention, backward. Scores are recomputed from the saved log-sum-exp; no
// probabilities are stored. Three kernels:
//   delta[i] = rowsum(dO[i] * O[i])
//   dQ  per query tile (the forward's tables): S = Q K^T, dP = dO V^T, dS = P (dP - delta), dQ += dS K
//   dK,dV per key tile (the transposed tables): with keys as rows, S^T = K Q^T, P^T, dV += P^T dO,
//          dP^T = V dO^T, dS^T = P^T (dP^T - delta), dK += dS^T Q
// Each is the forward's pair of tensor-core primitives; no atomics, so the backward is deterministic.
#include <cuda_runtime.h>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "ops/common/numeric.cuh"
#include "sparse_attention/fused/bsa_common.cuh"
#include "sparse_attention/fused/nm_select.cuh"

namespace ds::bsa {
namespace {

// One warp per row: delta = sum_d dO * O in fp32. Rows past s_valid get 0.
template <typename T, int D>
__global__ void delta_kernel(const Params p) {
  const int64_t row = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= int64_t(p.B) * p.H * p.S) return;
  const int s = row % p.S;
  const int64_t bh = row / p.S;
  const int h = bh % p.H, b = bh / p.H;
  const T* o = static_cast<const T*>(p.o) + b * p.o_bs + h * p.o_hs + s * p.o_rs;
  const T* d = static_cast<const T*>(p.dout) + b * p.o_bs + h * p.o_hs + s * p.o_rs;
  float acc = 0.f;
  for (int i = lane; i < D; i += 32) acc += to_float(o[i]) * to_float(d[i]);
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, off);
  if (lane == 0) p.delta[row] = s < p.s_valid ? acc : 0.f;
}

template <typename T, int D, int kChunk, int kNM>
__global__ void __launch_bounds__(kThreads) dq_kernel(const Params p) {
  using G = Geometry<T, D, kChunk>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sDO = sQ + G::kTileElems;
  T* sK = sDO + G::kTileElems;     // [2][64][D]
  T* sV = sK + 2 * G::kTileElems;  // [2][64][D]

  const int item = p.q_tiles.order[blockIdx.x];
  const int tile = item % p.num_tiles;
  const int bh = item / p.num_tiles;
  const int h = bh % p.H, b = bh / p.H;
  const int lh = h % p.layout_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int q0 = tile * kTileRows;
  const int my_group = G::group_of_warp(warp);

  const int64_t qoff = b * p.q_bs + h * p.q_hs;
  const T* q = static_cast<const T*>(p.q) + qoff;
  const T* dout = static_cast<const T*>(p.dout) + b * p.o_bs + h * p.o_hs;
  const T* k = static_cast<const T*>(p.k) + b * p.k_bs + h * p.k_hs;
  const T* v = static_cast<const T*>(p.v) + b * p.k_bs + h * p.k_hs;
  const int32_t e_begin = p.q_tiles.ptr[lh * p.num_tiles + tile];
  const int32_t e_end = p.q_tiles.ptr[lh * p.num_tiles + tile + 1];
  const int num_steps = (e_end - e_begin + G::kSlots - 1) / G::kSlots;

  ScoreBias bias{p.key_padding ? p.key_padding + static_cast<int64_t>(b) * p.S : nullptr, p.attn_bias,
                 p.rpe ? p.rpe + (static_cast<int64_t>(b) * p.H + h) * p.S * p.S : nullptr,
                 p.S, p.s_valid, p.block, p.causal_diagonal};
  const bool plain = bias.trivial();

  auto own_row = [&](int r) { return q0 + r < p.S ? int64_t(q0 + r) : int64_t(-1); };
  load_rows_async<D>(sQ, q, p.q_rs, own_row);
  load_rows_async<D>(sDO, dout, p.o_rs, own_row);
  auto load_step = [&](int step, int buf) {
    const int e0 = e_begin + step * G::kSlots;
    auto row_of = [&](int r) -> int64_t {
      const int e = e0 + r / kChunk;
      return e < e_end ? int64_t(p.q_tiles.chunk[e]) * kChunk + nm_column_key<kNM>(r % kChunk) : int64_t(-1);
    };
    load_rows_async<D>(sK + buf * G::kTileElems, k, p.k_rs, row_of);
    load_rows_async<D>(sV + buf * G::kTileElems, v, p.k_rs, row_of);
  };
  if (num_steps > 0) load_step(0, 0);
  mma::cp_async_commit();

  const int my_row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float lse2[2], delta[2];
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    const int64_t idx = (static_cast<int64_t>(b) * p.H + h) * p.S + my_row[ri];
    lse2[ri] = my_row[ri] < p.S ? p.lse[idx] * kLog2e : INFINITY;
    delta[ri] = my_row[ri] < p.S ? p.delta[idx] : 0.f;
  }
  float acc_dq[G::kD8][4];
#pragma unroll
  for (int i = 0; i < G::kD8; ++i) acc_dq[i][0] = acc_dq[i][1] = acc_dq[i][2] = acc_dq[i][3] = 0.f;
  uint32_t qf[G::kK16][4], df[G::kK16][4];
  const float scale_log2 = p.scale * kLog2e;

  for (int step = 0; step < num_steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < num_steps) load_step(step + 1, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    __syncthreads();
    if (step == 0) {
      load_a_frags<D>(qf, sQ, warp * 16);
      load_a_frags<D>(df, sDO, warp * 16);
    }
    const int e0 = e_begin + step * G::kSlots;
    bool present[G::kSlots];
    int key0[G::kSlots];
#pragma unroll
    for (int s = 0; s < G::kSlots; ++s) {
      const int e = e0 + s;
      present[s] = e < e_end && ((p.q_tiles.mask[e] >> my_group) & 1u);
      key0[s] = e < e_end ? p.q_tiles.chunk[e] * kChunk : 0;
    }
    float acc_s[G::kN8][4], acc_dp[G::kN8][4];
#pragma unroll
    for (int j = 0; j < G::kN8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_s[j][e] = acc_dp[j][e] = 0.f;
#pragma unroll
    for (int jp = 0; jp < G::kN8 / 2; ++jp) {
      if (!present[(jp * 16) / kChunk]) continue;
      mma_scores_pair<T, D>(acc_s[2 * jp], acc_s[2 * jp + 1], qf, sK + buf * G::kTileElems, jp * 16);
      mma_scores_pair<T, D>(acc_dp[2 * jp], acc_dp[2 * jp + 1], df, sV + buf * G::kTileElems, jp * 16);
    }
    // dS = P * (dP - delta), P recomputed in fp32 from the saved LSE (after the same selection).
#pragma unroll
    for (int j = 0; j < G::kN8; ++j) {
      const int slot = (j * 8) / kChunk;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float s;
        if (!present[slot]) {
          s = -INFINITY;
        } else if (plain) {
          s = acc_s[j][e] * scale_log2;
        } else {
          const int k_pos = key0[slot] + nm_column_key<kNM>((j * 8 + 2 * t + (e & 1)) % kChunk);
          s = acc_s[j][e] * scale_log2 + bias(my_row[e >> 1], k_pos) * kLog2e;
        }
        acc_s[j][e] = s;
      }
    }
    if constexpr (kNM != 0) nm_select_columns<kNM, G::kN8>(&acc_s[0][0]);
#pragma unroll
    for (int j = 0; j < G::kN8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_s[j][e] = exp2f(acc_s[j][e] - lse2[e >> 1]) * (acc_dp[j][e] - delta[e >> 1]);
#pragma unroll
    for (int kk = 0; kk < G::kN8 / 2; ++kk) {
      if (!present[(kk * 16) / kChunk]) continue;
      uint32_t pf[4];
      pf[0] = mma::pack2<T>(acc_s[2 * kk][0], acc_s[2 * kk][1]);
      pf[1] = mma::pack2<T>(acc_s[2 * kk][2], acc_s[2 * kk][3]);
      pf[2] = mma::pack2<T>(acc_s[2 * kk + 1][0], acc_s[2 * kk + 1][1]);
      pf[3] = mma::pack2<T>(acc_s[2 * kk + 1][2], acc_s[2 * kk + 1][3]);
      mma_product_k16<T, D>(acc_dq, pf, sK + buf * G::kTileElems, kk * 16);
    }
    __syncthreads();
  }
  mma::cp_async_wait<0>();

  T* dq = static_cast<T*>(p.dq) + qoff;
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    if (my_row[ri] >= p.S) continue;
    T* row = dq + static_cast<int64_t>(my_row[ri]) * p.q_rs;
#pragma unroll
    for (int i = 0; i < G::kD8; ++i)
      *reinterpret_cast<uint32_t*>(row + i * 8 + 2 * t) =
          mma::pack2<T>(acc_dq[i][2 * ri] * p.scale, acc_dq[i][2 * ri + 1] * p.scale);
  }
}

template <typename T, int D, int kChunk, int kNM>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const Params p) {
  using G = Geometry<T, D, kChunk>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + G::kTileElems;
  T* sQ = sV + G::kTileElems;        // [2][64][D] gathered query rows
  T* sDO = sQ + 2 * G::kTileElems;   // [2][64][D]
  float* sL = reinterpret_cast<float*>(sDO + 2 * G::kTileElems);  // [2][64] lse * log2e
  float* sDelta = sL + 2 * kTileRows;                              // [2][64]

  const int item = p.k_tiles.order[blockIdx.x];
  const int tile = item % p.num_tiles;
  const int bh = item / p.num_tiles;
  const int h = bh % p.H, b = bh / p.H;
  const int lh = h % p.layout_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int k0 = tile * kTileRows;
  const int my_group = G::group_of_warp(warp);

  const T* q = static_cast<const T*>(p.q) + b * p.q_bs + h * p.q_hs;
  const T* dout = static_cast<const T*>(p.dout) + b * p.o_bs + h * p.o_hs;
  const int64_t koff = b * p.k_bs + h * p.k_hs;
  const T* k = static_cast<const T*>(p.k) + koff;
  const T* v = static_cast<const T*>(p.v) + koff;
  const float* lse = p.lse + (static_cast<int64_t>(b) * p.H + h) * p.S;
  const float* dlt = p.delta + (static_cast<int64_t>(b) * p.H + h) * p.S;
  const int32_t e_begin = p.k_tiles.ptr[lh * p.num_tiles + tile];
  const int32_t e_end = p.k_tiles.ptr[lh * p.num_tiles + tile + 1];
  const int num_steps = (e_end - e_begin + G::kSlots - 1) / G::kSlots;

  ScoreBias bias{p.key_padding ? p.key_padding + static_cast<int64_t>(b) * p.S : nullptr, p.attn_bias,
                 p.rpe ? p.rpe + (static_cast<int64_t>(b) * p.H + h) * p.S * p.S : nullptr,
                 p.S, p.s_valid, p.block, p.causal_diagonal};
  const bool plain = bias.trivial();

  auto own_row = [&](int r) { return k0 + r < p.S ? int64_t(k0 + r) : int64_t(-1); };
  load_rows_async<D>(sK, k, p.k_rs, own_row);
  load_rows_async<D>(sV, v, p.k_rs, own_row);
  auto load_step = [&](int step, int buf) {
    const int e0 = e_begin + step * G::kSlots;
    auto row_of = [&](int r) -> int64_t {
      const int e = e0 + r / kChunk;
      return e < e_end ? int64_t(p.k_tiles.chunk[e]) * kChunk + (r % kChunk) : int64_t(-1);
    };
    load_rows_async<D>(sQ + buf * G::kTileElems, q, p.q_rs, row_of);
    load_rows_async<D>(sDO + buf * G::kTileElems, dout, p.o_rs, row_of);
    if (threadIdx.x < kTileRows) {
      const int64_t r = row_of(threadIdx.x);
      sL[buf * kTileRows + threadIdx.x] = r >= 0 ? lse[r] * kLog2e : INFINITY;
      sDelta[buf * kTileRows + threadIdx.x] = r >= 0 ? dlt[r] : 0.f;
    }
  };
  if (num_steps > 0) load_step(0, 0);
  mma::cp_async_commit();

  const int my_key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  float acc_dk[G::kD8][4], acc_dv[G::kD8][4];
#pragma unroll
  for (int i = 0; i < G::kD8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_dk[i][e] = acc_dv[i][e] = 0.f;
  const float scale_log2 = p.scale * kLog2e;

  for (int step = 0; step < num_steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < num_steps) load_step(step + 1, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    __syncthreads();
    const int e0 = e_begin + step * G::kSlots;
    bool present[G::kSlots];
    int qpos0[G::kSlots];
#pragma unroll
    for (int s = 0; s < G::kSlots; ++s) {
      const int e = e0 + s;
      present[s] = e < e_end && ((p.k_tiles.mask[e] >> my_group) & 1u);
      qpos0[s] = e < e_end ? p.k_tiles.chunk[e] * kChunk : 0;
    }
    const T* bQ = sQ + buf * G::kTileElems;
    const T* bDO = sDO + buf * G::kTileElems;
    float acc_s[G::kN8][4], acc_dp[G::kN8][4];
#pragma unroll
    for (int j = 0; j < G::kN8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_s[j][e] = acc_dp[j][e] = 0.f;
    {
      uint32_t kf[G::kK16][4];
      load_a_frags<D>(kf, sK, warp * 16);
#pragma unroll
      for (int jp = 0; jp < G::kN8 / 2; ++jp)
        if (present[(jp * 16) / kChunk]) mma_scores_pair<T, D>(acc_s[2 * jp], acc_s[2 * jp + 1], kf, bQ, jp * 16);
    }
    {
      uint32_t vf[G::kK16][4];
      load_a_frags<D>(vf, sV, warp * 16);
#pragma unroll
      for (int jp = 0; jp < G::kN8 / 2; ++jp)
        if (present[(jp * 16) / kChunk]) mma_scores_pair<T, D>(acc_dp[2 * jp], acc_dp[2 * jp + 1], vf, bDO, jp * 16);
    }
    // P^T and dS^T; columns are queries (lse, delta per column from smem).
#pragma unroll
    for (int j = 0; j < G::kN8; ++j) {
      const int slot = (j * 8) / kChunk;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = j * 8 + 2 * t + (e & 1);
        float s;
        if (!present[slot]) {
          s = -INFINITY;
        } else if (plain) {
          s = acc_s[j][e] * scale_log2;
        } else {
          s = acc_s[j][e] * scale_log2 + bias(qpos0[slot] + col % kChunk, my_key[e >> 1]) * kLog2e;
        }
        acc_s[j][e] = s;
      }
    }
    if constexpr (kNM != 0) nm_select<kNM / 10, kNM % 10, false, G::kN8>(&acc_s[0][0]);
#pragma unroll
    for (int j = 0; j < G::kN8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = j * 8 + 2 * t + (e & 1);
        const float pr = exp2f(acc_s[j][e] - sL[buf * kTileRows + col]);
        acc_s[j][e] = pr;
        acc_dp[j][e] = pr * (acc_dp[j][e] - sDelta[buf * kTileRows + col]);
      }
#pragma unroll
    for (int kk = 0; kk < G::kN8 / 2; ++kk) {
      if (!present[(kk * 16) / kChunk]) continue;
      uint32_t pf[4], sf[4];
      pf[0] = mma::pack2<T>(acc_s[2 * kk][0], acc_s[2 * kk][1]);
      pf[1] = mma::pack2<T>(acc_s[2 * kk][2], acc_s[2 * kk][3]);
      pf[2] = mma::pack2<T>(acc_s[2 * kk + 1][0], acc_s[2 * kk + 1][1]);
      pf[3] = mma::pack2<T>(acc_s[2 * kk + 1][2], acc_s[2 * kk + 1][3]);
      mma_product_k16<T, D>(acc_dv, pf, bDO, kk * 16);
      sf[0] = mma::pack2<T>(acc_dp[2 * kk][0], acc_dp[2 * kk][1]);
      sf[1] = mma::pack2<T>(acc_dp[2 * kk][2], acc_dp[2 * kk][3]);
      sf[2] = mma::pack2<T>(acc_dp[2 * kk + 1][0], acc_dp[2 * kk + 1][1]);
      sf[3] = mma::pack2<T>(acc_dp[2 * kk + 1][2], acc_dp[2 * kk + 1][3]);
      mma_product_k16<T, D>(acc_dk, sf, bQ, kk * 16);
    }
    __syncthreads();
  }
  mma::cp_async_wait<0>();

  T* dk = static_cast<T*>(p.dk) + koff;
  T* dv = static_cast<T*>(p.dv) + koff;
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    if (my_key[ri] >= p.S) continue;
    T* rk = dk + static_cast<int64_t>(my_key[ri]) * p.k_rs;
    T* rv = dv + static_cast<int64_t>(my_key[ri]) * p.k_rs;
#pragma unroll
    for (int i = 0; i < G::kD8; ++i) {
      *reinterpret_cast<uint32_t*>(rk + i * 8 + 2 * t) =
          mma::pack2<T>(acc_dk[i][2 * ri] * p.scale, acc_dk[i][2 * ri + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(rv + i * 8 + 2 * t) = mma::pack2<T>(acc_dv[i][2 * ri], acc_dv[i][2 * ri + 1]);
    }
  }
}

template <typename T, int D, int kChunk, int kNM>
void launch_bwd_typed(const Params& p, cudaStream_t stream) {
  const int grid = p.B * p.H * p.num_tiles;
  {
    constexpr int smem = 6 * kTileRows * D * sizeof(T);
    auto kernel = dq_kernel<T, D, kChunk, kNM>;
    if (smem > 48 * 1024) DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, stream>>>(p);
    DS_CUDA_CHECK_LAUNCH();
  }
  {
    constexpr int smem = 6 * kTileRows * D * sizeof(T) + 4 * kTileRows * sizeof(float);
    auto kernel = dkdv_kernel<T, D, kChunk, kNM>;
    if (smem > 48 * 1024) DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, stream>>>(p);
    DS_CUDA_CHECK_LAUNCH();
  }
}

template <typename T, int D>
void launch_bwd_chunk(const Params& p, cudaStream_t stream) {
  if (p.nm != 0) return dispatch_nm(p.nm, [&](auto nm) { launch_bwd_typed<T, D, 64, decltype(nm)::value>(p, stream); });
  switch (p.chunk) {
    case 16: return launch_bwd_typed<T, D, 16, 0>(p, stream);
    case 32: return launch_bwd_typed<T, D, 32, 0>(p, stream);
    case 64: return launch_bwd_typed<T, D, 64, 0>(p, stream);
  }
  throw std::invalid_argument("fused block-sparse attention: chunk must be 16, 32 or 64");
}

}  // namespace

void launch_delta(const Params& p, void* stream) {
  const int64_t rows = int64_t(p.B) * p.H * p.S;
  if (rows == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  DS_DISPATCH_HALF(p.kind, T, [&] {
    const unsigned grid = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
    switch (p.D) {
      case 32: delta_kernel<T, 32><<<grid, kThreads, 0, s>>>(p); break;
      case 64: delta_kernel<T, 64><<<grid, kThreads, 0, s>>>(p); break;
      case 128: delta_kernel<T, 128><<<grid, kThreads, 0, s>>>(p); break;
      default: throw std::invalid_argument("fused block-sparse attention: head size " + std::to_string(p.D) +
                                           " is not supported; use 32, 64 or 128");
    }
    DS_CUDA_CHECK_LAUNCH();
  });
}

void launch_backward(const Params& p, void* stream) {
  if (p.B * p.H * p.num_tiles == 0) return;
  launch_delta(p, stream);
  auto s = static_cast<cudaStream_t>(stream);
  DS_DISPATCH_HALF(p.kind, T, [&] {
    switch (p.D) {
      case 32: return launch_bwd_chunk<T, 32>(p, s);
      case 64: return launch_bwd_chunk<T, 64>(p, s);
      case 128: return launch_bwd_chunk<T, 128>(p, s);
    }
    throw std::invalid_argument("fused block-sparse attention: head size " + std::to_string(p.D) +
                                " is not supported; use 32, 64 or 128");
  });
}

}  // namespace ds::bsa
