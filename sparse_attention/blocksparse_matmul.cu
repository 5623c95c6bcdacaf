// Block-sparse MatMul kernels: sdd (block-sparse result) and dsd/dds (dense result, block-sparse
// operand), fp32/fp16/bf16 with fp32 accumulation. See blocksparse_kernels.h for the contracts and
// blocksparse_mma.cuh for the warp-level product.
//
// Both kernels follow the fused attention's structure (fused/bsa_fwd.cu): a CTA of 4 warps owns a
// 64-position tile of one axis of the layout and walks, in steps of 64 positions, the chunks of the
// other axis present in at least one of its rows (union over its row groups), double-buffered with
// cp.async; each warp owns 16 rows and skips the chunks its row group does not have. So at block 16 a
// dense-operand tile loaded once serves up to four block rows, which is what keeps small blocks from
// being bound by L2 traffic.
//   sdd: rows = positions of op(A)'s M; per step the 64 gathered columns of op(B) (K x 64) are
//        multiplied with the warp's 16 rows of op(A) (resident in smem for K <= 256 (fp32: 128), else
//        streamed in k-slices with op(B)); each finished 16 x chunk piece is written to its block.
//   dxd: rows = positions of op(S)'s M; per step 64 gathered positions of the reduction (the S tile:
//        each row group's block, zeros where absent; the dense op(B) rows at those positions) are
//        accumulated into C'[64 x kTN]; the tile is written once at the end (zeros for empty rows).
// Transposed operands are handled natively (ldmatrix vs ldmatrix.trans); only dds's output goes out
// transposed (dds = (op'(S) op'(A))^T), with 2-element scattered stores.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "ops/common/cuda_check.h"
#include "ops/common/dispatch.cuh"
#include "sparse_attention/blocksparse_kernels.h"
#include "sparse_attention/blocksparse_mma.cuh"

namespace ds::bsmm {
namespace {

// Tuning: K slice of the streaming sdd (128 bytes per row), and the largest K kept resident (the A
// tile plus two B buffers then need ~101 KB of shared memory: two CTAs per SM on H100).
template <typename T> constexpr int stream_tk() { return sizeof(T) == 4 ? 32 : 64; }
template <typename T> constexpr int resident_max_k() { return sizeof(T) == 4 ? 128 : 256; }

__host__ __device__ constexpr int round16(int x) { return (x + 15) / 16 * 16; }

// Elements of a 64 x tk tile (kmajor: [64][tk + V]) or tk x 64 tile ([tk][64 + V]).
template <typename T> __host__ __device__ constexpr int tile64_elems(bool kmajor, int tk) {
  return kmajor ? kTileRows * (tk + vec_elems<T>()) : tk * (kTileRows + vec_elems<T>());
}
// Row pitch of sdd's output staging tiles (16 rows x 64 columns per warp).
template <typename T> constexpr int kStagePitch = kStepCols + vec_elems<T>();

template <typename T, bool kAK, bool kBK>
__global__ void __launch_bounds__(kThreads) sdd_kernel(const SddParams p, int tk, bool resident) {
  constexpr int V = vec_elems<T>();
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const LayoutView& L = p.layout;
  const int num_tiles = p.tiles.num_tiles;
  const int item = p.tiles.order[blockIdx.x / p.Z];
  const int z = blockIdx.x % p.Z;
  const int tile = item % num_tiles, h = item / num_tiles;
  const int lh = h % L.layout_heads;
  const int32_t e_begin = p.tiles.ptr[lh * num_tiles + tile];
  const int32_t e_end = p.tiles.ptr[lh * num_tiles + tile + 1];
  if (e_begin == e_end) return;  // nothing present: sdd writes only present blocks

  const int M = L.rows * L.block, N = L.cols * L.block, K = p.K, chunk = L.chunk, block = L.block;
  // chunk and block are powers of two: shifts and masks instead of divisions in the address math.
  const int lgc = 31 - __clz(chunk), cmask = chunk - 1, bmask = block - 1;
  const int slots = kStepCols >> lgc;
  const int num_steps = (e_end - e_begin + slots - 1) / slots;
  const int nk = resident ? 1 : (K + tk - 1) / tk;
  const int total = num_steps * nk;
  const int m0 = tile * kTileRows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int my_group = (warp * 16) >> lgc;

  const int64_t zh = static_cast<int64_t>(z) * L.heads + h;
  const T* A = static_cast<const T*>(p.a) + zh * M * K;
  const T* B = static_cast<const T*>(p.b) + zh * K * N;
  T* C = static_cast<T*>(p.c) + static_cast<int64_t>(z) * L.nnz * block * block;
  const int32_t* chunks = p.tiles.chunk;

  const int a_elems = tile64_elems<T>(kAK, tk), b_elems = tile64_elems<T>(kBK, tk);
  const int ap = kAK ? tk + V : kTileRows + V, bp = kBK ? tk + V : kTileRows + V;
  T* sA = reinterpret_cast<T*>(smem_raw);                 // [resident ? 1 : 2][a_elems]
  T* sB = sA + (resident ? 1 : 2) * a_elems;              // [2][b_elems]
  T* sC = sB + 2 * b_elems + warp * 16 * kStagePitch<T>;  // this warp's [16][64 + V] output staging

  auto load_a = [&](T* dst, int k0) {
    if constexpr (kAK) {  // [64 m][tk], A stored [M][K]
      load_tile<T>(dst, ap, kTileRows, tk, A, [&](int r, int c) -> const T* {
        const int m = m0 + r, k = k0 + c;
        return m < M && k < K ? A + static_cast<int64_t>(m) * K + k : nullptr;
      });
    } else {  // [tk][64 m], A stored [K][M]
      load_tile<T>(dst, ap, tk, kTileRows, A, [&](int r, int c) -> const T* {
        const int k = k0 + r, m = m0 + c;
        return m < M && k < K ? A + static_cast<int64_t>(k) * M + m : nullptr;
      });
    }
  };
  auto load_b = [&](T* dst, int e0, int k0) {
    if constexpr (kBK) {  // [64 n][tk], B stored [N][K]
      load_tile<T>(dst, bp, kTileRows, tk, B, [&](int r, int c) -> const T* {
        const int e = e0 + (r >> lgc), k = k0 + c;
        if (e >= e_end || k >= K) return nullptr;
        const int n = (chunks[e] << lgc) + (r & cmask);
        return B + static_cast<int64_t>(n) * K + k;
      });
    } else {  // [tk][64 n], B stored [K][N]
      load_tile<T>(dst, bp, tk, kTileRows, B, [&](int r, int c) -> const T* {
        const int e = e0 + (c >> lgc), k = k0 + r;
        if (e >= e_end || k >= K) return nullptr;
        const int n = (chunks[e] << lgc) + (c & cmask);
        return B + static_cast<int64_t>(k) * N + n;
      });
    }
  };
  auto load_stage = [&](int st, int buf) {
    const int step = st / nk, ks = st % nk;
    if (!resident) load_a(sA + buf * a_elems, ks * tk);
    load_b(sB + buf * b_elems, e_begin + step * slots, ks * tk);
  };

  if (resident) load_a(sA, 0);
  load_stage(0, 0);
  mma::cp_async_commit();

  float acc[kStepCols / 8][4];
#pragma unroll
  for (int j = 0; j < kStepCols / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  for (int st = 0; st < total; ++st) {
    const int buf = st & 1;
    const int step = st / nk, ks = st % nk;
    if (st + 1 < total) load_stage(st + 1, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    __syncthreads();

    const int e0 = e_begin + step * slots;
    const uint32_t n16 = step_mask16(p.tiles.mask, e0, e_end, lgc, my_group);
    if (n16 != 0u) {
      const T* a_tile = resident ? sA : sA + buf * a_elems;
      const int k_here = resident ? K : min(tk, K - ks * tk);  // zero-padded to whole k16 steps
      for (int k0 = 0; k0 < k_here; k0 += 16)
        WarpMma<T, kAK, kBK>::template k16<kStepCols / 16>(acc, a_tile, ap, warp * 16, k0, sB + buf * b_elems, bp,
                                                           n16);
    }
    if (ks == nk - 1 && n16 != 0u) {
      // The warp's 16 rows lie in one block row. Its results go through a per-warp staging tile so
      // each present chunk leaves as 16-byte stores of whole row segments (full 32-byte sectors).
      constexpr int kCP = kStagePitch<T>;
#pragma unroll
      for (int j = 0; j < kStepCols / 8; ++j) {
        if (!((n16 >> (j >> 1)) & 1u)) continue;
        store2<T>(sC + g * kCP + j * 8 + 2 * t, acc[j][0], acc[j][1]);
        store2<T>(sC + (g + 8) * kCP + j * 8 + 2 * t, acc[j][2], acc[j][3]);
      }
      __syncwarp();
      const int row_base = (m0 + warp * 16) & bmask;
      const int lg_pieces = lgc - (sizeof(T) == 4 ? 2 : 3);  // 16-byte pieces per chunk row: chunk / V
      for (int slot = 0; slot < slots; ++slot) {
        const int e = e0 + slot;
        if (!((n16 >> ((slot << lgc) >> 4)) & 1u)) continue;  // the slot's first n16 piece says it
        const int64_t blk = p.tiles.nnz[e * kMaxGroups + my_group] + static_cast<int64_t>(h) * L.nnz_head_stride;
        T* out = C + (blk * block + row_base) * block + ((chunks[e] << lgc) & bmask);
        const T* src = sC + (slot << lgc);
        for (int i = lane; i < (16 << lg_pieces); i += 32) {
          const int r = i >> lg_pieces, c = (i & ((1 << lg_pieces) - 1)) * V;
          *reinterpret_cast<uint4*>(out + r * block + c) = *reinterpret_cast<const uint4*>(src + r * kCP + c);
        }
      }
      __syncwarp();  // the staging tile is rewritten at the next step
    }
    if (ks == nk - 1) {
#pragma unroll
      for (int j = 0; j < kStepCols / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    }
    __syncthreads();  // the buffer is refilled by the next stage's prefetch
  }
  mma::cp_async_wait<0>();
}

template <typename T, bool kTransS, bool kBK, int kTN>
__global__ void __launch_bounds__(kThreads) dxd_kernel(const DxdParams p) {
  constexpr int V = vec_elems<T>();
  constexpr int kSPitch = kStepCols + V;                       // S tile: 64 x 64 either way
  constexpr int kSElems = kTileRows * kSPitch;
  constexpr int kBPitch = kBK ? kStepCols + V : kTN + V;       // [kTN n][64 k] or [64 k][kTN n]
  constexpr int kBElems = kBK ? kTN * kBPitch : kStepCols * kBPitch;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sS = reinterpret_cast<T*>(smem_raw);  // [2][kSElems]
  T* sB = sS + 2 * kSElems;                // [2][kBElems]

  const LayoutView& L = p.layout;
  const int num_tiles = p.tiles.num_tiles;
  const int item = p.tiles.order[blockIdx.x / p.Z];
  const int z = blockIdx.x % p.Z;
  const int tile = item % num_tiles, h = item / num_tiles;
  const int lh = h % L.layout_heads;
  const int32_t e_begin = p.tiles.ptr[lh * num_tiles + tile];
  const int32_t e_end = p.tiles.ptr[lh * num_tiles + tile + 1];
  const int M = p.M, N = p.N, K = p.K, chunk = L.chunk, block = L.block, bb = block * block;
  const int lgc = 31 - __clz(chunk), cmask = chunk - 1, lgb = 31 - __clz(block), bmask = block - 1;
  const int slots = kStepCols >> lgc;
  const int num_steps = (e_end - e_begin + slots - 1) / slots;
  const int m0 = tile * kTileRows, n0 = blockIdx.y * kTN;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int my_group = (warp * 16) >> lgc;

  const int64_t zh = static_cast<int64_t>(z) * L.heads + h;
  const T* S = static_cast<const T*>(p.s) + static_cast<int64_t>(z) * L.nnz * bb;
  const T* B = static_cast<const T*>(p.b) + zh * K * N;
  T* C = static_cast<T*>(p.c) + zh * M * N;
  const int32_t* chunks = p.tiles.chunk;
  const int32_t* nnz_of = p.tiles.nnz;
  const int64_t head_nnz = static_cast<int64_t>(h) * L.nnz_head_stride;

  auto load_stage = [&](int step, int buf) {
    const int e0 = e_begin + step * slots;
    if constexpr (!kTransS) {  // op(S) = S: [64 m][64 k], row group of m's block, chunk of k's block
      load_tile<T>(sS + buf * kSElems, kSPitch, kTileRows, kStepCols, S, [&](int r, int c) -> const T* {
        const int e = e0 + (c >> lgc);
        if (e >= e_end) return nullptr;
        const int n = nnz_of[e * kMaxGroups + (r >> lgc)];
        if (n < 0) return nullptr;
        const int row_in = (m0 + r) & bmask, col_in = ((chunks[e] << lgc) & bmask) + (c & cmask);
        return S + (n + head_nnz) * bb + (row_in << lgb) + col_in;
      });
    } else {  // op(S) = S^T: [64 k][64 m] read straight from the stored [k][m] blocks
      load_tile<T>(sS + buf * kSElems, kSPitch, kStepCols, kTileRows, S, [&](int r, int c) -> const T* {
        const int e = e0 + (r >> lgc);
        if (e >= e_end) return nullptr;
        const int n = nnz_of[e * kMaxGroups + (c >> lgc)];
        if (n < 0) return nullptr;
        const int row_in = ((chunks[e] << lgc) & bmask) + (r & cmask), col_in = (m0 + c) & bmask;
        return S + (n + head_nnz) * bb + (row_in << lgb) + col_in;
      });
    }
    if constexpr (kBK) {  // B stored [N][K]: [kTN n][64 k]
      load_tile<T>(sB + buf * kBElems, kBPitch, kTN, kStepCols, B, [&](int r, int c) -> const T* {
        const int e = e0 + (c >> lgc), n = n0 + r;
        if (e >= e_end || n >= N) return nullptr;
        return B + static_cast<int64_t>(n) * K + (chunks[e] << lgc) + (c & cmask);
      });
    } else {  // B stored [K][N]: [64 k][kTN n]
      load_tile<T>(sB + buf * kBElems, kBPitch, kStepCols, kTN, B, [&](int r, int c) -> const T* {
        const int e = e0 + (r >> lgc), n = n0 + c;
        if (e >= e_end || n >= N) return nullptr;
        return B + static_cast<int64_t>((chunks[e] << lgc) + (r & cmask)) * N + n;
      });
    }
  };
  if (num_steps > 0) load_stage(0, 0);
  mma::cp_async_commit();

  float acc[kTN / 8][4];
#pragma unroll
  for (int j = 0; j < kTN / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  // n16 pieces of the dense operand that exist (N is a multiple of 8; a half-present piece reads zeros).
  const uint32_t n16_all = N - n0 >= kTN ? (1u << (kTN / 16)) - 1u : (1u << ((N - n0 + 15) / 16)) - 1u;

  for (int step = 0; step < num_steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < num_steps) load_stage(step + 1, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    __syncthreads();
    const uint32_t k16 = step_mask16(p.tiles.mask, e_begin + step * slots, e_end, lgc, my_group);
#pragma unroll
    for (int q = 0; q < kStepCols / 16; ++q) {
      if (!((k16 >> q) & 1u)) continue;
      WarpMma<T, !kTransS, kBK>::template k16<kTN / 16>(acc, sS + buf * kSElems, kSPitch, warp * 16, q * 16,
                                                        sB + buf * kBElems, kBPitch, n16_all);
    }
    __syncthreads();  // the buffer is refilled by the next step's prefetch
  }
  mma::cp_async_wait<0>();

  const int rows[2] = {m0 + warp * 16 + g, m0 + warp * 16 + g + 8};
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    const int m = rows[ri];
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < kTN / 8; ++j) {
      const int n = n0 + j * 8 + 2 * t;
      if (n >= N) continue;
      const float v0 = acc[j][2 * ri], v1 = acc[j][2 * ri + 1];
      if (!p.trans_out) {
        store2<T>(C + static_cast<int64_t>(m) * N + n, v0, v1);
      } else {
        store1<T>(C + static_cast<int64_t>(n) * M + m, v0);
        store1<T>(C + static_cast<int64_t>(n + 1) * M + m, v1);
      }
    }
  }
}

void check_layout(const LayoutView& L, const TileTableView& tiles, int Z, const char* op) {
  if (L.block != 16 && L.block != 32 && L.block != 64 && L.block != 128)
    throw std::invalid_argument(std::string(op) + ": block " + std::to_string(L.block) + " is not 16, 32, 64 or 128");
  if (L.chunk != (L.block < kTileRows ? L.block : kTileRows))
    throw std::invalid_argument(std::string(op) + ": chunk " + std::to_string(L.chunk) + " does not match block " +
                                std::to_string(L.block));
  if (tiles.order == nullptr || tiles.ptr == nullptr) throw std::invalid_argument(std::string(op) + ": tables missing");
  if (static_cast<int64_t>(L.heads) * tiles.num_tiles * Z > INT32_MAX)
    throw std::invalid_argument(std::string(op) + ": too many tiles (batch * heads * tiles > 2^31)");
}

template <typename T, bool kAK, bool kBK>
void launch_sdd_typed(const SddParams& p, cudaStream_t stream) {
  const bool resident = p.K <= resident_max_k<T>();
  const int tk = resident ? round16(p.K) : stream_tk<T>();
  const int smem = ((resident ? 1 : 2) * tile64_elems<T>(kAK, tk) + 2 * tile64_elems<T>(kBK, tk) +
                    kTileRows * kStagePitch<T>) *
                   static_cast<int>(sizeof(T));
  auto kernel = sdd_kernel<T, kAK, kBK>;
  if (smem > 48 * 1024) DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const unsigned grid = static_cast<unsigned>(p.layout.heads) * p.tiles.num_tiles * p.Z;
  kernel<<<grid, kThreads, smem, stream>>>(p, tk, resident);
  DS_CUDA_CHECK_LAUNCH();
}

template <typename T, bool kTransS, bool kBK, int kTN>
void launch_dxd_typed(const DxdParams& p, cudaStream_t stream) {
  constexpr int V = vec_elems<T>();
  constexpr int kSElems = kTileRows * (kStepCols + V);
  constexpr int kBElems = kBK ? kTN * (kStepCols + V) : kStepCols * (kTN + V);
  constexpr int smem = 2 * (kSElems + kBElems) * static_cast<int>(sizeof(T));
  auto kernel = dxd_kernel<T, kTransS, kBK, kTN>;
  if (smem > 48 * 1024) DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(static_cast<unsigned>(p.layout.heads) * p.tiles.num_tiles * p.Z,
                  static_cast<unsigned>((p.N + kTN - 1) / kTN));
  kernel<<<grid, kThreads, smem, stream>>>(p);
  DS_CUDA_CHECK_LAUNCH();
}

// A 128-wide output tile reads each S block once for N <= 128 (head sizes 72..128); fp32 keeps 64
// (shared memory and registers of the SIMT path).
template <typename T, bool kTransS, bool kBK>
void launch_dxd_width(const DxdParams& p, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    if (p.N > 64) return launch_dxd_typed<T, kTransS, kBK, 128>(p, stream);
  }
  launch_dxd_typed<T, kTransS, kBK, 64>(p, stream);
}

}  // namespace

int sdd_resident_max_k(ScalarKind kind) { return kind == ScalarKind::F32 ? resident_max_k<float>() : resident_max_k<__half>(); }

void launch_sdd(const SddParams& p, void* stream) {
  check_layout(p.layout, p.tiles, p.Z, "block-sparse sdd");
  if (p.K % 8 != 0) throw std::invalid_argument("block-sparse sdd: K = " + std::to_string(p.K) + " is not a multiple of 8");
  if (p.Z == 0 || p.layout.nnz == 0 || p.tiles.num_tiles == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    DS_BOOL_SWITCH(p.a_kmajor, kAK, [&] {
      DS_BOOL_SWITCH(p.b_kmajor, kBK, [&] { launch_sdd_typed<T, kAK, kBK>(p, s); });
    });
  });
}

void launch_dxd(const DxdParams& p, void* stream) {
  check_layout(p.layout, p.tiles, p.Z, "block-sparse dsd/dds");
  if (p.N % 8 != 0) throw std::invalid_argument("block-sparse dsd/dds: N = " + std::to_string(p.N) + " is not a multiple of 8");
  if (p.Z == 0 || p.N == 0 || p.tiles.num_tiles == 0) return;
  if (p.N > 65535 * 128) throw std::invalid_argument("block-sparse dsd/dds: N = " + std::to_string(p.N) + " is too large");
  auto s = static_cast<cudaStream_t>(stream);
  DS_DISPATCH_SCALAR(p.kind, T, [&] {
    DS_BOOL_SWITCH(p.trans_s, kTransS, [&] {
      DS_BOOL_SWITCH(p.b_kmajor, kBK, [&] { launch_dxd_width<T, kTransS, kBK>(p, s); });
    });
  });
}

}  // namespace ds::bsmm
