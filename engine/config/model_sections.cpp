// The model sections: "sparse_attention" (shared/reference/deepspeed-behaviour.md §1.10, plus our
// modes local_sliding_window and dynamic_nm) and "transformer_kernel" (DeepSpeedTransformerConfig,
// §2.2, plus `enabled` and `bf16`). Also the one-section entry points used by the Python ops.
//
// Differences from DeepSpeed, on purpose:
//  - DeepSpeed keeps only the keys of the chosen mode and drops the others silently; a key of
//    another mode is an error here (it was surely meant to do something).
//  - The sparsity classes check their arguments only when a layout is built; the checks that do
//    not depend on the sequence length are done here, at load time, with DeepSpeed's messages.
//  - "attention" is accepted for bigbird and bslongformer (the classes take it since v0.6.5; the
//    JSON reader forgets it) and is validated for every mode (DeepSpeed checks it only for fixed,
//    variable and bigbird).
//  - "seed" (ours) is accepted in every mode: random blocks (variable, bigbird) come from a seeded
//    generator so that every rank builds the same layout without communication.
#include <climits>
#include <iostream>

#include "engine/config/json_reader.h"

namespace ds::config_detail {
namespace {

struct ModeInfo {
  const char* name;
  SparseMode mode;
  std::vector<std::string> keys;
};

const std::vector<ModeInfo>& modes() {
  static const std::vector<ModeInfo> m = {
      {"dense", SparseMode::Dense, {"mode", "block", "seed"}},
      {"fixed", SparseMode::Fixed,
       {"mode", "block", "different_layout_per_head", "num_local_blocks", "num_global_blocks", "attention",
        "horizontal_global_attention", "num_different_global_patterns", "seed"}},
      {"variable", SparseMode::Variable,
       {"mode", "block", "different_layout_per_head", "num_random_blocks", "local_window_blocks",
        "global_block_indices", "global_block_end_indices", "attention", "horizontal_global_attention", "seed"}},
      {"bigbird", SparseMode::BigBird,
       {"mode", "block", "different_layout_per_head", "num_random_blocks", "num_sliding_window_blocks",
        "num_global_blocks", "attention", "seed"}},
      {"bslongformer", SparseMode::BSLongformer,
       {"mode", "block", "different_layout_per_head", "num_sliding_window_blocks", "global_block_indices",
        "global_block_end_indices", "attention", "seed"}},
      {"local_sliding_window", SparseMode::LocalSlidingWindow,
       {"mode", "block", "num_sliding_window_blocks", "attention", "seed"}},
      {"dynamic_nm", SparseMode::DynamicNM, {"mode", "n", "m", "seed"}},
  };
  return m;
}

bool has_key(const ModeInfo& m, const std::string& k) {
  for (const std::string& x : m.keys) {
    if (x == k) return true;
  }
  return false;
}

std::string key_list(const ModeInfo& m) {
  std::string s;
  for (size_t i = 0; i < m.keys.size(); ++i) s += (i ? ", " : "") + m.keys[i];
  return s;
}

bool pos_int(int64_t v) { return v >= 1 && v <= INT_MAX; }
bool nonneg_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

std::optional<int> get_int(Section& s, const ModeInfo& m, const std::string& key, bool (*ok)(int64_t),
                           const std::string& expect) {
  if (!has_key(m, key)) return std::nullopt;
  auto v = s.integer(key, ok, expect);
  if (!v) return std::nullopt;
  return static_cast<int>(*v);
}

std::optional<std::vector<int>> get_list(Section& s, const ModeInfo& m, const std::string& key, bool (*ok)(int64_t),
                                         const std::string& expect, bool allow_empty, bool nullable) {
  if (!has_key(m, key)) return std::nullopt;
  auto v = s.int_list(key, ok, expect, allow_empty, nullable);
  if (!v) return std::nullopt;
  return std::vector<int>(v->begin(), v->end());
}

// Start/end index pairs of variable and bslongformer (DeepSpeed's constructor checks).
void check_global_ranges(Section& s, const std::vector<int>& starts, const std::vector<int>& ends) {
  if (starts.size() != ends.size()) {
    s.issues().error(s.key_path("global_block_end_indices"),
                     "Global block start indices length, " + std::to_string(starts.size()) +
                         ", must be same as global block end indices length, " + std::to_string(ends.size()) + "!");
    return;
  }
  for (size_t i = 0; i < starts.size(); ++i) {
    if (starts[i] >= ends[i]) {
      s.issues().error(s.key_path("global_block_end_indices") + "[" + std::to_string(i) + "]",
                       "Global block start index, " + std::to_string(starts[i]) +
                           ", must be smaller than global block end index, " + std::to_string(ends[i]) + "!");
    }
  }
}

}  // namespace

void read_sparse_attention(const Json& obj, const std::string& path, Issues& issues, SparseAttentionConfig& out) {
  Section s(obj, path, issues);
  out = SparseAttentionConfig{};
  const ModeInfo* mode = &modes()[1];  // DeepSpeed's default mode is "fixed"
  if (s.has("mode")) {
    std::vector<std::string> names;
    for (const ModeInfo& m : modes()) names.push_back(m.name);
    auto name = s.choice("mode", names, false);
    if (!name) {
      // Without a mode the other keys cannot be judged; one error is enough.
      for (const std::string& k : s.unread_keys()) s.consume(k);
      return;
    }
    for (const ModeInfo& m : modes()) {
      if (*name == m.name) mode = &m;
    }
  }
  out.mode = mode->mode;
  // LocalSlidingWindowSparsityConfig's default is unidirectional, unlike every other structure.
  if (out.mode == SparseMode::LocalSlidingWindow) out.attention = "unidirectional";

  for (const std::string& k : s.unread_keys()) {
    if (has_key(*mode, k)) continue;
    for (const ModeInfo& other : modes()) {
      if (has_key(other, k)) {
        s.consume(k);
        issues.error(s.key_path(k), in_quotes(k) + " is not a key of mode " + in_quotes(mode->name) + " (its keys: " +
                                        key_list(*mode) + "); DeepSpeed would ignore it silently");
        break;
      }
    }
  }

  if (has_key(*mode, "block")) {
    auto b = s.integer("block", [](int64_t v) { return v == 16 || v == 32 || v == 64 || v == 128; },
                       "16, 32, 64 or 128 (the block-sparse kernels' tile sizes)");
    if (b) out.block = static_cast<int>(*b);
  }
  if (has_key(*mode, "different_layout_per_head")) {
    if (auto v = s.boolean("different_layout_per_head")) out.different_layout_per_head = *v;
  }
  auto local = get_int(s, *mode, "num_local_blocks", pos_int, "a positive integer");
  if (local) out.num_local_blocks = *local;
  const bool fixed = out.mode == SparseMode::Fixed;
  auto global = get_int(s, *mode, "num_global_blocks", fixed ? pos_int : nonneg_int,
                        fixed ? "a positive integer" : "an integer >= 0");
  if (global) out.num_global_blocks = *global;
  bool attention_ok = true;
  if (has_key(*mode, "attention") && s.has("attention")) {
    auto a = s.choice("attention", {"bidirectional", "unidirectional"}, false);
    if (a) out.attention = *a;
    attention_ok = a.has_value();
  }
  if (has_key(*mode, "horizontal_global_attention")) {
    if (auto v = s.boolean("horizontal_global_attention")) out.horizontal_global_attention = *v;
  }
  auto patterns = get_int(s, *mode, "num_different_global_patterns", pos_int, "a positive integer");
  if (patterns) out.num_different_global_patterns = *patterns;
  if (auto v = get_int(s, *mode, "num_random_blocks", nonneg_int, "an integer >= 0")) out.num_random_blocks = *v;
  if (auto v = get_list(s, *mode, "local_window_blocks", pos_int, "positive integers", false, false)) {
    out.local_window_blocks = *v;
  }
  auto starts = get_list(s, *mode, "global_block_indices", nonneg_int, "integers >= 0", true, false);
  if (starts) out.global_block_indices = *starts;
  auto ends = get_list(s, *mode, "global_block_end_indices", nonneg_int, "integers >= 0 (or null)", true, true);
  if (ends) out.global_block_end_indices = *ends;
  if (auto v = get_int(s, *mode, "num_sliding_window_blocks", pos_int, "a positive integer")) {
    out.num_sliding_window_blocks = *v;
  }
  auto n = get_int(s, *mode, "n", pos_int, "1 or 2 (keep n of every m keys: 1:2 or 2:4)");
  auto m = get_int(s, *mode, "m", pos_int, "2 or 4 (keep n of every m keys: 1:2 or 2:4)");
  if (n) out.n = *n;
  if (m) out.m = *m;
  if (s.has("seed")) {
    if (auto v = s.unsigned_integer("seed", "an integer >= 0")) out.seed = *v;
  }

  // Checks across keys, with DeepSpeed's constructor messages where it has them.
  const std::string horizontal_msg = "only \"bi-directional\" attentions can support horizontal global attention!";
  const bool fixed_ok = (local || !s.has("num_local_blocks")) && (global || !s.has("num_global_blocks")) &&
                        (patterns || !s.has("num_different_global_patterns"));
  if (fixed && fixed_ok) {
    const int L = out.num_local_blocks, G = out.num_global_blocks, P = out.num_different_global_patterns;
    if (L % G != 0) {
      issues.error(s.key_path("num_local_blocks"), "Number of blocks in a local window, " + std::to_string(L) +
                                                       ", must be dividable by number of global blocks, " +
                                                       std::to_string(G) + "!");
    }
    if (P > 1 && !out.different_layout_per_head) {
      issues.error(s.key_path("num_different_global_patterns"),
                   "Number of different layouts cannot be more than one when you have set a single layout for all "
                   "heads! Set different_layout_per_head to true.");
    }
    if (L % G == 0 && P > L / G) {
      issues.error(s.key_path("num_different_global_patterns"),
                   "Number of layout versions (num_different_global_patterns), " + std::to_string(P) +
                       ", cannot be larger than number of local window blocks divided by number of global blocks, " +
                       std::to_string(L) + " / " + std::to_string(G) + " = " + std::to_string(L / G) + "!");
    }
  }
  if ((fixed || out.mode == SparseMode::Variable) && attention_ok && out.attention != "bidirectional" &&
      out.horizontal_global_attention) {
    issues.error(s.key_path("horizontal_global_attention"), horizontal_msg);
  }
  if ((out.mode == SparseMode::Variable || out.mode == SparseMode::BSLongformer) && out.global_block_end_indices) {
    check_global_ranges(s, out.global_block_indices, *out.global_block_end_indices);
  }
  if (out.mode == SparseMode::DynamicNM && !(out.n == 1 && out.m == 2) && !(out.n == 2 && out.m == 4)) {
    if (n.has_value() == s.has("n") && m.has_value() == s.has("m")) {
      issues.error(s.key_path("n"), "n " + std::to_string(out.n) + " : m " + std::to_string(out.m) +
                                        " is not supported; dynamic N:M attention keeps n of every m keys and "
                                        "supports 1:2 and 2:4 only");
    }
  }
  s.finish();
}

void read_transformer_kernel(const Json& obj, const std::string& path, Issues& issues, TransformerKernelConfig& out,
                             bool* given_fp16, bool* given_bf16) {
  Section s(obj, path, issues);
  out = TransformerKernelConfig{};
  const std::string from_model = ", or -1 (taken from the model)";
  auto size = [&](const char* key, int64_t& field) {
    if (auto v = s.integer(key, [](int64_t x) { return x == -1 || x >= 1; }, "a positive integer" + from_model)) field = *v;
  };
  auto ratio = [&](const char* key, double& field) {
    if (auto v = s.number(key, [](double x) { return x == -1.0 || (x >= 0.0 && x < 1.0); }, "a ratio in [0, 1)" + from_model)) {
      field = *v;
    }
  };
  auto flag = [&](const char* key, bool& field) {
    if (auto v = s.boolean(key)) field = *v;
  };
  flag("enabled", out.enabled);
  size("batch_size", out.batch_size);
  size("hidden_size", out.hidden_size);
  size("intermediate_size", out.intermediate_size);
  size("heads", out.heads);
  ratio("attn_dropout_ratio", out.attn_dropout_ratio);
  ratio("hidden_dropout_ratio", out.hidden_dropout_ratio);
  size("num_hidden_layers", out.num_hidden_layers);
  if (auto v = s.number("initializer_range", [](double x) { return x == -1.0 || x >= 0.0; },
                        "a standard deviation >= 0" + from_model)) {
    out.initializer_range = *v;
  }
  if (auto v = s.number("layer_norm_eps", [](double x) { return x > 0.0; }, "a number > 0")) out.layer_norm_eps = *v;
  if (auto v = s.integer("local_rank", [](int64_t x) { return x >= -1; }, "a GPU index >= 0, or -1 (the current device)")) {
    out.local_rank = *v;
  }
  if (auto v = s.integer("seed", [](int64_t x) { return x >= -1; }, "an integer >= 0, or -1 (not set)")) out.seed = *v;
  flag("fp16", out.fp16);
  flag("bf16", out.bf16);
  flag("pre_layer_norm", out.pre_layer_norm);
  flag("normalize_invertible", out.normalize_invertible);
  flag("gelu_checkpoint", out.gelu_checkpoint);
  flag("adjust_init_range", out.adjust_init_range);
  flag("attn_dropout_checkpoint", out.attn_dropout_checkpoint);
  flag("stochastic_mode", out.stochastic_mode);
  flag("return_tuple", out.return_tuple);
  if (given_fp16) *given_fp16 = s.has("fp16");
  if (given_bf16) *given_bf16 = s.has("bf16");

  if (out.fp16 && out.bf16) {
    issues.error(s.key_path("bf16"), "fp16 and bf16 cannot both be true; the kernel runs in one precision");
  }
  if (out.hidden_size > 0 && out.heads > 0 && out.hidden_size % out.heads != 0) {
    issues.error(s.key_path("heads"), "hidden_size " + std::to_string(out.hidden_size) + " is not divisible by heads " +
                                          std::to_string(out.heads) + "; each head gets hidden_size / heads features");
  }
  // Fields of DeepSpeedTransformerConfig that are not configuration.
  if (s.has("training")) {
    s.consume("training");
    issues.warn(s.key_path("training"), "ignored: it is set from the module's training mode at every forward");
  }
  if (s.has("max_seq_length")) {
    s.consume("max_seq_length");
    issues.warn(s.key_path("max_seq_length"), "ignored: removed in DeepSpeed v0.5.4; any sequence length works");
  }
  s.finish();
}

}  // namespace ds::config_detail

namespace ds {
namespace {

template <typename Out, typename Reader>
Out parse_section(std::string_view text, const std::string& path, Reader reader) {
  std::vector<ConfigIssue> errors, warnings;
  config_detail::Issues issues{errors, warnings};
  Out out{};
  if (auto doc = config_detail::read_json(text, issues, path)) {
    if (doc->is_object()) {
      reader(*doc, path, issues, out);
    } else {
      issues.error(path, "got " + config_detail::preview(*doc) + ", expected a JSON object");
    }
  }
  for (const ConfigIssue& w : warnings) std::cerr << "warning: " << w.format() << "\n";
  if (!errors.empty()) throw ConfigError(std::move(errors));
  return out;
}

}  // namespace

SparseAttentionConfig parse_sparse_attention_section(std::string_view json_object_text) {
  return parse_section<SparseAttentionConfig>(
      json_object_text, "sparse_attention",
      [](const config_detail::Json& o, const std::string& p, config_detail::Issues& i, SparseAttentionConfig& out) {
        config_detail::read_sparse_attention(o, p, i, out);
      });
}

TransformerKernelConfig parse_transformer_kernel_section(std::string_view json_object_text) {
  return parse_section<TransformerKernelConfig>(
      json_object_text, "transformer_kernel",
      [](const config_detail::Json& o, const std::string& p, config_detail::Issues& i, TransformerKernelConfig& out) {
        config_detail::read_transformer_kernel(o, p, i, out);
      });
}

}  // namespace ds
