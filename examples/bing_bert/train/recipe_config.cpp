#include "examples/bing_bert/train/recipe_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

namespace ds::bert {
namespace {

[[noreturn]] void fail(const std::string& file, const std::string& path, const std::string& msg) {
  throw InputError(file + ": " + path + ": " + msg);
}

void check_keys(const nlohmann::json& obj, const std::set<std::string>& known, const std::string& file,
                const std::string& path) {
  if (!obj.is_object()) fail(file, path, "expected a JSON object, got " + obj.dump());
  for (const auto& item : obj.items()) {
    if (known.count(item.key())) continue;
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    fail(file, path.empty() ? item.key() : path + "." + item.key(), "unknown key (known here: " + list + ")");
  }
}

double number(const nlohmann::json& obj, const std::string& key, const std::string& file, const std::string& path) {
  if (!obj.contains(key)) fail(file, path + "." + key, "missing (bing_bert's training sections set it)");
  const auto& v = obj.at(key);
  if (!v.is_number()) fail(file, path + "." + key, "expected a number, got " + v.dump());
  return v.get<double>();
}

int64_t integer(const nlohmann::json& obj, const std::string& key, const std::string& file, const std::string& path) {
  const double d = number(obj, key, file, path);
  if (std::floor(d) != d) fail(file, path + "." + key, "expected an integer, got " + obj.at(key).dump());
  return static_cast<int64_t>(d);
}

int64_t seq_key(const std::string& key, const std::string& file, const std::string& path) {
  size_t used = 0;
  int64_t v = -1;
  try {
    v = std::stoll(key, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != key.size() || v <= 0) fail(file, path + "." + key, "keys here are sequence lengths such as \"128\"");
  return v;
}

template <class Map>
std::string list_lengths(const Map& m) {
  std::string s;
  for (const auto& [k, v] : m) s += (s.empty() ? "" : ", ") + std::to_string(k);
  return s.empty() ? "none" : s;
}

}  // namespace

std::string join_path(const std::string& prefix, const std::string& path) {
  if (prefix.empty() || (!path.empty() && path[0] == '/')) return path;
  return prefix.back() == '/' ? prefix + path : prefix + "/" + path;
}

const SeqTrainingConfig& RecipeConfig::training_for(int64_t seq) const {
  auto it = training.find(seq);
  if (it == training.end()) {
    throw InputError(file + ": mixed_seq_training." + std::to_string(seq) + ": missing; --max_seq_length " +
                     std::to_string(seq) + " needs a \"" + std::to_string(seq) +
                     "\" section there (the file has: " + list_lengths(training) + ")");
  }
  return it->second;
}

const SeqDataConfig& RecipeConfig::data_for(int64_t seq) const {
  auto it = datasets.find(seq);
  if (it == datasets.end()) {
    throw InputError(file + ": data.mixed_seq_datasets." + std::to_string(seq) + ": missing; --max_seq_length " +
                     std::to_string(seq) + " needs a \"" + std::to_string(seq) +
                     "\" entry naming its shard folder (the file has: " + list_lengths(datasets) + ")");
  }
  return it->second;
}

RecipeConfig parse_recipe_config(const nlohmann::json& root, const std::string& file) {
  RecipeConfig c;
  c.file = file;
  check_keys(root, {"name", "bert_token_file", "bert_model_file", "bert_model_config", "data", "mixed_seq_training"},
             file, "");
  if (root.contains("name")) {
    if (!root.at("name").is_string()) fail(file, "name", "expected a string, got " + root.at("name").dump());
    c.name = root.at("name").get<std::string>();
  }
  if (!root.contains("bert_model_config")) fail(file, "bert_model_config", "missing (the model's sizes)");
  try {
    c.model = parse_bert_config(root.at("bert_model_config"), file + ": bert_model_config");
  } catch (const ModelConfigError& e) {
    throw InputError(e.what());
  }

  if (!root.contains("mixed_seq_training")) fail(file, "mixed_seq_training", "missing");
  const auto& mst = root.at("mixed_seq_training");
  if (!mst.is_object()) fail(file, "mixed_seq_training", "expected an object keyed by sequence length");
  for (const auto& item : mst.items()) {
    const std::string path = "mixed_seq_training." + item.key();
    const int64_t seq = seq_key(item.key(), file, "mixed_seq_training");
    const auto& t = item.value();
    check_keys(t,
               {"num_epochs", "warmup_proportion", "learning_rate", "decay_rate", "decay_step", "total_training_steps",
                "weight_decay", "num_workers", "async_worker"},
               file, path);
    SeqTrainingConfig s;
    s.num_epochs = integer(t, "num_epochs", file, path);
    s.warmup_proportion = number(t, "warmup_proportion", file, path);
    s.learning_rate = number(t, "learning_rate", file, path);
    s.decay_rate = number(t, "decay_rate", file, path);
    s.decay_step = integer(t, "decay_step", file, path);
    s.total_training_steps = integer(t, "total_training_steps", file, path);
    if (t.contains("weight_decay")) s.weight_decay = number(t, "weight_decay", file, path);
    if (s.num_epochs <= 0) fail(file, path + ".num_epochs", "must be > 0, got " + std::to_string(s.num_epochs));
    if (!(s.warmup_proportion >= 0.0 && s.warmup_proportion < 1.0)) {
      fail(file, path + ".warmup_proportion", "must be in [0, 1), got " + std::to_string(s.warmup_proportion));
    }
    if (!(s.learning_rate > 0.0)) fail(file, path + ".learning_rate", "must be > 0, got " + std::to_string(s.learning_rate));
    if (!(s.decay_rate > 0.0)) fail(file, path + ".decay_rate", "must be > 0, got " + std::to_string(s.decay_rate));
    if (s.decay_step <= 0) fail(file, path + ".decay_step", "must be > 0, got " + std::to_string(s.decay_step));
    if (s.total_training_steps <= 0) {
      fail(file, path + ".total_training_steps", "must be > 0, got " + std::to_string(s.total_training_steps));
    }
    if (!(s.weight_decay >= 0.0)) fail(file, path + ".weight_decay", "must be >= 0, got " + std::to_string(s.weight_decay));
    c.training[seq] = s;
  }

  if (!root.contains("data")) fail(file, "data", "missing (data.mixed_seq_datasets names the shard folders)");
  const auto& data = root.at("data");
  check_keys(data, {"flags", "mixed_seq_datasets", "validation", "datasets"}, file, "data");
  if (data.contains("datasets")) {
    fail(file, "data.datasets",
         "the Bing numpy datasets are not supported; use NVIDIA-format HDF5 shards (bert_prep) listed in "
         "data.mixed_seq_datasets");
  }
  if (!data.contains("mixed_seq_datasets")) fail(file, "data.mixed_seq_datasets", "missing");
  const auto& msd = data.at("mixed_seq_datasets");
  if (!msd.is_object()) fail(file, "data.mixed_seq_datasets", "expected an object keyed by sequence length");
  for (const auto& item : msd.items()) {
    const std::string path = "data.mixed_seq_datasets." + item.key();
    const int64_t seq = seq_key(item.key(), file, "data.mixed_seq_datasets");
    const auto& d = item.value();
    if (d.is_object() && (d.contains("wiki_pretrain_dataset") || d.contains("bc_pretrain_dataset"))) {
      fail(file, path, "the Bing numpy datasets (wiki_pretrain_dataset, bc_pretrain_dataset) are not supported; "
                       "give \"pretrain_dataset\": a folder of NVIDIA-format HDF5 shards (bert_prep)");
    }
    check_keys(d, {"pretrain_dataset", "validation_dataset"}, file, path);
    SeqDataConfig s;
    if (!d.contains("pretrain_dataset") || !d.at("pretrain_dataset").is_string()) {
      fail(file, path + ".pretrain_dataset", "missing or not a string (the folder of the training shards)");
    }
    s.pretrain_dataset = d.at("pretrain_dataset").get<std::string>();
    if (d.contains("validation_dataset")) {
      if (!d.at("validation_dataset").is_string()) fail(file, path + ".validation_dataset", "expected a string");
      s.validation_dataset = d.at("validation_dataset").get<std::string>();
    }
    c.datasets[seq] = s;
  }
  return c;
}

RecipeConfig load_recipe_config(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw InputError(file + ": cannot open the model config (--cf)");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(file + ": not valid JSON: " + e.what());
  }
  return parse_recipe_config(root, file);
}

}  // namespace ds::bert
