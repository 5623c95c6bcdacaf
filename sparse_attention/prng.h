// A small, fully specified pseudo-random generator for the random blocks of sparsity layouts.
//
// Why our own: every rank must build the same layout from the same seed without communication, on
// any platform and standard library. std::uniform_int_distribution's output is
// implementation-defined (libstdc++ and libc++ differ), and Python's `random` (DeepSpeed's source of
// random blocks) is a process-global state. splitmix64 (seeding) + xoshiro256** (stream) and a
// rejection-sampled bounded draw depend only on 64-bit unsigned arithmetic, so a seed gives the same
// layout everywhere.
#pragma once

#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace ds {

// splitmix64 step (Steele, Lea, Flood 2014): advances state, returns a well-mixed value.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256** 1.0 (Blackman, Vigna 2018).
class Xoshiro256 {
 public:
  // `stream` separates independent sequences from one seed (we use the head index).
  explicit Xoshiro256(uint64_t seed, uint64_t stream = 0) {
    uint64_t sm = seed ^ splitmix64(stream);
    for (auto& w : s_) w = splitmix64(sm);
  }

  // A generator in a given raw state (for checking against the published reference outputs).
  static Xoshiro256 from_state(uint64_t s0, uint64_t s1, uint64_t s2, uint64_t s3) {
    Xoshiro256 g(0);
    g.s_[0] = s0;
    g.s_[1] = s1;
    g.s_[2] = s2;
    g.s_[3] = s3;
    return g;
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, n), n > 0, without modulo bias: reject the top partial range of 2^64.
  uint64_t below(uint64_t n) {
    if (n == 0) throw std::invalid_argument("Xoshiro256::below: n must be > 0");
    const uint64_t threshold = (0 - n) % n;  // = 2^64 mod n
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

  // k distinct values of [0, n) (k <= n), in draw order: a partial Fisher-Yates shuffle.
  std::vector<int64_t> sample(int64_t n, int64_t k) {
    if (k < 0 || k > n) throw std::invalid_argument("Xoshiro256::sample: need 0 <= k <= n");
    std::vector<int64_t> pool(static_cast<size_t>(n));
    std::iota(pool.begin(), pool.end(), int64_t{0});
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = i + static_cast<int64_t>(below(static_cast<uint64_t>(n - i)));
      std::swap(pool[i], pool[j]);
    }
    pool.resize(static_cast<size_t>(k));
    return pool;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace ds
