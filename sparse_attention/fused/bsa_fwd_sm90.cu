// Fused block-sparse attention, forward, Hopper path (sm_90a): the algorithm and tables of bsa_fwd.cu
// (the sm_80 path) with both products on warpgroup MMAs: S = Q K^T with both operands read from
// shared memory by the tensor cores, O += P V with P from registers. One CTA = one warpgroup = 64
// query rows; warp w owns rows 16w..16w+15, so the per-row-group chunk masks stay per warp. Each step
// gathers kCols keys (two 64-key halves for D <= 64), double-buffered with cp.async.
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "sparse_attention/fused/bsa_sm90.cuh"
#include "sparse_attention/fused/nm_select.cuh"

namespace ds::bsa {
namespace {

// Three CTAs per SM fit in shared memory for D <= 64 (72 KB each at D = 64); the register file holds
// three only at <= 168 registers per thread. The instantiations that ptxas left above that (2:4
// selection: 180 at D = 64, 186 at D = 32; 16- and 32-key chunks at D = 64: 172-173) ran at two CTAs
// per SM; they are capped (a few spilled bytes). 0 = no minimum: the others keep ptxas's allocation.
template <int D, int kChunk, int kNM>
constexpr int fwd_min_ctas() { return (D <= 64 && kNM == 24) || (D == 64 && kChunk < 64) ? 3 : 0; }

template <typename T, int D, int kChunk, int kNM, int kMinCtas>
__global__ void __launch_bounds__(kThreads, kMinCtas) fwd_kernel_sm90(const Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kCols = sm90_step_cols<D>();
  constexpr int kSlots = kCols / kChunk;
  constexpr int kN8 = kCols / 8;
  using LQ = Sm90Tile<D, kTileRows>;
  using LK = Sm90Tile<D, kCols>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + LQ::kElems;      // [2] tiles of kCols rows
  T* sV = sK + 2 * LK::kElems;  // [2]

  const int item = p.q_tiles.order[blockIdx.x];
  const int tile = item % p.num_tiles;
  const int bh = item / p.num_tiles;
  const int h = bh % p.H, b = bh / p.H;
  const int lh = h % p.layout_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int q0 = tile * kTileRows;
  const int my_group = (warp * 16) / kChunk;

  const T* q = static_cast<const T*>(p.q) + b * p.q_bs + h * p.q_hs;
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

  LQ::load2_async(sQ, static_cast<T*>(nullptr), q, q, static_cast<int>(p.q_rs),
                  [&](int r) { return q0 + r < p.S ? q0 + r : -1; });
  auto load_step = [&](int step, int buf) {
    const int e0 = e_begin + step * kSlots;
    LK::load2_async(sK + buf * LK::kElems, sV + buf * LK::kElems, k, v, static_cast<int>(p.k_rs), [&](int r) {
      const int e = e0 + r / kChunk;
      return e < e_end ? chunks[e] * kChunk + nm_column_key<kNM>(r % kChunk) : -1;
    });
  };
  if (num_steps > 0) load_step(0, 0);
  mma::cp_async_commit();

  const uint64_t desc_q = LQ::kmajor_desc(sQ);
  const uint64_t desc_k0 = LK::kmajor_desc(sK), desc_k1 = LK::kmajor_desc(sK + LK::kElems);
  const uint64_t desc_v0 = LK::mnmajor_desc(sV), desc_v1 = LK::mnmajor_desc(sV + LK::kElems);

  float acc_o[LK::kColBlocks][LK::kColBlockElems / 2];
#pragma unroll
  for (int nb = 0; nb < LK::kColBlocks; ++nb)
#pragma unroll
    for (int i = 0; i < LK::kColBlockElems / 2; ++i) acc_o[nb][i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};  // in log2 units of the scaled scores
  float row_sum[2] = {0.f, 0.f};
  const float scale_log2 = p.scale * kLog2e;
  const int my_row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

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
    for (int s = 0; s < kSlots; ++s) {
      const int e = e0 + s;
      present[s] = e < e_end && ((p.q_tiles.mask[e] >> my_group) & 1u);
    }

    float acc_s[kCols / 2];
    wgmma::fence();
    wg_scores<T, D, kTileRows, kCols, kCols>(acc_s, desc_q, buf ? desc_k1 : desc_k0);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operand(acc_s);

    // Scores to log2 units with masks (absent chunks and masked keys -inf), then the N:M selection.
    if (plain) {
#pragma unroll
      for (int j = 0; j < kN8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          acc_s[4 * j + e] = present[(j * 8) / kChunk] ? acc_s[4 * j + e] * scale_log2 : -INFINITY;
    } else if (causal_only) {
#pragma unroll
      for (int j = 0; j < kN8; ++j) {
        const int slot = (j * 8) / kChunk;
        const int key0 = e0 + slot < e_end ? chunks[e0 + slot] * kChunk : 0;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int k_pos = key0 + nm_column_key<kNM>((j * 8 + 2 * t + (e & 1)) % kChunk);
          acc_s[4 * j + e] = present[slot] && !bias.causal_masked(my_row[e >> 1], k_pos)
                                 ? acc_s[4 * j + e] * scale_log2 : -INFINITY;
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < kN8; ++j) {
        const int slot = (j * 8) / kChunk;
        const int key0 = e0 + slot < e_end ? chunks[e0 + slot] * kChunk : 0;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int k_pos = key0 + nm_column_key<kNM>((j * 8 + 2 * t + (e & 1)) % kChunk);
          acc_s[4 * j + e] = present[slot] ? acc_s[4 * j + e] * scale_log2 + bias(my_row[e >> 1], k_pos) * kLog2e
                                           : -INFINITY;
        }
      }
    }
    if constexpr (kNM != 0) nm_select_columns<kNM, kN8>(acc_s);
    float step_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kN8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) step_max[e >> 1] = fmaxf(step_max[e >> 1], acc_s[4 * j + e]);
    float alpha[2];
#pragma unroll
    for (int ri = 0; ri < 2; ++ri) {
      const float m_new = fmaxf(row_max[ri], quad_max(step_max[ri]));
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      alpha[ri] = fast_exp2(row_max[ri] - m_use);
      row_max[ri] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kN8; ++j) {
        const float p0 = fast_exp2(acc_s[4 * j + 2 * ri] - m_use);
        const float p1 = fast_exp2(acc_s[4 * j + 2 * ri + 1] - m_use);
        acc_s[4 * j + 2 * ri] = p0;
        acc_s[4 * j + 2 * ri + 1] = p1;
        sum += p0 + p1;
      }
      row_sum[ri] = row_sum[ri] * alpha[ri] + sum;
    }
#pragma unroll
    for (int nb = 0; nb < LK::kColBlocks; ++nb)
#pragma unroll
      for (int i = 0; i < LK::kColBlockElems / 2; i += 4) {
        acc_o[nb][i] *= alpha[0];
        acc_o[nb][i + 1] *= alpha[0];
        acc_o[nb][i + 2] *= alpha[1];
        acc_o[nb][i + 3] *= alpha[1];
      }
    uint32_t pf[kCols / 16][4];
    acc_to_a<T, kN8>(pf, acc_s);
#ifndef DS_BSA_EXPERIMENT_NO_PV  // upper bound of what a cheaper P.V could save (wrong results)
    wgmma::fence();
    wg_product<T, D, kCols, kCols>(acc_o, pf, buf ? desc_v1 : desc_v0);
    wgmma::commit();
    wgmma::wait<0>();
#else
    if (pf[0][0] == 0x7fffffffu) acc_o[0][0] += 1.f;  // keeps P (and the softmax) alive
#endif
#pragma unroll
    for (int nb = 0; nb < LK::kColBlocks; ++nb) wgmma::fence_operand(acc_o[nb]);
    __syncthreads();  // the buffer is refilled by the next step's prefetch
  }
  mma::cp_async_wait<0>();

  T* o = static_cast<T*>(p.o) + b * p.o_bs + h * p.o_hs;
  float* lse = p.lse + (static_cast<int64_t>(b) * p.H + h) * p.S;
  constexpr int kON = LK::kColBlockElems;
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    const float l = quad_sum(row_sum[ri]);
    const int row = my_row[ri];
    const bool empty = !(l > 0.f) || row >= p.s_valid;
    const float inv = empty ? 0.f : 1.f / l;
    if (row < p.S) {
      T* orow = o + static_cast<int64_t>(row) * p.o_rs;
#pragma unroll
      for (int nb = 0; nb < LK::kColBlocks; ++nb)
#pragma unroll
        for (int j = 0; j < kON / 8; ++j)
          *reinterpret_cast<uint32_t*>(orow + nb * kON + j * 8 + 2 * t) =
              mma::pack2<T>(acc_o[nb][4 * j + 2 * ri] * inv, acc_o[nb][4 * j + 2 * ri + 1] * inv);
      if (t == 0) lse[row] = empty ? INFINITY : (row_max[ri] + __log2f(l)) / kLog2e;
    }
  }
#endif
}

// DS_BSA_FWD_UNCAPPED=1 launches the uncapped build of the capped instantiations (A/B benchmarks).
inline bool fwd_uncapped() {
  static const bool uncapped = [] {
    const char* env = std::getenv("DS_BSA_FWD_UNCAPPED");
    return env != nullptr && std::string(env) == "1";
  }();
  return uncapped;
}

template <typename T, int D, int kChunk, int kNM>
void launch_typed(const Params& p, cudaStream_t stream) {
  constexpr int kCols = sm90_step_cols<D>();
  constexpr int smem = (Sm90Tile<D, kTileRows>::kElems + 4 * Sm90Tile<D, kCols>::kElems) * sizeof(T);
  constexpr int kMin = fwd_min_ctas<D, kChunk, kNM>();
  auto kernel = kMin != 0 && fwd_uncapped() ? fwd_kernel_sm90<T, D, kChunk, kNM, 0>
                                             : fwd_kernel_sm90<T, D, kChunk, kNM, kMin>;
  DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<p.B * p.H * p.num_tiles, kThreads, smem, stream>>>(p);
  DS_CUDA_CHECK_LAUNCH();
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

void launch_forward_sm90(const Params& p, void* stream) {
  if (p.B * p.H * p.num_tiles == 0) return;
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
