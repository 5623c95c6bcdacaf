// A random number generator that draws exactly what CPython's random.Random(seed) draws: MT19937
// seeded with init_by_array over the 32-bit words of |seed|, random() from two 32-bit outputs
// (53 bits), randint/randrange by rejection on getrandbits(bit_length(n)), and shuffle as
// CPython's Fisher-Yates from the back. Google's create_pretraining_data runs on
// random.Random(FLAGS.random_seed); drawing the same numbers in the same order makes bert_prep's
// instances identical to Google's for the same text, vocabulary and flags.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace ds::bert {

class PyRandom {
 public:
  explicit PyRandom(uint64_t seed);

  uint32_t next_u32();                 // genrand_uint32
  double random();                     // random.random(): [0, 1), 53 bits
  uint64_t getrandbits(int k);         // random.getrandbits(k), 1 <= k <= 64
  uint64_t randbelow(uint64_t n);      // random._randbelow(n), n >= 1
  int64_t randint(int64_t a, int64_t b);  // random.randint(a, b), a <= b

  template <typename T>
  void shuffle(std::vector<T>& x) {
    for (std::size_t i = x.size(); i-- > 1;) {
      const std::size_t j = static_cast<std::size_t>(randbelow(i + 1));
      std::swap(x[i], x[j]);
    }
  }

 private:
  static constexpr int kN = 624;
  std::array<uint32_t, kN> mt_{};
  int mti_ = kN + 1;
};

}  // namespace ds::bert
