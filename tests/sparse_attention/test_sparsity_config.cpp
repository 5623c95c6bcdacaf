// Sparsity structures: DeepSpeed's layout test vectors (reference §1.4, every one), constructor
// errors and their messages, seeded random layouts, the config factory, and the layout tables.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "dense_reference.h"
#include "engine/config/ds_config.h"
#include "sparse_attention/layout_tables.h"
#include "sparse_attention/prng.h"
#include "sparse_attention/sparsity_config.h"

namespace ds {
namespace {

// "a ×n" expansions of the reference's notation.
std::string rows(std::initializer_list<std::pair<const char*, int>> parts) {
  std::string s;
  for (auto [row, n] : parts)
    for (int i = 0; i < n; ++i) s += (s.empty() ? "" : " ") + std::string(row);
  return s;
}

std::string head_rows(const SparsityConfig& c, int64_t seq, int64_t head = 0) {
  return layout_rows_string(c.make_layout(seq), head);
}

// ---- §1.4 test vectors -------------------------------------------------------------------------
TEST(SparsityLayout, BingBertFixedPerHeadPatterns) {
  FixedSparsityConfig c(16, 16, true, 4, 1, "bidirectional", false, 4);
  at::Tensor l = c.make_layout(128);
  ASSERT_EQ(l.sizes(), at::IntArrayRef({16, 8, 8}));
  const std::string p0 = rows({{"1111...1", 4}, {"...11111", 4}});
  const std::string p1 = rows({{"1111..1.", 4}, {"..1.1111", 4}});
  const std::string p2 = rows({{"1111.1..", 4}, {".1..1111", 4}});
  const std::string p3 = rows({{"11111...", 4}, {"1...1111", 4}});
  const std::string expected[4] = {p0, p1, p2, p3};
  for (int64_t h = 0; h < 16; ++h) EXPECT_EQ(layout_rows_string(l, h), expected[h % 4]) << "head " << h;
}

TEST(SparsityLayout, FixedDefaultsShortLastWindow) {
  FixedSparsityConfig c(4);
  at::Tensor l = c.make_layout(160);
  const std::string expected = rows({{"1111...1.1", 4}, {"...11111.1", 4}, {"...1...111", 2}});
  for (int64_t h = 0; h < 4; ++h) EXPECT_EQ(layout_rows_string(l, h), expected) << "head " << h;
}

TEST(SparsityLayout, FixedUnidirectional) {
  FixedSparsityConfig c(4, 16, false, 4, 1, "unidirectional");
  EXPECT_EQ(head_rows(c, 160),
            "1......... 11........ 111....... 1111...... ...11..... ...111.... ...1111... ...11111.. "
            "...1...11. ...1...111");
}

TEST(SparsityLayout, FixedHorizontalGlobal) {
  FixedSparsityConfig c(4, 16, false, 4, 1, "bidirectional", true);
  const std::string all = "1111111111";
  EXPECT_EQ(head_rows(c, 160), rows({{"1111...1.1", 3}, {all.c_str(), 1}, {"...11111.1", 3}, {all.c_str(), 1},
                                     {"...1...111", 1}, {all.c_str(), 1}}));
}

TEST(SparsityLayout, FixedTwoGlobalBlocks) {
  FixedSparsityConfig c(4, 16, false, 4, 2);
  EXPECT_EQ(head_rows(c, 160), rows({{"1111..1111", 4}, {"..11111111", 4}, {"..11..1111", 2}}));
}

TEST(SparsityLayout, VariableDefaults) {
  VariableSparsityConfig c(4);
  EXPECT_EQ(head_rows(c, 160), rows({{"1111......", 4}, {"1...1111..", 4}, {"1.......11", 2}}));
}

TEST(SparsityLayout, VariableWindowsGlobalsHorizontal) {
  VariableSparsityConfig c(4, 16, false, 0, {2, 3}, {0, 5}, std::nullopt, "bidirectional", true);
  EXPECT_EQ(head_rows(c, 160),
            "1111111111 11...1.... 1.1111.... 1.1111.... 1.1111.... 1111111111 1....111.. 1....111.. "
            "1....1..11 1....1..11");
}

TEST(SparsityLayout, BigBirdNoRandomAndBSLongformerDefaults) {
  const std::string expected =
      "1111111111 111....... 1111...... 1.111..... 1..111.... 1...111... 1....111.. 1.....111. 1......111 "
      "1.......11";
  BigBirdSparsityConfig bigbird(4, 16, false, 0);
  EXPECT_EQ(head_rows(bigbird, 160), expected);
  BSLongformerSparsityConfig longformer(4);
  EXPECT_EQ(head_rows(longformer, 160), expected);
}

TEST(SparsityLayout, BigBirdUnidirectional) {
  BigBirdSparsityConfig c(4, 16, false, 0, 3, 1, "unidirectional");
  EXPECT_EQ(head_rows(c, 160),
            "1......... 11........ 111....... 1.11...... 1..11..... 1...11.... 1....11... 1.....11.. 1......11. "
            "1.......11");
}

TEST(SparsityLayout, LocalSlidingWindowDefaultsAndBidirectional) {
  LocalSlidingWindowSparsityConfig uni(4);
  EXPECT_EQ(head_rows(uni, 160),
            "1......... 11........ .11....... ..11...... ...11..... ....11.... .....11... ......11.. .......11. "
            "........11");
  LocalSlidingWindowSparsityConfig bi(4, 16, 4, "bidirectional");
  EXPECT_EQ(head_rows(bi, 160),
            "111....... 1111...... 11111..... .11111.... ..11111... ...11111.. ....11111. .....11111 ......1111 "
            ".......111");
}

TEST(SparsityLayout, MasterLayoutSlicingDiffersFromMakeLayout) {
  FixedSparsityConfig c(4);
  at::Tensor master = c.make_layout(2048).slice(1, 0, 10).slice(2, 0, 10);
  EXPECT_EQ(layout_rows_string(master, 0), rows({{"1111...1..", 4}, {"...11111..", 4}, {"...1...111", 2}}));
  EXPECT_EQ(head_rows(c, 160), rows({{"1111...1.1", 4}, {"...11111.1", 4}, {"...1...111", 2}}));
}

// ---- shape, propagation, per-head ------------------------------------------------------------------
TEST(SparsityLayout, ShapeDtypeAndPropagation) {
  DenseSparsityConfig dense(3, 32);
  at::Tensor l = dense.make_layout(96);
  EXPECT_EQ(l.scalar_type(), at::kLong);
  EXPECT_EQ(l.sizes(), at::IntArrayRef({3, 3, 3}));
  EXPECT_TRUE(l.eq(1).all().item<bool>());
  FixedSparsityConfig fixed(5);
  at::Tensor f = fixed.make_layout(256);
  for (int64_t h = 1; h < 5; ++h) EXPECT_TRUE(f[h].equal(f[0]));
  EXPECT_EQ(fixed.num_layout_heads(), 1);
  FixedSparsityConfig per_head(5, 16, true, 4, 1, "bidirectional", false, 2);
  EXPECT_EQ(per_head.num_layout_heads(), 5);
  at::Tensor p = per_head.make_layout(256);
  EXPECT_FALSE(p[1].equal(p[0]));
  EXPECT_TRUE(p[2].equal(p[0]));  // pattern = h % 2
}

TEST(SparsityLayout, SetupLayoutDivisibilityError) {
  FixedSparsityConfig c(4);
  DS_EXPECT_THROW_MSG(c.make_layout(100), c10::ValueError, "Sequence Length, 100, needs to be dividable by Block size 16!");
  LocalSlidingWindowSparsityConfig l(2, 32);
  DS_EXPECT_THROW_MSG(l.make_layout(48), c10::ValueError, "Sequence Length, 48, needs to be dividable by Block size 32!");
}

// ---- constructor errors (DeepSpeed's order and messages) ---------------------------------------
TEST(SparsityErrors, Fixed) {
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(4, 16, false, 4, 3), c10::ValueError,
                      "Number of blocks in a local window, 4, must be dividable by number of global blocks, 3!");
  // Divisibility is checked before the attention type.
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(4, 16, false, 4, 3, "sideways"), c10::ValueError, "must be dividable");
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(4, 16, false, 4, 1, "sideways"), c10::NotImplementedError,
                      "only \"uni/bi-directional\" attentions are supported for now!");
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(4, 16, false, 4, 1, "unidirectional", true), c10::ValueError,
                      "only \"bi-directional\" attentions can support horizontal global attention!");
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(4, 16, false, 4, 1, "bidirectional", false, 2), c10::ValueError,
                      "Number of different layouts cannot be more than one when you have set a single layout for "
                      "all heads! Set different_layout_per_head to True.");
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(4, 16, true, 4, 2, "bidirectional", false, 3), c10::ValueError,
                      "Number of layout versions (num_different_global_patterns), 3, cannot be larger than number of "
                      "local window blocks divided by number of global blocks, 4 / 2 = 2!");
  // Ours: values Python would divide by zero on.
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(4, 16, false, 4, 0), c10::ValueError, "num_global_blocks must be positive");
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(4, 16, false, 0, 1), c10::ValueError, "num_local_blocks must be positive");
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(0), c10::ValueError, "num_heads must be positive, got 0");
  DS_EXPECT_THROW_MSG(FixedSparsityConfig(2, 0), c10::ValueError, "block must be positive, got 0");
}

TEST(SparsityErrors, Variable) {
  DS_EXPECT_THROW_MSG(VariableSparsityConfig(4, 16, false, 0, {4}, {0, 4}, std::vector<int64_t>{2}),
                      c10::ValueError,
                      "Global block start indices length, 2, must be same as global block end indices length, 1!");
  DS_EXPECT_THROW_MSG(VariableSparsityConfig(4, 16, false, 0, {4}, {0, 4}, std::vector<int64_t>{2, 4}),
                      c10::ValueError, "Global block start index, 4, must be smaller than global block end index, 4!");
  DS_EXPECT_THROW_MSG(VariableSparsityConfig(4, 16, false, 0, {4}, {0}, std::nullopt, "bi"), c10::NotImplementedError,
                      "only \"uni/bi-directional\" attentions are supported for now!");
  DS_EXPECT_THROW_MSG(VariableSparsityConfig(4, 16, false, 0, {4}, {0}, std::nullopt, "unidirectional", true),
                      c10::ValueError, "only \"bi-directional\" attentions can support horizontal global attention!");
  VariableSparsityConfig many_random(4, 16, false, 11);
  DS_EXPECT_THROW_MSG(many_random.make_layout(160), c10::ValueError,
                      "Number of random blocks, 11, must be smaller than overall number of blocks in a row, 10!");
  EXPECT_NO_THROW(VariableSparsityConfig(4, 16, false, 10).make_layout(160));  // n == nb is accepted
  DS_EXPECT_THROW_MSG(VariableSparsityConfig(4, 16, false, 0, {}), c10::ValueError, "local_window_blocks must list");
  DS_EXPECT_THROW_MSG(VariableSparsityConfig(4, 16, false, 0, {4, 0}), c10::ValueError, "entries must be positive");
  DS_EXPECT_THROW_MSG(VariableSparsityConfig(4, 16, false, 0, {4}, {-1}), c10::ValueError,
                      "global_block_indices must be >= 0");
}

TEST(SparsityErrors, BigBird) {
  DS_EXPECT_THROW_MSG(BigBirdSparsityConfig(4, 16, false, 1, 3, 1, "causal"), c10::NotImplementedError,
                      "only \"uni/bi-directional\" attentions are supported for now!");
  DS_EXPECT_THROW_MSG(BigBirdSparsityConfig(4, 16, false, 3).make_layout(32), c10::ValueError,
                      "Number of random blocks, 3, must be smaller than overall number of blocks in a row, 2!");
  DS_EXPECT_THROW_MSG(BigBirdSparsityConfig(4, 16, false, 1, 5).make_layout(64), c10::ValueError,
                      "Number of sliding window blocks, 5, must be smaller than overall number of blocks in a row, 4!");
  DS_EXPECT_THROW_MSG(BigBirdSparsityConfig(4, 16, false, 1, 3, 4).make_layout(48), c10::ValueError,
                      "Number of global blocks, 4, must be smaller than overall number of blocks in a row, 3!");
  EXPECT_NO_THROW(BigBirdSparsityConfig(4, 16, false, 3, 3, 3).make_layout(48));
}

TEST(SparsityErrors, BSLongformerAndLocalSlidingWindow) {
  DS_EXPECT_THROW_MSG(BSLongformerSparsityConfig(4, 16, false, 3, {0, 2}, std::vector<int64_t>{1}), c10::ValueError,
                      "Global block start indices length, 2, must be same as global block end indices length, 1!");
  DS_EXPECT_THROW_MSG(BSLongformerSparsityConfig(4, 16, false, 3, {3}, std::vector<int64_t>{1}), c10::ValueError,
                      "Global block start index, 3, must be smaller than global block end index, 1!");
  DS_EXPECT_THROW_MSG(BSLongformerSparsityConfig(4, 16, false, 7).make_layout(96), c10::ValueError,
                      "Number of sliding window blocks, 7, must be smaller than overall number of blocks in a row, 6!");
  DS_EXPECT_THROW_MSG(LocalSlidingWindowSparsityConfig(4, 16, 7).make_layout(96), c10::ValueError,
                      "Number of sliding window blocks, 7, must be smaller than overall number of blocks in a row, 6!");
  // DeepSpeed accepts any string here (silently bidirectional); we reject typos.
  DS_EXPECT_THROW_MSG(BSLongformerSparsityConfig(4, 16, false, 3, {0}, std::nullopt, "unidirectinal"),
                      c10::NotImplementedError, "only \"uni/bi-directional\"");
  DS_EXPECT_THROW_MSG(LocalSlidingWindowSparsityConfig(4, 16, 3, "Bidirectional"), c10::NotImplementedError,
                      "only \"uni/bi-directional\"");
}

// ---- more layout behaviour ----------------------------------------------------------------------------
TEST(SparsityLayout, GlobalRangesAndIgnoredIndices) {
  // [1, 3) global in both directions; index 12 is past the 10 blocks and ignored.
  BSLongformerSparsityConfig lf(1, 16, false, 1, {1, 12}, std::vector<int64_t>{3, 14});
  EXPECT_EQ(head_rows(lf, 160),
            "111....... 1111111111 1111111111 .111...... .11.1..... .11..1.... .11...1... .11....1.. .11.....1. "
            ".11......1");
  // Causal globals start at their own row; within the global range DeepSpeed also sets the block
  // right of the diagonal (row 2, column 3).
  VariableSparsityConfig var(1, 16, false, 0, {1}, {2}, std::vector<int64_t>{4}, "unidirectional");
  EXPECT_EQ(head_rows(var, 160),
            "1......... .1........ ..11...... ..11...... ..111..... ..11.1.... ..11..1... ..11...1.. ..11....1. "
            "..11.....1");
  BSLongformerSparsityConfig causal(1, 16, false, 3, {0}, std::nullopt, "unidirectional");
  EXPECT_TRUE(causal.make_layout(160).triu(1).eq(0).all().item<bool>());
}

TEST(SparsityRandom, PrngMatchesPublishedReferenceOutputs) {
  uint64_t sm = 1234567;
  EXPECT_EQ(splitmix64(sm), 6457827717110365317ull);
  EXPECT_EQ(splitmix64(sm), 3203168211198807973ull);
  EXPECT_EQ(splitmix64(sm), 9817491932198370423ull);
  Xoshiro256 x = Xoshiro256::from_state(1, 2, 3, 4);
  EXPECT_EQ(x.next(), 11520ull);
  EXPECT_EQ(x.next(), 0ull);
  EXPECT_EQ(x.next(), 1509978240ull);
  EXPECT_EQ(x.next(), 1215971899390074240ull);
  Xoshiro256 g(7);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(g.below(10), 10u);
  auto s = g.sample(20, 20);
  std::sort(s.begin(), s.end());
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s[i], i);
}

TEST(SparsityRandom, SeededLayoutsAreDeterministicAndSeedDependent) {
  BigBirdSparsityConfig a(2, 16, true, 2, 3, 1, "bidirectional", 0);
  BigBirdSparsityConfig b(2, 16, true, 2, 3, 1, "bidirectional", 0);
  BigBirdSparsityConfig c(2, 16, true, 2, 3, 1, "bidirectional", 1);
  at::Tensor la = a.make_layout(512);
  EXPECT_TRUE(la.equal(a.make_layout(512)));  // a pure function of (config, seed, L)
  EXPECT_TRUE(la.equal(b.make_layout(512)));  // every rank builds the same
  EXPECT_FALSE(la.equal(c.make_layout(512)));
  EXPECT_FALSE(la[0].equal(la[1]));  // per-head streams differ
  // Random blocks only add to the deterministic part, at most num_random_blocks per row.
  at::Tensor base = BigBirdSparsityConfig(2, 16, true, 0).make_layout(512);
  EXPECT_TRUE((la - base).ge(0).all().item<bool>());
  at::Tensor added = (la - base).sum(-1);
  EXPECT_TRUE(added.le(2).all().item<bool>());
  EXPECT_GT(added.sum().item<int64_t>(), 0);
  // Golden: pins the generator so a change of platform or refactor that alters layouts is caught.
  // (Values produced by this implementation when it was written; version 1 of the layout stream.)
  EXPECT_EQ(layout_rows_string(BigBirdSparsityConfig(1, 16, false, 1, 3, 1, "bidirectional", 0).make_layout(160)),
            "1111111111 111....... 1111....1. 1.111..... 11.111.... 1...111... 1....111.. 1.....1111 1.1....111 "
            "1...1...11");
  EXPECT_EQ(layout_rows_string(
                VariableSparsityConfig(2, 16, true, 2, {2}, {0}, std::nullopt, "bidirectional", false, 42).make_layout(128),
                1),
            "11....11 11.1..1. 1.11.1.. 1.11...1 1.1.11.. 1.1111.. 1...1.11 1.1.1.11");
}

TEST(SparsityRandom, CausalRandomBlocksStayInThePast) {
  // DeepSpeed: Variable samples future blocks for unidirectional attention and BigBird raises for
  // num_random_blocks > 1; ours keeps random blocks causal and caps them by the row's length.
  VariableSparsityConfig var(2, 16, true, 3, {2}, {0}, std::nullopt, "unidirectional", false, 5);
  at::Tensor v = var.make_layout(256);
  EXPECT_TRUE(v.triu(1).eq(0).all().item<bool>());
  BigBirdSparsityConfig bb(2, 16, true, 3, 3, 1, "unidirectional", 5);
  at::Tensor b = bb.make_layout(256);
  EXPECT_TRUE(b.triu(1).eq(0).all().item<bool>());
  EXPECT_EQ(b[0][0][0].item<int64_t>(), 1);
  EXPECT_EQ(b[0][1].sum().item<int64_t>(), 2);  // row 1 can only hold blocks 0 and 1
}

TEST(SparsityRandom, VariableRandomBidirectionalAddsBlocks) {
  VariableSparsityConfig with(1, 16, false, 2, {1}, {}, std::nullopt, "bidirectional", false, 3);
  at::Tensor l = with.make_layout(512);
  // local windows of 1 block: the diagonal, plus up to 2 random blocks per row.
  at::Tensor counts = l[0].sum(-1);
  EXPECT_TRUE(counts.ge(1).all().item<bool>());
  EXPECT_TRUE(counts.le(3).all().item<bool>());
  EXPECT_GT(counts.gt(1).sum().item<int64_t>(), 0);
}

// ---- factory -------------------------------------------------------------------------------------------
TEST(SparsityFactory, BuildsEachModeWithItsKeys) {
  SparseAttentionConfig c;
  c.mode = SparseMode::Fixed;
  c.different_layout_per_head = true;
  c.num_different_global_patterns = 4;
  auto fixed = make_sparsity_config(c, 16);
  EXPECT_EQ(fixed->name(), "fixed");
  EXPECT_TRUE(fixed->make_layout(128).equal(FixedSparsityConfig(16, 16, true, 4, 1, "bidirectional", false, 4).make_layout(128)));

  c = SparseAttentionConfig{};
  c.mode = SparseMode::Dense;
  c.block = 32;
  auto dense = make_sparsity_config(c, 2);
  EXPECT_EQ(dense->name(), "dense");
  EXPECT_EQ(dense->block(), 32);

  c = SparseAttentionConfig{};
  c.mode = SparseMode::Variable;
  c.local_window_blocks = {2, 3};
  c.global_block_indices = {0, 5};
  c.horizontal_global_attention = true;
  EXPECT_EQ(head_rows(*make_sparsity_config(c, 4), 160),
            "1111111111 11...1.... 1.1111.... 1.1111.... 1.1111.... 1111111111 1....111.. 1....111.. "
            "1....1..11 1....1..11");

  c = SparseAttentionConfig{};
  c.mode = SparseMode::BigBird;
  c.num_random_blocks = 1;
  c.seed = 9;
  auto bb = make_sparsity_config(c, 4);
  EXPECT_TRUE(bb->make_layout(256).equal(BigBirdSparsityConfig(4, 16, false, 1, 3, 1, "bidirectional", 9).make_layout(256)));

  c = SparseAttentionConfig{};
  c.mode = SparseMode::BSLongformer;
  c.global_block_indices = {0, 4};
  c.global_block_end_indices = std::vector<int>{2, 5};
  EXPECT_TRUE(make_sparsity_config(c, 2)->make_layout(160).equal(
      BSLongformerSparsityConfig(2, 16, false, 3, {0, 4}, std::vector<int64_t>{2, 5}).make_layout(160)));

  c = SparseAttentionConfig{};
  c.mode = SparseMode::LocalSlidingWindow;
  c.attention = "unidirectional";
  EXPECT_EQ(make_sparsity_config(c, 2)->name(), "local_sliding_window");

  c = SparseAttentionConfig{};
  c.mode = SparseMode::DynamicNM;
  c.n = 1;
  c.m = 2;
  auto nm_cfg = make_sparsity_config(c, 2);
  EXPECT_EQ(nm_cfg->name(), "dynamic_nm");
  EXPECT_FALSE(nm_cfg->has_block_layout());
  EXPECT_FALSE(nm_cfg->unidirectional());
  const auto* nm = dynamic_cast<const NMSparsityConfig*>(nm_cfg.get());
  ASSERT_NE(nm, nullptr);
  EXPECT_EQ(nm->n(), 1);
  EXPECT_EQ(nm->m(), 2);
  DS_EXPECT_THROW_MSG(nm_cfg->make_layout(64), c10::ValueError, "'dynamic_nm' (1:2) has no block layout");
  // A section built in code (not through the parser, which refuses it too) with an unsupported n:m.
  c.n = 3;
  c.m = 4;
  DS_EXPECT_THROW_MSG(make_sparsity_config(c, 2), c10::ValueError, "supports 1:2 and 2:4 (n:m); got 3:4");
}

// A user-defined structure: a subclass overriding make_layout with the protected helpers.
class DiagonalOnly : public SparsityConfig {
 public:
  using SparsityConfig::SparsityConfig;
  at::Tensor make_layout(int64_t seq_len) const override {
    at::Tensor l = setup_layout(seq_len);
    l[0].fill_diagonal_(1);
    check_and_propagate_first_head_layout(l);
    return l;
  }
  std::string name() const override { return "diagonal"; }
};

TEST(SparsityLayout, UserDefinedStructure) {
  DiagonalOnly d(3, 16);
  at::Tensor l = d.make_layout(64);
  EXPECT_TRUE(l.equal(torch::eye(4, torch::kLong).unsqueeze(0).expand({3, 4, 4})));
  DS_EXPECT_THROW_MSG(d.make_layout(50), c10::ValueError, "needs to be dividable by Block size 16!");
}

// ---- layout tables -----------------------------------------------------------------------------------
TEST(LayoutTables, OrderViewsAndCounts) {
  at::Tensor layout = test::random_layout(3, 5, 4, 0.4, 11, /*allow_empty_rows=*/true);
  LayoutTables t = LayoutTables::build(layout, 16);
  at::Tensor nz = layout.nonzero();  // [nnz, 3] in (h, r, c) order: the block order
  ASSERT_EQ(t.nnz, nz.size(0));
  EXPECT_TRUE(t.head.equal(nz.select(1, 0)));
  EXPECT_TRUE(t.row.equal(nz.select(1, 1)));
  EXPECT_TRUE(t.col.equal(nz.select(1, 2)));
  EXPECT_TRUE(t.row_count.equal(layout.sum(-1).reshape(-1)));
  EXPECT_TRUE(t.col_count.equal(layout.sum(1).reshape(-1)));
  EXPECT_EQ(t.max_row_blocks, layout.sum(-1).max().item<int64_t>());
  EXPECT_EQ(t.max_col_blocks, layout.sum(1).max().item<int64_t>());
  // The column view lists each column's blocks by increasing row.
  for (int64_t s = 0; s < 3 * 4; ++s) {
    int64_t prev_row = -1;
    for (int64_t j = t.col_ptr[s].item<int64_t>(); j < t.col_ptr[s + 1].item<int64_t>(); ++j) {
      const int64_t n = t.col_nnz[j].item<int64_t>();
      EXPECT_EQ(t.col_seg[n].item<int64_t>(), s);
      EXPECT_GT(t.row[n].item<int64_t>(), prev_row);
      prev_row = t.row[n].item<int64_t>();
    }
  }
  // Row segments are contiguous runs in nnz order.
  for (int64_t s = 0; s < 3 * 5; ++s)
    for (int64_t n = t.row_ptr[s].item<int64_t>(); n < t.row_ptr[s + 1].item<int64_t>(); ++n)
      EXPECT_EQ(t.row_seg[n].item<int64_t>(), s);
}

TEST(LayoutTables, DenseSparseRoundTripMatchesLoops) {
  at::Tensor layout = test::random_layout(2, 3, 2, 0.5, 3);
  LayoutTables t = LayoutTables::build(layout, 16);
  at::Tensor dense = torch::randn({2, 2, 48, 32}, torch::kFloat64);
  at::Tensor sparse = dense_to_sparse(dense, t);
  ASSERT_EQ(sparse.sizes(), at::IntArrayRef({2, t.nnz, 16, 16}));
  at::Tensor nz = layout.nonzero();
  for (int64_t n = 0; n < t.nnz; ++n) {
    const int64_t h = nz[n][0].item<int64_t>(), r = nz[n][1].item<int64_t>(), c = nz[n][2].item<int64_t>();
    EXPECT_TRUE(sparse.select(1, n).equal(dense.select(1, h).slice(1, r * 16, r * 16 + 16).slice(2, c * 16, c * 16 + 16)));
  }
  at::Tensor back = sparse_to_dense(sparse, t);
  at::Tensor mask = test::element_mask(layout, 16).unsqueeze(0);
  EXPECT_TRUE(back.equal(dense * mask));
  at::Tensor back_inf = sparse_to_dense(sparse, t, -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(back_inf.masked_select(mask.logical_not().expand_as(back_inf)).eq(-INFINITY).all().item<bool>());
  EXPECT_TRUE(expand_layout(t).equal(test::element_mask(layout, 16)));
}

TEST(LayoutTables, Errors) {
  DS_EXPECT_THROW_MSG(LayoutTables::build(torch::ones({4}, torch::kLong), 16), c10::Error,
                      "Layout should be a 2 or 3 dimensional tensor of 0s and 1s");
  DS_EXPECT_THROW_MSG(LayoutTables::build(torch::ones({1, 2, 2}, torch::kLong), 24), c10::Error,
                      "block 24 is not supported; use 16, 32, 64 or 128");
  DS_EXPECT_THROW_MSG(LayoutTables::build(torch::ones({1, 2, 2}, torch::kComplexFloat), 16), c10::Error,
                      "layout must have a real dtype");
  EXPECT_EQ(LayoutTables::build(torch::eye(2).unsqueeze(0), 16).nnz, 2);  // float layouts as 0/1 values
  LayoutTables two_d = LayoutTables::build(torch::ones({2, 3}, torch::kInt32), 32);
  EXPECT_EQ(two_d.heads, 1);
  EXPECT_EQ(two_d.nnz, 6);
}

}  // namespace
}  // namespace ds
