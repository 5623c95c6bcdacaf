// The training data of bing_bert's NVIDIA path (nvidia_bert_dataset_provider.py, reference §5.9):
// one shard per epoch per rank, the next shard read on a thread while the current one trains.
//
//  - files: the training shards of a folder, sorted, then shuffled with random.Random(seed) (the
//    same order on every rank; PyRandom draws what CPython draws);
//  - epoch e, rank r of W reads files[(e W + r [+ (W % F) e when W > F]) % F];
//  - instances in a shuffled order drawn from (seed, epoch, rank) (NVIDIA: a RandomSampler);
//  - every rank runs the same number of micro-batches in an epoch: the smallest floor(N / micro)
//    over the shards the ranks read that epoch, rounded down to whole accumulation windows. So no
//    rank waits on the others for a step they do not take (NVIDIA's loader keeps a short last batch
//    and lets ranks with more data run on; with DeepSpeed's all-reduce that hangs).
//
// Every file is probed (shapes, no data) when the provider is built, so a missing key or a wrong
// shape anywhere is reported before the first step.
#pragma once

#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "examples/bing_bert/data/shard_io.h"
#include "examples/bing_bert/model/bert_model.h"

namespace ds::bert {

struct DataOptions {
  int64_t world_size = 1;
  int64_t rank = 0;
  uint64_t seed = 42;
  int64_t micro_batch = 1;
  int64_t gradient_accumulation_steps = 1;
  ShardReadOptions read;
  // Appended to errors about values (ids beyond the vocabulary): says where the limit comes from.
  std::string error_context;
};

class ShardProvider {
 public:
  // Throws InputError (naming the file and the field) for unreadable or malformed shards and for
  // shards too small to give one accumulation window of micro-batches.
  ShardProvider(std::vector<std::string> files, DataOptions options);
  ~ShardProvider();
  ShardProvider(const ShardProvider&) = delete;
  ShardProvider& operator=(const ShardProvider&) = delete;

  const std::vector<std::string>& files() const { return files_; }   // shuffled: the epoch order
  const std::vector<ShardInfo>& infos() const { return infos_; }
  int64_t file_index(int64_t epoch, int64_t rank) const;
  int64_t file_index(int64_t epoch) const { return file_index(epoch, options_.rank); }
  int64_t micro_batches(int64_t epoch) const;

  // This rank's shard for the epoch (reads it now unless prefetched). InputError on bad values.
  std::shared_ptr<const PretrainingShard> shard(int64_t epoch);
  // Starts reading the epoch's shard on a thread; shard() picks it up.
  void prefetch(int64_t epoch);
  // The instance order of the epoch: a permutation of [0, n).
  std::vector<int64_t> order(int64_t epoch, int64_t n) const;

 private:
  std::shared_ptr<const PretrainingShard> read(int64_t file_index) const;

  std::vector<std::string> files_;
  std::vector<ShardInfo> infos_;
  DataOptions options_;
  std::mutex mutex_;
  std::map<int64_t, std::shared_future<std::shared_ptr<const PretrainingShard>>> pending_;  // by file index
};

// Every validation shard read whole (bing_bert evaluates a separate validation set).
std::vector<std::shared_ptr<const PretrainingShard>> read_validation_shards(const std::vector<std::string>& files,
                                                                             const DataOptions& options);

// rows[0..count) of the shard as one batch (int64 CPU tensors). num_masked: the masked tokens.
PretrainingBatch make_batch(const PretrainingShard& shard, const int64_t* rows, int64_t count,
                            int64_t* num_masked = nullptr);

}  // namespace ds::bert
