#include "examples/bing_bert/data/pretraining_data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "examples/bing_bert/data/unicode_data.h"
#include "examples/bing_bert/data/utf8.h"

namespace ds::bert {
namespace fs = std::filesystem;

namespace {

bool is_blank(const std::u32string& line) {
  return std::all_of(line.begin(), line.end(), [](char32_t c) { return unicode::is_py_space(c); });
}

// A token list that loses tokens from either end (truncate_seq_pair) without moving the rest.
struct Span {
  std::vector<int32_t> v;
  size_t begin = 0;
  size_t size() const { return v.size() - begin; }
};

void truncate_seq_pair(Span& a, Span& b, int64_t max_num_tokens, PyRandom& rng) {
  while (static_cast<int64_t>(a.size() + b.size()) > max_num_tokens) {
    Span& t = a.size() > b.size() ? a : b;
    if (rng.random() < 0.5) {
      ++t.begin;
    } else {
      t.v.pop_back();
    }
  }
}

void mask_tokens(TrainingInstance& inst, const Vocab& vocab, const PretrainingOptions& o, PyRandom& rng,
                 InstanceStats& st) {
  const std::vector<int32_t> tokens = inst.input_ids;  // the originals; inst.input_ids gets masked
  std::vector<std::vector<int32_t>> cand;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == vocab.cls_id() || tokens[i] == vocab.sep_id()) continue;
    if (o.do_whole_word_mask && !cand.empty() && vocab.is_continuation(tokens[i])) {
      cand.back().push_back(static_cast<int32_t>(i));
    } else {
      cand.push_back({static_cast<int32_t>(i)});
    }
  }
  rng.shuffle(cand);

  // Python's round() rounds half to even, as nearbyint does in the default rounding mode.
  const int64_t rounded = static_cast<int64_t>(std::nearbyint(static_cast<double>(tokens.size()) * o.masked_lm_prob));
  const int64_t num_to_predict = std::min<int64_t>(o.max_predictions_per_seq, std::max<int64_t>(1, rounded));

  const std::vector<int32_t>& words = vocab.distinct_ids();
  std::vector<bool> covered(tokens.size(), false);
  std::vector<int32_t> masked;
  for (const auto& index_set : cand) {
    if (static_cast<int64_t>(masked.size()) >= num_to_predict) break;
    if (static_cast<int64_t>(masked.size() + index_set.size()) > num_to_predict) continue;
    if (std::any_of(index_set.begin(), index_set.end(), [&](int32_t i) { return covered[i]; })) continue;
    for (int32_t index : index_set) {
      covered[index] = true;
      if (rng.random() < 0.8) {
        inst.input_ids[index] = vocab.mask_id();
        ++st.masked_to_mask;
      } else if (rng.random() < 0.5) {
        ++st.masked_kept;
      } else {
        inst.input_ids[index] = words[static_cast<size_t>(rng.randint(0, static_cast<int64_t>(words.size()) - 1))];
        ++st.masked_random;
      }
      masked.push_back(index);
    }
  }
  std::sort(masked.begin(), masked.end());
  inst.masked_lm_positions = masked;
  inst.masked_lm_ids.clear();
  for (int32_t p : masked) inst.masked_lm_ids.push_back(tokens[p]);
  st.masked += static_cast<int64_t>(masked.size());
}

}  // namespace

void InstanceStats::add(const InstanceStats& o) {
  instances += o.instances, random_next += o.random_next, tokens += o.tokens, candidates += o.candidates;
  masked += o.masked, masked_to_mask += o.masked_to_mask, masked_kept += o.masked_kept;
  masked_random += o.masked_random;
}

void append_documents(std::string_view text, const BertTokenizer& tokenizer, std::vector<Document>& docs,
                      CorpusStats* stats) {
  CorpusStats local;
  CorpusStats& st = stats ? *stats : local;
  const size_t first_doc = docs.size();
  docs.emplace_back();
  const int32_t unk = tokenizer.vocab().unk_id();
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    size_t invalid = 0;
    // Google decodes with errors="ignore" and then strips: a line of only bad bytes is blank.
    const std::u32string line = utf8::decode(text.substr(pos, nl - pos), &invalid, /*drop_invalid=*/true);
    pos = nl + 1;
    ++st.lines;
    st.invalid_utf8 += static_cast<int64_t>(invalid);
    if (is_blank(line)) {
      if (!docs.back().empty()) docs.emplace_back();
      continue;
    }
    Sentence s;
    tokenizer.encode(line, s);
    if (s.empty()) continue;
    st.tokens += static_cast<int64_t>(s.size());
    st.unknown_tokens += std::count(s.begin(), s.end(), unk);
    ++st.sentences;
    docs.back().push_back(std::move(s));
  }
  if (docs.back().empty()) docs.pop_back();
  st.documents += static_cast<int64_t>(docs.size() - first_doc);
}

std::vector<std::string> expand_input_paths(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    const fs::file_status status = fs::status(in, ec);
    if (ec || !fs::exists(status)) {
      throw std::runtime_error("--input '" + in + "' does not exist");
    }
    if (fs::is_directory(status)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(in, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) found.push_back(it->path().string());
      }
      if (ec) throw std::runtime_error("cannot list --input directory '" + in + "': " + ec.message());
      if (found.empty()) throw std::runtime_error("--input directory '" + in + "' holds no files");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(in);
    }
  }
  return files;
}

std::vector<Document> read_documents(const std::vector<std::string>& files, const BertTokenizer& tokenizer,
                                     CorpusStats* stats) {
  std::vector<Document> docs;
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open input text file '" + path + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw std::runtime_error("cannot read input text file '" + path + "'");
    append_documents(ss.str(), tokenizer, docs, stats);
    if (stats) ++stats->files;
  }
  return docs;
}

void PretrainingOptions::validate() const {
  auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
  if (max_seq_length < 5) {
    fail("--max_seq_length must be >= 5 ([CLS] A [SEP] B [SEP] with 2 tokens of text), got " +
         std::to_string(max_seq_length));
  }
  if (max_predictions_per_seq < 1) {
    fail("--max_predictions_per_seq must be >= 1, got " + std::to_string(max_predictions_per_seq));
  }
  if (!(masked_lm_prob > 0.0 && masked_lm_prob <= 1.0)) {
    fail("--masked_lm_prob must be in (0, 1], got " + std::to_string(masked_lm_prob));
  }
  if (dupe_factor < 1) fail("--dupe_factor must be >= 1, got " + std::to_string(dupe_factor));
  if (!(short_seq_prob >= 0.0 && short_seq_prob <= 1.0)) {
    fail("--short_seq_prob must be in [0, 1], got " + std::to_string(short_seq_prob));
  }
}

void create_instances_from_document(const std::vector<Document>& docs, size_t doc_index, const Vocab& vocab,
                                    const PretrainingOptions& o, PyRandom& rng, std::vector<TrainingInstance>& out,
                                    InstanceStats* stats) {
  InstanceStats local;
  InstanceStats& st = stats ? *stats : local;
  const Document& document = docs[doc_index];
  const int64_t max_num_tokens = o.max_seq_length - 3;  // [CLS], [SEP], [SEP]
  int64_t target_seq_length = max_num_tokens;
  if (rng.random() < o.short_seq_prob) target_seq_length = rng.randint(2, max_num_tokens);

  std::vector<const Sentence*> chunk;
  int64_t current_length = 0;
  const int64_t n = static_cast<int64_t>(document.size());
  int64_t i = 0;
  while (i < n) {
    chunk.push_back(&document[static_cast<size_t>(i)]);
    current_length += static_cast<int64_t>(document[static_cast<size_t>(i)].size());
    if (i == n - 1 || current_length >= target_seq_length) {
      // `chunk` is never empty here: a sentence was just added.
      const int64_t chunk_size = static_cast<int64_t>(chunk.size());
      const int64_t a_end = chunk_size >= 2 ? rng.randint(1, chunk_size - 1) : 1;
      Span a, b;
      for (int64_t j = 0; j < a_end; ++j) a.v.insert(a.v.end(), chunk[j]->begin(), chunk[j]->end());

      bool is_random_next = false;
      if (chunk_size == 1 || rng.random() < 0.5) {
        is_random_next = true;
        const int64_t target_b_length = target_seq_length - static_cast<int64_t>(a.size());
        // Up to 10 draws for a document other than this one (with one document: this one).
        int64_t random_index = 0;
        for (int attempt = 0; attempt < 10; ++attempt) {
          random_index = rng.randint(0, static_cast<int64_t>(docs.size()) - 1);
          if (random_index != static_cast<int64_t>(doc_index)) break;
        }
        const Document& random_doc = docs[static_cast<size_t>(random_index)];
        const int64_t random_start = rng.randint(0, static_cast<int64_t>(random_doc.size()) - 1);
        for (size_t j = static_cast<size_t>(random_start); j < random_doc.size(); ++j) {
          b.v.insert(b.v.end(), random_doc[j].begin(), random_doc[j].end());
          if (static_cast<int64_t>(b.size()) >= target_b_length) break;
        }
        i -= chunk_size - a_end;  // the unused sentences go back, so they are not wasted
      } else {
        for (int64_t j = a_end; j < chunk_size; ++j) b.v.insert(b.v.end(), chunk[j]->begin(), chunk[j]->end());
      }
      truncate_seq_pair(a, b, max_num_tokens, rng);

      TrainingInstance inst;
      inst.input_ids.reserve(a.size() + b.size() + 3);
      inst.input_ids.push_back(vocab.cls_id());
      inst.input_ids.insert(inst.input_ids.end(), a.v.begin() + static_cast<std::ptrdiff_t>(a.begin), a.v.end());
      inst.input_ids.push_back(vocab.sep_id());
      inst.segment_a_length = static_cast<int32_t>(inst.input_ids.size());
      inst.input_ids.insert(inst.input_ids.end(), b.v.begin() + static_cast<std::ptrdiff_t>(b.begin), b.v.end());
      inst.input_ids.push_back(vocab.sep_id());
      inst.is_random_next = is_random_next;
      mask_tokens(inst, vocab, o, rng, st);

      ++st.instances;
      st.random_next += is_random_next ? 1 : 0;
      st.tokens += static_cast<int64_t>(inst.input_ids.size());
      st.candidates += static_cast<int64_t>(inst.input_ids.size()) - 3;
      out.push_back(std::move(inst));
      chunk.clear();
      current_length = 0;
    }
    ++i;
  }
}

std::vector<TrainingInstance> create_instances(const std::vector<Document>& docs, const Vocab& vocab,
                                               const PretrainingOptions& options, PyRandom& rng,
                                               InstanceStats* stats) {
  options.validate();
  std::vector<TrainingInstance> instances;
  for (int pass = 0; pass < options.dupe_factor; ++pass) {
    for (size_t d = 0; d < docs.size(); ++d) {
      create_instances_from_document(docs, d, vocab, options, rng, instances, stats);
    }
  }
  rng.shuffle(instances);
  return instances;
}

PretrainingData create_pretraining_data(std::vector<Document> docs, const Vocab& vocab,
                                        const PretrainingOptions& options, const SplitOptions& split) {
  options.validate();
  if (!(split.validation_fraction >= 0.0 && split.validation_fraction < 1.0)) {
    throw std::invalid_argument("--validation_fraction must be in [0, 1), got " +
                                std::to_string(split.validation_fraction));
  }
  if (split.validation_dupe_factor < 1) {
    throw std::invalid_argument("--validation_dupe_factor must be >= 1, got " +
                                std::to_string(split.validation_dupe_factor));
  }
  if (docs.empty()) throw std::invalid_argument("the input holds no text: no documents to make instances from");

  PyRandom rng(split.random_seed);
  rng.shuffle(docs);

  int64_t n_val = 0;
  if (split.validation_fraction > 0.0) {
    if (docs.size() < 2) {
      throw std::invalid_argument("--validation_fraction " + std::to_string(split.validation_fraction) +
                                  " needs at least 2 documents, the input has " + std::to_string(docs.size()));
    }
    n_val = static_cast<int64_t>(std::llround(split.validation_fraction * static_cast<double>(docs.size())));
    n_val = std::clamp<int64_t>(n_val, 1, static_cast<int64_t>(docs.size()) - 1);
  }
  std::vector<Document> val_docs(std::make_move_iterator(docs.begin()),
                                 std::make_move_iterator(docs.begin() + n_val));
  docs.erase(docs.begin(), docs.begin() + n_val);

  PretrainingData data;
  data.training_documents = static_cast<int64_t>(docs.size());
  data.validation_documents = n_val;
  data.training = create_instances(docs, vocab, options, rng, &data.training_stats);
  if (n_val > 0) {
    PyRandom val_rng(split.random_seed + 1);
    PretrainingOptions val_options = options;
    val_options.dupe_factor = split.validation_dupe_factor;
    data.validation = create_instances(val_docs, vocab, val_options, val_rng, &data.validation_stats);
  }
  return data;
}

}  // namespace ds::bert
