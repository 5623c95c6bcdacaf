#include "examples/bing_bert/train/pretrain_data.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "examples/bing_bert/data/py_random.h"
#include "examples/bing_bert/train/recipe_config.h"

namespace ds::bert {

ShardProvider::ShardProvider(std::vector<std::string> files, DataOptions options)
    : files_(std::move(files)), options_(std::move(options)) {
  if (files_.empty()) throw InputError("no training shards");
  if (options_.micro_batch < 1 || options_.gradient_accumulation_steps < 1 || options_.world_size < 1 ||
      options_.rank < 0 || options_.rank >= options_.world_size) {
    throw std::invalid_argument("ShardProvider: bad options (micro " + std::to_string(options_.micro_batch) +
                                ", accumulation " + std::to_string(options_.gradient_accumulation_steps) + ", rank " +
                                std::to_string(options_.rank) + " of " + std::to_string(options_.world_size) + ")");
  }
  std::sort(files_.begin(), files_.end());
  PyRandom rng(options_.seed);
  rng.shuffle(files_);
  const int64_t window = options_.micro_batch * options_.gradient_accumulation_steps;
  for (const auto& f : files_) {
    try {
      infos_.push_back(probe_pretraining_shard(f, options_.read));
    } catch (const std::exception& e) {
      throw InputError(e.what());
    }
    if (infos_.back().num_instances < window) {
      throw InputError("shard '" + f + "': field 'input_ids' has " + std::to_string(infos_.back().num_instances) +
                       " instances, fewer than one optimizer step needs (train_micro_batch_size_per_gpu " +
                       std::to_string(options_.micro_batch) + " x gradient_accumulation_steps " +
                       std::to_string(options_.gradient_accumulation_steps) + " = " + std::to_string(window) + ")");
    }
  }
}

ShardProvider::~ShardProvider() {
  // A read still running must not outlive the provider it reads for.
  for (auto& [i, f] : pending_) {
    if (f.valid()) f.wait();
  }
}

int64_t ShardProvider::file_index(int64_t epoch, int64_t rank) const {
  return nvidia_shard_index(epoch, options_.world_size, rank, static_cast<int64_t>(files_.size()));
}

int64_t ShardProvider::micro_batches(int64_t epoch) const {
  int64_t n = std::numeric_limits<int64_t>::max();
  for (int64_t r = 0; r < options_.world_size; ++r) {
    n = std::min(n, infos_[static_cast<size_t>(file_index(epoch, r))].num_instances / options_.micro_batch);
  }
  return n / options_.gradient_accumulation_steps * options_.gradient_accumulation_steps;
}

std::shared_ptr<const PretrainingShard> ShardProvider::read(int64_t index) const {
  const std::string& path = files_[static_cast<size_t>(index)];
  try {
    return std::make_shared<const PretrainingShard>(read_pretraining_shard(path, options_.read));
  } catch (const std::exception& e) {
    throw InputError(std::string(e.what()) + options_.error_context);
  }
}

void ShardProvider::prefetch(int64_t epoch) {
  const int64_t index = file_index(epoch);
  const std::lock_guard<std::mutex> lock(mutex_);
  if (pending_.count(index)) return;
  // Keep at most the shard in use and the one being read.
  for (auto it = pending_.begin(); it != pending_.end();) {
    it = pending_.size() > 1 ? pending_.erase(it) : std::next(it);
  }
  pending_[index] = std::async(std::launch::async, [this, index] { return read(index); }).share();
}

std::shared_ptr<const PretrainingShard> ShardProvider::shard(int64_t epoch) {
  const int64_t index = file_index(epoch);
  std::shared_future<std::shared_ptr<const PretrainingShard>> f;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto it = pending_.find(index);
    if (it == pending_.end()) {
      std::promise<std::shared_ptr<const PretrainingShard>> p;
      try {
        p.set_value(read(index));
      } catch (...) {
        p.set_exception(std::current_exception());
      }
      it = pending_.emplace(index, p.get_future().share()).first;
    }
    f = it->second;
    // Drop everything else: the shard in hand is what the epoch uses.
    for (auto jt = pending_.begin(); jt != pending_.end();) jt = jt->first == index ? std::next(jt) : pending_.erase(jt);
  }
  return f.get();
}

std::vector<int64_t> ShardProvider::order(int64_t epoch, int64_t n) const {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
  // One stream per (seed, epoch, rank); the constants only spread the three over the seed words.
  PyRandom rng(options_.seed * 1000003ULL + static_cast<uint64_t>(epoch) * 7919ULL +
               static_cast<uint64_t>(options_.rank) + 1ULL);
  rng.shuffle(idx);
  return idx;
}

std::vector<std::shared_ptr<const PretrainingShard>> read_validation_shards(const std::vector<std::string>& files,
                                                                             const DataOptions& options) {
  std::vector<std::shared_ptr<const PretrainingShard>> out;
  for (const auto& f : files) {
    try {
      out.push_back(std::make_shared<const PretrainingShard>(read_pretraining_shard(f, options.read)));
    } catch (const std::exception& e) {
      throw InputError(std::string(e.what()) + options.error_context);
    }
  }
  return out;
}

PretrainingBatch make_batch(const PretrainingShard& s, const int64_t* rows, int64_t count, int64_t* num_masked) {
  const int64_t S = s.seq_length;
  auto ids = torch::empty({count, S}, torch::kLong);
  auto mask = torch::empty({count, S}, torch::kLong);
  auto seg = torch::empty({count, S}, torch::kLong);
  auto labels = torch::empty({count, S}, torch::kLong);
  auto nsp = torch::empty({count}, torch::kLong);
  int64_t* pi = ids.data_ptr<int64_t>();
  int64_t* pm = mask.data_ptr<int64_t>();
  int64_t* ps = seg.data_ptr<int64_t>();
  int64_t* pl = labels.data_ptr<int64_t>();
  int64_t* pn = nsp.data_ptr<int64_t>();
  int64_t masked = 0;
  for (int64_t b = 0; b < count; ++b) {
    const int64_t r = rows[b];
    const int32_t* si = s.input_ids_row(r);
    const int32_t* sm = s.input_mask_row(r);
    const int32_t* ss = s.segment_ids_row(r);
    const int32_t* sl = s.masked_lm_labels_row(r);
    for (int64_t j = 0; j < S; ++j) {
      pi[b * S + j] = si[j];
      pm[b * S + j] = sm[j];
      ps[b * S + j] = ss[j];
      pl[b * S + j] = sl[j];
      masked += sl[j] != -1;
    }
    pn[b] = s.next_sentence_labels[static_cast<size_t>(r)];
  }
  if (num_masked) *num_masked = masked;
  return {ids, mask, seg, labels, nsp};
}

}  // namespace ds::bert
