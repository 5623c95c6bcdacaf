// Helpers of the bing_bert model and trainer tests: temporary folders, small model configs,
// synthetic shards and batches.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

#include "examples/bing_bert/data/shard_io.h"
#include "examples/bing_bert/model/bert_model.h"
#include "ops/common/fs_util.h"

namespace ds::bert::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bert_test_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    ds::remove_tree(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

// Awkward sizes: vocabulary 37 (padded to 40), head size 40, intermediate 72.
inline BertConfig tiny_config(double dropout = 0.0) {
  BertConfig c;
  c.vocab_size = 37;
  c.hidden_size = 80;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 72;
  c.hidden_dropout_prob = dropout;
  c.attention_probs_dropout_prob = dropout;
  c.max_position_embeddings = 64;
  c.initializer_range = 0.2;  // larger than BERT's 0.02 so every path moves the loss visibly
  return c;
}

// A batch of B sequences of S tokens: the last rows padded, a few masked positions per row (at
// least one), random NSP labels.
inline PretrainingBatch random_batch(int64_t B, int64_t S, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto ids = torch::zeros({B, S}, torch::kLong), mask = torch::zeros({B, S}, torch::kLong);
  auto seg = torch::zeros({B, S}, torch::kLong), labels = torch::full({B, S}, -1, torch::kLong);
  auto nsp = torch::zeros({B}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = b == 0 ? S : std::max<int64_t>(3, S - static_cast<int64_t>(rng() % static_cast<uint64_t>(S / 2)));
    for (int64_t j = 0; j < len; ++j) {
      ids[b][j] = static_cast<int64_t>(rng() % static_cast<uint64_t>(vocab));
      mask[b][j] = 1;
      seg[b][j] = j >= len / 2 ? 1 : 0;
    }
    for (int64_t j = 1; j < len; j += 3 + static_cast<int64_t>(rng() % 3)) {
      labels[b][j] = static_cast<int64_t>(rng() % static_cast<uint64_t>(vocab));
    }
    nsp[b] = static_cast<int64_t>(rng() % 2);
  }
  return {ids, mask, seg, labels, nsp};
}

// A shard of n instances whose tokens follow a skewed (learnable) distribution over [5, vocab):
// [CLS]=1 A [SEP]=2 B [SEP], 1..max_pred masked positions replaced by [MASK]=3.
inline PretrainingShard synthetic_shard(int64_t n, int64_t seq, int64_t max_pred, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  PretrainingShard s;
  s.num_instances = n;
  s.seq_length = seq;
  s.max_predictions = max_pred;
  s.input_ids.assign(static_cast<size_t>(n * seq), 0);
  s.input_mask.assign(static_cast<size_t>(n * seq), 0);
  s.segment_ids.assign(static_cast<size_t>(n * seq), 0);
  s.masked_lm_positions.assign(static_cast<size_t>(n * max_pred), 0);
  s.masked_lm_ids.assign(static_cast<size_t>(n * max_pred), 0);
  s.next_sentence_labels.assign(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = seq / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(seq / 2 + 1));
    const int64_t sep = len / 2;
    for (int64_t j = 0; j < len; ++j) {
      int32_t id = 5 + static_cast<int32_t>(static_cast<double>(vocab - 5) * std::pow(u(rng), 3.0));
      if (j == 0) id = 1;
      if (j == sep || j == len - 1) id = 2;
      s.input_ids[static_cast<size_t>(i * seq + j)] = id;
      s.input_mask[static_cast<size_t>(i * seq + j)] = 1;
      s.segment_ids[static_cast<size_t>(i * seq + j)] = j > sep ? 1 : 0;
    }
    const int64_t k = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(max_pred));
    int64_t pos = 1;
    for (int64_t p = 0; p < k && pos < len - 1; ++p, pos += 1 + static_cast<int64_t>(rng() % 3)) {
      if (pos == sep) ++pos;
      if (pos >= len - 1) break;
      s.masked_lm_positions[static_cast<size_t>(i * max_pred + p)] = static_cast<int32_t>(pos);
      s.masked_lm_ids[static_cast<size_t>(i * max_pred + p)] = s.input_ids[static_cast<size_t>(i * seq + pos)];
      s.input_ids[static_cast<size_t>(i * seq + pos)] = 3;
    }
    s.next_sentence_labels[static_cast<size_t>(i)] = static_cast<int32_t>(rng() % 2);
  }
  return s;
}

}  // namespace ds::bert::test
