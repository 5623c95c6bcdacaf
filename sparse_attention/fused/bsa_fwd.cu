// Fused block-sparse attention, forward: O = softmax(Q K^T * scale + bias) V over the layout's
// present blocks, and the log-sum-exp per row for the backward. One CTA = 64 query rows (4 warps x 16)
// of one (batch, head); it walks the key chunks of its tile in steps of 64 keys, double-buffered with
// cp.async; each warp skips chunks its layout row does not have.
#include <cuda_runtime.h>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "sparse_attention/fused/bsa_common.cuh"
#include "sparse_attention/fused/nm_select.cuh"

namespace ds::bsa {
namespace {

template <typename T, int D, int kChunk, int kNM>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const Params p) {
  using G = Geometry<T, D, kChunk>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + G::kTileElems;      // [2][64][D]
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

  const T* q = static_cast<const T*>(p.q) + b * p.q_bs + h * p.q_hs;
  const T* k = static_cast<const T*>(p.k) + b * p.k_bs + h * p.k_hs;
  const T* v = static_cast<const T*>(p.v) + b * p.k_bs + h * p.k_hs;
  const int32_t e_begin = p.q_tiles.ptr[lh * p.num_tiles + tile];
  const int32_t e_end = p.q_tiles.ptr[lh * p.num_tiles + tile + 1];
  const int num_steps = (e_end - e_begin + G::kSlots - 1) / G::kSlots;

  ScoreBias bias{p.key_padding ? p.key_padding + static_cast<int64_t>(b) * p.S : nullptr, p.attn_bias,
                 p.rpe ? p.rpe + (static_cast<int64_t>(b) * p.H + h) * p.S * p.S : nullptr,
                 p.S, p.s_valid, p.block, p.causal_diagonal};
  const bool plain = bias.trivial();

  load_rows_async<D>(sQ, q, p.q_rs, [&](int r) { return q0 + r < p.S ? int64_t(q0 + r) : int64_t(-1); });
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

  float acc_o[G::kD8][4];
#pragma unroll
  for (int i = 0; i < G::kD8; ++i) acc_o[i][0] = acc_o[i][1] = acc_o[i][2] = acc_o[i][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};
  uint32_t qf[G::kK16][4];
  const float scale_log2 = p.scale * kLog2e;
  const int my_row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

  for (int step = 0; step < num_steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < num_steps) load_step(step + 1, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    __syncthreads();
    if (step == 0) load_a_frags<D>(qf, sQ, warp * 16);

    const int e0 = e_begin + step * G::kSlots;
    bool present[G::kSlots];
    int key0[G::kSlots];
#pragma unroll
    for (int s = 0; s < G::kSlots; ++s) {
      const int e = e0 + s;
      present[s] = e < e_end && ((p.q_tiles.mask[e] >> my_group) & 1u);
      key0[s] = e < e_end ? p.q_tiles.chunk[e] * kChunk : 0;
    }

    float acc_s[G::kN8][4];
#pragma unroll
    for (int j = 0; j < G::kN8; ++j) acc_s[j][0] = acc_s[j][1] = acc_s[j][2] = acc_s[j][3] = 0.f;
#pragma unroll
    for (int jp = 0; jp < G::kN8 / 2; ++jp) {
      if (present[(jp * 16) / kChunk])
        mma_scores_pair<T, D>(acc_s[2 * jp], acc_s[2 * jp + 1], qf, sK + buf * G::kTileElems, jp * 16);
    }

    // Scores in log2 units, masked, N:M-selected; then the online-softmax update for rows g and g+8.
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
    float step_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < G::kN8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) step_max[e >> 1] = fmaxf(step_max[e >> 1], acc_s[j][e]);
    float alpha[2];
#pragma unroll
    for (int ri = 0; ri < 2; ++ri) {
      const float m_new = fmaxf(row_max[ri], quad_max(step_max[ri]));
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      alpha[ri] = exp2f(row_max[ri] - m_use);
      row_max[ri] = m_new;
      row_sum[ri] *= alpha[ri];
#pragma unroll
      for (int j = 0; j < G::kN8; ++j) {
        const float p0 = exp2f(acc_s[j][2 * ri] - m_use);
        const float p1 = exp2f(acc_s[j][2 * ri + 1] - m_use);
        acc_s[j][2 * ri] = p0;
        acc_s[j][2 * ri + 1] = p1;
        row_sum[ri] += p0 + p1;
      }
    }
#pragma unroll
    for (int i = 0; i < G::kD8; ++i) {
      acc_o[i][0] *= alpha[0];
      acc_o[i][1] *= alpha[0];
      acc_o[i][2] *= alpha[1];
      acc_o[i][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < G::kN8 / 2; ++kk) {
      if (!present[(kk * 16) / kChunk]) continue;
      uint32_t pf[4];
      pf[0] = mma::pack2<T>(acc_s[2 * kk][0], acc_s[2 * kk][1]);
      pf[1] = mma::pack2<T>(acc_s[2 * kk][2], acc_s[2 * kk][3]);
      pf[2] = mma::pack2<T>(acc_s[2 * kk + 1][0], acc_s[2 * kk + 1][1]);
      pf[3] = mma::pack2<T>(acc_s[2 * kk + 1][2], acc_s[2 * kk + 1][3]);
      mma_product_k16<T, D>(acc_o, pf, sV + buf * G::kTileElems, kk * 16);
    }
    __syncthreads();  // the buffer is refilled by the next step's prefetch
  }
  mma::cp_async_wait<0>();

  // Normalise and write O and the natural-log LSE; rows with nothing to attend give 0 and +inf.
  T* o = static_cast<T*>(p.o) + b * p.o_bs + h * p.o_hs;
  float* lse = p.lse + (static_cast<int64_t>(b) * p.H + h) * p.S;
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    const float l = quad_sum(row_sum[ri]);
    const int row = my_row[ri];
    const bool empty = !(l > 0.f) || row >= p.s_valid;
    const float inv = empty ? 0.f : 1.f / l;
    if (row < p.S) {
      T* orow = o + static_cast<int64_t>(row) * p.o_rs;
#pragma unroll
      for (int i = 0; i < G::kD8; ++i) {
        const uint32_t packed = mma::pack2<T>(acc_o[i][2 * ri] * inv, acc_o[i][2 * ri + 1] * inv);
        *reinterpret_cast<uint32_t*>(orow + i * 8 + 2 * t) = packed;
      }
      if (t == 0) lse[row] = empty ? INFINITY : (row_max[ri] + log2f(l)) / kLog2e;
    }
  }
}

template <typename T, int D, int kChunk, int kNM>
void launch_fwd_typed(const Params& p, cudaStream_t stream) {
  constexpr int smem = 5 * kTileRows * D * sizeof(T);
  auto kernel = fwd_kernel<T, D, kChunk, kNM>;
  if (smem > 48 * 1024) DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int grid = p.B * p.H * p.num_tiles;
  kernel<<<grid, kThreads, smem, stream>>>(p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace

int forward_smem_bytes(int head_dim) { return 5 * kTileRows * head_dim * 2; }

template <typename T, int D>
void launch_fwd_chunk(const Params& p, cudaStream_t stream) {
  if (p.nm != 0) return dispatch_nm(p.nm, [&](auto nm) { launch_fwd_typed<T, D, 64, decltype(nm)::value>(p, stream); });
  switch (p.chunk) {
    case 16: return launch_fwd_typed<T, D, 16, 0>(p, stream);
    case 32: return launch_fwd_typed<T, D, 32, 0>(p, stream);
    case 64: return launch_fwd_typed<T, D, 64, 0>(p, stream);
  }
  throw std::invalid_argument("fused block-sparse attention: chunk must be 16, 32 or 64");
}

void launch_forward(const Params& p, void* stream) {
  if (p.B * p.H * p.num_tiles == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  DS_DISPATCH_HALF(p.kind, T, [&] {
    switch (p.D) {
      case 32: return launch_fwd_chunk<T, 32>(p, s);
      case 64: return launch_fwd_chunk<T, 64>(p, s);
      case 128: return launch_fwd_chunk<T, 128>(p, s);
    }
    throw std::invalid_argument("fused block-sparse attention: head size " + std::to_string(p.D) +
                                " is not supported; use 32, 64 or 128");
  });
}

}  // namespace ds::bsa
