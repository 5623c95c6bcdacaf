// NVIDIA-format BERT pretraining shards (HDF5), as DeepLearningExamples' create_pretraining_data
// writes them and DeepSpeed's bing_bert nvidia_bert_dataset_provider reads them:
//   input_ids, input_mask, segment_ids        [N, max_seq_length]
//   masked_lm_positions, masked_lm_ids        [N, max_predictions]  (0-padded)
//   next_sentence_labels                      [N]  (1 = B is a random next, 0 = actual next)
// Our writer stores int32 with gzip. The reader also takes shards written by other tools: any
// integer type (int8 .. int64, signed or unsigned) and next_sentence_labels shaped [N] or [N, 1].
//
// HDF5 (the Debian build is not thread-safe) is only entered under one process-wide lock, so a
// trainer may prefetch the next shard on another thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "examples/bing_bert/data/pretraining_data.h"

namespace ds::bert {

// One shard in memory, row-major int32.
struct PretrainingShard {
  std::string path;
  int64_t num_instances = 0, seq_length = 0, max_predictions = 0;
  std::vector<int32_t> input_ids, input_mask, segment_ids;     // [N, seq_length]
  std::vector<int32_t> masked_lm_positions, masked_lm_ids;     // [N, max_predictions]
  std::vector<int32_t> next_sentence_labels;                   // [N]
  // Filled by the reader (DeepSpeed bing_bert §5.9): -1 everywhere except
  // labels[i, positions[i, :k]] = ids[i, :k], k = index of the first 0 in positions[i] (else P).
  std::vector<int32_t> masked_lm_labels;                       // [N, seq_length]

  const int32_t* input_ids_row(int64_t i) const { return input_ids.data() + i * seq_length; }
  const int32_t* input_mask_row(int64_t i) const { return input_mask.data() + i * seq_length; }
  const int32_t* segment_ids_row(int64_t i) const { return segment_ids.data() + i * seq_length; }
  const int32_t* masked_lm_labels_row(int64_t i) const { return masked_lm_labels.data() + i * seq_length; }
  // Number of masked positions in row i (k above).
  int64_t num_masked(int64_t i) const;
};

// The six datasets every shard has.
extern const char* const kShardFields[6];

struct ShardReadOptions {
  int64_t vocab_size = 0;             // > 0: input_ids and masked_lm_ids must be < vocab_size
  int64_t expected_seq_length = 0;    // > 0: input_ids must be [N, expected_seq_length]
  int64_t expected_max_predictions = 0;  // > 0: masked_lm_* must be [N, expected_max_predictions]
};

// Reads and validates a shard; builds masked_lm_labels. Throws std::runtime_error naming the file
// and the field: missing or unreadable file, missing dataset, non-integer dataset, wrong rank,
// row counts that differ, positions outside [0, seq_length), ids outside [0, vocab_size),
// input_mask / segment_ids / next_sentence_labels values other than 0 and 1, values beyond int32,
// and the expectations above.
PretrainingShard read_pretraining_shard(const std::string& path, const ShardReadOptions& options = {});

// Shapes of a shard, read without its data.
struct ShardInfo {
  std::string path;
  int64_t num_instances = 0, seq_length = 0, max_predictions = 0;
};

// Opens a shard and checks what read_pretraining_shard checks before it reads values: the file,
// the six datasets (integer, rank, shapes agreeing) and the expectations in `options` (vocab_size
// is not checked: that needs the values). Cheap, so a trainer can check every shard up front.
ShardInfo probe_pretraining_shard(const std::string& path, const ShardReadOptions& options = {});

struct ShardWriteOptions {
  // 0 = none. On the Brown seq-128 shards level 1 is 5.7x smaller than none (4 s more to write
  // 138k instances on 2 cores); level 4 (h5py's default) saves 10% more and takes 1.7x as long.
  int gzip_level = 1;
  std::map<std::string, int64_t> attributes;   // written as int64 file attributes
  std::map<std::string, std::string> text_attributes;
};

// Writes the six datasets of `shard` (masked_lm_labels is not stored) to `path` atomically
// (a temporary file renamed into place). Throws naming the file on failure or inconsistent sizes.
void write_pretraining_shard(const std::string& path, const PretrainingShard& shard,
                             const ShardWriteOptions& options = {});

// instances[first], instances[first + stride], ... as a padded shard (ids, mask and segments
// padded with 0 to max_seq_length, predictions with 0 to max_predictions_per_seq). bert_prep
// deals instances round-robin over its shards (stride = shard count), as Google's writer does.
PretrainingShard make_shard(const std::vector<TrainingInstance>& instances, const PretrainingOptions& options,
                            size_t first = 0, size_t stride = 1);

// The shard files of a directory whose file name contains `name_contains` (NVIDIA's provider
// takes every file with "training" in its name), sorted. Throws naming the directory when it does
// not exist or no file matches.
std::vector<std::string> list_shard_files(const std::string& dir, const std::string& name_contains = "training");

// The shard a rank reads in an epoch, as DeepSpeed's nvidia_bert_dataset_provider computes it:
// (epoch * world + rank [+ (world % num_files) * epoch when world > num_files]) % num_files.
int64_t nvidia_shard_index(int64_t epoch, int64_t world_size, int64_t rank, int64_t num_files);

}  // namespace ds::bert
