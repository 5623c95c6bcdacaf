// Sparsity structures of block-sparse self-attention: which [block x block] tiles of the attention
// matrix are computed. DeepSpeed's classes (deepspeed/ops/sparse_attention/sparsity_config.py) with
// their parameters, defaults, order of operations and error messages; deterministic structures
// give layouts identical to DeepSpeed's.
//
// Contract:
//  - make_layout(seq_len) returns an int64 CPU tensor [num_heads, seq_len/block, seq_len/block],
//    values 0/1, indexed [head, query block row, key block column].
//  - Errors: DeepSpeed's ValueError -> c10::ValueError, NotImplementedError ->
//    c10::NotImplementedError (both c10::Error; Python sees the same exception types), with
//    DeepSpeed's messages.
//  - Random blocks (Variable, BigBird) come from a seeded generator (prng.h): make_layout is a pure
//    function of (config, seed, seq_len), so every rank builds the same layout without a broadcast.
//    DeepSpeed draws from Python's global `random` instead (different on every call and rank).
//  - A user-defined structure subclasses SparsityConfig and overrides make_layout, using
//    setup_layout / check_and_propagate_first_head_layout like the built-in ones.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ds {

struct SparseAttentionConfig;
class Xoshiro256;

class SparsityConfig {
 public:
  SparsityConfig(int64_t num_heads, int64_t block = 16, bool different_layout_per_head = false);
  virtual ~SparsityConfig() = default;

  // [num_heads, seq_len/block, seq_len/block] int64. DeepSpeed's base class has no make_layout.
  virtual at::Tensor make_layout(int64_t seq_len) const = 0;
  // "dense", "fixed", ... (user structures may return anything).
  virtual std::string name() const = 0;
  // attention == "unidirectional": SparseSelfAttention then makes the diagonal blocks causal inside
  // the block (AttentionOptions::causal_diagonal). User structures without the notion say false.
  virtual bool unidirectional() const { return false; }
  // False for structures chosen per input at run time (NMSparsityConfig): make_layout throws, and
  // SparseSelfAttention builds no master layout and pads nothing to blocks.
  virtual bool has_block_layout() const { return true; }

  int64_t num_heads() const { return num_heads_; }
  int64_t block() const { return block_; }
  bool different_layout_per_head() const { return different_layout_per_head_; }
  int64_t num_layout_heads() const { return different_layout_per_head_ ? num_heads_ : 1; }

 protected:
  // Zeros [num_heads, seq_len/block, seq_len/block]; DeepSpeed's divisibility error.
  at::Tensor setup_layout(int64_t seq_len) const;
  // Copies head 0 into the other heads unless different_layout_per_head.
  void check_and_propagate_first_head_layout(at::Tensor& layout) const;

 private:
  int64_t num_heads_;
  int64_t block_;
  bool different_layout_per_head_;
};

class DenseSparsityConfig : public SparsityConfig {
 public:
  explicit DenseSparsityConfig(int64_t num_heads, int64_t block = 16, bool different_layout_per_head = false);
  at::Tensor make_layout(int64_t seq_len) const override;
  std::string name() const override { return "dense"; }
};

class FixedSparsityConfig : public SparsityConfig {
 public:
  explicit FixedSparsityConfig(int64_t num_heads, int64_t block = 16, bool different_layout_per_head = false,
                               int64_t num_local_blocks = 4, int64_t num_global_blocks = 1,
                               const std::string& attention = "bidirectional",
                               bool horizontal_global_attention = false, int64_t num_different_global_patterns = 1);
  at::Tensor make_layout(int64_t seq_len) const override;
  std::string name() const override { return "fixed"; }

  int64_t num_local_blocks() const { return num_local_blocks_; }
  int64_t num_global_blocks() const { return num_global_blocks_; }
  const std::string& attention() const { return attention_; }
  bool unidirectional() const override { return attention_ == "unidirectional"; }
  bool horizontal_global_attention() const { return horizontal_; }
  int64_t num_different_global_patterns() const { return num_patterns_; }

 private:
  void set_local_layout(int64_t h, at::Tensor& layout) const;
  void set_global_layout(int64_t h, at::Tensor& layout) const;
  int64_t num_local_blocks_, num_global_blocks_;
  std::string attention_;
  bool horizontal_;
  int64_t num_patterns_;
};

class VariableSparsityConfig : public SparsityConfig {
 public:
  explicit VariableSparsityConfig(int64_t num_heads, int64_t block = 16, bool different_layout_per_head = false,
                                  int64_t num_random_blocks = 0, std::vector<int64_t> local_window_blocks = {4},
                                  std::vector<int64_t> global_block_indices = {0},
                                  std::optional<std::vector<int64_t>> global_block_end_indices = std::nullopt,
                                  const std::string& attention = "bidirectional",
                                  bool horizontal_global_attention = false, uint64_t seed = 0);
  at::Tensor make_layout(int64_t seq_len) const override;
  std::string name() const override { return "variable"; }

  int64_t num_random_blocks() const { return num_random_blocks_; }
  const std::vector<int64_t>& local_window_blocks() const { return local_windows_; }
  const std::vector<int64_t>& global_block_indices() const { return global_starts_; }
  const std::optional<std::vector<int64_t>>& global_block_end_indices() const { return global_ends_; }
  const std::string& attention() const { return attention_; }
  bool unidirectional() const override { return attention_ == "unidirectional"; }
  bool horizontal_global_attention() const { return horizontal_; }
  uint64_t seed() const { return seed_; }

 private:
  void set_random_layout(int64_t h, at::Tensor& layout) const;
  void set_local_layout(int64_t h, at::Tensor& layout) const;
  void set_global_layout(int64_t h, at::Tensor& layout) const;
  int64_t num_random_blocks_;
  std::vector<int64_t> local_windows_, global_starts_;
  std::optional<std::vector<int64_t>> global_ends_;
  std::string attention_;
  bool horizontal_;
  uint64_t seed_;
};

class BigBirdSparsityConfig : public SparsityConfig {
 public:
  explicit BigBirdSparsityConfig(int64_t num_heads, int64_t block = 16, bool different_layout_per_head = false,
                                 int64_t num_random_blocks = 1, int64_t num_sliding_window_blocks = 3,
                                 int64_t num_global_blocks = 1, const std::string& attention = "bidirectional",
                                 uint64_t seed = 0);
  at::Tensor make_layout(int64_t seq_len) const override;
  std::string name() const override { return "bigbird"; }

  int64_t num_random_blocks() const { return num_random_blocks_; }
  int64_t num_sliding_window_blocks() const { return num_sliding_; }
  int64_t num_global_blocks() const { return num_global_blocks_; }
  const std::string& attention() const { return attention_; }
  bool unidirectional() const override { return attention_ == "unidirectional"; }
  uint64_t seed() const { return seed_; }

 private:
  void set_random_layout(int64_t h, at::Tensor& layout) const;
  void set_sliding_window_layout(int64_t h, at::Tensor& layout) const;
  void set_global_layout_itc(int64_t h, at::Tensor& layout) const;
  int64_t num_random_blocks_, num_sliding_, num_global_blocks_;
  std::string attention_;
  uint64_t seed_;
};

class BSLongformerSparsityConfig : public SparsityConfig {
 public:
  explicit BSLongformerSparsityConfig(int64_t num_heads, int64_t block = 16, bool different_layout_per_head = false,
                                      int64_t num_sliding_window_blocks = 3,
                                      std::vector<int64_t> global_block_indices = {0},
                                      std::optional<std::vector<int64_t>> global_block_end_indices = std::nullopt,
                                      const std::string& attention = "bidirectional");
  at::Tensor make_layout(int64_t seq_len) const override;
  std::string name() const override { return "bslongformer"; }

  int64_t num_sliding_window_blocks() const { return num_sliding_; }
  const std::vector<int64_t>& global_block_indices() const { return global_starts_; }
  const std::optional<std::vector<int64_t>>& global_block_end_indices() const { return global_ends_; }
  const std::string& attention() const { return attention_; }
  bool unidirectional() const override { return attention_ == "unidirectional"; }

 private:
  void set_sliding_window_layout(int64_t h, at::Tensor& layout) const;
  void set_global_layout(int64_t h, at::Tensor& layout) const;
  int64_t num_sliding_;
  std::vector<int64_t> global_starts_;
  std::optional<std::vector<int64_t>> global_ends_;
  std::string attention_;
};

// DeepSpeed >= 0.7: no different_layout_per_head parameter; default attention is unidirectional.
class LocalSlidingWindowSparsityConfig : public SparsityConfig {
 public:
  explicit LocalSlidingWindowSparsityConfig(int64_t num_heads, int64_t block = 16,
                                            int64_t num_sliding_window_blocks = 3,
                                            const std::string& attention = "unidirectional");
  at::Tensor make_layout(int64_t seq_len) const override;
  std::string name() const override { return "local_sliding_window"; }

  int64_t num_sliding_window_blocks() const { return num_sliding_; }
  const std::string& attention() const { return attention_; }
  bool unidirectional() const override { return attention_ == "unidirectional"; }

 private:
  int64_t num_sliding_;
  std::string attention_;
};

// Dynamic N:M fine-grained sparsity (mode "dynamic_nm", after DFSS; sparse_attention/nm): in every
// group of m consecutive keys of a query row the n largest scores are kept, so the pattern depends on
// the input and there is no block layout. 1:2 and 2:4 only. block() is m, the granularity the
// selection pads the key axis to (inside the op: callers pad nothing). unidirectional: causal.
class NMSparsityConfig : public SparsityConfig {
 public:
  explicit NMSparsityConfig(int64_t num_heads, int64_t n = 2, int64_t m = 4,
                            const std::string& attention = "bidirectional");
  // Throws c10::ValueError: the layout is chosen per input at run time.
  at::Tensor make_layout(int64_t seq_len) const override;
  std::string name() const override { return "dynamic_nm"; }
  bool unidirectional() const override { return attention_ == "unidirectional"; }
  bool has_block_layout() const override { return false; }

  int64_t n() const { return n_; }
  int64_t m() const { return m_; }
  const std::string& attention() const { return attention_; }

 private:
  int64_t n_, m_;
  std::string attention_;
};

// Builds the structure named by a parsed "sparse_attention" config section (engine/config) for a
// layer with num_heads heads. Each mode takes the keys DeepSpeed's get_sparse_attention keeps for
// it, plus `seed` for the random ones.
std::shared_ptr<SparsityConfig> make_sparsity_config(const SparseAttentionConfig& config, int64_t num_heads);

// "1111...1 ...11111" style picture of one head's layout (rows separated by spaces), the notation
// of the reference's test vectors; for tests and error messages.
std::string layout_rows_string(const at::Tensor& layout, int64_t head = 0);

}  // namespace ds
