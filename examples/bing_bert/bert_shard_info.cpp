// bert_shard_info: checks NVIDIA-format shards with the trainer's reader and prints what they
// hold; with --vocab, also range-checks the ids and shows the first instances as text.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "examples/bing_bert/data/shard_io.h"
#include "examples/bing_bert/data/tokenizer.h"

using namespace ds::bert;

namespace {

void show(const PretrainingShard& s, int64_t i, const Vocab& v) {
  std::string text;
  for (int64_t j = 0; j < s.seq_length && s.input_mask_row(i)[j]; ++j) {
    const int32_t label = s.masked_lm_labels_row(i)[j];
    text += j ? " " : "";
    text += v.token(s.input_ids_row(i)[j]);
    if (label >= 0) text += "{" + v.token(label) + "}";
  }
  std::cout << "  [" << i << "] next_sentence_label " << s.next_sentence_labels[static_cast<size_t>(i)] << ": "
            << text << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bert_shard_info: validate and summarise NVIDIA-format BERT pretraining shards"};
  std::vector<std::string> shards;
  std::string vocab_path;
  int show_n = 2;
  app.add_option("shards", shards, "HDF5 shard files")->required();
  app.add_option("--vocab", vocab_path, "vocab.txt or .json: range-check ids and show instances as text");
  app.add_option("--show", show_n, "Instances to show per shard (with --vocab)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    std::unique_ptr<Vocab> vocab;
    if (!vocab_path.empty()) vocab = std::make_unique<Vocab>(Vocab::load(vocab_path));
    for (const auto& path : shards) {
      ShardReadOptions opt;
      if (vocab) opt.vocab_size = vocab->size();
      const PretrainingShard s = read_pretraining_shard(path, opt);
      int64_t tokens = 0, masked = 0, random_next = 0;
      for (int32_t m : s.input_mask) tokens += m;
      for (int64_t i = 0; i < s.num_instances; ++i) masked += s.num_masked(i);
      for (int32_t l : s.next_sentence_labels) random_next += l;
      const double n = static_cast<double>(std::max<int64_t>(s.num_instances, 1));
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "%s: %lld instances, seq %lld, max_predictions %lld, %.1f tokens and %.2f masked per "
                    "instance, %.1f%% random next\n",
                    path.c_str(), static_cast<long long>(s.num_instances), static_cast<long long>(s.seq_length),
                    static_cast<long long>(s.max_predictions), static_cast<double>(tokens) / n,
                    static_cast<double>(masked) / n, 100.0 * static_cast<double>(random_next) / n);
      std::cout << buf;
      if (vocab) {
        for (int64_t i = 0; i < std::min<int64_t>(show_n, s.num_instances); ++i) show(s, i, *vocab);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "bert_shard_info: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
