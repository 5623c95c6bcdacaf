// Dynamic N:M selection on score fragments in registers (DFSS, 1:2 and 2:4): in every group of M
// consecutive keys of a query row keep the N largest scores (ties -> lower key index), set the rest
// to -inf. Applied to the accumulator fragments of the attention kernels (mma.sync C layout, also the
// wgmma accumulator layout per warp): element 4j + e of a thread is row g (e < 2) or g + 8 (e >= 2),
// column 8j + 2t + (e & 1), with g = lane / 4, t = lane % 4.
//
//   kKeysAreColumns (forward, dQ): groups run along columns. A 1:2 pair is the thread's own (e, e+1);
//     a 2:4 quad is columns 8j + 4h .. +3, held by lanes t = 2h, 2h+1: one shuffle (lane ^ 1).
//   keys are rows (dK/dV, transposed scores): groups run along rows g. A pair is lanes g, g^1
//     (lane ^ 4); a quad rows 4a..4a+3: lanes ^ 4, ^ 8, ^ 12.
// Every thread of the warp must call these (shuffles).
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
  const int lane = threadIdx.x & 31;
  if constexpr (kKeysAreColumns) {
    if constexpr (kM == 2) {
#pragma unroll
      for (int j = 0; j < kN8; ++j)
#pragma unroll
        for (int ri = 0; ri < 2; ++ri) {
          float& a = s[4 * j + 2 * ri];
          float& b = s[4 * j + 2 * ri + 1];
          if (a >= b) b = -INFINITY; else a = -INFINITY;
        }
    } else {
      // This thread holds quad positions p0 = 2*hi, p0 + 1; its partner (lane ^ 1) the other two.
      const int p0 = 2 * (lane & 1), q0 = 2 - p0;
#pragma unroll
      for (int j = 0; j < kN8; ++j)
#pragma unroll
        for (int ri = 0; ri < 2; ++ri) {
          float& a0 = s[4 * j + 2 * ri];
          float& a1 = s[4 * j + 2 * ri + 1];
          const float b0 = __shfl_xor_sync(0xffffffff, a0, 1);
          const float b1 = __shfl_xor_sync(0xffffffff, a1, 1);
          const int r0 = nm_beats(a1, p0 + 1, a0, p0) + nm_beats(b0, q0, a0, p0) + nm_beats(b1, q0 + 1, a0, p0);
          const int r1 = nm_beats(a0, p0, a1, p0 + 1) + nm_beats(b0, q0, a1, p0 + 1) + nm_beats(b1, q0 + 1, a1, p0 + 1);
          if (r0 >= 2) a0 = -INFINITY;
          if (r1 >= 2) a1 = -INFINITY;
        }
    }
  } else {
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

}  // namespace ds::bsa
