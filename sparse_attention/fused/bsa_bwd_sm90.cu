// Fused block-sparse attention, backward, Hopper path (sm_90a): bsa_bwd.cu's two kernels on warpgroup
// MMAs. Scores are recomputed from the saved log-sum-exp; no atomics, so the result is deterministic.
//   dQ    per 64-row query tile:  S = Q K^T, dP = dO V^T (both shared x shared), dS = P (dP - delta),
//                                 dQ += dS K (dS from registers, K read MN-major)
//   dK,dV per 64-row key tile:    S^T = K Q^T, dP^T = V dO^T, dV += P^T dO, dK += dS^T Q
#include <cuda_runtime.h>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "sparse_attention/fused/bsa_sm90.cuh"
#include "sparse_attention/fused/nm_select.cuh"

namespace ds::bsa {
namespace {

constexpr int kBwdCols = 64;  // columns per step (registers: S, dP and the D-wide accumulators)

template <typename T, int D, int kChunk, int kNM>
__global__ void __launch_bounds__(kThreads) dq_kernel_sm90(const Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kCols = kBwdCols;
  constexpr int kSlots = kCols / kChunk;
  constexpr int kN8 = kCols / 8;
  using L = Sm90Tile<D, kTileRows>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sDO = sQ + L::kElems;
  T* sK = sDO + L::kElems;       // [2]
  T* sV = sK + 2 * L::kElems;    // [2]

  const int item = p.q_tiles.order[blockIdx.x];
  const int tile = item % p.num_tiles;
  const int bh = item / p.num_tiles;
  const int h = bh % p.H, b = bh / p.H;
  const int lh = h % p.layout_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int q0 = tile * kTileRows;
  const int my_group = (warp * 16) / kChunk;

  const int64_t qoff = b * p.q_bs + h * p.q_hs;
  const T* q = static_cast<const T*>(p.q) + qoff;
  const T* dout = static_cast<const T*>(p.dout) + b * p.o_bs + h * p.o_hs;
  const T* k = static_cast<const T*>(p.k) + b * p.k_bs + h * p.k_hs;
  const T* v = static_cast<const T*>(p.v) + b * p.k_bs + h * p.k_hs;
  const int32_t* chunks = p.q_tiles.chunk;
  const int32_t e_begin = p.q_tiles.ptr[lh * p.num_tiles + tile];
  const int32_t e_end = p.q_tiles.ptr[lh * p.num_tiles + tile + 1];
  const int num_steps = (e_end - e_begin + kSlots - 1) / kSlots;

  ScoreBias bias{p.key_padding ? p.key_padding + static_cast<int64_t>(b) * p.S : nullptr, p.attn_bias,
                 p.rpe ? p.rpe + (static_cast<int64_t>(b) * p.H + h) * p.S * p.S : nullptr,
                 p.S, p.s_valid, p.block, p.causal_diagonal};
  const bool plain = bias.trivial(), causal_only = bias.causal_only();

  auto own_row = [&](int r) { return q0 + r < p.S ? q0 + r : -1; };
  L::load2_async(sQ, static_cast<T*>(nullptr), q, q, static_cast<int>(p.q_rs), own_row);
  L::load2_async(sDO, static_cast<T*>(nullptr), dout, dout, static_cast<int>(p.o_rs), own_row);
  auto load_step = [&](int step, int buf) {
    const int e0 = e_begin + step * kSlots;
    L::load2_async(sK + buf * L::kElems, sV + buf * L::kElems, k, v, static_cast<int>(p.k_rs), [&](int r) {
      const int e = e0 + r / kChunk;
      return e < e_end ? chunks[e] * kChunk + nm_column_key<kNM>(r % kChunk) : -1;
    });
  };
  if (num_steps > 0) load_step(0, 0);
  mma::cp_async_commit();

  const uint64_t desc_q = L::kmajor_desc(sQ), desc_do = L::kmajor_desc(sDO);
  const uint64_t dk_k[2] = {L::kmajor_desc(sK), L::kmajor_desc(sK + L::kElems)};
  const uint64_t dk_mn[2] = {L::mnmajor_desc(sK), L::mnmajor_desc(sK + L::kElems)};
  const uint64_t dv_k[2] = {L::kmajor_desc(sV), L::kmajor_desc(sV + L::kElems)};

  const int my_row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float lse2[2], delta[2];
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    const int64_t idx = (static_cast<int64_t>(b) * p.H + h) * p.S + my_row[ri];
    lse2[ri] = my_row[ri] < p.S ? p.lse[idx] * kLog2e : INFINITY;
    delta[ri] = my_row[ri] < p.S ? p.delta[idx] : 0.f;
  }
  float acc_dq[L::kColBlocks][L::kColBlockElems / 2];
#pragma unroll
  for (int nb = 0; nb < L::kColBlocks; ++nb)
#pragma unroll
    for (int i = 0; i < L::kColBlockElems / 2; ++i) acc_dq[nb][i] = 0.f;
  const float scale_log2 = p.scale * kLog2e;

  for (int step = 0; step < num_steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < num_steps) load_step(step + 1, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    wgmma::fence_proxy_async();
    __syncthreads();
    const int e0 = e_begin + step * kSlots;
    bool present[kSlots];
#pragma unroll
    for (int s = 0; s < kSlots; ++s) present[s] = e0 + s < e_end && ((p.q_tiles.mask[e0 + s] >> my_group) & 1u);

    float acc_s[kCols / 2], acc_dp[kCols / 2];
    wgmma::fence();
    wg_scores<T, D, kTileRows, kTileRows, kCols>(acc_s, desc_q, dk_k[buf]);
    wg_scores<T, D, kTileRows, kTileRows, kCols>(acc_dp, desc_do, dv_k[buf]);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operand(acc_s);
    wgmma::fence_operand(acc_dp);
#pragma unroll
    for (int j = 0; j < kN8; ++j) {
      const int slot = (j * 8) / kChunk;
      const int key0 = e0 + slot < e_end ? chunks[e0 + slot] * kChunk : 0;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float s = acc_s[4 * j + e] * scale_log2;
        const int k_pos = key0 + nm_column_key<kNM>((j * 8 + 2 * t + (e & 1)) % kChunk);
        if (causal_only) {
          if (bias.causal_masked(my_row[e >> 1], k_pos)) s = -INFINITY;
        } else if (!plain) {
          s += bias(my_row[e >> 1], k_pos) * kLog2e;
        }
        acc_s[4 * j + e] = present[slot] ? s : -INFINITY;
      }
    }
    if constexpr (kNM != 0) nm_select_columns<kNM, kN8>(acc_s);
#pragma unroll
    for (int i = 0; i < kN8 * 4; ++i) {
      const int ri = (i >> 1) & 1;
      acc_s[i] = fast_exp2(acc_s[i] - lse2[ri]) * (acc_dp[i] - delta[ri]);
    }
    uint32_t sf[kCols / 16][4];
    acc_to_a<T, kN8>(sf, acc_s);
    wgmma::fence();
    wg_product<T, D, kTileRows, kCols>(acc_dq, sf, dk_mn[buf]);
    wgmma::commit();
    wgmma::wait<0>();
    __syncthreads();
  }
  mma::cp_async_wait<0>();

#pragma unroll
  for (int nb = 0; nb < L::kColBlocks; ++nb) wgmma::fence_operand(acc_dq[nb]);
  T* dq = static_cast<T*>(p.dq) + qoff;
  constexpr int kON = L::kColBlockElems;
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    if (my_row[ri] >= p.S) continue;
    T* row = dq + static_cast<int64_t>(my_row[ri]) * p.q_rs;
#pragma unroll
    for (int nb = 0; nb < L::kColBlocks; ++nb)
#pragma unroll
      for (int j = 0; j < kON / 8; ++j)
        *reinterpret_cast<uint32_t*>(row + nb * kON + j * 8 + 2 * t) =
            mma::pack2<T>(acc_dq[nb][4 * j + 2 * ri] * p.scale, acc_dq[nb][4 * j + 2 * ri + 1] * p.scale);
  }
#endif
}

template <typename T, int D, int kChunk, int kNM>
__global__ void __launch_bounds__(kThreads) dkdv_kernel_sm90(const Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kCols = kBwdCols;
  constexpr int kSlots = kCols / kChunk;
  constexpr int kN8 = kCols / 8;
  using L = Sm90Tile<D, kTileRows>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + L::kElems;
  T* sQ = sV + L::kElems;         // [2] gathered query rows
  T* sDO = sQ + 2 * L::kElems;    // [2]
  float* sL = reinterpret_cast<float*>(sDO + 2 * L::kElems);  // [2][kCols] lse * log2e
  float* sDelta = sL + 2 * kCols;                             // [2][kCols]

  const int item = p.k_tiles.order[blockIdx.x];
  const int tile = item % p.num_tiles;
  const int bh = item / p.num_tiles;
  const int h = bh % p.H, b = bh / p.H;
  const int lh = h % p.layout_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int k0 = tile * kTileRows;
  const int my_group = (warp * 16) / kChunk;

  const T* q = static_cast<const T*>(p.q) + b * p.q_bs + h * p.q_hs;
  const T* dout = static_cast<const T*>(p.dout) + b * p.o_bs + h * p.o_hs;
  const int64_t koff = b * p.k_bs + h * p.k_hs;
  const T* k = static_cast<const T*>(p.k) + koff;
  const T* v = static_cast<const T*>(p.v) + koff;
  const float* lse = p.lse + (static_cast<int64_t>(b) * p.H + h) * p.S;
  const float* dlt = p.delta + (static_cast<int64_t>(b) * p.H + h) * p.S;
  const int32_t* chunks = p.k_tiles.chunk;
  const int32_t e_begin = p.k_tiles.ptr[lh * p.num_tiles + tile];
  const int32_t e_end = p.k_tiles.ptr[lh * p.num_tiles + tile + 1];
  const int num_steps = (e_end - e_begin + kSlots - 1) / kSlots;

  ScoreBias bias{p.key_padding ? p.key_padding + static_cast<int64_t>(b) * p.S : nullptr, p.attn_bias,
                 p.rpe ? p.rpe + (static_cast<int64_t>(b) * p.H + h) * p.S * p.S : nullptr,
                 p.S, p.s_valid, p.block, p.causal_diagonal};
  const bool plain = bias.trivial(), causal_only = bias.causal_only();

  L::load2_async(sK, sV, k, v, static_cast<int>(p.k_rs), [&](int r) { return k0 + r < p.S ? k0 + r : -1; });
  // q and dO share a row stride only when laid out alike; gather them separately otherwise.
  const bool same_stride = p.q_rs == p.o_rs;
  auto load_step = [&](int step, int buf) {
    const int e0 = e_begin + step * kSlots;
    auto row_of = [&](int r) {
      const int e = e0 + r / kChunk;
      return e < e_end ? chunks[e] * kChunk + (r % kChunk) : -1;
    };
    if (same_stride) {
      L::load2_async(sQ + buf * L::kElems, sDO + buf * L::kElems, q, dout, static_cast<int>(p.q_rs), row_of);
    } else {
      L::load2_async(sQ + buf * L::kElems, static_cast<T*>(nullptr), q, q, static_cast<int>(p.q_rs), row_of);
      L::load2_async(sDO + buf * L::kElems, static_cast<T*>(nullptr), dout, dout, static_cast<int>(p.o_rs), row_of);
    }
    if (threadIdx.x < kCols) {
      const int r = row_of(threadIdx.x);
      sL[buf * kCols + threadIdx.x] = r >= 0 ? lse[r] * kLog2e : INFINITY;
      sDelta[buf * kCols + threadIdx.x] = r >= 0 ? dlt[r] : 0.f;
    }
  };
  if (num_steps > 0) load_step(0, 0);
  mma::cp_async_commit();

  const uint64_t desc_k = L::kmajor_desc(sK), desc_v = L::kmajor_desc(sV);
  const uint64_t dq_k[2] = {L::kmajor_desc(sQ), L::kmajor_desc(sQ + L::kElems)};
  const uint64_t dq_mn[2] = {L::mnmajor_desc(sQ), L::mnmajor_desc(sQ + L::kElems)};
  const uint64_t ddo_k[2] = {L::kmajor_desc(sDO), L::kmajor_desc(sDO + L::kElems)};
  const uint64_t ddo_mn[2] = {L::mnmajor_desc(sDO), L::mnmajor_desc(sDO + L::kElems)};

  const int my_key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  float acc_dk[L::kColBlocks][L::kColBlockElems / 2], acc_dv[L::kColBlocks][L::kColBlockElems / 2];
#pragma unroll
  for (int nb = 0; nb < L::kColBlocks; ++nb)
#pragma unroll
    for (int i = 0; i < L::kColBlockElems / 2; ++i) acc_dk[nb][i] = acc_dv[nb][i] = 0.f;
  const float scale_log2 = p.scale * kLog2e;

  for (int step = 0; step < num_steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < num_steps) load_step(step + 1, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    wgmma::fence_proxy_async();
    __syncthreads();
    const int e0 = e_begin + step * kSlots;
    bool present[kSlots];
#pragma unroll
    for (int s = 0; s < kSlots; ++s) present[s] = e0 + s < e_end && ((p.k_tiles.mask[e0 + s] >> my_group) & 1u);

    float acc_s[kCols / 2], acc_dp[kCols / 2];
    wgmma::fence();
    wg_scores<T, D, kTileRows, kTileRows, kCols>(acc_s, desc_k, dq_k[buf]);
    wg_scores<T, D, kTileRows, kTileRows, kCols>(acc_dp, desc_v, ddo_k[buf]);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operand(acc_s);
    wgmma::fence_operand(acc_dp);
    const float* l2 = sL + buf * kCols;
    const float* dl = sDelta + buf * kCols;
#pragma unroll
    for (int j = 0; j < kN8; ++j) {
      const int slot = (j * 8) / kChunk;
      const int qpos0 = e0 + slot < e_end ? chunks[e0 + slot] * kChunk : 0;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float s = acc_s[4 * j + e] * scale_log2;
        const int q_pos = qpos0 + (j * 8 + 2 * t + (e & 1)) % kChunk;
        if (causal_only) {
          if (bias.causal_masked(q_pos, my_key[e >> 1])) s = -INFINITY;
        } else if (!plain) {
          s += bias(q_pos, my_key[e >> 1]) * kLog2e;
        }
        acc_s[4 * j + e] = present[slot] ? s : -INFINITY;
      }
    }
    if constexpr (kNM != 0) nm_select<kNM / 10, kNM % 10, false, kN8>(acc_s);
#pragma unroll
    for (int j = 0; j < kN8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = j * 8 + 2 * t + (e & 1);
        const float pr = fast_exp2(acc_s[4 * j + e] - l2[col]);
        acc_s[4 * j + e] = pr;
        acc_dp[4 * j + e] = pr * (acc_dp[4 * j + e] - dl[col]);
      }
    uint32_t pf[kCols / 16][4], sf[kCols / 16][4];
    acc_to_a<T, kN8>(pf, acc_s);
    acc_to_a<T, kN8>(sf, acc_dp);
    wgmma::fence();
    wg_product<T, D, kTileRows, kCols>(acc_dv, pf, ddo_mn[buf]);
    wg_product<T, D, kTileRows, kCols>(acc_dk, sf, dq_mn[buf]);
    wgmma::commit();
    wgmma::wait<0>();
    __syncthreads();
  }
  mma::cp_async_wait<0>();

#pragma unroll
  for (int nb = 0; nb < L::kColBlocks; ++nb) {
    wgmma::fence_operand(acc_dk[nb]);
    wgmma::fence_operand(acc_dv[nb]);
  }
  T* dk = static_cast<T*>(p.dk) + koff;
  T* dv = static_cast<T*>(p.dv) + koff;
  constexpr int kON = L::kColBlockElems;
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    if (my_key[ri] >= p.S) continue;
    T* rk = dk + static_cast<int64_t>(my_key[ri]) * p.k_rs;
    T* rv = dv + static_cast<int64_t>(my_key[ri]) * p.k_rs;
#pragma unroll
    for (int nb = 0; nb < L::kColBlocks; ++nb)
#pragma unroll
      for (int j = 0; j < kON / 8; ++j) {
        const int c = nb * kON + j * 8 + 2 * t;
        *reinterpret_cast<uint32_t*>(rk + c) =
            mma::pack2<T>(acc_dk[nb][4 * j + 2 * ri] * p.scale, acc_dk[nb][4 * j + 2 * ri + 1] * p.scale);
        *reinterpret_cast<uint32_t*>(rv + c) = mma::pack2<T>(acc_dv[nb][4 * j + 2 * ri], acc_dv[nb][4 * j + 2 * ri + 1]);
      }
  }
#endif
}

template <typename T, int D, int kChunk, int kNM>
void launch_typed(const Params& p, cudaStream_t stream) {
  const int grid = p.B * p.H * p.num_tiles;
  constexpr int tile_bytes = Sm90Tile<D, kTileRows>::kElems * sizeof(T);
  {
    constexpr int smem = 6 * tile_bytes;
    auto kernel = dq_kernel_sm90<T, D, kChunk, kNM>;
    DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, stream>>>(p);
    DS_CUDA_CHECK_LAUNCH();
  }
  {
    constexpr int smem = 6 * tile_bytes + 4 * kBwdCols * sizeof(float);
    auto kernel = dkdv_kernel_sm90<T, D, kChunk, kNM>;
    DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, stream>>>(p);
    DS_CUDA_CHECK_LAUNCH();
  }
}

template <typename T, int D>
void launch_chunk(const Params& p, cudaStream_t stream) {
  if (p.nm != 0) return dispatch_nm(p.nm, [&](auto nm) { launch_typed<T, D, 64, decltype(nm)::value>(p, stream); });
  switch (p.chunk) {
    case 16: return launch_typed<T, D, 16, 0>(p, stream);
    case 32: return launch_typed<T, D, 32, 0>(p, stream);
    case 64: return launch_typed<T, D, 64, 0>(p, stream);
  }
  throw std::invalid_argument("fused block-sparse attention: chunk must be 16, 32 or 64");
}

}  // namespace

void launch_backward_sm90(const Params& p, void* stream) {
  if (p.B * p.H * p.num_tiles == 0) return;
  launch_delta(p, stream);
  auto s = static_cast<cudaStream_t>(stream);
  DS_DISPATCH_HALF(p.kind, T, [&] {
    switch (p.D) {
      case 32: return launch_chunk<T, 32>(p, s);
      case 64: return launch_chunk<T, 64>(p, s);
      case 128: return launch_chunk<T, 128>(p, s);
    }
    throw std::invalid_argument("fused block-sparse attention: head size " + std::to_string(p.D) +
                                " is not supported; use 32, 64 or 128");
  });
}

}  // namespace ds::bsa
