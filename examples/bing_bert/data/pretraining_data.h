// Google's create_pretraining_data algorithm (google-research/bert), on token ids:
//   documents (one sentence per line, blank lines between documents) -> shuffled -> for each of
//   dupe_factor passes and each document: sentence chunks up to a target length (max_seq - 3, or
//   with probability short_seq_prob a random length in [2, max_seq - 3]) split at a random point
//   into A and B; with probability 1/2 (always for a one-sentence chunk) B is instead taken from a
//   random other document and the unused sentences are put back; the pair is truncated from random
//   ends to max_seq - 3; [CLS] A [SEP] B [SEP]; masked LM on round(len * masked_lm_prob) tokens
//   (at least 1, at most max_predictions_per_seq; never [CLS]/[SEP]), each 80% [MASK], 10% kept,
//   10% a random vocabulary word; positions sorted -> all instances shuffled.
// Randomness comes from PyRandom, which draws what Python's random.Random does, in Google's
// order, so the instances equal Google's for the same inputs (tests/bing_bert checks this against
// a golden file made by Google's code).
// On purpose, different from Google's:
//   - every input file starts a new document (Google runs a file's last document into the next
//     file's first when the file does not end with a blank line);
//   - validation documents can be held out (after the document shuffle, before any instance);
//     the training set then equals Google's run on the remaining documents only when the
//     fraction is 0.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "examples/bing_bert/data/py_random.h"
#include "examples/bing_bert/data/tokenizer.h"

namespace ds::bert {

using Sentence = std::vector<int32_t>;   // token ids of one line
using Document = std::vector<Sentence>;  // never empty, no empty sentence

struct CorpusStats {
  int64_t files = 0, lines = 0, documents = 0, sentences = 0, tokens = 0, unknown_tokens = 0;
  int64_t invalid_utf8 = 0;  // undecodable byte sequences dropped
};

// Appends the documents of one text (a file's contents) to `docs`; the text starts a new document.
void append_documents(std::string_view text, const BertTokenizer& tokenizer, std::vector<Document>& docs,
                      CorpusStats* stats = nullptr);

// Expands the --input arguments (files, or directories: their regular files, recursively, sorted
// by path; hidden files skipped). Throws naming the argument when it does not exist or holds
// nothing.
std::vector<std::string> expand_input_paths(const std::vector<std::string>& inputs);

// Reads and tokenizes `files` in order. Throws naming the file when one cannot be read.
std::vector<Document> read_documents(const std::vector<std::string>& files, const BertTokenizer& tokenizer,
                                     CorpusStats* stats = nullptr);

struct PretrainingOptions {
  int max_seq_length = 128;
  int max_predictions_per_seq = 20;
  double masked_lm_prob = 0.15;
  int dupe_factor = 10;
  double short_seq_prob = 0.1;
  bool do_whole_word_mask = false;
  // Throws std::invalid_argument naming the flag for values the algorithm cannot use.
  void validate() const;
};

struct TrainingInstance {
  std::vector<int32_t> input_ids;            // [CLS] A [SEP] B [SEP] after masking, unpadded
  int32_t segment_a_length = 0;              // tokens with segment id 0: [CLS] A [SEP]
  std::vector<int32_t> masked_lm_positions;  // sorted ascending
  std::vector<int32_t> masked_lm_ids;        // the original ids at those positions
  bool is_random_next = false;               // B comes from another document (NSP label 1)
};

struct InstanceStats {
  int64_t instances = 0, random_next = 0;
  int64_t tokens = 0;       // non-padding tokens, [CLS]/[SEP] included
  int64_t candidates = 0;   // tokens that may be masked (all but [CLS]/[SEP])
  int64_t masked = 0, masked_to_mask = 0, masked_kept = 0, masked_random = 0;
  void add(const InstanceStats& o);
};

// create_instances_from_document for docs[doc_index], appending to `out`.
void create_instances_from_document(const std::vector<Document>& docs, size_t doc_index, const Vocab& vocab,
                                    const PretrainingOptions& options, PyRandom& rng,
                                    std::vector<TrainingInstance>& out, InstanceStats* stats = nullptr);

// The dupe_factor passes over `docs` (already shuffled) and the final shuffle of the instances.
std::vector<TrainingInstance> create_instances(const std::vector<Document>& docs, const Vocab& vocab,
                                               const PretrainingOptions& options, PyRandom& rng,
                                               InstanceStats* stats = nullptr);

struct SplitOptions {
  double validation_fraction = 0.0;  // of the documents, held out whole
  int validation_dupe_factor = 1;
  uint64_t random_seed = 12345;      // validation instances use random_seed + 1
};

struct PretrainingData {
  std::vector<TrainingInstance> training, validation;
  InstanceStats training_stats, validation_stats;
  int64_t training_documents = 0, validation_documents = 0;
};

// Google's create_training_instances (document shuffle, instances, instance shuffle) with the
// optional validation hold-out: after the shuffle the first round(fraction * documents) documents
// (at least 1 when the fraction is > 0, leaving at least 1 for training) are validation. `docs`
// is consumed.
PretrainingData create_pretraining_data(std::vector<Document> docs, const Vocab& vocab,
                                        const PretrainingOptions& options, const SplitOptions& split);

}  // namespace ds::bert
