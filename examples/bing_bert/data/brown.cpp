#include "examples/bing_bert/data/brown.h"

namespace ds::bert {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

bool attaches_left(const std::string& w) {
  return w == "," || w == "." || w == ";" || w == ":" || w == "!" || w == "?" || w == ")" || w == "]" ||
         w == "''" || w == "%";
}

bool attaches_right(const std::string& w) { return w == "``" || w == "(" || w == "[" || w == "$"; }

}  // namespace

std::vector<std::string> brown_words(std::string_view line) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    size_t j = i;
    while (j < line.size() && !is_space(line[j])) ++j;
    if (j == i) break;
    std::string_view token = line.substr(i, j - i);
    const size_t slash = token.rfind('/');
    // "word/tag": the tag is never empty; a token ending in '/' is not tagged.
    if (slash != std::string_view::npos && slash > 0 && slash + 1 < token.size()) token = token.substr(0, slash);
    words.emplace_back(token);
    i = j;
  }
  return words;
}

std::string brown_detokenize(const std::vector<std::string>& words) {
  std::string out;
  bool glue_next = true;  // no space before the first word
  for (const auto& w : words) {
    // "Jr./np ./." : the sentence's full stop is already there.
    if (w == "." && !out.empty() && out.back() == '.') continue;
    const std::string text = (w == "``" || w == "''") ? "\"" : w;
    if (!glue_next && !attaches_left(w)) out.push_back(' ');
    out += text;
    glue_next = attaches_right(w);
  }
  return out;
}

std::string brown_to_text(std::string_view file) {
  std::string out;
  size_t pos = 0;
  while (pos < file.size()) {
    size_t nl = file.find('\n', pos);
    if (nl == std::string_view::npos) nl = file.size();
    const std::vector<std::string> words = brown_words(file.substr(pos, nl - pos));
    pos = nl + 1;
    if (words.empty()) continue;
    out += brown_detokenize(words);
    out.push_back('\n');
  }
  return out;
}

}  // namespace ds::bert
