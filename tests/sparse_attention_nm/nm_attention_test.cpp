// Dynamic N:M attention, CPU reference: the selection rule on hand-checked groups, the reference
// against a direct float64 implementation (loops, one row at a time), gradients by finite differences,
// masks, causal, padding, and the errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <vector>

#include "sparse_attention/nm/nm_attention.h"
#include "tests/common/test_utils.h"

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

torch::Tensor row(std::vector<double> v) { return torch::tensor(v, torch::kFloat64); }

TEST(NMSelect, TwoOfFourKeepsTheLargest) {
  auto keep = ds::nm_select_mask(row({1, 4, 3, 2, -1, -2, 7, 7}), 2, 4);
  EXPECT_TRUE(torch::equal(keep, torch::tensor({false, true, true, false, false, false, true, true})));
}

TEST(NMSelect, TiesGoToTheLowerIndex) {
  EXPECT_TRUE(torch::equal(ds::nm_select_mask(row({5, 5, 5, 5}), 2, 4), torch::tensor({true, true, false, false})));
  EXPECT_TRUE(torch::equal(ds::nm_select_mask(row({1, 3, 3, 3}), 2, 4), torch::tensor({false, true, true, false})));
  EXPECT_TRUE(torch::equal(ds::nm_select_mask(row({2, 2, 7, 7}), 1, 2), torch::tensor({true, false, true, false})));
}

TEST(NMSelect, MaskedKeysNeverAheadOfUnmasked) {
  auto keep = ds::nm_select_mask(row({-kInf, 5, -kInf, -10000}), 2, 4);
  EXPECT_TRUE(torch::equal(keep, torch::tensor({false, true, false, true})));
  keep = ds::nm_select_mask(row({-kInf, -kInf, 1}), 2, 4);  // length 3: padded to 4 with -inf
  EXPECT_TRUE(torch::equal(keep, torch::tensor({true, false, true})));
}

TEST(NMSelect, OnlyOneOfTwoAndTwoOfFour) {
  for (auto nm : std::vector<std::pair<int, int>>{{2, 2}, {1, 4}, {3, 4}, {2, 8}, {0, 2}}) {
    try {
      ds::check_nm(nm.first, nm.second);
      FAIL() << nm.first << ":" << nm.second << " accepted";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("supports 1:2 and 2:4"), std::string::npos) << e.what();
    }
  }
}

// Direct float64 implementation: per (b, h, row), explicit groups, ranks, softmax, product.
torch::Tensor direct(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const ds::NMOptions& o) {
  const int64_t B = q.size(0), H = q.size(1), S = q.size(2), D = q.size(3);
  const double scale = o.scale.value_or(1.0 / std::sqrt(double(D)));
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto out = torch::zeros_like(q);
  auto oa = out.accessor<double, 4>();
  std::vector<double> s(S), p(S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < S; ++i) {
        for (int64_t j = 0; j < S; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qa[b][h][i][d] * ka[b][h][j][d];
          double x = dot * scale;
          if (o.key_padding_mask.defined()) {
            const double m = o.key_padding_mask[b][j].item<double>();
            x += o.key_padding_mask_mode == ds::MaskMode::Add ? m : (m == 0 ? -kInf : 0);
          }
          if (o.attn_mask.defined()) {
            const double m = o.attn_mask[i][j].item<double>();
            x += o.attn_mask_mode == ds::MaskMode::Add ? m : (m == 0 ? -kInf : 0);
          }
          if (o.causal && j > i) x = -kInf;
          s[j] = x;
        }
        // groups of m consecutive keys; the tail group is padded with -inf (which can only take
        // places no real key wants)
        std::vector<double> kept(S, -kInf);
        for (int64_t g0 = 0; g0 < S; g0 += o.m)
          for (int64_t a = g0; a < std::min(S, g0 + o.m); ++a) {
            int rank = 0;
            for (int64_t c = g0; c < g0 + o.m; ++c) {
              const double vc = c < S ? s[c] : -kInf;
              if (c != a) rank += vc > s[a] || (vc == s[a] && c < a);
            }
            if (rank < o.n) kept[a] = s[a];
          }
        double mx = -kInf;
        for (double x : kept) mx = std::max(mx, x);
        if (mx == -kInf) continue;
        double sum = 0;
        for (int64_t j = 0; j < S; ++j) sum += (p[j] = std::exp(kept[j] - mx));
        for (int64_t j = 0; j < S; ++j)
          for (int64_t d = 0; d < D; ++d) oa[b][h][i][d] += p[j] / sum * va[b][h][j][d];
      }
  return out;
}

struct Case {
  int64_t B, H, S, D, n, m;
  bool causal, kp, am, mul, ints;
};

class NMReference : public ::testing::TestWithParam<Case> {};

TEST_P(NMReference, MatchesDirectFloat64) {
  const Case c = GetParam();
  torch::manual_seed(7);
  auto opts = torch::kFloat64;
  torch::Tensor q, k;
  if (c.ints) {  // many exact ties
    q = torch::randint(-2, 3, {c.B, c.H, c.S, c.D}, opts);
    k = torch::randint(-2, 3, {c.B, c.H, c.S, c.D}, opts);
  } else {
    q = torch::randn({c.B, c.H, c.S, c.D}, opts);
    k = torch::randn({c.B, c.H, c.S, c.D}, opts);
  }
  auto v = torch::randn({c.B, c.H, c.S, c.D}, opts);
  ds::NMOptions o;
  o.n = c.n;
  o.m = c.m;
  o.causal = c.causal;
  if (c.kp) {
    o.key_padding_mask = c.mul ? (torch::rand({c.B, c.S}, opts) > 0.2).to(opts) : torch::randn({c.B, c.S}, opts);
    o.key_padding_mask_mode = c.mul ? ds::MaskMode::Mul : ds::MaskMode::Add;
  }
  if (c.am) {
    o.attn_mask = c.mul ? (torch::rand({c.S, c.S}, opts) > 0.3).to(opts) : torch::randn({c.S, c.S}, opts);
    o.attn_mask_mode = c.mul ? ds::MaskMode::Mul : ds::MaskMode::Add;
  }
  auto got = ds::nm_sparse_attention(q, k, v, o);  // CPU: the reference path
  auto want = direct(q, k, v, o);
  EXPECT_FALSE(got.isnan().any().item<bool>());
  // Same float64 arithmetic up to summation order: a few ulps of the values.
  EXPECT_LT(ds::test::max_abs_diff(got, want), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, NMReference,
    ::testing::Values(Case{2, 2, 16, 8, 2, 4, false, false, false, false, false},
                      Case{1, 3, 17, 8, 1, 2, false, false, false, false, false},   // S not a multiple of M
                      Case{2, 1, 13, 40, 2, 4, true, false, false, false, false},   // causal, head size 40
                      Case{1, 2, 12, 4, 2, 4, false, false, false, false, true},    // integer scores: ties
                      Case{1, 1, 9, 4, 1, 2, true, false, false, false, true},
                      Case{2, 2, 10, 8, 2, 4, false, true, true, false, false},     // add masks
                      Case{2, 2, 11, 8, 2, 4, false, true, true, true, false},      // mul masks
                      Case{1, 1, 1, 8, 2, 4, false, false, false, false, false}));  // one token

TEST(NMReference, RowsWithNothingAllowedAreZero) {
  auto q = torch::randn({1, 1, 8, 4}, torch::kFloat64), k = torch::randn_like(q), v = torch::randn_like(q);
  ds::NMOptions o;
  o.key_padding_mask = torch::zeros({1, 8}, torch::kFloat64);
  o.key_padding_mask_mode = ds::MaskMode::Mul;  // everything masked
  q.requires_grad_(true);
  auto out = ds::nm_sparse_attention(q, k, v, o);
  EXPECT_EQ(out.abs().max().item<double>(), 0.0);
  out.sum().backward();
  EXPECT_FALSE(q.grad().isnan().any().item<bool>());
  EXPECT_EQ(q.grad().abs().max().item<double>(), 0.0);
}

// Gradients by central differences (random float64 inputs: no near-ties, so the selection is locally
// constant and the function is smooth where we probe it).
TEST(NMReference, GradientsMatchFiniteDifferences) {
  torch::manual_seed(3);
  for (auto nm : std::vector<std::pair<int, int>>{{1, 2}, {2, 4}}) {
    auto q = torch::randn({1, 2, 7, 4}, torch::kFloat64).requires_grad_(true);
    auto k = torch::randn({1, 2, 7, 4}, torch::kFloat64).requires_grad_(true);
    auto v = torch::randn({1, 2, 7, 4}, torch::kFloat64).requires_grad_(true);
    auto w = torch::randn({1, 2, 7, 4}, torch::kFloat64);
    ds::NMOptions o;
    o.n = nm.first;
    o.m = nm.second;
    o.causal = nm.first == 1;
    auto loss = [&] { return (ds::nm_sparse_attention(q, k, v, o) * w).sum(); };
    loss().backward();
    const double eps = 1e-6;
    for (auto* t : {&q, &k, &v}) {
      auto grad = t->grad().clone();
      auto flat = t->detach().view(-1);
      for (int64_t i = 0; i < flat.numel(); i += 3) {
        const double x0 = flat[i].item<double>();
        torch::NoGradGuard ng;
        flat[i] = x0 + eps;
        const double up = loss().item<double>();
        flat[i] = x0 - eps;
        const double dn = loss().item<double>();
        flat[i] = x0;
        EXPECT_NEAR(grad.view(-1)[i].item<double>(), (up - dn) / (2 * eps), 1e-6) << "n:m " << nm.first << ":" << nm.second;
      }
    }
  }
}

TEST(NMReference, InputErrors) {
  auto q = torch::randn({1, 2, 8, 4});
  EXPECT_THROW(ds::nm_sparse_attention(q, torch::randn({1, 2, 9, 4}), q), c10::Error);
  ds::NMOptions o;
  o.key_padding_mask = torch::zeros({1, 7});
  EXPECT_THROW(ds::nm_sparse_attention(q, q, q, o), c10::Error);
  o = ds::NMOptions{};
  o.n = 3;
  EXPECT_THROW(ds::nm_sparse_attention(q, q, q, o), c10::Error);
}

}  // namespace
