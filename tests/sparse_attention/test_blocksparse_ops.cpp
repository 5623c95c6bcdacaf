// Block-sparse MatMul (every mode and transpose) and Softmax (every mask/mode/rpe combination)
// against dense float64 references; gradients against dense autograd and finite differences;
// dtypes, block sizes, leading-dim rules and DeepSpeed's input errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <string>
#include <tuple>

#include "dense_reference.h"
#include "sparse_attention/blocksparse.h"
#include "sparse_attention/blocksparse_cpu.h"
#include "sparse_attention/layout_tables.h"
#include "tests/common/test_utils.h"

namespace ds {
namespace {

using test::rel_error;
constexpr double kInf = std::numeric_limits<double>::infinity();

torch::Tensor op(const torch::Tensor& x, bool trans) { return trans ? x.transpose(-1, -2) : x; }

// Operands of one MatMul case and its dense reference (all float64, reference differentiable).
struct MatMulCase {
  torch::Tensor a, b;  // the op's inputs (leaves)
  torch::Tensor ref;   // dense-reference result in the op's output format
};

// Z=2, H=2; layout R x C blocks; K = dense reduction size for sdd.
MatMulCase make_case(MatMulMode mode, bool ta, bool tb, const LayoutTables& t, int64_t K, torch::ScalarType dt,
                     uint64_t seed) {
  torch::manual_seed(static_cast<int64_t>(seed));
  const int64_t Z = 2, H = t.heads, M = t.seq_rows(), N = t.seq_cols();
  auto leaf = [&](std::vector<int64_t> shape) { return torch::rand(shape, torch::dtype(dt)).set_requires_grad(true); };
  MatMulCase c;
  auto dense64 = [](const torch::Tensor& x) { return x.to(torch::kFloat64); };
  switch (mode) {
    case MatMulMode::SDD: {  // layout [H, M/b, N/b]; op(A) [M, K], op(B) [K, N]
      c.a = ta ? leaf({Z, H, K, M}) : leaf({Z, H, M, K});
      c.b = tb ? leaf({Z, H, N, K}) : leaf({Z, H, K, N});
      c.ref = dense_to_sparse(torch::matmul(op(dense64(c.a), ta), op(dense64(c.b), tb)), t);
      break;
    }
    case MatMulMode::DSD: {  // stored S [H, M, N]; op(S) [., .] times op(B)
      c.a = leaf({Z, t.nnz, t.block, t.block});
      const int64_t inner = ta ? M : N;
      c.b = tb ? leaf({Z, H, 24, inner}) : leaf({Z, H, inner, 24});
      c.ref = torch::matmul(op(sparse_to_dense(dense64(c.a), t), ta), op(dense64(c.b), tb));
      break;
    }
    case MatMulMode::DDS: {
      c.b = leaf({Z, t.nnz, t.block, t.block});
      const int64_t inner = tb ? N : M;
      c.a = ta ? leaf({Z, H, inner, 24}) : leaf({Z, H, 24, inner});
      c.ref = torch::matmul(op(dense64(c.a), ta), op(sparse_to_dense(dense64(c.b), t), tb));
      break;
    }
  }
  return c;
}

class MatMulAllModes : public ::testing::TestWithParam<std::tuple<std::string, bool, bool>> {};

TEST_P(MatMulAllModes, ForwardAndGradientsMatchDenseFloat64) {
  const auto [mode_name, ta, tb] = GetParam();
  const MatMulMode mode = parse_matmul_mode(mode_name);
  LayoutTables t = LayoutTables::build(test::random_layout(2, 3, 2, 0.5, 7), 16);
  MatMulCase c = make_case(mode, ta, tb, t, 40, torch::kFloat64, 1);  // K = 40: not a multiple of 16
  torch::Tensor out = blocksparse_matmul(c.a, c.b, t, mode, ta, tb);
  ASSERT_EQ(out.sizes(), c.ref.sizes());
  EXPECT_LT(rel_error(out, c.ref), 1e-13);
  torch::Tensor w = torch::randn_like(c.ref);
  auto g = torch::autograd::grad({(out * w).sum()}, {c.a, c.b});
  auto g_ref = torch::autograd::grad({(c.ref * w).sum()}, {c.a, c.b});
  EXPECT_LT(rel_error(g[0], g_ref[0]), 1e-13) << "dA";
  EXPECT_LT(rel_error(g[1], g_ref[1]), 1e-13) << "dB";
  // MatMul object (DeepSpeed's API) gives the same.
  MatMul mm(t.layout, 16, mode_name, ta, tb);
  EXPECT_TRUE(mm(c.a, c.b).equal(out));
}

TEST_P(MatMulAllModes, GradcheckFloat64) {
  const auto [mode_name, ta, tb] = GetParam();
  const MatMulMode mode = parse_matmul_mode(mode_name);
  torch::Tensor layout = torch::tensor({1, 0, 1, 1}, torch::kLong).view({1, 2, 2});
  LayoutTables t = LayoutTables::build(layout, 16);
  torch::manual_seed(3);
  torch::Tensor a, b;
  switch (mode) {
    case MatMulMode::SDD:
      a = ta ? torch::randn({1, 1, 2, 32}, torch::kFloat64) : torch::randn({1, 1, 32, 2}, torch::kFloat64);
      b = tb ? torch::randn({1, 1, 32, 2}, torch::kFloat64) : torch::randn({1, 1, 2, 32}, torch::kFloat64);
      break;
    case MatMulMode::DSD:
      a = torch::randn({1, 3, 16, 16}, torch::kFloat64);
      b = tb ? torch::randn({1, 1, 2, 32}, torch::kFloat64) : torch::randn({1, 1, 32, 2}, torch::kFloat64);
      break;
    case MatMulMode::DDS:
      a = ta ? torch::randn({1, 1, 32, 2}, torch::kFloat64) : torch::randn({1, 1, 2, 32}, torch::kFloat64);
      b = torch::randn({1, 3, 16, 16}, torch::kFloat64);
      break;
  }
  const double err = test::gradcheck_error(
      [&, mode = mode, ta = ta, tb = tb](const std::vector<torch::Tensor>& x) {
        return blocksparse_matmul(x[0], x[1], t, mode, ta, tb);
      },
      {a, b});
  EXPECT_LT(err, 1e-7);
}

INSTANTIATE_TEST_SUITE_P(
    ModesAndTransposes, MatMulAllModes,
    ::testing::Combine(::testing::Values("sdd", "dsd", "dds"), ::testing::Bool(), ::testing::Bool()),
    [](const auto& info) {
      return std::get<0>(info.param) + (std::get<1>(info.param) ? "_ta" : "") + (std::get<2>(info.param) ? "_tb" : "");
    });

TEST(MatMul, BlockSizes16To128AllModes) {
  for (int64_t block : {16, 32, 64, 128}) {
    LayoutTables t = LayoutTables::build(test::random_layout(1, 2, 2, 0.5, 5 + block), block);
    for (MatMulMode mode : {MatMulMode::SDD, MatMulMode::DSD, MatMulMode::DDS}) {
      MatMulCase c = make_case(mode, false, mode == MatMulMode::SDD, t, 72, torch::kFloat64, 2);
      EXPECT_LT(rel_error(blocksparse_matmul(c.a, c.b, t, mode, false, mode == MatMulMode::SDD), c.ref), 1e-13)
          << "block " << block << " mode " << matmul_mode_name(mode);
    }
  }
}

TEST(MatMul, ReducedPrecisionWithinRoundingOfFloat64) {
  LayoutTables t = LayoutTables::build(test::random_layout(2, 3, 2, 0.5, 9), 32);
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    for (MatMulMode mode : {MatMulMode::SDD, MatMulMode::DSD, MatMulMode::DDS}) {
      MatMulCase c = make_case(mode, false, false, t, 64, dt, 4);
      torch::Tensor out = blocksparse_matmul(c.a, c.b, t, mode);
      EXPECT_EQ(out.scalar_type(), dt);
      // Inputs are exact in float64; float32 accumulation over <= 96 products, then one rounding to
      // the output dtype: a few unit roundoffs of the output dtype relative to the result.
      const double tol = dt == torch::kFloat32 ? 1e-6 : 2 * test::unit_roundoff(dt);
      EXPECT_LT(rel_error(out, c.ref), tol) << c10::toString(dt) << " " << matmul_mode_name(mode);
      EXPECT_GT(out.to(torch::kFloat64).abs().sum().item<double>(), 0.0);
      auto g = torch::autograd::grad({out.to(torch::kFloat64).sum()}, {c.a, c.b});
      auto g_ref = torch::autograd::grad({c.ref.sum()}, {c.a, c.b});
      EXPECT_LT(rel_error(g[0], g_ref[0]), tol);
      EXPECT_LT(rel_error(g[1], g_ref[1]), tol);
    }
  }
}

TEST(MatMul, LeadingSingletonDimsAreAddedAndRemoved) {
  torch::Tensor layout2d = torch::tensor({1, 1, 0, 1}, torch::kLong).view({2, 2});  // one head
  MatMul sdd(layout2d, 16, "sdd");
  torch::Tensor a = torch::randn({32, 20}, torch::kFloat64), b = torch::randn({20, 32}, torch::kFloat64);
  torch::Tensor c = sdd(a, b);
  ASSERT_EQ(c.sizes(), at::IntArrayRef({3, 16, 16}));
  LayoutTables t = LayoutTables::build(layout2d, 16);
  EXPECT_LT(rel_error(c, dense_to_sparse(torch::matmul(a, b).view({1, 1, 32, 32}), t).squeeze(0)), 1e-14);
  MatMul dsd(layout2d, 16, "dsd");
  // The result keeps max(A.dim(), B.dim()) dims (DeepSpeed's rule): the 3-D sparse operand wins.
  torch::Tensor b2 = torch::randn({32, 8}, torch::kFloat64);
  torch::Tensor y = dsd(c, b2);
  EXPECT_EQ(y.sizes(), at::IntArrayRef({1, 32, 8}));
  EXPECT_LT(rel_error(y[0], torch::matmul(sparse_to_dense(c.unsqueeze(0), t)[0][0], b2)), 1e-14);
  torch::Tensor y4 = dsd(c.unsqueeze(0), torch::randn({1, 32, 8}, torch::kFloat64));
  EXPECT_EQ(y4.sizes(), at::IntArrayRef({1, 1, 32, 8}));
}

TEST(MatMul, ChunkedGathersGiveTheSameResult) {
  // A tiny gather budget forces one block (sdd) or one block row/column (dsd, dds) per chunk.
  LayoutTables t = LayoutTables::build(test::random_layout(2, 4, 3, 0.5, 13), 16);
  for (MatMulMode mode : {MatMulMode::SDD, MatMulMode::DSD, MatMulMode::DDS})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        MatMulCase c = make_case(mode, ta, tb, t, 24, torch::kFloat64, 6);
        torch::Tensor whole = blocksparse_matmul(c.a, c.b, t, mode, ta, tb);
        const int64_t previous = sparse_cpu::set_gather_budget_bytes(1);
        torch::Tensor chunked = blocksparse_matmul(c.a, c.b, t, mode, ta, tb);
        sparse_cpu::set_gather_budget_bytes(previous);
        EXPECT_LT(rel_error(chunked, whole), 1e-15) << matmul_mode_name(mode) << ta << tb;
        EXPECT_LT(rel_error(chunked, c.ref), 1e-13);
      }
}

TEST(MatMulAndSoftmax, EmptyLayoutGivesZeros) {
  LayoutTables t = LayoutTables::build(torch::zeros({2, 2, 2}, torch::kLong), 16);
  ASSERT_EQ(t.nnz, 0);
  torch::Tensor q = torch::randn({1, 2, 32, 8}, torch::kFloat64).set_requires_grad(true);
  torch::Tensor out = sparse_attention(q, q, q, t);
  EXPECT_TRUE(out.eq(0).all().item<bool>());
  torch::Tensor g = torch::autograd::grad({out.sum()}, {q})[0];
  EXPECT_TRUE(g.eq(0).all().item<bool>());
}

TEST(MatMul, DeepSpeedInputErrors) {
  torch::Tensor layout = torch::ones({2, 2, 2}, torch::kLong);
  DS_EXPECT_THROW_MSG(MatMul(layout, 16, "sds"), c10::NotImplementedError, "Supported modes are: sdd, dsd, dds");
  DS_EXPECT_THROW_MSG(MatMul(torch::ones({1, 1, 2, 2}, torch::kLong), 16, "sdd"), c10::Error,
                      "Layout should be a 2 or 3 dimensional tensor of 0s and 1s");
  torch::Tensor a = torch::randn({1, 2, 32, 16}), b = torch::randn({1, 2, 16, 32});
  MatMul sdd(layout, 16, "sdd");
  DS_EXPECT_THROW_MSG(sdd(a, b.to(torch::kFloat64)), c10::ValueError,
                      "Inputs must be the same dtype; got torch.float32 for A and torch.float64 for B");
  DS_EXPECT_THROW_MSG(sdd(a, torch::empty({1, 2, 16, 32}, torch::device(torch::kMeta))), c10::ValueError,
                      "Inputs must be on the same device; got cpu for tensor A and meta for tensor B");
  DS_EXPECT_THROW_MSG(sdd(a.unsqueeze(0), b.unsqueeze(0)), c10::ValueError,
                      "Tensors with more than 4 dimensions are not currently supported");
  DS_EXPECT_THROW_MSG(sdd(a, torch::randn({1, 2, 24, 32})), c10::ValueError,
                      "Size of tensor A along the -1 dim (16) must match size of tensor B along the -2 dim (24)");
  DS_EXPECT_THROW_MSG(sdd(torch::randn({1, 3, 32, 16}), torch::randn({1, 3, 16, 32})), c10::ValueError,
                      "tensor A has 3 heads (dim 1) but the layout has 2");
  DS_EXPECT_THROW_MSG(sdd(torch::randn({1, 2, 48, 16}), b), c10::ValueError,
                      "tensor A has size 48 at dim 2 but the layout needs 32");
  DS_EXPECT_THROW_MSG(sdd(torch::randn({2, 2, 32, 16}), b), c10::ValueError, "tensor A has batch size 2");
  DS_EXPECT_THROW_MSG(sdd(a.to(torch::kInt), b.to(torch::kInt)), c10::Error, "is not supported; use float32");
  torch::Tensor s = torch::randn({1, 8, 16, 16});
  MatMul dsd(layout, 16, "dsd");
  DS_EXPECT_THROW_MSG(dsd(s, torch::randn({1, 2, 48, 8})), c10::ValueError,
                      "Expected tensor B to have size 32 at dim 2, got 48.");
  DS_EXPECT_THROW_MSG(dsd(torch::randn({1, 7, 16, 16}), torch::randn({1, 2, 32, 8})), c10::ValueError,
                      "Expected tensor with trailing dimensions of shape (8, 16, 16) for argument A");
  MatMul dds(layout, 16, "dds", false, true);
  DS_EXPECT_THROW_MSG(dds(torch::randn({1, 2, 8, 48}), s), c10::ValueError,
                      "Expected tensor A to have size 32 at dim 3, got 48.");
  DS_EXPECT_THROW_MSG(dds(torch::randn({1, 2, 8, 32}), torch::randn({1, 8, 32, 32})), c10::ValueError,
                      "for argument B");
  DS_EXPECT_THROW_MSG(blocksparse_matmul(torch::empty({1, 2, 32, 16}, torch::device(torch::kMeta)),
                                         torch::empty({1, 2, 16, 32}, torch::device(torch::kMeta)),
                                         sdd.tables(), MatMulMode::SDD),
                      c10::Error, "tensors on meta are not supported");
}

TEST(MatMul, CudaTensorsRunTheCudaKernels_CUDA) {
  // The kernels themselves are tested in test_blocksparse_cuda.cpp; here: CUDA tensors dispatch there.
  DS_REQUIRE_CUDA();
  MatMul sdd(torch::ones({1, 1, 1}, torch::kLong), 16, "sdd");
  torch::Tensor a = torch::randn({1, 1, 16, 16});
  torch::Tensor c = sdd(a.cuda(), a.cuda());
  EXPECT_TRUE(c.is_cuda());
  EXPECT_LT(rel_error(c, sdd(a, a)), 1e-5);
}

// ---- Softmax ---------------------------------------------------------------------------------------
struct SoftmaxCase {
  bool rpe;
  int kp;  // 0 none, 1 add, 2 mul
  int am;
  double scale;
};

std::string case_name(const SoftmaxCase& c) {
  const char* m[] = {"none", "add", "mul"};
  return std::string("rpe=") + (c.rpe ? "1" : "0") + " kp=" + m[c.kp] + " am=" + m[c.am] +
         " scale=" + std::to_string(c.scale);
}

// Runs one softmax case on random inputs and checks y, dx (and drpe) against the dense reference.
void check_softmax_case(const SoftmaxCase& sc, int64_t block, int64_t nb, torch::ScalarType dt, double tol,
                        uint64_t seed) {
  const int64_t Z = 2, H = 2, S = nb * block;
  torch::Tensor layout = test::random_layout(H, nb, nb, 0.5, seed);
  LayoutTables t = LayoutTables::build(layout, block);
  torch::manual_seed(static_cast<int64_t>(seed));
  torch::Tensor x = torch::rand({Z, t.nnz, block, block}, torch::kFloat64).to(dt).set_requires_grad(true);
  SoftmaxOptions o;
  test::DenseSoftmaxArgs r;
  o.scale = r.scale = sc.scale;
  torch::Tensor rpe;
  if (sc.rpe) {
    rpe = torch::randn({Z, H, S, S}, torch::kFloat64).to(dt).set_requires_grad(true);
    o.rpe = rpe;
    r.rpe = rpe.to(torch::kFloat64);
  }
  if (sc.kp) {  // add: {0, -inf, random}; mul: {0, 1, 2}
    torch::Tensor m = sc.kp == 1 ? torch::randn({Z, S}, torch::kFloat64).masked_fill(torch::rand({Z, S}).lt(0.2), -kInf)
                                 : torch::randint(0, 3, {Z, S}, torch::kFloat64);
    o.key_padding_mask = m.to(dt);
    o.key_padding_mask_mode = sc.kp == 1 ? MaskMode::Add : MaskMode::Mul;
    r.key_padding_mask = m.to(dt).to(torch::kFloat64);
    r.kp_mode = o.key_padding_mask_mode;
  }
  if (sc.am) {
    torch::Tensor m = sc.am == 1 ? torch::randn({S, S}, torch::kFloat64) : torch::rand({S, S}).gt(0.3).to(torch::kFloat64);
    o.attn_mask = m.to(dt);
    o.attn_mask_mode = sc.am == 1 ? MaskMode::Add : MaskMode::Mul;
    r.attn_mask = m.to(dt).to(torch::kFloat64);
    r.am_mode = o.attn_mask_mode;
  }
  torch::Tensor y = blocksparse_softmax(x, t, o);
  ASSERT_EQ(y.scalar_type(), dt);
  EXPECT_FALSE(y.isnan().any().item<bool>()) << case_name(sc);
  torch::Tensor x_dense = sparse_to_dense(x.to(torch::kFloat64), t);
  torch::Tensor y_ref = dense_to_sparse(test::dense_softmax(x_dense, layout, block, r), t);
  EXPECT_LT(rel_error(y, y_ref), tol) << case_name(sc) << " block " << block;
  torch::Tensor w = torch::randn_like(y_ref);
  std::vector<torch::Tensor> inputs{x};
  if (sc.rpe) inputs.push_back(rpe);
  auto g = torch::autograd::grad({(y.to(torch::kFloat64) * w).sum()}, inputs);
  auto g_ref = torch::autograd::grad({(y_ref * w).sum()}, inputs);
  EXPECT_LT(rel_error(g[0], g_ref[0]), tol) << "dx " << case_name(sc);
  if (sc.rpe) {
    EXPECT_LT(rel_error(g[1], g_ref[1]), tol) << "drpe " << case_name(sc);
  }
}

TEST(Softmax, EveryMaskModeRpeCombinationFloat64) {
  for (bool rpe : {false, true})
    for (int kp : {0, 1, 2})
      for (int am : {0, 1, 2})
        for (double scale : {1.0, 0.4}) check_softmax_case({rpe, kp, am, scale}, 16, 4, torch::kFloat64, 1e-12, 17);
}

TEST(Softmax, BlockSizes16To128) {
  for (int64_t block : {16, 32, 64, 128}) check_softmax_case({true, 1, 2, 0.4}, block, 2, torch::kFloat64, 1e-12, 23);
}

TEST(Softmax, ReducedPrecision) {
  // float32: computed in float32 over rows of <= 64 entries: 1e-6 relative. bf16/fp16: inputs
  // rounded to the dtype (the reference sees the same rounded values), computed in float32, output
  // rounded once: within 2 unit roundoffs of the dtype relative to the result.
  check_softmax_case({true, 1, 2, 0.4}, 16, 4, torch::kFloat32, 1e-6, 29);
  check_softmax_case({false, 2, 1, 0.4}, 16, 4, torch::kBFloat16, 2 * test::unit_roundoff(torch::kBFloat16), 31);
  check_softmax_case({false, 1, 0, 1.0}, 32, 2, torch::kFloat16, 2 * test::unit_roundoff(torch::kFloat16), 37);
}

TEST(Softmax, CausalDiagonalBlocksFloat64) {
  // Blocks on the diagonal are causal inside (the meaning of a unidirectional layout); the others are
  // untouched. Checked against the dense reference, forward and gradient.
  for (int64_t block : {16, 32}) {
    torch::Tensor layout = test::random_layout(2, 3, 3, 0.5, 41 + block);
    LayoutTables t = LayoutTables::build(layout, block);
    torch::manual_seed(43);
    torch::Tensor x = torch::randn({2, t.nnz, block, block}, torch::kFloat64).set_requires_grad(true);
    SoftmaxOptions o;
    o.scale = 0.5;
    o.causal_diagonal = true;
    test::DenseSoftmaxArgs r;
    r.scale = 0.5;
    r.causal_diagonal = true;
    torch::Tensor y = blocksparse_softmax(x, t, o);
    torch::Tensor y_ref = dense_to_sparse(test::dense_softmax(sparse_to_dense(x, t), layout, block, r), t);
    EXPECT_LT(rel_error(y, y_ref), 1e-13) << block;
    torch::Tensor w = torch::randn_like(y);
    EXPECT_LT(rel_error(torch::autograd::grad({(y * w).sum()}, {x})[0],
                        torch::autograd::grad({(y_ref * w).sum()}, {x})[0]),
              1e-13);
    // The strict upper triangle of every diagonal block is exactly zero.
    torch::Tensor upper = torch::ones({block, block}, torch::kBool).triu(1);
    for (int64_t n = 0; n < t.nnz; ++n) {
      if (t.row[n].item<int64_t>() != t.col[n].item<int64_t>()) continue;
      EXPECT_TRUE(y.select(1, n).masked_select(upper.unsqueeze(0)).eq(0).all().item<bool>());
    }
  }
}

TEST(Softmax, RowsWithNothingAllowedGiveZerosNotNaN) {
  // DeepSpeed returns NaN for such rows (softmax of all -inf); we return 0 with a 0 gradient.
  torch::Tensor layout = torch::tensor({1, 0, 1, 1}, torch::kLong).view({1, 2, 2});
  LayoutTables t = LayoutTables::build(layout, 16);
  torch::Tensor x = torch::randn({1, 3, 16, 16}, torch::kFloat64).set_requires_grad(true);
  SoftmaxOptions o;
  o.key_padding_mask = torch::zeros({1, 32}, torch::kFloat64);
  o.key_padding_mask.narrow(1, 0, 16).fill_(-kInf);  // block row 0 only sees keys 0..15: all masked
  torch::Tensor y = blocksparse_softmax(x, t, o);
  EXPECT_FALSE(y.isnan().any().item<bool>());
  EXPECT_TRUE(y.select(1, 0).eq(0).all().item<bool>());
  torch::Tensor row1 = y.select(1, 1).sum(-1) + y.select(1, 2).sum(-1);  // block row 1: keys 16..31 left
  EXPECT_LT((row1 - 1).abs().max().item<double>(), 1e-14);
  torch::Tensor g = torch::autograd::grad({(y * torch::randn_like(y)).sum()}, {x})[0];
  EXPECT_FALSE(g.isnan().any().item<bool>());
  EXPECT_TRUE(g.select(1, 0).eq(0).all().item<bool>());
}

TEST(Softmax, GradcheckFloat64WithRpe) {
  torch::Tensor layout = torch::tensor({1, 0, 1, 1}, torch::kLong).view({1, 2, 2});
  LayoutTables t = LayoutTables::build(layout, 16);
  torch::manual_seed(5);
  torch::Tensor kp = torch::randn({1, 32}, torch::kFloat64);
  torch::Tensor am = torch::rand({32, 32}).gt(0.2).to(torch::kFloat64);
  const double err = test::gradcheck_error(
      [&](const std::vector<torch::Tensor>& in) {
        SoftmaxOptions o;
        o.scale = 0.7;
        o.rpe = in[1];
        o.key_padding_mask = kp;
        o.attn_mask = am;
        o.attn_mask_mode = MaskMode::Mul;
        return blocksparse_softmax(in[0], t, o);
      },
      {torch::randn({1, 3, 16, 16}, torch::kFloat64), torch::randn({1, 1, 32, 32}, torch::kFloat64)});
  EXPECT_LT(err, 1e-7);
}

TEST(Softmax, InputErrors) {
  torch::Tensor layout = torch::ones({1, 2, 2}, torch::kLong);
  Softmax sm(layout, 16);
  torch::Tensor x = torch::rand({1, 4, 16, 16});
  SoftmaxOptions o;
  o.rpe = torch::zeros({1, 1, 32, 32}, torch::kFloat64);
  DS_EXPECT_THROW_MSG(sm(x, o), c10::ValueError, "relative position embedding must be torch.float32");
  o = {};
  o.attn_mask = torch::zeros({32, 32}, torch::kFloat16);
  DS_EXPECT_THROW_MSG(sm(x, o), c10::ValueError, "Attention mask must be torch.float32");
  o = {};
  o.key_padding_mask = torch::zeros({1, 32}, torch::kBFloat16);
  DS_EXPECT_THROW_MSG(sm(x, o), c10::ValueError, "Key padding mask must be torch.float32");
  o = {};
  o.key_padding_mask = torch::zeros({2, 32});
  DS_EXPECT_THROW_MSG(sm(x, o), c10::ValueError, "Key padding mask must have shape [1, 32]");
  o = {};
  o.attn_mask = torch::zeros({1, 32, 32});
  DS_EXPECT_THROW_MSG(sm(x, o), c10::ValueError, "only 2-D masks");
  o = {};
  o.rpe = torch::zeros({1, 3, 32, 32});
  DS_EXPECT_THROW_MSG(sm(x, o), c10::ValueError, "relative position embedding must have shape [1, 1, 32, 32]");
  DS_EXPECT_THROW_MSG(sm(torch::rand({1, 3, 16, 16})), c10::ValueError, "must be a block-sparse [Z, 4, 16, 16]");
  DS_EXPECT_THROW_MSG(Softmax(torch::ones({2, 2}, torch::kLong), 16), c10::ValueError, "3 dimensional");
  DS_EXPECT_THROW_MSG(parse_mask_mode("or", "attn_mask_mode"), c10::ValueError, "attn_mask_mode must be 'add' or 'mul', got 'or'");
}

}  // namespace
}  // namespace ds
