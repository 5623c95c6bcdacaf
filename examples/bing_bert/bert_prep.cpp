// bert_prep: raw text -> NVIDIA-format HDF5 pretraining shards (training and held-out
// validation), with Google's create_pretraining_data algorithm. See README.md (Data).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "examples/bing_bert/data/pretraining_data.h"
#include "examples/bing_bert/data/shard_io.h"
#include "examples/bing_bert/data/tokenizer.h"
#include "examples/bing_bert/data/unicode_data.h"

namespace fs = std::filesystem;
using namespace ds::bert;

namespace {

struct Args {
  std::vector<std::string> inputs;
  std::string vocab, output_dir, output_prefix = "bert", save_vocab;
  PretrainingOptions pre;
  int64_t random_seed = 12345;
  int num_shards = 1, num_validation_shards = 1, validation_dupe_factor = 1;
  double validation_fraction = 0.0;
  bool do_lower_case = true;
  int max_chars_per_word = 100;
  int gzip = 1;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string pct(int64_t a, int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", b > 0 ? 100.0 * static_cast<double>(a) / static_cast<double>(b) : 0.0);
  return buf;
}

std::string shard_name(const std::string& prefix, const char* split, int k, int count) {
  const int width = static_cast<int>(std::to_string(std::max(count - 1, 0)).size());
  std::string num = std::to_string(k);
  num.insert(0, static_cast<size_t>(width) - num.size(), '0');
  return prefix + "_" + split + "_shard_" + num + ".hdf5";
}

nlohmann::json stats_json(const InstanceStats& st, int64_t documents) {
  return {{"documents", documents},
          {"instances", st.instances},
          {"tokens", st.tokens},
          {"maskable_tokens", st.candidates},
          {"masked", st.masked},
          {"masked_to_mask_token", st.masked_to_mask},
          {"masked_kept", st.masked_kept},
          {"masked_to_random_word", st.masked_random},
          {"random_next", st.random_next}};
}

void print_split(const char* name, const InstanceStats& st, int64_t documents, int shards, int64_t seq) {
  std::cout << "  " << name << ": " << documents << " documents -> " << st.instances << " instances in " << shards
            << (shards == 1 ? " shard\n" : " shards\n");
  if (st.instances == 0) return;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(st.tokens) / static_cast<double>(st.instances));
  std::cout << "    tokens/instance " << buf << " of " << seq << " (" << pct(st.tokens, st.instances * seq)
            << " filled)\n"
            << "    masked " << st.masked << " = " << pct(st.masked, st.candidates) << " of " << st.candidates
            << " maskable tokens: [MASK] " << pct(st.masked_to_mask, st.masked) << ", kept "
            << pct(st.masked_kept, st.masked) << ", random word " << pct(st.masked_random, st.masked) << "\n"
            << "    next sentence: " << pct(st.random_next, st.instances) << " random next (label 1), "
            << pct(st.instances - st.random_next, st.instances) << " actual next (label 0)\n";
}

// <prefix>_(training|validation)_shard_<digits>.hdf5
bool is_our_shard_name(const std::string& name, const std::string& prefix) {
  for (const char* split : {"_training_shard_", "_validation_shard_"}) {
    const std::string head = prefix + split, tail = ".hdf5";
    if (name.size() <= head.size() + tail.size() || name.compare(0, head.size(), head) != 0 ||
        name.compare(name.size() - tail.size(), tail.size(), tail) != 0) {
      continue;
    }
    const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
    if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return true;
  }
  return false;
}

// Shards of an earlier run under the same prefix would be picked up by the trainer: remove them.
void remove_stale_shards(const std::string& dir, const std::string& prefix) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && is_our_shard_name(e.path().filename().string(), prefix)) {
      std::cout << "removing the earlier shard " << e.path().string() << "\n";
      fs::remove(e.path());
    }
  }
}

int run(const Args& a) {
  const auto t_start = std::chrono::steady_clock::now();
  a.pre.validate();
  if (a.num_shards < 1) throw std::invalid_argument("--num_shards must be >= 1, got " + std::to_string(a.num_shards));
  if (a.num_validation_shards < 1) {
    throw std::invalid_argument("--num_validation_shards must be >= 1, got " + std::to_string(a.num_validation_shards));
  }
  if (a.output_prefix.find("training") != std::string::npos || a.output_prefix.find("validation") != std::string::npos ||
      a.output_prefix.find('/') != std::string::npos || a.output_prefix.empty()) {
    throw std::invalid_argument("--output_prefix '" + a.output_prefix +
                                "' must be a plain non-empty file name part without 'training' or 'validation' "
                                "(the trainer picks training shards by the word 'training' in the name)");
  }

  TokenizerOptions topt;
  topt.do_lower_case = a.do_lower_case;
  topt.max_input_chars_per_word = a.max_chars_per_word;
  BertTokenizer tokenizer(Vocab::load(a.vocab), topt);
  const Vocab& vocab = tokenizer.vocab();
  std::cout << "vocabulary: " << a.vocab << " (" << vocab.size() << " tokens)\n";
  for (const auto& note : vocab.notes()) std::cout << "  note: " << note << "\n";
  if (!a.save_vocab.empty()) {
    vocab.save_txt(a.save_vocab);
    std::cout << "  written as " << a.save_vocab << "\n";
  }

  const std::vector<std::string> files = expand_input_paths(a.inputs);
  CorpusStats cs;
  std::vector<Document> docs = read_documents(files, tokenizer, &cs);
  const double t_read = seconds_since(t_start);
  std::cout << "input: " << cs.files << " files, " << cs.lines << " lines -> " << cs.documents << " documents, "
            << cs.sentences << " sentences, " << cs.tokens << " wordpiece tokens ([UNK] "
            << pct(cs.unknown_tokens, cs.tokens) << ")\n";
  if (cs.invalid_utf8 > 0) {
    std::cout << "  note: " << cs.invalid_utf8 << " undecodable byte sequences were dropped (invalid UTF-8)\n";
  }
  if (docs.size() == 1) {
    std::cout << "  warning: one document only: 'random next' sentences come from the same document\n";
  }

  const auto t_inst = std::chrono::steady_clock::now();
  SplitOptions split;
  split.validation_fraction = a.validation_fraction;
  split.validation_dupe_factor = a.validation_dupe_factor;
  split.random_seed = static_cast<uint64_t>(a.random_seed < 0 ? -a.random_seed : a.random_seed);  // as Python
  PretrainingData data = create_pretraining_data(std::move(docs), vocab, a.pre, split);
  const double t_create = seconds_since(t_inst);
  if (static_cast<int64_t>(data.training.size()) < a.num_shards) {
    throw std::invalid_argument("--num_shards " + std::to_string(a.num_shards) + " is more than the " +
                                std::to_string(data.training.size()) + " training instances; use fewer shards");
  }
  if (!data.validation.empty() && static_cast<int64_t>(data.validation.size()) < a.num_validation_shards) {
    throw std::invalid_argument("--num_validation_shards " + std::to_string(a.num_validation_shards) +
                                " is more than the " + std::to_string(data.validation.size()) +
                                " validation instances; use fewer shards");
  }

  const auto t_write = std::chrono::steady_clock::now();
  fs::create_directories(a.output_dir);
  remove_stale_shards(a.output_dir, a.output_prefix);
  ShardWriteOptions wopt;
  wopt.gzip_level = a.gzip;
  wopt.attributes = {{"max_seq_length", a.pre.max_seq_length},
                     {"max_predictions_per_seq", a.pre.max_predictions_per_seq},
                     {"vocab_size", vocab.size()},
                     {"random_seed", a.random_seed}};
  wopt.text_attributes = {{"created_by", "deepspeed_cpp bert_prep"},
                          {"next_sentence_labels", "1 = B is a random next sentence, 0 = actual next"}};
  nlohmann::json files_json = {{"training", nlohmann::json::array()}, {"validation", nlohmann::json::array()}};
  auto write_split = [&](const std::vector<TrainingInstance>& inst, const char* name, int count) {
    for (int k = 0; k < count; ++k) {
      const std::string path = (fs::path(a.output_dir) / shard_name(a.output_prefix, name, k, count)).string();
      write_pretraining_shard(path, make_shard(inst, a.pre, static_cast<size_t>(k), static_cast<size_t>(count)), wopt);
      files_json[name].push_back(fs::path(path).filename().string());
    }
  };
  write_split(data.training, "training", a.num_shards);
  const int val_shards = data.validation.empty() ? 0 : a.num_validation_shards;
  write_split(data.validation, "validation", val_shards);
  const double t_written = seconds_since(t_write);

  std::cout << "output: " << a.output_dir << "/" << a.output_prefix << "_{training,validation}_shard_*.hdf5\n";
  print_split("training", data.training_stats, data.training_documents, a.num_shards, a.pre.max_seq_length);
  if (val_shards > 0) {
    print_split("validation", data.validation_stats, data.validation_documents, val_shards, a.pre.max_seq_length);
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "time: read+tokenize %.2f s, instances %.2f s, write %.2f s, total %.2f s\n", t_read,
                t_create, t_written, seconds_since(t_start));
  std::cout << buf;

  nlohmann::json info = {
      {"created_by", "deepspeed_cpp bert_prep"},
      {"inputs", a.inputs},
      {"vocab", a.vocab},
      {"vocab_size", vocab.size()},
      {"unicode_version", ds::bert::unicode::table_version()},
      {"do_lower_case", a.do_lower_case},
      {"max_seq_length", a.pre.max_seq_length},
      {"max_predictions_per_seq", a.pre.max_predictions_per_seq},
      {"masked_lm_prob", a.pre.masked_lm_prob},
      {"dupe_factor", a.pre.dupe_factor},
      {"short_seq_prob", a.pre.short_seq_prob},
      {"do_whole_word_mask", a.pre.do_whole_word_mask},
      {"random_seed", a.random_seed},
      {"validation_fraction", a.validation_fraction},
      {"validation_dupe_factor", a.validation_dupe_factor},
      {"next_sentence_labels", "1 = random next"},
      {"corpus",
       {{"files", cs.files}, {"documents", cs.documents}, {"sentences", cs.sentences}, {"tokens", cs.tokens},
        {"unknown_tokens", cs.unknown_tokens}, {"invalid_utf8_sequences", cs.invalid_utf8}}},
      {"training", stats_json(data.training_stats, data.training_documents)},
      {"validation", stats_json(data.validation_stats, data.validation_documents)},
      {"files", files_json}};
  const std::string info_path = (fs::path(a.output_dir) / (a.output_prefix + "_info.json")).string();
  std::ofstream info_out(info_path);
  info_out << info.dump(2) << "\n";
  if (!info_out) throw std::runtime_error("cannot write the summary '" + info_path + "'");
  std::cout << "summary: " << info_path << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bert_prep: text files (one sentence per line, blank lines between documents) -> NVIDIA-format "
               "HDF5 BERT pretraining shards, with Google's create_pretraining_data algorithm"};
  Args a;
  app.add_option("--input", a.inputs, "Text files or directories (read recursively, sorted)")->required();
  app.add_option("--vocab,--vocab_file", a.vocab, "vocab.txt (one token per line) or a .json token list")
      ->required();
  app.add_option("--output_dir", a.output_dir, "Directory for the shards")->required();
  app.add_option("--output_prefix", a.output_prefix, "Shard names: <prefix>_training_shard_<k>.hdf5")
      ->capture_default_str();
  app.add_option("--max_seq_length", a.pre.max_seq_length, "Tokens per instance")->capture_default_str();
  app.add_option("--max_predictions_per_seq,--max_pred", a.pre.max_predictions_per_seq,
                 "Most masked tokens per instance")
      ->capture_default_str();
  app.add_option("--masked_lm_prob", a.pre.masked_lm_prob, "Fraction of tokens to mask")->capture_default_str();
  app.add_option("--dupe_factor", a.pre.dupe_factor, "Passes over the text, each with new masks")
      ->capture_default_str();
  app.add_option("--short_seq_prob", a.pre.short_seq_prob, "Probability of a shorter target length")
      ->capture_default_str();
  app.add_option("--random_seed", a.random_seed, "Seed (Python random.Random compatible)")->capture_default_str();
  app.add_option("--num_shards", a.num_shards, "Training shard files")->capture_default_str();
  app.add_option("--validation_fraction", a.validation_fraction,
                 "Fraction of documents held out (whole) for validation")
      ->capture_default_str();
  app.add_option("--num_validation_shards", a.num_validation_shards, "Validation shard files")->capture_default_str();
  app.add_option("--validation_dupe_factor", a.validation_dupe_factor, "dupe_factor of the validation split")
      ->capture_default_str();
  app.add_option("--do_lower_case", a.do_lower_case, "Lower-case and strip accents (uncased vocabularies)")
      ->capture_default_str();
  app.add_flag("--do_whole_word_mask", a.pre.do_whole_word_mask, "Mask all pieces of a word together");
  app.add_option("--max_chars_per_word", a.max_chars_per_word, "Longer words become [UNK]")->capture_default_str();
  app.add_option("--gzip", a.gzip, "gzip level of the HDF5 datasets (0 = none)")->capture_default_str();
  app.add_option("--save_vocab", a.save_vocab, "Also write the vocabulary as vocab.txt here");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::cerr << "bert_prep: error: " << e.what() << "\n";
    return 1;
  }
}
