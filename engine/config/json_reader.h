// Internal to engine/config: reading JSON strictly and checking one object's keys.
// (nlohmann lives here, never in ds_config.h, so Torch code including ds_config.h stays light.)
//
// - read_json(): a SAX parser that builds the DOM and reports every duplicate key with its path
//   (nlohmann's own DOM parser would keep the last value silently), syntax errors with line and
//   column, and refuses nesting deeper than kMaxDepth so nothing later recurses without bound.
// - Section: typed getters for the keys of one JSON object. Each getter records the key as known,
//   checks type and range, and reports "got <value>, expected <what>" at "<path>.<key>"; finish()
//   reports every key nobody asked for, with the nearest known key suggested.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config/ds_config.h"

namespace ds::config_detail {

using Json = nlohmann::json;

constexpr int kMaxDepth = 64;

// Where problems go. Paths are dotted JSON paths, "" for the whole document.
struct Issues {
  std::vector<ConfigIssue>& errors;
  std::vector<ConfigIssue>& warnings;
  void error(std::string path, std::string message) { errors.push_back({std::move(path), std::move(message)}); }
  void warn(std::string path, std::string message) { warnings.push_back({std::move(path), std::move(message)}); }
};

// Parses text into a DOM. On a syntax error (or too deep nesting) reports one error and returns
// nullopt; duplicate keys are errors too, but the DOM is still returned (the later value kept) so
// the rest of the file can be checked.
// `root_path` prefixes the paths of duplicate keys (a section parsed alone).
std::optional<Json> read_json(std::string_view text, Issues& issues, const std::string& root_path = "");

// A short rendering of a value for messages (bounded in length and depth; strings quoted).
std::string preview(const Json& v);
// "an object", "a string", "an integer", ...
const char* kind_of(const Json& v);
std::string join_path(const std::string& base, const std::string& key);
std::string in_quotes(const std::string& s);
// The candidate closest to `key` (edit distance, case-insensitive), if it is close enough to be
// a plausible typo; "" otherwise.
std::string nearest(const std::string& key, const std::vector<std::string>& candidates);

class Section {
 public:
  // `obj` must be an object.
  Section(const Json& obj, std::string path, Issues& issues);

  const std::string& path() const { return path_; }
  std::string key_path(const std::string& key) const { return join_path(path_, key); }
  bool has(const std::string& key) const { return obj_.contains(key); }
  size_t size() const { return obj_.size(); }
  // The raw value (nullptr when absent); marks the key known.
  const Json* raw(const std::string& key);
  // Marks keys as handled without reading them (e.g. reported by the caller).
  void consume(const std::string& key) { known_.push_back(key); }
  // Extra names used only for "did you mean" suggestions.
  void also_suggest(const std::vector<std::string>& keys);
  bool had_errors() const { return issues_.errors.size() > errors_at_start_; }
  Issues& issues() { return issues_; }

  // Getters return the value when present and valid; nullopt when absent (no error), when null and
  // `nullable`, or when invalid (error reported). `expect` describes the valid values.
  std::optional<bool> boolean(const std::string& key);
  std::optional<int64_t> integer(const std::string& key, const std::function<bool(int64_t)>& ok,
                                 const std::string& expect, bool nullable = false);
  std::optional<uint64_t> unsigned_integer(const std::string& key, const std::string& expect);
  std::optional<double> number(const std::string& key, const std::function<bool(double)>& ok,
                               const std::string& expect);
  std::optional<std::string> string(const std::string& key, const std::string& expect = "a string");
  // One of `choices`; compared case-insensitively when `ignore_case` (the result is then the
  // choice as listed). Unknown values get a suggestion.
  std::optional<std::string> choice(const std::string& key, const std::vector<std::string>& choices,
                                    bool ignore_case);
  std::optional<std::vector<int64_t>> int_list(const std::string& key, const std::function<bool(int64_t)>& ok,
                                               const std::string& expect, bool allow_empty, bool nullable = false);
  // A number or a non-empty list of numbers (per-parameter-group values).
  std::optional<std::vector<double>> number_or_list(const std::string& key, const std::function<bool(double)>& ok,
                                                    const std::string& expect);
  std::optional<std::vector<double>> number_list(const std::string& key, size_t size,
                                                 const std::function<bool(double)>& ok, const std::string& expect);
  // The sub-object at key (nullptr when absent, or when not an object: error reported).
  const Json* object(const std::string& key);

  // Reports a bad value at key.
  void bad(const std::string& key, const Json& value, const std::string& expect);
  void bad_at(const std::string& path, const Json& value, const std::string& expect);
  // Every key not read or consumed is an error. `why` is appended to the message (e.g. that
  // DeepSpeed would have ignored it silently).
  void finish(const std::string& why = "");
  std::vector<std::string> unread_keys() const;

 private:
  bool known(const std::string& key) const;
  std::optional<int64_t> as_integer(const Json& v) const;

  const Json& obj_;
  std::string path_;
  Issues& issues_;
  size_t errors_at_start_;
  std::vector<std::string> known_;
  std::vector<std::string> suggest_only_;
};

// Section parsers shared by the whole-file parser and the one-section entry points. `obj` must be
// an object; `path` is its JSON path.
void read_sparse_attention(const Json& obj, const std::string& path, Issues& issues, SparseAttentionConfig& out);
// `given_fp16` / `given_bf16` tell whether the keys were written (the whole-file parser inherits
// the model precision for the keys that were not).
void read_transformer_kernel(const Json& obj, const std::string& path, Issues& issues, TransformerKernelConfig& out,
                             bool* given_fp16 = nullptr, bool* given_bf16 = nullptr);

void read_fp16(Section& s, FP16Config& out);
void read_bf16(Section& s, BF16Config& out);
void read_optimizer(Section& s, OptimizerConfig& out);
void read_scheduler(Section& s, SchedulerConfig& out);
void read_checkpoint(Section& s, CheckpointConfig& out);
void read_monitor(Section& s, MonitorConfig& out);
void read_data_parallel(Section& s, DataParallelConfig& out);
// zero_optimization as an object or the legacy bool.
void read_zero(const Json& v, const std::string& path, Issues& issues, int& stage);

}  // namespace ds::config_detail
