// Block-sparse MatMul and Softmax CUDA kernels (label gpu) against the CPU reference path run in
// float64 on the same rounded inputs (that path is itself checked against dense float64 references
// in test_blocksparse_ops.cpp): every mode and transpose, blocks 16-128, fp32/fp16/bf16, awkward
// shapes (reductions not a multiple of 16 or 8, tiles that overhang the layout, K past the resident
// limit), random layouts of densities 0.05-0.9 with and without empty rows, per-head and shared
// layouts, forward and every gradient. Tolerances: cuda_test_utils.h.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include "cuda_test_utils.h"
#include "dense_reference.h"
#include "sparse_attention/blocksparse.h"
#include "sparse_attention/device_tables.h"
#include "sparse_attention/layout_tables.h"
#include "tests/common/test_utils.h"

namespace ds {
namespace {

using test::rel_error;
using test::tolerance;
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string dtype_name(torch::ScalarType dt) { return c10::toString(dt); }

// Operands of one MatMul (CPU, dtype dt). X: the dense-only extent (K of sdd, N of dsd, M of dds).
// Returns (a, b, reduction length of the forward product).
std::tuple<torch::Tensor, torch::Tensor, int64_t> make_operands(MatMulMode mode, bool ta, bool tb,
                                                                const LayoutTables& t, int64_t Z, int64_t X,
                                                                torch::ScalarType dt) {
  const int64_t H = t.heads, M = t.seq_rows(), N = t.seq_cols();
  switch (mode) {
    case MatMulMode::SDD:
      return {ta ? test::uniform({Z, H, X, M}, dt) : test::uniform({Z, H, M, X}, dt),
              tb ? test::uniform({Z, H, N, X}, dt) : test::uniform({Z, H, X, N}, dt), X};
    case MatMulMode::DSD: {
      const int64_t inner = ta ? M : N;
      return {test::uniform({Z, t.nnz, t.block, t.block}, dt),
              tb ? test::uniform({Z, H, X, inner}, dt) : test::uniform({Z, H, inner, X}, dt), inner};
    }
    case MatMulMode::DDS: {
      const int64_t inner = tb ? N : M;
      return {ta ? test::uniform({Z, H, inner, X}, dt) : test::uniform({Z, H, X, inner}, dt),
              test::uniform({Z, t.nnz, t.block, t.block}, dt), inner};
    }
  }
  return {};
}

// One MatMul case: the CUDA forward and both gradients against the CPU float64 reference.
void check_matmul(MatMulMode mode, bool ta, bool tb, const torch::Tensor& layout, int64_t block, torch::ScalarType dt,
                  int64_t Z, int64_t X, uint64_t seed) {
  LayoutTables t = LayoutTables::build(layout, block);
  torch::manual_seed(static_cast<int64_t>(seed));
  auto [a, b, K] = make_operands(mode, ta, tb, t, Z, X, dt);
  const std::string what = std::string(matmul_mode_name(mode)) + (ta ? " ta" : "") + (tb ? " tb" : "") + " block " +
                           std::to_string(block) + " " + dtype_name(dt) + " X " + std::to_string(X) + " nnz " +
                           std::to_string(t.nnz);
  torch::Tensor a64 = test::cpu64(a), b64 = test::cpu64(b);
  torch::Tensor ref = blocksparse_matmul(a64, b64, t, mode, ta, tb);
  torch::Tensor w = torch::randn_like(ref);
  auto g_ref = torch::autograd::grad({(ref * w).sum()}, {a64, b64});

  torch::Tensor ag = test::cuda(a), bg = test::cuda(b);
  torch::Tensor out = blocksparse_matmul(ag, bg, t, mode, ta, tb);
  ASSERT_TRUE(out.is_cuda()) << what;
  ASSERT_EQ(out.scalar_type(), dt) << what;
  ASSERT_EQ(out.sizes(), ref.sizes()) << what;
  auto g = torch::autograd::grad({(out.to(torch::kFloat64) * w.to(torch::kCUDA)).sum()}, {ag, bg});
  // Forward: one rounding of the output. Gradients: the incoming gradient and the result are rounded;
  // their reductions run over any of the extents.
  const int64_t K_any = std::max({K, X, t.seq_rows(), t.seq_cols()});
  EXPECT_LT(rel_error(out, ref), tolerance(dt, 1, K)) << what;
  EXPECT_LT(rel_error(g[0], g_ref[0]), tolerance(dt, 2, K_any)) << what << " dA";
  EXPECT_LT(rel_error(g[1], g_ref[1]), tolerance(dt, 2, K_any)) << what << " dB";
  if (ref.abs().sum().item<double>() > 0) {
    EXPECT_GT(out.abs().sum().item<double>(), 0.0) << what;
  }
}

class MatMulCuda : public ::testing::TestWithParam<std::tuple<int64_t, torch::ScalarType>> {};

TEST_P(MatMulCuda, EveryModeAndTransposeMatchesCpuFloat64) {
  DS_REQUIRE_CUDA();
  const auto [block, dt] = GetParam();
  const double densities[] = {0.05, 0.3, 0.6, 0.9};
  const int64_t extents[] = {40, 72, 24, 64};  // 40, 72, 24: not multiples of 16
  int i = 0;
  for (MatMulMode mode : {MatMulMode::SDD, MatMulMode::DSD, MatMulMode::DDS})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const uint64_t seed = 100 + 7 * i + static_cast<uint64_t>(block);
        // 3 x 2 blocks per head: row tiles overhang the layout at blocks 16/32 (48 or 96 rows).
        torch::Tensor layout = test::random_layout(2, 3, 2, densities[i % 4], seed, /*allow_empty_rows=*/i % 2 == 1);
        check_matmul(mode, ta, tb, layout, block, dt, 2, extents[i % 4], seed);
        ++i;
      }
}

INSTANTIATE_TEST_SUITE_P(BlocksAndDtypes, MatMulCuda,
                         ::testing::Combine(::testing::Values<int64_t>(16, 32, 64, 128),
                                            ::testing::Values(torch::kFloat32, torch::kFloat16, torch::kBFloat16)),
                         [](const auto& info) {
                           return "block" + std::to_string(std::get<0>(info.param)) + "_" +
                                  dtype_name(std::get<1>(info.param));
                         });

TEST(MatMulCudaShapes, LongReductionsStreamThroughSharedMemory_CUDA) {
  DS_REQUIRE_CUDA();
  // sdd keeps op(A) resident up to K = 256 (fp32: 128); longer reductions stream in k-slices.
  torch::Tensor layout = test::random_layout(2, 4, 3, 0.5, 3);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kFloat16})
    for (int64_t K : {136, 264, 328})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) check_matmul(MatMulMode::SDD, ta, tb, layout, 32, dt, 1, K, 11 + K);
}

TEST(MatMulCudaShapes, ExtentsNotAMultipleOf8ArePaddedInside_CUDA) {
  DS_REQUIRE_CUDA();
  torch::Tensor layout = test::random_layout(1, 3, 2, 0.6, 5);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_matmul(MatMulMode::SDD, ta, tb, layout, 16, torch::kBFloat16, 2, 20, 21);  // K = 20
      check_matmul(MatMulMode::DSD, ta, tb, layout, 16, torch::kFloat16, 2, 12, 22);   // N = 12
      check_matmul(MatMulMode::DDS, ta, tb, layout, 16, torch::kFloat32, 2, 6, 23);    // M = 6
    }
}

TEST(MatMulCudaShapes, SharedAndPerHeadLayoutsManyTiles_CUDA) {
  DS_REQUIRE_CUDA();
  // Heads repeating head 0 share one set of tile tables (nnz offset per head); per-head layouts
  // have their own. 10 x 10 blocks of 16: 3 tiles of 64 rows, the last one overhanging.
  torch::Tensor one = test::random_layout(1, 10, 10, 0.3, 8);
  torch::Tensor shared = one.expand({3, 10, 10}).contiguous();
  torch::Tensor per_head = test::random_layout(3, 10, 10, 0.3, 9, /*allow_empty_rows=*/true);
  for (const torch::Tensor& layout : {shared, per_head})
    for (MatMulMode mode : {MatMulMode::SDD, MatMulMode::DSD, MatMulMode::DDS})
      for (bool ta : {false, true}) {
        check_matmul(mode, ta, !ta, layout, 16, torch::kBFloat16, 3, 64, 31);
        check_matmul(mode, ta, ta, layout, 32, torch::kFloat32, 1, 32, 32);
      }
}

TEST(MatMulCudaShapes, BatchOneHeadOneAndEmptyLayout_CUDA) {
  DS_REQUIRE_CUDA();
  torch::Tensor layout = torch::tensor({1, 0, 0, 1, 1, 0, 0, 0, 1}, torch::kLong).view({1, 3, 3});
  for (MatMulMode mode : {MatMulMode::SDD, MatMulMode::DSD, MatMulMode::DDS})
    check_matmul(mode, false, false, layout, 64, torch::kFloat16, 1, 64, 41);
  // No block at all: sdd gives [Z, 0, b, b], dsd/dds give zeros.
  LayoutTables empty = LayoutTables::build(torch::zeros({2, 2, 2}, torch::kLong), 16);
  torch::Tensor a = torch::randn({1, 2, 32, 16}, torch::device(torch::kCUDA).dtype(torch::kBFloat16));
  EXPECT_EQ(blocksparse_matmul(a, a, empty, MatMulMode::SDD, false, true).size(1), 0);
  torch::Tensor s = torch::empty({1, 0, 16, 16}, a.options());
  EXPECT_TRUE(blocksparse_matmul(s, a, empty, MatMulMode::DSD).eq(0).all().item<bool>());
  EXPECT_TRUE(blocksparse_matmul(a.transpose(-1, -2).contiguous(), s, empty, MatMulMode::DDS).eq(0).all().item<bool>());
}

TEST(MatMulCuda, DeepSpeedObjectAndTablesUploadedOncePerDevice_CUDA) {
  DS_REQUIRE_CUDA();
  torch::Tensor layout = test::random_layout(2, 4, 4, 0.5, 51);
  MatMul sdd(layout, 32, "sdd", false, true);
  MatMul dsd(layout, 32, "dsd");
  auto opts = torch::device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::Tensor q = torch::randn({2, 2, 128, 64}, opts), k = torch::randn_like(q);
  torch::Tensor p = sdd(q, k);
  torch::Tensor o = dsd(p, k);
  const int64_t uploads = sdd.tables().cache().uploads();
  EXPECT_GE(uploads, 1);
  for (int i = 0; i < 3; ++i) dsd(sdd(q, k), k);
  EXPECT_EQ(sdd.tables().cache().uploads(), uploads) << "tables rebuilt per call";
  // Copies of the tables share the cache (autograd keeps copies).
  LayoutTables copy = sdd.tables();
  EXPECT_EQ(copy.device_cache.get(), sdd.tables().device_cache.get());
  EXPECT_TRUE(o.isfinite().all().item<bool>());
}

TEST(MatMulCuda, InputErrorsNameTheValues_CUDA) {
  DS_REQUIRE_CUDA();
  MatMul sdd(torch::ones({1, 1, 1}, torch::kLong), 16, "sdd");
  torch::Tensor a = torch::randn({1, 1, 16, 16}, torch::device(torch::kCUDA).dtype(torch::kFloat64));
  DS_EXPECT_THROW_MSG(sdd(a, a), c10::Error, "float64 is not supported on CUDA; use float32, float16 or bfloat16");
  torch::Tensor f = a.to(torch::kFloat32);
  DS_EXPECT_THROW_MSG(sdd(f, f.cpu()), c10::ValueError, "Inputs must be on the same device");
}

// ---- Softmax -----------------------------------------------------------------------------------
struct SoftmaxCudaCase {
  bool rpe, rpe_broadcast;
  int kp, am;  // 0 none, 1 add, 2 mul
  double scale;
  int64_t valid_keys;
  bool causal, empty_rows;
};

std::string softmax_case_name(const SoftmaxCudaCase& c) {
  const char* m[] = {"none", "add", "mul"};
  return std::string("rpe=") + (c.rpe ? (c.rpe_broadcast ? "bcast" : "1") : "0") + " kp=" + m[c.kp] +
         " am=" + m[c.am] + " scale=" + std::to_string(c.scale) + " valid=" + std::to_string(c.valid_keys) +
         (c.causal ? " causal" : "") + (c.empty_rows ? " empty-rows" : "");
}

void check_softmax(const SoftmaxCudaCase& c, int64_t block, torch::ScalarType dt, uint64_t seed) {
  const int64_t Z = 2, H = 2, nb = 4, S = nb * block;
  torch::Tensor layout = test::random_layout(H, nb, nb, 0.5, seed, c.empty_rows);
  LayoutTables t = LayoutTables::build(layout, block);
  torch::manual_seed(static_cast<int64_t>(seed));
  const std::string what = softmax_case_name(c) + " block " + std::to_string(block) + " " + dtype_name(dt);
  torch::Tensor x = (torch::randn({Z, t.nnz, block, block}, torch::kFloat64) * 2).to(dt);
  SoftmaxOptions o;
  o.scale = c.scale;
  o.valid_keys = c.valid_keys;
  o.causal_diagonal = c.causal;
  torch::Tensor rpe;
  if (c.rpe) rpe = torch::randn({c.rpe_broadcast ? 1 : Z, H, S, S}, torch::kFloat64).to(dt);
  if (c.kp) {
    o.key_padding_mask = (c.kp == 1 ? torch::randn({Z, S}, torch::kFloat64).masked_fill(torch::rand({Z, S}).lt(0.2), -kInf)
                                    : torch::randint(0, 3, {Z, S}, torch::kFloat64))
                             .to(dt);
    o.key_padding_mask_mode = c.kp == 1 ? MaskMode::Add : MaskMode::Mul;
  }
  if (c.am) {
    o.attn_mask = (c.am == 1 ? torch::randn({S, S}, torch::kFloat64) : torch::rand({S, S}).gt(0.3).to(torch::kFloat64))
                      .to(dt);
    o.attn_mask_mode = c.am == 1 ? MaskMode::Add : MaskMode::Mul;
  }
  // CPU float64 reference.
  SoftmaxOptions o64 = o;
  if (o.key_padding_mask.defined()) o64.key_padding_mask = o.key_padding_mask.to(torch::kFloat64);
  if (o.attn_mask.defined()) o64.attn_mask = o.attn_mask.to(torch::kFloat64);
  torch::Tensor x64 = test::cpu64(x), rpe64;
  std::vector<torch::Tensor> in64{x64};
  if (c.rpe) {
    rpe64 = test::cpu64(rpe);
    o64.rpe = rpe64;
    in64.push_back(rpe64);
  }
  torch::Tensor y_ref = blocksparse_softmax(x64, t, o64);
  torch::Tensor w = torch::randn_like(y_ref);
  auto g_ref = torch::autograd::grad({(y_ref * w).sum()}, in64);
  // CUDA.
  SoftmaxOptions og = o;
  if (o.key_padding_mask.defined()) og.key_padding_mask = o.key_padding_mask.cuda();
  if (o.attn_mask.defined()) og.attn_mask = o.attn_mask.cuda();
  torch::Tensor xg = test::cuda(x), rpeg;
  std::vector<torch::Tensor> in{xg};
  if (c.rpe) {
    rpeg = test::cuda(rpe);
    og.rpe = rpeg;
    in.push_back(rpeg);
  }
  torch::Tensor y = blocksparse_softmax(xg, t, og);
  ASSERT_TRUE(y.is_cuda());
  EXPECT_FALSE(y.isnan().any().item<bool>()) << what;
  auto g = torch::autograd::grad({(y.to(torch::kFloat64) * w.cuda()).sum()}, in);
  // Rows of up to nb * block entries summed in fp32. Forward: the output rounding. Backward: the
  // incoming gradient, the saved y, the result and (for x) its scaling are each rounded.
  EXPECT_LT(rel_error(y, y_ref), tolerance(dt, 1, S)) << what;
  EXPECT_LT(rel_error(g[0], g_ref[0]), tolerance(dt, 4, S)) << what << " dx";
  if (c.rpe) {
    EXPECT_LT(rel_error(g[1], g_ref[1]), tolerance(dt, 4, S)) << what << " drpe";
  }
  // Exact zeros where the reference has them (masked entries, empty rows): no NaN, no leakage.
  EXPECT_TRUE(y.cpu().to(torch::kFloat64).masked_select(y_ref.eq(0)).eq(0).all().item<bool>()) << what;
}

class SoftmaxCuda : public ::testing::TestWithParam<std::tuple<int64_t, torch::ScalarType>> {};

TEST_P(SoftmaxCuda, MasksModesRpeScaleAndExclusionsMatchCpuFloat64) {
  DS_REQUIRE_CUDA();
  const auto [block, dt] = GetParam();
  const int64_t S = 4 * block;
  const SoftmaxCudaCase cases[] = {
      {false, false, 0, 0, 1.0, -1, false, false}, {true, false, 1, 2, 0.4, -1, false, false},
      {true, true, 2, 1, 0.125, -1, false, true},  {false, false, 1, 1, 1.0, S - 5, false, false},
      {false, false, 2, 0, 0.3, -1, true, false},  {true, false, 0, 2, 0.7, S - block - 3, true, true},
  };
  uint64_t seed = 61 + static_cast<uint64_t>(block);
  for (const auto& c : cases) check_softmax(c, block, dt, seed++);
}

INSTANTIATE_TEST_SUITE_P(BlocksAndDtypes, SoftmaxCuda,
                         ::testing::Combine(::testing::Values<int64_t>(16, 32, 64, 128),
                                            ::testing::Values(torch::kFloat32, torch::kFloat16, torch::kBFloat16)),
                         [](const auto& info) {
                           return "block" + std::to_string(std::get<0>(info.param)) + "_" +
                                  dtype_name(std::get<1>(info.param));
                         });

TEST(SoftmaxCudaRows, RowsWithNothingAllowedGiveZerosNotNaN_CUDA) {
  DS_REQUIRE_CUDA();
  torch::Tensor layout = torch::tensor({1, 0, 1, 1}, torch::kLong).view({1, 2, 2});
  LayoutTables t = LayoutTables::build(layout, 16);
  auto opts = torch::device(torch::kCUDA).dtype(torch::kFloat16);
  torch::Tensor x = torch::randn({1, 3, 16, 16}, opts).set_requires_grad(true);
  SoftmaxOptions o;
  o.key_padding_mask = torch::zeros({1, 32}, opts);
  o.key_padding_mask.narrow(1, 0, 16).fill_(-kInf);  // block row 0 only sees keys 0..15: all masked
  torch::Tensor y = blocksparse_softmax(x, t, o);
  EXPECT_FALSE(y.isnan().any().item<bool>());
  EXPECT_TRUE(y.select(1, 0).eq(0).all().item<bool>());
  torch::Tensor row1 = (y.select(1, 1).sum(-1) + y.select(1, 2).sum(-1)).to(torch::kFloat64);
  EXPECT_LT((row1 - 1).abs().max().item<double>(), 4 * test::unit_roundoff(torch::kFloat16) * 16);
  torch::Tensor g = torch::autograd::grad({(y * torch::randn_like(y)).sum()}, {x})[0];
  EXPECT_FALSE(g.isnan().any().item<bool>());
  EXPECT_TRUE(g.select(1, 0).eq(0).all().item<bool>());
}

}  // namespace
}  // namespace ds
