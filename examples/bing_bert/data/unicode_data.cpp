#include "examples/bing_bert/data/unicode_data.h"

#include <algorithm>
#include <array>
#include <iterator>

namespace ds::bert::unicode {
namespace {

struct FlagRange {
  uint32_t first, last;
  uint8_t flags;
};
struct LowerRun {
  uint32_t first, last;
  int32_t delta, stride;
};
struct SingleMap {
  uint32_t from, to;
};
struct MultiMap {
  uint32_t from;
  int count;
  char32_t to[3];
};

#include "examples/bing_bert/data/unicode_tables.inc"

// ASCII and Latin-1 cover nearly every character of English text: one array lookup for them.
constexpr uint32_t kFastLimit = 0x100;
const std::array<uint8_t, kFastLimit>& fast_flags() {
  static const std::array<uint8_t, kFastLimit> table = [] {
    std::array<uint8_t, kFastLimit> t{};
    for (const FlagRange& r : kFlagRanges) {
      for (uint32_t cp = r.first; cp <= r.last && cp < kFastLimit; ++cp) t[cp] = r.flags;
    }
    return t;
  }();
  return table;
}

constexpr char32_t kCapitalSigma = 0x3A3, kSmallSigma = 0x3C3, kFinalSigma = 0x3C2;

// CPython's handle_capital_sigma: final when the nearest preceding non-case-ignorable code point
// is cased and the nearest following one is not (or there is none).
bool sigma_is_final(const std::u32string& s, size_t i) {
  size_t j = i;
  while (j > 0 && (flags(s[j - 1]) & kCaseIgnorable)) --j;
  if (j == 0 || !(flags(s[j - 1]) & kCased)) return false;
  size_t k = i + 1;
  while (k < s.size() && (flags(s[k]) & kCaseIgnorable)) ++k;
  return k == s.size() || !(flags(s[k]) & kCased);
}

void append_lower(char32_t cp, std::u32string& out) {
  if (cp < 0x80) {
    out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  auto multi = std::find_if(std::begin(kLowerMulti), std::end(kLowerMulti),
                            [cp](const MultiMap& m) { return m.from == cp; });
  if (multi != std::end(kLowerMulti)) {
    out.append(multi->to, multi->count);
    return;
  }
  auto run = std::upper_bound(std::begin(kLowerRuns), std::end(kLowerRuns), static_cast<uint32_t>(cp),
                              [](uint32_t c, const LowerRun& r) { return c < r.first; });
  if (run != std::begin(kLowerRuns)) {
    --run;
    if (cp <= run->last && (cp - run->first) % run->stride == 0) {
      out.push_back(static_cast<char32_t>(static_cast<int64_t>(cp) + run->delta));
      return;
    }
  }
  out.push_back(cp);
}

// Hangul syllables decompose algorithmically (Unicode 3.12); none of the jamo is Mn.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = 11172;

void append_stripped(char32_t cp, std::u32string& out) {
  if (cp < 0xC0) {  // nothing below U+00C0 decomposes, and no Mn is there
    out.push_back(cp);
    return;
  }
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const int s = static_cast<int>(cp - kSBase);
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (flags(cp) & kMn) return;
  auto single = std::lower_bound(std::begin(kStripSingle), std::end(kStripSingle), static_cast<uint32_t>(cp),
                                 [](const SingleMap& m, uint32_t c) { return m.from < c; });
  if (single != std::end(kStripSingle) && single->from == cp) {
    out.push_back(single->to);
    return;
  }
  auto multi = std::lower_bound(std::begin(kStripMulti), std::end(kStripMulti), static_cast<uint32_t>(cp),
                                [](const MultiMap& m, uint32_t c) { return m.from < c; });
  if (multi != std::end(kStripMulti) && multi->from == cp) {
    out.append(multi->to, multi->count);
    return;
  }
  out.push_back(cp);
}

}  // namespace

uint8_t flags(char32_t cp) {
  if (cp < kFastLimit) return fast_flags()[cp];
  auto it = std::upper_bound(std::begin(kFlagRanges), std::end(kFlagRanges), static_cast<uint32_t>(cp),
                             [](uint32_t c, const FlagRange& r) { return c < r.first; });
  if (it == std::begin(kFlagRanges)) return 0;
  --it;
  return cp <= it->last ? it->flags : 0;
}

bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) ||
         (cp >= 0x2B820 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

std::u32string to_lower(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == kCapitalSigma) {
      out.push_back(sigma_is_final(s, i) ? kFinalSigma : kSmallSigma);
    } else {
      append_lower(s[i], out);
    }
  }
  return out;
}

std::u32string strip_accents(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t cp : s) append_stripped(cp, out);
  return out;
}

const char* table_version() { return kUnicodeVersion; }

}  // namespace ds::bert::unicode
