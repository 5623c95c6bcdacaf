// create_pretraining_data on the tiny corpus: Google's exact output (golden), the algorithm's
// invariants and statistics, the validation hold-out, determinism, and bert_prep end to end.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "examples/bing_bert/data/pretraining_data.h"
#include "examples/bing_bert/data/shard_io.h"
#include "examples/bing_bert/data/tokenizer.h"
#include "ops/common/fs_util.h"

namespace fs = std::filesystem;
using namespace ds::bert;
using Ids = std::vector<int32_t>;

namespace {

const std::string kData = DS_BERT_TEST_DATA;
const std::string kCorpus = kData + "/tiny_corpus.txt";
const std::string kVocab = kData + "/tiny_vocab.txt";

const BertTokenizer& tokenizer() {
  static const BertTokenizer t(Vocab::load(kVocab), TokenizerOptions{true, 200});  // Google's 200
  return t;
}

std::vector<Document> tiny_docs() { return read_documents({kCorpus}, tokenizer()); }

PretrainingData make(const PretrainingOptions& o, uint64_t seed, double validation_fraction = 0.0) {
  SplitOptions split;
  split.random_seed = seed;
  split.validation_fraction = validation_fraction;
  return create_pretraining_data(tiny_docs(), tokenizer().vocab(), o, split);
}

fs::path temp_dir() {
  fs::path p = fs::temp_directory_path() / ("bert_prep_test_" + std::to_string(::getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
  ds::remove_tree(p);
  fs::create_directories(p);
  return p;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The token stream of each document, to locate an instance's A and B segments.
std::vector<Ids> concat(const std::vector<Document>& docs) {
  std::vector<Ids> out;
  for (const auto& d : docs) {
    Ids all;
    for (const auto& s : d) all.insert(all.end(), s.begin(), s.end());
    out.push_back(std::move(all));
  }
  return out;
}

struct Hit {
  size_t doc, offset;
};
std::vector<Hit> find_run(const std::vector<Ids>& docs, Ids::const_iterator b, Ids::const_iterator e) {
  std::vector<Hit> hits;
  for (size_t d = 0; d < docs.size(); ++d) {
    for (auto it = std::search(docs[d].begin(), docs[d].end(), b, e); it != docs[d].end();
         it = std::search(it + 1, docs[d].end(), b, e)) {
      hits.push_back({d, static_cast<size_t>(it - docs[d].begin())});
    }
  }
  return hits;
}

// The instance's tokens before masking.
Ids unmasked(const TrainingInstance& t) {
  Ids ids = t.input_ids;
  for (size_t j = 0; j < t.masked_lm_positions.size(); ++j) ids[t.masked_lm_positions[j]] = t.masked_lm_ids[j];
  return ids;
}

}  // namespace

// ---------------------------------------------------------------- Google's exact output
TEST(CreatePretrainingData, MatchesGoogleGolden) {
  std::ifstream in(kData + "/google_instances_golden.jsonl");
  ASSERT_TRUE(in);
  std::string line;
  std::getline(in, line);
  ASSERT_EQ(nlohmann::json::parse(line).at("version"), 1);
  int configs = 0;
  while (std::getline(in, line)) {
    const auto head = nlohmann::json::parse(line);
    const auto& c = head.at("config");
    PretrainingOptions o;
    o.max_seq_length = c.at("max_seq_length");
    o.max_predictions_per_seq = c.at("max_predictions_per_seq");
    o.masked_lm_prob = c.at("masked_lm_prob");
    o.dupe_factor = c.at("dupe_factor");
    o.short_seq_prob = c.at("short_seq_prob");
    o.do_whole_word_mask = c.at("do_whole_word_mask");
    const PretrainingData data = make(o, c.at("random_seed"));
    const size_t n = head.at("instances");
    ASSERT_EQ(data.training.size(), n) << c.dump();
    for (size_t i = 0; i < n; ++i) {
      ASSERT_TRUE(std::getline(in, line));
      const auto g = nlohmann::json::parse(line);
      const TrainingInstance& t = data.training[i];
      SCOPED_TRACE(c.at("name").get<std::string>() + " instance " + std::to_string(i));
      EXPECT_EQ(t.input_ids, g.at("input_ids").get<Ids>());
      Ids seg(t.input_ids.size(), 1);
      std::fill(seg.begin(), seg.begin() + t.segment_a_length, 0);
      EXPECT_EQ(seg, g.at("segment_ids").get<Ids>());
      EXPECT_EQ(t.masked_lm_positions, g.at("masked_lm_positions").get<Ids>());
      EXPECT_EQ(t.masked_lm_ids, g.at("masked_lm_ids").get<Ids>());
      EXPECT_EQ(t.is_random_next, g.at("is_random_next").get<bool>());
    }
    ++configs;
  }
  EXPECT_EQ(configs, 2);
}

// ---------------------------------------------------------------- invariants and statistics
TEST(CreatePretrainingData, StructureMaskingAndNsp) {
  PretrainingOptions o;
  o.max_seq_length = 64;
  o.max_predictions_per_seq = 10;
  o.dupe_factor = 100;
  const PretrainingData data = make(o, 7);
  const Vocab& v = tokenizer().vocab();
  const std::vector<Ids> docs = concat(tiny_docs());
  ASSERT_GT(data.training.size(), 1000u);

  int64_t masked = 0, maskable = 0, to_mask = 0, kept = 0, random_next = 0, nsp_checked = 0;
  for (const TrainingInstance& t : data.training) {
    const int64_t L = static_cast<int64_t>(t.input_ids.size()), a = t.segment_a_length;
    ASSERT_LE(L, o.max_seq_length);
    const Ids orig = unmasked(t);
    // [CLS] A [SEP] B [SEP] with A and B not empty, and no other [CLS]/[SEP].
    ASSERT_GE(a, 3);
    ASSERT_GE(L - a, 2);
    EXPECT_EQ(orig[0], v.cls_id());
    EXPECT_EQ(orig[a - 1], v.sep_id());
    EXPECT_EQ(orig[L - 1], v.sep_id());
    for (int64_t j = 0; j < L; ++j) {
      if (j != 0 && j != a - 1 && j != L - 1) {
        EXPECT_TRUE(orig[j] != v.cls_id() && orig[j] != v.sep_id());
      }
    }
    // Exactly min(max_pred, max(1, round(L * p))) predictions, sorted, never on [CLS]/[SEP].
    // Python's round() takes ties to even (30 * 0.15 -> 4), as nearbyint does.
    const auto rounded = static_cast<int64_t>(std::nearbyint(static_cast<double>(L) * o.masked_lm_prob));
    const int64_t expect = std::min<int64_t>(o.max_predictions_per_seq, std::max<int64_t>(1, rounded));
    ASSERT_EQ(static_cast<int64_t>(t.masked_lm_positions.size()), expect) << "L=" << L;
    for (size_t j = 0; j < t.masked_lm_positions.size(); ++j) {
      const int32_t p = t.masked_lm_positions[j];
      EXPECT_TRUE(p > 0 && p < L - 1 && p != a - 1) << p;
      if (j > 0) {
        EXPECT_LT(t.masked_lm_positions[j - 1], p);
      }
      if (t.input_ids[p] == v.mask_id()) {
        ++to_mask;
      } else if (t.input_ids[p] == t.masked_lm_ids[j]) {
        ++kept;
      }
    }
    masked += expect;
    maskable += L - 3;
    random_next += t.is_random_next;

    // Where A and B come from: actual next = later in the same document; random = another one.
    // Only runs found exactly once are judged (short runs like "the ." recur).
    const auto ha = find_run(docs, orig.begin() + 1, orig.begin() + a - 1);
    const auto hb = find_run(docs, orig.begin() + a, orig.end() - 1);
    if (ha.size() == 1 && hb.size() == 1) {
      ++nsp_checked;
      if (t.is_random_next) {
        EXPECT_NE(ha[0].doc, hb[0].doc);
      } else {
        EXPECT_EQ(ha[0].doc, hb[0].doc);
        EXPECT_GE(hb[0].offset, ha[0].offset + static_cast<size_t>(a - 2));
      }
    }
  }
  EXPECT_GT(nsp_checked, static_cast<int64_t>(data.training.size()) / 2);

  // Masking rate: masked_i = round(0.15 L_i) is within 0.5 of 0.15 L_i, so over N instances with
  // C = sum(L_i - 3) maskable tokens: |M/C - 0.15 (1 + 3N/C)| <= 0.5 N / C.
  const double N = static_cast<double>(data.training.size()), C = static_cast<double>(maskable);
  const double rate = static_cast<double>(masked) / C, centre = 0.15 * (1 + 3 * N / C);
  EXPECT_NEAR(rate, centre, 0.5 * N / C);
  EXPECT_NEAR(rate, 0.15, 0.03) << "the instances are long enough for ~15%";
  EXPECT_EQ(data.training_stats.masked, masked);
  EXPECT_EQ(data.training_stats.candidates, maskable);

  // 80/10/10: binomial counts, within 5 standard deviations (a random word equal to the original
  // counts as kept: probability 1/369 of the 10%, inside the bound).
  const double M = static_cast<double>(masked);
  auto within = [&](double count, double p, const char* what) {
    EXPECT_NEAR(count / M, p, 5 * std::sqrt(p * (1 - p) / M)) << what;
  };
  within(static_cast<double>(to_mask), 0.8, "[MASK]");
  within(static_cast<double>(kept), 0.1, "kept");
  within(static_cast<double>(masked - to_mask - kept), 0.1, "random word");

  // NSP: a fair coin for chunks of 2+ sentences, always random for a 1-sentence chunk, so the
  // random share is at least 1/2 (5 sigma) and well below 1.
  const double nsp = static_cast<double>(random_next) / N;
  EXPECT_GE(nsp, 0.5 - 5 * std::sqrt(0.25 / N));
  EXPECT_LE(nsp, 0.75);
}

TEST(CreatePretrainingData, DeterministicBySeed) {
  PretrainingOptions o;
  o.max_seq_length = 48;
  o.dupe_factor = 4;
  auto same = [](const PretrainingData& x, const PretrainingData& y) {
    if (x.training.size() != y.training.size()) return false;
    for (size_t i = 0; i < x.training.size(); ++i) {
      const auto &a = x.training[i], &b = y.training[i];
      if (a.input_ids != b.input_ids || a.masked_lm_positions != b.masked_lm_positions ||
          a.segment_a_length != b.segment_a_length || a.is_random_next != b.is_random_next) {
        return false;
      }
    }
    return true;
  };
  EXPECT_TRUE(same(make(o, 12345), make(o, 12345)));
  EXPECT_FALSE(same(make(o, 12345), make(o, 12346)));
}

TEST(CreatePretrainingData, ValidationHeldOutByDocument) {
  PretrainingOptions o;
  o.max_seq_length = 48;
  o.dupe_factor = 3;
  const PretrainingData data = make(o, 3, 0.25);
  const size_t total = tiny_docs().size();
  ASSERT_EQ(total, 8u);
  EXPECT_EQ(data.validation_documents, 2);  // round(0.25 * 8)
  EXPECT_EQ(data.training_documents, 6);
  ASSERT_FALSE(data.validation.empty());

  // Every segment of a split comes from that split's documents: sentences are unique per
  // document in the tiny corpus, so a run of 6+ tokens identifies its document.
  std::vector<Ids> all = concat(tiny_docs());
  std::map<size_t, int> doc_split;  // document -> 0 training, 1 validation
  auto check = [&](const std::vector<TrainingInstance>& inst, int split) {
    for (const auto& t : inst) {
      const Ids orig = unmasked(t);
      for (auto [b, e] : {std::pair{orig.begin() + 1, orig.begin() + t.segment_a_length - 1},
                          std::pair{orig.begin() + t.segment_a_length, orig.end() - 1}}) {
        if (e - b < 6) continue;
        const auto hits = find_run(all, b, e);
        ASSERT_EQ(hits.size(), 1u);
        auto [it, inserted] = doc_split.insert({hits[0].doc, split});
        EXPECT_EQ(it->second, split) << "document " << hits[0].doc << " is in both splits";
      }
    }
  };
  check(data.training, 0);
  check(data.validation, 1);
  int val_docs = 0;
  for (auto [doc, split] : doc_split) val_docs += split;
  EXPECT_EQ(val_docs, 2);
  EXPECT_EQ(doc_split.size(), total);
}

TEST(CreatePretrainingData, BadOptionsAndInput) {
  PretrainingOptions o;
  o.max_seq_length = 4;
  EXPECT_THROW(o.validate(), std::invalid_argument);
  o = {};
  o.masked_lm_prob = 0;
  EXPECT_THROW(o.validate(), std::invalid_argument);
  SplitOptions split;
  EXPECT_THROW(create_pretraining_data({}, tokenizer().vocab(), {}, split), std::invalid_argument);
  // Blank lines and lines of only undecodable bytes separate documents; tokenless lines vanish.
  std::vector<Document> docs;
  CorpusStats st;
  append_documents("the old map\n\n\n\xff\xfe\nhello\n\x01\nworld\n", tokenizer(), docs, &st);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1].size(), 2u);
  EXPECT_EQ(st.invalid_utf8, 2);
  EXPECT_EQ(st.sentences, 3);
}

// ---------------------------------------------------------------- HDF5 round trip
TEST(CreatePretrainingData, ShardRoundTrip) {
  PretrainingOptions o;
  o.max_seq_length = 40;
  o.max_predictions_per_seq = 6;
  o.dupe_factor = 2;
  const PretrainingData data = make(o, 5);
  const fs::path dir = temp_dir();
  const std::string path = (dir / "rt_training_shard_0.hdf5").string();
  const PretrainingShard written = make_shard(data.training, o, 1, 2);  // odd rows
  write_pretraining_shard(path, written);
  const PretrainingShard s = read_pretraining_shard(path, {tokenizer().vocab().size(), 40, 6});
  ASSERT_EQ(s.num_instances, static_cast<int64_t>(data.training.size() / 2));
  EXPECT_EQ(s.input_ids, written.input_ids);
  EXPECT_EQ(s.input_mask, written.input_mask);
  EXPECT_EQ(s.segment_ids, written.segment_ids);
  EXPECT_EQ(s.masked_lm_positions, written.masked_lm_positions);
  EXPECT_EQ(s.masked_lm_ids, written.masked_lm_ids);
  EXPECT_EQ(s.next_sentence_labels, written.next_sentence_labels);
  for (int64_t r = 0; r < s.num_instances; ++r) {
    const TrainingInstance& t = data.training[static_cast<size_t>(1 + 2 * r)];
    const int64_t L = static_cast<int64_t>(t.input_ids.size());
    EXPECT_EQ(s.next_sentence_labels[r], t.is_random_next ? 1 : 0);  // NVIDIA: 1 = random next
    EXPECT_EQ(s.num_masked(r), static_cast<int64_t>(t.masked_lm_positions.size()));
    Ids labels(40, -1);
    for (size_t j = 0; j < t.masked_lm_positions.size(); ++j) labels[t.masked_lm_positions[j]] = t.masked_lm_ids[j];
    EXPECT_EQ(Ids(s.masked_lm_labels_row(r), s.masked_lm_labels_row(r) + 40), labels);
    for (int64_t j = 0; j < 40; ++j) {
      EXPECT_EQ(s.input_mask_row(r)[j], j < L ? 1 : 0);
      EXPECT_EQ(s.segment_ids_row(r)[j], j >= t.segment_a_length && j < L ? 1 : 0);
      if (j >= L) {
        EXPECT_EQ(s.input_ids_row(r)[j], 0);
      }
    }
  }
  ds::remove_tree(dir);
}

// ---------------------------------------------------------------- bert_prep, the command
TEST(BertPrep, WritesShardsThatMatchGoogleAndTheSummary) {
  const fs::path dir = temp_dir();
  const std::string cmd = std::string(DS_BERT_PREP) + " --input " + kCorpus + " --vocab " + kVocab +
                          " --output_dir " + dir.string() +
                          " --output_prefix tiny --max_seq_length 32 --max_predictions_per_seq 5 --dupe_factor 3"
                          " --max_chars_per_word 200 > " + (dir / "log").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_text(dir / "log");
  const auto files = list_shard_files(dir.string());
  ASSERT_EQ(files.size(), 1u);
  const PretrainingShard s = read_pretraining_shard(files[0], {tokenizer().vocab().size(), 32, 5});

  // Same flags as the golden's seq32 config: the shard's rows are Google's instances, in order.
  std::ifstream in(kData + "/google_instances_golden.jsonl");
  std::string line;
  std::getline(in, line);
  std::getline(in, line);
  ASSERT_EQ(nlohmann::json::parse(line).at("instances").get<int64_t>(), s.num_instances);
  for (int64_t r = 0; r < s.num_instances; ++r) {
    std::getline(in, line);
    const auto g = nlohmann::json::parse(line);
    Ids ids = g.at("input_ids").get<Ids>();
    ids.resize(32, 0);
    EXPECT_EQ(Ids(s.input_ids_row(r), s.input_ids_row(r) + 32), ids) << "row " << r;
    EXPECT_EQ(s.next_sentence_labels[r], g.at("is_random_next").get<bool>() ? 1 : 0);
  }
  const auto info = nlohmann::json::parse(read_text(dir / "tiny_info.json"));
  EXPECT_EQ(info.at("training").at("instances").get<int64_t>(), s.num_instances);
  EXPECT_NE(read_text(dir / "log").find("next sentence:"), std::string::npos);
  ds::remove_tree(dir);
}

TEST(BertPrep, ShardsAndValidationSplit) {
  const fs::path dir = temp_dir();
  // A directory input: its files are read in sorted order, hidden ones skipped.
  fs::create_directories(dir / "in");
  fs::copy_file(kCorpus, dir / "in" / "a.txt");
  fs::copy_file(kCorpus, dir / "in" / "b.txt");
  std::ofstream(dir / "in" / ".notes.txt") << "not part of the corpus\n";
  // A stale shard of an earlier run must not survive (the trainer would read it).
  std::ofstream(dir / "tiny_training_shard_7.hdf5") << "old";
  const std::string cmd = std::string(DS_BERT_PREP) + " --input " + (dir / "in").string() + " --vocab " + kVocab +
                          " --output_dir " + dir.string() +
                          " --output_prefix tiny --max_seq_length 64 --max_predictions_per_seq 10 --dupe_factor 5"
                          " --num_shards 3 --validation_fraction 0.3 > " + (dir / "log").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_text(dir / "log");
  const auto train = list_shard_files(dir.string(), "training");
  ASSERT_EQ(train.size(), 3u) << "stale shard left over?";
  EXPECT_EQ(fs::path(train[0]).filename(), "tiny_training_shard_0.hdf5");
  const auto val = list_shard_files(dir.string(), "validation");
  ASSERT_EQ(val.size(), 1u);
  const auto info = nlohmann::json::parse(read_text(dir / "tiny_info.json"));
  EXPECT_EQ(info.at("corpus").at("files").get<int>(), 2);
  EXPECT_EQ(info.at("corpus").at("documents").get<int>(), 16);
  EXPECT_EQ(info.at("validation").at("documents").get<int>(), 5);  // round(0.3 * 16)
  int64_t n = 0;
  for (const auto& f : train) {
    const PretrainingShard s = read_pretraining_shard(f, {tokenizer().vocab().size(), 64, 10});
    EXPECT_GT(s.num_instances, 0);
    n += s.num_instances;
  }
  EXPECT_EQ(n, info.at("training").at("instances").get<int64_t>());
  const PretrainingShard v = read_pretraining_shard(val[0], {tokenizer().vocab().size(), 64, 10});
  EXPECT_EQ(v.num_instances, info.at("validation").at("instances").get<int64_t>());
  ds::remove_tree(dir);
}

TEST(BertPrep, BadInputIsAClearError) {
  const fs::path dir = temp_dir();
  std::ofstream(dir / "novocab.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n";
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(DS_BERT_PREP) + " " + args + " > " + (dir / "log").string() + " 2>&1";
    const int rc = std::system(cmd.c_str());
    return std::pair{rc, read_text(dir / "log")};
  };
  auto [rc1, log1] = run("--input " + kCorpus + " --vocab " + (dir / "novocab.txt").string() + " --output_dir " +
                         dir.string());
  EXPECT_NE(rc1, 0);
  EXPECT_NE(log1.find("novocab.txt"), std::string::npos) << log1;
  EXPECT_NE(log1.find("[MASK]"), std::string::npos) << log1;
  auto [rc2, log2] = run("--input " + (dir / "missing.txt").string() + " --vocab " + kVocab + " --output_dir " +
                         dir.string());
  EXPECT_NE(rc2, 0);
  EXPECT_NE(log2.find("missing.txt"), std::string::npos) << log2;
  auto [rc3, log3] = run("--input " + kCorpus + " --vocab " + kVocab + " --output_dir " + dir.string() +
                         " --max_seq_length 4");
  EXPECT_NE(rc3, 0);
  EXPECT_NE(log3.find("--max_seq_length"), std::string::npos) << log3;
  auto [rc4, log4] = run("--input " + kCorpus + " --vocab " + kVocab + " --output_dir " + dir.string() +
                         " --num_shards 100000");
  EXPECT_NE(rc4, 0);
  EXPECT_NE(log4.find("--num_shards"), std::string::npos) << log4;
  ds::remove_tree(dir);
}
