// Dynamic N:M selection on score fragments in registers (DFSS, 1:2 and 2:4): in every group of M
// consecutive keys of a query row keep the N largest scores (ties -> lower key index), set the rest
// to -inf. Applied to the accumulator fragments of the attention kernels (mma.sync C layout, also the
// wgmma accumulator layout per warp): element 4j + e of a thread is row g (e < 2) or g + 8 (e >= 2),
// column 8j + 2t + (e & 1), with g = lane / 4, t = lane % 4.
//
//   nm_select_columns (forward, dQ: keys run along columns). A 1:2 pair is the thread's own (e, e+1).
//     For 2:4 the kernels load each step's K and V rows permuted (nm_column_key) so that a thread's
//     columns 16J+2t+{0,1} and 16J+8+2t+{0,1} hold the consecutive keys 16J+4t+{0,1,2,3}: every quad
//     sits in one thread and is selected with six compares, no shuffles (P.V and dS.K sum over the
//     keys, so they do not see the order; masks look keys up through nm_column_key).
//   nm_select<..., false, ...> (dK/dV: transposed scores, keys are rows g). A pair is lanes g, g^1
//     (lane ^ 4); a quad rows 4a..4a+3: lanes ^ 4, ^ 8, ^ 12.
// Every thread of the warp must call the row form (shuffles).
#pragma once

#include <cuda_runtime.h>

namespace ds::bsa {

// Does the entry (v, at position pv in its group) rank ahead of (a, at pa)? Larger wins; on equal
// values the lower position (key index) wins. -inf entries (masked keys) rank last among themselves
// by position, so they are never kept ahead of a finite score.
__device__ __forceinline__ int nm_beats(float v, int pv, float a, int pa) { return (v > a) || (v == a && pv < pa); }

template <int kN, int kM, bool kKeysAreColumns, int kN8>
__device__ __forceinline__ void nm_select(float* s) {
  static_assert((kN == 1 && kM == 2) || (kN == 2 && kM == 4), "1:2 or 2:4");
  if constexpr (kKeysAreColumns) {
    static_assert(kM == 2, "2:4 along columns: nm_select_columns (permuted keys)");
#pragma unroll
    for (int j = 0; j < kN8; ++j)
#pragma unroll
      for (int ri = 0; ri < 2; ++ri) {
        float& a = s[4 * j + 2 * ri];
        float& b = s[4 * j + 2 * ri + 1];
        if (a >= b) b = -INFINITY; else a = -INFINITY;
      }
  } else {
    const int lane = threadIdx.x & 31;
    const int gi = (lane >> 2) & (kM - 1);  // this thread's row (key) within its group
#pragma unroll
    for (int i = 0; i < kN8 * 4; ++i) {
      float& a = s[i];
      if constexpr (kM == 2) {
        const float b = __shfl_xor_sync(0xffffffff, a, 4);
        if (nm_beats(b, gi ^ 1, a, gi)) a = -INFINITY;
      } else {
        const float x4 = __shfl_xor_sync(0xffffffff, a, 4);
        const float x8 = __shfl_xor_sync(0xffffffff, a, 8);
        const float x12 = __shfl_xor_sync(0xffffffff, a, 12);
        const int rank = nm_beats(x4, gi ^ 1, a, gi) + nm_beats(x8, gi ^ 2, a, gi) + nm_beats(x12, gi ^ 3, a, gi);
        if (rank >= 2) a = -INFINITY;
      }
    }
  }
}

// The key (offset within the step) that score column c holds: for 2:4 the bits of c = 16J+8h+2t+i
// are moved to key 16J+4t+2h+i; 1:2 and block-sparse steps keep keys in order.
template <int kNM>
__host__ __device__ __forceinline__ constexpr int nm_column_key(int c) {
  if constexpr (kNM == 24) return (c & ~15) | ((c & 6) << 1) | ((c >> 2) & 2) | (c & 1);
  else return c;
}

// N:M selection along columns (forward, dQ); for 2:4 the columns must hold keys by nm_column_key.
template <int kNM, int kN8>
__device__ __forceinline__ void nm_select_columns(float* s) {
  if constexpr (kNM == 12) {
    nm_select<1, 2, true, kN8>(s);
  } else if constexpr (kNM == 24) {
    static_assert(kN8 % 2 == 0, "2:4 quads span two 8-column blocks");
#pragma unroll
    for (int j = 0; j < kN8; j += 2)
#pragma unroll
      for (int ri = 0; ri < 2; ++ri) {
        float& a0 = s[4 * j + 2 * ri];
        float& a1 = s[4 * j + 2 * ri + 1];
        float& a2 = s[4 * j + 4 + 2 * ri];
        float& a3 = s[4 * j + 5 + 2 * ri];
        // cXY (X < Y): key Y ranks ahead of key X (strictly larger; a tie goes to the lower key).
        const bool c01 = a1 > a0, c02 = a2 > a0, c03 = a3 > a0, c12 = a2 > a1, c13 = a3 > a1, c23 = a3 > a2;
        // A key is dropped when at least two of the other three rank ahead of it.
        const bool d0 = (c01 && c02) || (c01 && c03) || (c02 && c03);
        const bool d1 = (!c01 && c12) || (!c01 && c13) || (c12 && c13);
        const bool d2 = (!c02 && !c12) || (!c02 && c23) || (!c12 && c23);
        const bool d3 = (!c03 && !c13) || (!c03 && !c23) || (!c13 && !c23);
        if (d0) a0 = -INFINITY;
        if (d1) a1 = -INFINITY;
        if (d2) a2 = -INFINITY;
        if (d3) a3 = -INFINITY;
      }
  }
}

}  // namespace ds::bsa
