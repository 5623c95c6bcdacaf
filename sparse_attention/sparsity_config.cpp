#include "sparse_attention/sparsity_config.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "engine/config/ds_config.h"
#include "sparse_attention/nm/nm_attention.h"
#include "sparse_attention/prng.h"

namespace ds {
namespace {

// Python slice semantics for [start:stop] on an axis of length n (negative values count from the
// end, then clamp): DeepSpeed's setters slice with values that can be negative or past the end
// (e.g. Fixed's last short window when nb < num_global_blocks), and we must set the same cells.
std::pair<int64_t, int64_t> py_slice(int64_t start, int64_t stop, int64_t n) {
  auto norm = [n](int64_t v) { return std::clamp(v < 0 ? v + n : v, int64_t{0}, n); };
  return {norm(start), norm(stop)};
}

// Writes into one contiguous int64 [H, nb, nb] layout.
class LayoutWriter {
 public:
  explicit LayoutWriter(at::Tensor& layout) : p_(layout.data_ptr<int64_t>()), nb_(layout.size(1)) {}
  int64_t nb() const { return nb_; }
  void set(int64_t h, int64_t r, int64_t c) { p_[(h * nb_ + r) * nb_ + c] = 1; }
  // layout[h, r0:r1, c0:c1] = 1 with Python slice semantics.
  void fill(int64_t h, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    auto [ra, rb] = py_slice(r0, r1, nb_);
    auto [ca, cb] = py_slice(c0, c1, nb_);
    for (int64_t r = ra; r < rb; ++r)
      for (int64_t c = ca; c < cb; ++c) set(h, r, c);
  }
  // torch.tril on head h (diagonal kept).
  void tril(int64_t h) {
    for (int64_t r = 0; r < nb_; ++r)
      for (int64_t c = r + 1; c < nb_; ++c) p_[(h * nb_ + r) * nb_ + c] = 0;
  }

 private:
  int64_t* p_;
  int64_t nb_;
};

bool is_known_attention(const std::string& a) { return a == "unidirectional" || a == "bidirectional"; }

// DeepSpeed's NotImplementedError for Fixed/Variable/BigBird. BSLongformer and LocalSlidingWindow
// do not validate in DeepSpeed (a typo silently means bidirectional); we do, on purpose.
void check_attention(const std::string& attention) {
  TORCH_CHECK_NOT_IMPLEMENTED(is_known_attention(attention),
                              "only \"uni/bi-directional\" attentions are supported for now! (got attention='",
                              attention, "')");
}

void check_global_indices(const std::vector<int64_t>& starts, const std::optional<std::vector<int64_t>>& ends) {
  for (int64_t s : starts)
    TORCH_CHECK_VALUE(s >= 0, "global_block_indices must be >= 0, got ", s);
  if (!ends) return;
  TORCH_CHECK_VALUE(starts.size() == ends->size(), "Global block start indices length, ", starts.size(),
                    ", must be same as global block end indices length, ", ends->size(), "!");
  for (size_t i = 0; i < starts.size(); ++i)
    TORCH_CHECK_VALUE(starts[i] < (*ends)[i], "Global block start index, ", starts[i],
                      ", must be smaller than global block end index, ", (*ends)[i], "!");
}

void check_non_negative(int64_t v, const char* name) {
  TORCH_CHECK_VALUE(v >= 0, name, " must be >= 0, got ", v);
}

// Row r of a symmetric sliding window of n blocks: [max(0, r - n/2), min(r + n/2 + 1, nb)).
void check_sliding(int64_t nb, int64_t n) {
  TORCH_CHECK_VALUE(!(nb < n), "Number of sliding window blocks, ", n,
                    ", must be smaller than overall number of blocks in a row, ", nb, "!");
}

void check_random(int64_t nb, int64_t n) {
  TORCH_CHECK_VALUE(!(nb < n), "Number of random blocks, ", n,
                    ", must be smaller than overall number of blocks in a row, ", nb, "!");
}

// Random blocks of Variable and BigBird: num_random blocks per row from a generator seeded by
// (seed, head), so every rank builds the same layout. Causal rows draw from [0, row] only (DeepSpeed
// samples the whole row, letting a causal model see future blocks, and BigBird raises "Sample
// larger than population" on the first rows); a row shorter than num_random takes all of it.
void set_random_blocks(at::Tensor& layout, int64_t h, int64_t num_random, bool unidirectional, uint64_t seed) {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  check_random(nb, num_random);
  if (num_random == 0) return;
  Xoshiro256 rng(seed, static_cast<uint64_t>(h));
  for (int64_t row = 0; row < nb; ++row) {
    const int64_t population = unidirectional ? row + 1 : nb;
    for (int64_t col : rng.sample(population, std::min(num_random, population))) w.set(h, row, col);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
SparsityConfig::SparsityConfig(int64_t num_heads, int64_t block, bool different_layout_per_head)
    : num_heads_(num_heads), block_(block), different_layout_per_head_(different_layout_per_head) {
  TORCH_CHECK_VALUE(num_heads > 0, "num_heads must be positive, got ", num_heads);
  TORCH_CHECK_VALUE(block > 0, "block must be positive, got ", block);
}

at::Tensor SparsityConfig::setup_layout(int64_t seq_len) const {
  TORCH_CHECK_VALUE(seq_len % block_ == 0, "Sequence Length, ", seq_len, ", needs to be dividable by Block size ",
                    block_, "!");
  TORCH_CHECK_VALUE(seq_len > 0, "Sequence Length must be positive, got ", seq_len);
  const int64_t nb = seq_len / block_;
  return at::zeros({num_heads_, nb, nb}, at::dtype(at::kLong));
}

void SparsityConfig::check_and_propagate_first_head_layout(at::Tensor& layout) const {
  if (!different_layout_per_head_ && num_heads_ > 1) layout.slice(0, 1).copy_(layout.select(0, 0).unsqueeze(0));
}

// ---------------------------------------------------------------------------------------------
DenseSparsityConfig::DenseSparsityConfig(int64_t num_heads, int64_t block, bool different_layout_per_head)
    : SparsityConfig(num_heads, block, different_layout_per_head) {}

at::Tensor DenseSparsityConfig::make_layout(int64_t seq_len) const { return setup_layout(seq_len).fill_(1); }

// ---------------------------------------------------------------------------------------------
FixedSparsityConfig::FixedSparsityConfig(int64_t num_heads, int64_t block, bool different_layout_per_head,
                                         int64_t num_local_blocks, int64_t num_global_blocks,
                                         const std::string& attention, bool horizontal_global_attention,
                                         int64_t num_different_global_patterns)
    : SparsityConfig(num_heads, block, different_layout_per_head),
      num_local_blocks_(num_local_blocks),
      num_global_blocks_(num_global_blocks),
      attention_(attention),
      horizontal_(horizontal_global_attention),
      num_patterns_(num_different_global_patterns) {
  // Python would fail with ZeroDivisionError / an empty range on these; we say why.
  TORCH_CHECK_VALUE(num_local_blocks > 0, "num_local_blocks must be positive, got ", num_local_blocks);
  TORCH_CHECK_VALUE(num_global_blocks > 0, "num_global_blocks must be positive, got ", num_global_blocks);
  TORCH_CHECK_VALUE(num_different_global_patterns > 0, "num_different_global_patterns must be positive, got ",
                    num_different_global_patterns);
  TORCH_CHECK_VALUE(num_local_blocks % num_global_blocks == 0, "Number of blocks in a local window, ",
                    num_local_blocks, ", must be dividable by number of global blocks, ", num_global_blocks, "!");
  check_attention(attention);
  TORCH_CHECK_VALUE(!(attention != "bidirectional" && horizontal_global_attention),
                    "only \"bi-directional\" attentions can support horizontal global attention!");
  TORCH_CHECK_VALUE(!(num_different_global_patterns > 1 && !different_layout_per_head),
                    "Number of different layouts cannot be more than one when you have set a single layout for all "
                    "heads! Set different_layout_per_head to True.");
  TORCH_CHECK_VALUE(num_different_global_patterns <= num_local_blocks / num_global_blocks,
                    "Number of layout versions (num_different_global_patterns), ", num_different_global_patterns,
                    ", cannot be larger than number of local window blocks divided by number of global blocks, ",
                    num_local_blocks, " / ", num_global_blocks, " = ", num_local_blocks / num_global_blocks, "!");
}

void FixedSparsityConfig::set_local_layout(int64_t h, at::Tensor& layout) const {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  const bool uni = attention_ == "unidirectional";
  for (int64_t i = 0; i < nb; i += num_local_blocks_) {
    const int64_t end = std::min(i + num_local_blocks_, nb);
    for (int64_t row = i; row < end; ++row)
      for (int64_t col = i; col < (uni ? row + 1 : end); ++col) w.set(h, row, col);
  }
}

void FixedSparsityConfig::set_global_layout(int64_t h, at::Tensor& layout) const {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  const int64_t L = num_local_blocks_, G = num_global_blocks_;
  const bool bidir = attention_ == "bidirectional";
  // Pattern p = h % patterns uses the G blocks that end p*G blocks before each window's end.
  const int64_t first = L - (1 + h % num_patterns_) * G;
  int64_t end = nb - nb % L;
  for (int64_t i = first; i < end; i += L) {
    w.fill(h, bidir ? 0 : i, nb, i, i + G);
    if (horizontal_) w.fill(h, i, i + G, 0, nb);
  }
  if (end < nb) {  // the short last window
    const int64_t start = std::min(end + first, nb - G);
    end = start + G;
    w.fill(h, bidir ? 0 : start, nb, start, end);
    if (horizontal_) w.fill(h, start, end, 0, nb);
  }
}

at::Tensor FixedSparsityConfig::make_layout(int64_t seq_len) const {
  at::Tensor layout = setup_layout(seq_len);
  for (int64_t h = 0; h < num_layout_heads(); ++h) {
    set_local_layout(h, layout);
    set_global_layout(h, layout);
  }
  check_and_propagate_first_head_layout(layout);
  return layout;
}

// ---------------------------------------------------------------------------------------------
VariableSparsityConfig::VariableSparsityConfig(int64_t num_heads, int64_t block, bool different_layout_per_head,
                                               int64_t num_random_blocks, std::vector<int64_t> local_window_blocks,
                                               std::vector<int64_t> global_block_indices,
                                               std::optional<std::vector<int64_t>> global_block_end_indices,
                                               const std::string& attention, bool horizontal_global_attention,
                                               uint64_t seed)
    : SparsityConfig(num_heads, block, different_layout_per_head),
      num_random_blocks_(num_random_blocks),
      local_windows_(std::move(local_window_blocks)),
      global_starts_(std::move(global_block_indices)),
      global_ends_(std::move(global_block_end_indices)),
      attention_(attention),
      horizontal_(horizontal_global_attention),
      seed_(seed) {
  check_non_negative(num_random_blocks, "num_random_blocks");
  // Python fails later with NameError (empty list) or "range() arg 3 must not be zero".
  TORCH_CHECK_VALUE(!local_windows_.empty(), "local_window_blocks must list at least one window size");
  for (int64_t s : local_windows_) TORCH_CHECK_VALUE(s > 0, "local_window_blocks entries must be positive, got ", s);
  check_global_indices(global_starts_, global_ends_);
  check_attention(attention);
  TORCH_CHECK_VALUE(!(attention != "bidirectional" && horizontal_global_attention),
                    "only \"bi-directional\" attentions can support horizontal global attention!");
}

void VariableSparsityConfig::set_random_layout(int64_t h, at::Tensor& layout) const {
  set_random_blocks(layout, h, num_random_blocks_, attention_ == "unidirectional", seed_);
}

void VariableSparsityConfig::set_local_layout(int64_t h, at::Tensor& layout) const {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  const bool uni = attention_ == "unidirectional";
  auto window = [&](int64_t start, int64_t end) {
    for (int64_t row = start; row < end; ++row)
      for (int64_t col = start; col < (uni ? row + 1 : end); ++col) w.set(h, row, col);
  };
  int64_t start = 0, end = 0;
  for (int64_t size : local_windows_) {
    end = std::min(end + size, nb);
    window(start, end);
    start += size;
  }
  // The remaining blocks are tiled with windows of the last listed size.
  const int64_t last = local_windows_.back();
  for (int64_t i = start; i < nb; i += last) window(i, std::min(i + last, nb));
}

void VariableSparsityConfig::set_global_layout(int64_t h, at::Tensor& layout) const {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  const bool bidir = attention_ == "bidirectional";
  for (size_t i = 0; i < global_starts_.size(); ++i) {
    const int64_t s = global_starts_[i];
    if (s >= nb) continue;  // indices past the sequence are ignored, as in DeepSpeed
    const int64_t e = global_ends_ ? std::min((*global_ends_)[i], nb) : s + 1;
    if (horizontal_) w.fill(h, s, e, 0, nb);
    w.fill(h, bidir ? 0 : s, nb, s, e);
  }
}

at::Tensor VariableSparsityConfig::make_layout(int64_t seq_len) const {
  at::Tensor layout = setup_layout(seq_len);
  for (int64_t h = 0; h < num_layout_heads(); ++h) {
    set_random_layout(h, layout);
    set_local_layout(h, layout);
    set_global_layout(h, layout);
  }
  check_and_propagate_first_head_layout(layout);
  return layout;
}

// ---------------------------------------------------------------------------------------------
BigBirdSparsityConfig::BigBirdSparsityConfig(int64_t num_heads, int64_t block, bool different_layout_per_head,
                                             int64_t num_random_blocks, int64_t num_sliding_window_blocks,
                                             int64_t num_global_blocks, const std::string& attention, uint64_t seed)
    : SparsityConfig(num_heads, block, different_layout_per_head),
      num_random_blocks_(num_random_blocks),
      num_sliding_(num_sliding_window_blocks),
      num_global_blocks_(num_global_blocks),
      attention_(attention),
      seed_(seed) {
  check_non_negative(num_random_blocks, "num_random_blocks");
  check_non_negative(num_sliding_window_blocks, "num_sliding_window_blocks");
  check_non_negative(num_global_blocks, "num_global_blocks");
  check_attention(attention);
}

void BigBirdSparsityConfig::set_random_layout(int64_t h, at::Tensor& layout) const {
  set_random_blocks(layout, h, num_random_blocks_, attention_ == "unidirectional", seed_);
}

void BigBirdSparsityConfig::set_sliding_window_layout(int64_t h, at::Tensor& layout) const {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  check_sliding(nb, num_sliding_);
  const int64_t half = num_sliding_ / 2;
  for (int64_t row = 0; row < nb; ++row) w.fill(h, row, row + 1, std::max<int64_t>(0, row - half), std::min(row + half + 1, nb));
}

void BigBirdSparsityConfig::set_global_layout_itc(int64_t h, at::Tensor& layout) const {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  TORCH_CHECK_VALUE(!(nb < num_global_blocks_), "Number of global blocks, ", num_global_blocks_,
                    ", must be smaller than overall number of blocks in a row, ", nb, "!");
  w.fill(h, 0, num_global_blocks_, 0, nb);
  w.fill(h, 0, nb, 0, num_global_blocks_);
  if (attention_ == "unidirectional") w.tril(h);
}

at::Tensor BigBirdSparsityConfig::make_layout(int64_t seq_len) const {
  at::Tensor layout = setup_layout(seq_len);
  for (int64_t h = 0; h < num_layout_heads(); ++h) {
    set_random_layout(h, layout);
    set_sliding_window_layout(h, layout);
    set_global_layout_itc(h, layout);
  }
  check_and_propagate_first_head_layout(layout);
  return layout;
}

// ---------------------------------------------------------------------------------------------
BSLongformerSparsityConfig::BSLongformerSparsityConfig(int64_t num_heads, int64_t block,
                                                       bool different_layout_per_head,
                                                       int64_t num_sliding_window_blocks,
                                                       std::vector<int64_t> global_block_indices,
                                                       std::optional<std::vector<int64_t>> global_block_end_indices,
                                                       const std::string& attention)
    : SparsityConfig(num_heads, block, different_layout_per_head),
      num_sliding_(num_sliding_window_blocks),
      global_starts_(std::move(global_block_indices)),
      global_ends_(std::move(global_block_end_indices)),
      attention_(attention) {
  check_non_negative(num_sliding_window_blocks, "num_sliding_window_blocks");
  check_global_indices(global_starts_, global_ends_);
  check_attention(attention);
}

void BSLongformerSparsityConfig::set_sliding_window_layout(int64_t h, at::Tensor& layout) const {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  check_sliding(nb, num_sliding_);
  const int64_t half = num_sliding_ / 2;
  for (int64_t row = 0; row < nb; ++row) w.fill(h, row, row + 1, std::max<int64_t>(0, row - half), std::min(row + half + 1, nb));
}

void BSLongformerSparsityConfig::set_global_layout(int64_t h, at::Tensor& layout) const {
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  for (size_t i = 0; i < global_starts_.size(); ++i) {
    const int64_t s = global_starts_[i];
    if (s >= nb) continue;
    const int64_t e = global_ends_ ? std::min((*global_ends_)[i], nb) : s + 1;
    w.fill(h, s, e, 0, nb);
    w.fill(h, 0, nb, s, e);
  }
  if (attention_ == "unidirectional") w.tril(h);
}

at::Tensor BSLongformerSparsityConfig::make_layout(int64_t seq_len) const {
  at::Tensor layout = setup_layout(seq_len);
  for (int64_t h = 0; h < num_layout_heads(); ++h) {
    set_sliding_window_layout(h, layout);
    set_global_layout(h, layout);
  }
  check_and_propagate_first_head_layout(layout);
  return layout;
}

// ---------------------------------------------------------------------------------------------
LocalSlidingWindowSparsityConfig::LocalSlidingWindowSparsityConfig(int64_t num_heads, int64_t block,
                                                                   int64_t num_sliding_window_blocks,
                                                                   const std::string& attention)
    : SparsityConfig(num_heads, block, false), num_sliding_(num_sliding_window_blocks), attention_(attention) {
  check_non_negative(num_sliding_window_blocks, "num_sliding_window_blocks");
  check_attention(attention);
}

at::Tensor LocalSlidingWindowSparsityConfig::make_layout(int64_t seq_len) const {
  at::Tensor layout = setup_layout(seq_len);
  LayoutWriter w(layout);
  const int64_t nb = w.nb();
  check_sliding(nb, num_sliding_);
  const int64_t half = num_sliding_ / 2;
  const bool bidir = attention_ == "bidirectional";
  for (int64_t row = 0; row < nb; ++row)
    w.fill(0, row, row + 1, std::max<int64_t>(0, row - half), bidir ? std::min(row + half + 1, nb) : row + 1);
  check_and_propagate_first_head_layout(layout);
  return layout;
}

// ---------------------------------------------------------------------------------------------
NMSparsityConfig::NMSparsityConfig(int64_t num_heads, int64_t n, int64_t m, const std::string& attention)
    : SparsityConfig(num_heads, m > 0 ? m : 1, false), n_(n), m_(m), attention_(attention) {
  check_nm(n, m);
  check_attention(attention);
}

at::Tensor NMSparsityConfig::make_layout(int64_t seq_len) const {
  TORCH_CHECK_VALUE(false, "sparse_attention.mode 'dynamic_nm' (", n_, ":", m_, ") has no block layout: its "
                    "sparsity is chosen per query row at run time (asked for a layout of ", seq_len, " tokens); "
                    "SparseSelfAttention runs it without one");
  return {};
}

// ---------------------------------------------------------------------------------------------
std::shared_ptr<SparsityConfig> make_sparsity_config(const SparseAttentionConfig& c, int64_t num_heads) {
  auto ints = [](const std::vector<int>& v) { return std::vector<int64_t>(v.begin(), v.end()); };
  std::optional<std::vector<int64_t>> ends;
  if (c.global_block_end_indices) ends = ints(*c.global_block_end_indices);
  switch (c.mode) {
    case SparseMode::Dense:
      return std::make_shared<DenseSparsityConfig>(num_heads, c.block, c.different_layout_per_head);
    case SparseMode::Fixed:
      return std::make_shared<FixedSparsityConfig>(num_heads, c.block, c.different_layout_per_head,
                                                   c.num_local_blocks, c.num_global_blocks, c.attention,
                                                   c.horizontal_global_attention, c.num_different_global_patterns);
    case SparseMode::Variable:
      return std::make_shared<VariableSparsityConfig>(num_heads, c.block, c.different_layout_per_head,
                                                      c.num_random_blocks, ints(c.local_window_blocks),
                                                      ints(c.global_block_indices), ends, c.attention,
                                                      c.horizontal_global_attention, c.seed);
    case SparseMode::BigBird:
      // DeepSpeed's JSON has no `attention` for bigbird/bslongformer (always bidirectional there);
      // the parsed section carries one (default bidirectional), so a causal variant is reachable.
      return std::make_shared<BigBirdSparsityConfig>(num_heads, c.block, c.different_layout_per_head,
                                                     c.num_random_blocks, c.num_sliding_window_blocks,
                                                     c.num_global_blocks, c.attention, c.seed);
    case SparseMode::BSLongformer:
      return std::make_shared<BSLongformerSparsityConfig>(num_heads, c.block, c.different_layout_per_head,
                                                          c.num_sliding_window_blocks, ints(c.global_block_indices),
                                                          ends, c.attention);
    case SparseMode::LocalSlidingWindow:
      return std::make_shared<LocalSlidingWindowSparsityConfig>(num_heads, c.block, c.num_sliding_window_blocks,
                                                                c.attention);
    case SparseMode::DynamicNM:
      // The JSON of dynamic_nm has no `attention` key (the parser keeps the default, bidirectional);
      // passing it on keeps a causal variant reachable for code that builds the section itself.
      return std::make_shared<NMSparsityConfig>(num_heads, c.n, c.m, c.attention);
  }
  TORCH_CHECK_VALUE(false, "sparse_attention.mode: unknown mode ", static_cast<int>(c.mode));
  return nullptr;
}

std::string layout_rows_string(const at::Tensor& layout, int64_t head) {
  at::Tensor l = layout.dim() == 3 ? layout.select(0, head) : layout;
  l = l.to(at::kCPU, at::kLong).contiguous();
  const int64_t rows = l.size(0), cols = l.size(1);
  const int64_t* p = l.data_ptr<int64_t>();
  std::string s;
  for (int64_t r = 0; r < rows; ++r) {
    if (r) s += ' ';
    for (int64_t c = 0; c < cols; ++c) s += p[r * cols + c] ? '1' : '.';
  }
  return s;
}

}  // namespace ds
