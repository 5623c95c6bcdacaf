// UTF-8 <-> code points. Decoding never fails: each maximal invalid subsequence (stray
// continuation byte, truncated sequence, overlong form, surrogate, value above U+10FFFF) becomes
// one U+FFFD, as Python's bytes.decode("utf-8", "replace") does. BERT's text cleaning then drops
// U+FFFD, so the tokens equal those of Google's decode(..., "ignore").
#pragma once

#include <string>
#include <string_view>

namespace ds::bert::utf8 {

constexpr char32_t kReplacement = 0xFFFD;

// Decodes `bytes`; `invalid` (if given) receives the number of invalid subsequences. They become
// U+FFFD, or nothing with `drop_invalid` (Python's "ignore", which Google's text reader uses).
std::u32string decode(std::string_view bytes, size_t* invalid = nullptr, bool drop_invalid = false);

void append(char32_t cp, std::string& out);
std::string encode(const std::u32string& s);
std::string encode(const char32_t* begin, const char32_t* end);

}  // namespace ds::bert::utf8
