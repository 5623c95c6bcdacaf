// Counter-based random numbers for dropout: Philox4x32-10 (Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3", SC'11), written from the paper's round function.
//
// Contract shared by the CPU reference and the CUDA kernels (one header, compiled by both):
//  - key     = (low, high) 32-bit halves of the 64-bit seed;
//  - counter = (low, high) halves of (element index / 4), then (low, high) halves of the 64-bit
//              stream offset; element i takes 32-bit lane (i % 4) of that block.
//  - uniform(u32) = ((u32 >> 8) + 1) * 2^-24, in (0, 1] and exact in float;
//  - an element is KEPT iff uniform > float(ratio) (DeepSpeed's rule, dropout_kernels.cu), kept
//    values are scaled by 1 / (1 - ratio).
// So any code that knows (seed, offset, element index) regenerates the same keep bit, on any
// device, in any order: recomputation in backward and GPU-vs-CPU comparisons need no stored RNG
// state. Unlike PyTorch's Philox offset (a count of draws consumed per thread) our offset names a
// stream: each dropout site of each call gets its own offset.
//
// Masks are bit-packed: byte k holds elements 8k..8k+7, bit j = element 8k+j (1 = kept); bits past
// the last element are 0, so equal masks are equal bytes.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DS_PHILOX_HD __host__ __device__ __forceinline__
#else
#define DS_PHILOX_HD inline
#endif

namespace ds::nn {

struct Philox4x32 {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;  // round multipliers from the paper (Table 2)
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // key schedule: golden ratio, sqrt(3) - 1
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

DS_PHILOX_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
#endif
}

DS_PHILOX_HD Philox4x32 philox_round(Philox4x32 c, uint32_t k0, uint32_t k1) {
  uint32_t hi0, lo0, hi1, lo1;
  mulhilo(kMul0, c.v[0], hi0, lo0);
  mulhilo(kMul1, c.v[2], hi1, lo1);
  return Philox4x32{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
}
}  // namespace philox_detail

// The raw generator: 10 rounds of the Philox 4x32 bijection keyed by (k0, k1).
DS_PHILOX_HD Philox4x32 philox4x32_10(Philox4x32 counter, uint32_t k0, uint32_t k1) {
  Philox4x32 c = counter;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += philox_detail::kWeyl0;
      k1 += philox_detail::kWeyl1;
    }
    c = philox_detail::philox_round(c, k0, k1);
  }
  return c;
}

// The four 32-bit draws of elements 4*block .. 4*block+3 of stream (seed, offset).
DS_PHILOX_HD Philox4x32 philox_block(uint64_t seed, uint64_t offset, uint64_t block) {
  const Philox4x32 ctr{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), static_cast<uint32_t>(offset),
                        static_cast<uint32_t>(offset >> 32)}};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// (0, 1]: 24 random bits, so the float is exact and host and device agree bit for bit.
DS_PHILOX_HD float philox_uniform(uint32_t bits) { return static_cast<float>((bits >> 8) + 1u) * (1.0f / 16777216.0f); }

DS_PHILOX_HD bool dropout_keep(uint32_t bits, float ratio) { return philox_uniform(bits) > ratio; }

// Keep bits of elements 8*byte .. 8*byte+7 (bit j = element 8*byte+j), from two Philox blocks.
DS_PHILOX_HD uint8_t dropout_mask_byte(uint64_t seed, uint64_t offset, uint64_t byte, float ratio) {
  const Philox4x32 a = philox_block(seed, offset, 2 * byte);
  const Philox4x32 b = philox_block(seed, offset, 2 * byte + 1);
  uint32_t bits = 0;
  for (int j = 0; j < 4; ++j) {
    bits |= static_cast<uint32_t>(dropout_keep(a.v[j], ratio)) << j;
    bits |= static_cast<uint32_t>(dropout_keep(b.v[j], ratio)) << (j + 4);
  }
  return static_cast<uint8_t>(bits);
}

}  // namespace ds::nn
