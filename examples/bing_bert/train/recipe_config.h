// The bing_bert model/training config (`--cf`, e.g. configs/bert_base.json), in bing_bert's format:
//
//   {
//     "name": "bing_bert_base_seq",                 job name when --job_name is not given
//     "bert_token_file": "bert-base-uncased",       accepted, unused (the data is tokenized already)
//     "bert_model_file": "bert-base-uncased",       accepted, unused
//     "bert_model_config": { "vocab_size": 30522, "hidden_size": 768, ... },   (model/bert_config.h)
//     "data": {
//       "flags": {...},                             accepted, unused
//       "mixed_seq_datasets": {
//         "128": {"pretrain_dataset": "shards/seq128", "validation_dataset": "shards/seq128"},
//         "512": {...}
//       }
//     },
//     "mixed_seq_training": {
//       "128": {"num_epochs": 150, "warmup_proportion": 0.06, "learning_rate": 11e-3, "decay_rate": 0.90,
//               "decay_step": 250, "total_training_steps": 7500, "weight_decay": 0.01},
//       "512": {...}
//     }
//   }
//
// --max_seq_length picks the "128" / "512" / ... entries (bing_bert:
// config["training"] = config["mixed_seq_training"][str(max_seq_length)]). Training shards are the
// files whose name contains "training" in {data_path_prefix}/{pretrain_dataset}; validation shards
// those whose name contains "validation" in {validation_data_path_prefix}/{validation_dataset}
// (default: the pretrain_dataset folder; bert_prep writes both kinds side by side). Only NVIDIA HDF5
// shards are read: the Bing numpy datasets (wiki_pretrain_dataset / bc_pretrain_dataset) are refused.
//
// Every error names the file and the JSON path ("configs/bert_tiny.json: mixed_seq_training.128.
// learning_rate: ..."); unknown keys are errors.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

#include "examples/bing_bert/model/bert_config.h"

namespace ds::bert {

// Bad input for bert_pretrain: configs, shards, flags. bert_pretrain exits 2 on it.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SeqTrainingConfig {
  int64_t num_epochs = 0;
  double warmup_proportion = 0.0;
  double learning_rate = 0.0;
  double decay_rate = 1.0;
  int64_t decay_step = 1;
  int64_t total_training_steps = 0;
  double weight_decay = 0.01;        // bing_bert's default when the key is absent
};

struct SeqDataConfig {
  std::string pretrain_dataset;
  std::string validation_dataset;    // "" -> pretrain_dataset
};

struct RecipeConfig {
  std::string file;
  std::string name;
  BertConfig model;
  std::map<int64_t, SeqTrainingConfig> training;   // by sequence length
  std::map<int64_t, SeqDataConfig> datasets;

  // Throw InputError naming the file, the missing key and the lengths that exist.
  const SeqTrainingConfig& training_for(int64_t max_seq_length) const;
  const SeqDataConfig& data_for(int64_t max_seq_length) const;
};

RecipeConfig parse_recipe_config(const nlohmann::json& root, const std::string& file);
RecipeConfig load_recipe_config(const std::string& file);  // InputError for a missing / unparsable file

// os.path.join(prefix, path): path itself when absolute or the prefix is empty.
std::string join_path(const std::string& prefix, const std::string& path);

}  // namespace ds::bert
