// The ops/nn CUDA kernels against the CPU reference of the same functions (ops/nn/*.cpp): dropout
// masks bit-identical for the same (seed, offset), dropout values exact, and LayerNorm (both
// backward forms, fused residual), bias + GELU (with the bias gradient), the attention softmax
// (with mask and dropout) within a rounding of the dtype; awkward sizes reach the scalar paths.
//
// Tolerances: both sides evaluate the same formula in fp32 and round once to the dtype at the same
// points; only the fp32 summation order (and FMA contraction) differs, ~1e-6 relative. After the
// final rounding to the dtype the two agree to one unit roundoff u of the dtype elementwise at
// worst, so the norm-wise relative difference is below u (we allow 2u); float32 outputs agree to
// ~1e-6 (we allow 1e-5). Statistics (float32 everywhere) agree to 1e-5.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "ops/nn/dropout.h"
#include "ops/nn/gelu.h"
#include "ops/nn/layer_norm.h"
#include "ops/nn/softmax.h"
#include "tests/common/test_utils.h"

#if DS_WITH_CUDA
#include "ops/nn/nn_cuda.h"
#endif

namespace {

using ds::test::rel_error;

const std::vector<torch::ScalarType> kTypes = {torch::kFloat, torch::kHalf, torch::kBFloat16};

double tol(torch::ScalarType t) { return t == torch::kFloat ? 1e-5 : 2 * ds::test::unit_roundoff(t); }

torch::Tensor cuda(const torch::Tensor& t) { return t.to(torch::kCUDA); }

// Random data in dtype dt, the same on both devices.
torch::Tensor rnd(at::IntArrayRef s, torch::ScalarType dt, double scale = 1.0, double shift = 0.0) {
  return (torch::randn(s, torch::kDouble) * scale + shift).to(dt);
}

#define EXPECT_CLOSE(gpu, cpu, dt, what) \
  EXPECT_LT(rel_error((gpu), (cpu)), tol(dt)) << (what) << " " << c10::toString(dt)

TEST(DropoutCuda, MasksAreBitIdenticalToTheCpu_CUDA) {
  DS_REQUIRE_CUDA();
  const std::vector<int64_t> sizes = {1, 7, 8, 9, 1000, 4099, (1 << 20) + 3};
  const std::vector<std::pair<uint64_t, uint64_t>> streams = {{0, 0}, {1234, 5}, {0xfedcba9876543210ULL, 7ULL << 32}};
  for (double ratio : {0.0, 0.1, 0.5, 0.9}) {
    for (int64_t n : sizes) {
      for (auto [seed, offset] : streams) {
        auto cpu = ds::nn::dropout_make_mask(n, ratio, seed, offset);
        auto gpu = ds::nn::dropout_make_mask(n, ratio, seed, offset, torch::Device(torch::kCUDA));
        ASSERT_TRUE(gpu.is_cuda());
        ASSERT_TRUE(torch::equal(gpu.cpu(), cpu)) << "numel " << n << " ratio " << ratio << " seed " << seed;
      }
    }
  }
}

TEST(DropoutCuda, ForwardApplyAndResidualMatchTheCpu_CUDA) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(1);
  for (auto dt : kTypes) {
    for (int64_t n : {int64_t(1), int64_t(13), int64_t(4096), int64_t(33 * 97)}) {
      auto x = rnd({n}, dt);
      auto c = ds::nn::dropout_forward(x, 0.3, 42, 9);
      auto g = ds::nn::dropout_forward(cuda(x), 0.3, 42, 9);
      ASSERT_TRUE(torch::equal(g.mask.cpu(), c.mask)) << n;
      // One multiplication in fp32 and one rounding on both sides: identical values.
      EXPECT_TRUE(torch::equal(g.y.cpu(), c.y)) << n << " " << dt;
      auto ga = ds::nn::dropout_apply(cuda(x), g.mask, 0.3);
      EXPECT_TRUE(torch::equal(ga.cpu(), ds::nn::dropout_apply(x, c.mask, 0.3))) << n << " " << dt;
    }
    // Rows of 1000 (vector path) and 77 (scalar path: masks bytes straddle rows).
    for (int64_t h : {int64_t(1000), int64_t(77)}) {
      auto x = rnd({5, 3, h}, dt), b = rnd({h}, dt), r = rnd({5, 3, h}, dt);
      auto c = ds::nn::bias_dropout_residual_forward(x, b, r, 0.2, 3, 4);
      auto g = ds::nn::bias_dropout_residual_forward(cuda(x), cuda(b), cuda(r), 0.2, 3, 4);
      ASSERT_TRUE(torch::equal(g.mask.cpu(), c.mask)) << h;
      EXPECT_CLOSE(g.y, c.y, dt, "bias_dropout_residual");
    }
  }
}

#if DS_WITH_CUDA
TEST(DropoutCuda, BackwardWithBiasGradientMatchesTheCpu_CUDA) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(2);
  for (auto dt : kTypes) {
    for (int64_t h : {int64_t(1024), int64_t(77)}) {
      auto g = rnd({600, h}, dt);  // more rows than row groups: several rows per group
      auto mask = ds::nn::dropout_make_mask(g.numel(), 0.25, 8, 1);
      auto [y, sum] = ds::nn::cuda::dropout_apply_colsum(cuda(g), cuda(mask), 0.25);
      auto yc = ds::nn::dropout_apply(g, mask, 0.25);
      EXPECT_TRUE(torch::equal(y.cpu(), yc)) << dt;
      EXPECT_CLOSE(sum, yc.to(torch::kFloat).sum(0).to(dt), dt, "column sums");
      const auto gc = cuda(g);
      auto [y0, sum0] = ds::nn::cuda::dropout_apply_colsum(gc, {}, 0.0);
      EXPECT_EQ(y0.data_ptr(), gc.data_ptr()) << "ratio 0: the input itself";
      EXPECT_CLOSE(sum0, g.to(torch::kFloat).sum(0).to(dt), dt, "column sums without dropout");
    }
  }
}
#endif

TEST(LayerNormCuda, ForwardMatchesTheCpu_CUDA) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(3);
  // 1024 / 1600: vector path, one chunk per thread; 8192: 4 per thread; 20 and 1001: scalar path.
  for (auto dt : kTypes) {
    for (int64_t h : {int64_t(1024), int64_t(1600), int64_t(8192), int64_t(20), int64_t(1001)}) {
      auto x = rnd({37, h}, dt, 2.0, 0.5), g = rnd({h}, dt, 0.1, 1.0), b = rnd({h}, dt, 0.1);
      auto c = ds::nn::layer_norm_forward(x, g, b, 1e-5);
      auto r = ds::nn::layer_norm_forward(cuda(x), cuda(g), cuda(b), 1e-5);
      EXPECT_CLOSE(r.y, c.y, dt, "y H " + std::to_string(h));
      EXPECT_LT(rel_error(r.mean, c.mean), 1e-5) << h;
      EXPECT_LT(rel_error(r.var, c.var), 1e-5) << h;
    }
  }
}

TEST(LayerNormCuda, BothBackwardFormsMatchTheCpu_CUDA) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(4);
  for (auto dt : kTypes) {
    for (int64_t h : {int64_t(1024), int64_t(4096), int64_t(1001)}) {
      const int64_t rows = 700;  // > 512 row groups
      auto x = rnd({rows, h}, dt, 2.0, 0.5), g = rnd({h}, dt, 0.1, 1.0), b = rnd({h}, dt, 0.1);
      auto gy = rnd({rows, h}, dt), res = rnd({rows, h}, dt);
      auto f = ds::nn::layer_norm_forward(x, g, b, 1e-5);
      auto c = ds::nn::layer_norm_backward(gy, x, g, f.mean, f.var, res);
      auto r = ds::nn::layer_norm_backward(cuda(gy), cuda(x), cuda(g), cuda(f.mean), cuda(f.var), cuda(res));
      const std::string at = " H " + std::to_string(h);
      EXPECT_CLOSE(r.grad_x, c.grad_x, dt, "grad_x" + at);
      EXPECT_CLOSE(r.grad_gamma, c.grad_gamma, dt, "grad_gamma" + at);
      EXPECT_CLOSE(r.grad_beta, c.grad_beta, dt, "grad_beta" + at);
      auto ci = ds::nn::layer_norm_backward_invertible(gy, f.y, g, b, f.var, res);
      auto ri = ds::nn::layer_norm_backward_invertible(cuda(gy), cuda(f.y), cuda(g), cuda(b), cuda(f.var), cuda(res));
      EXPECT_CLOSE(ri.grad_x, ci.grad_x, dt, "invertible grad_x" + at);
      EXPECT_CLOSE(ri.grad_gamma, ci.grad_gamma, dt, "invertible grad_gamma" + at);
      EXPECT_CLOSE(ri.grad_beta, ci.grad_beta, dt, "invertible grad_beta" + at);
      // Deterministic: the same bits twice.
      auto r2 = ds::nn::layer_norm_backward(cuda(gy), cuda(x), cuda(g), cuda(f.mean), cuda(f.var), cuda(res));
      EXPECT_TRUE(torch::equal(r2.grad_gamma, r.grad_gamma));
      EXPECT_TRUE(torch::equal(r2.grad_x, r.grad_x));
    }
  }
}

#if DS_WITH_CUDA
TEST(LayerNormCuda, FusedResidualLayerNormAndSecondGradient_CUDA) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(5);
  for (auto dt : kTypes) {
    for (int64_t h : {int64_t(1024), int64_t(77)}) {
      auto x = rnd({9, 11, h}, dt), b = rnd({h}, dt, 0.1), r = rnd({9, 11, h}, dt);
      auto g = rnd({h}, dt, 0.1, 1.0), be = rnd({h}, dt, 0.1);
      auto gpu = ds::nn::cuda::residual_ln_forward(cuda(x), cuda(b), cuda(r), {0.1, 11, 12}, cuda(g), cuda(be), 1e-5,
                                                   /*keep_sum=*/true);
      auto sum = ds::nn::bias_dropout_residual_forward(x, b, r, 0.1, 11, 12);
      auto ln = ds::nn::layer_norm_forward(sum.y, g, be, 1e-5);
      ASSERT_TRUE(torch::equal(gpu.mask.cpu(), sum.mask));
      EXPECT_CLOSE(gpu.sum, sum.y, dt, "sum");
      EXPECT_CLOSE(gpu.ln.y, ln.y, dt, "LN of the sum");
      EXPECT_LT(rel_error(gpu.ln.var, ln.var), 1e-5);
      // grad_y + grad_y2 enters the LayerNorm backward (post-LN's two gradients of ff1_inp).
      auto gy = rnd({9, 11, h}, dt), gy2 = rnd({9, 11, h}, dt);
      auto c = ds::nn::layer_norm_backward((gy.to(torch::kFloat) + gy2.to(torch::kFloat)).to(dt), sum.y, g, ln.mean,
                                           ln.var);
      auto o = ds::nn::cuda::layer_norm_backward(cuda(gy), cuda(gy2), cuda(sum.y), cuda(ln.mean), {}, {},
                                                 cuda(ln.var), cuda(g), {});
      EXPECT_CLOSE(o.grad_x, c.grad_x, dt, "grad_x with grad_y2");
      EXPECT_CLOSE(o.grad_gamma, c.grad_gamma, dt, "grad_gamma with grad_y2");
    }
  }
}
#endif

TEST(GeluCuda, ForwardAndBackwardMatchTheCpu_CUDA) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(6);
  for (auto dt : kTypes) {
    for (int64_t n : {int64_t(4096), int64_t(36)}) {  // vector / scalar (36 % 8 != 0)
      auto x = rnd({600, n}, dt, 2.0), b = rnd({n}, dt, 0.5), gy = rnd({600, n}, dt);
      EXPECT_CLOSE(ds::nn::bias_gelu_forward(cuda(x), cuda(b)), ds::nn::bias_gelu_forward(x, b), dt, "gelu");
      EXPECT_CLOSE(ds::nn::bias_gelu_forward(cuda(x), {}), ds::nn::bias_gelu_forward(x, {}), dt, "gelu, no bias");
      auto c = ds::nn::bias_gelu_backward(gy, x, b);
      EXPECT_CLOSE(ds::nn::bias_gelu_backward(cuda(gy), cuda(x), cuda(b)), c, dt, "gelu backward");
#if DS_WITH_CUDA
      auto [gx, gb] = ds::nn::cuda::bias_gelu_backward(cuda(gy), cuda(x), cuda(b), /*want_bias_grad=*/true);
      EXPECT_CLOSE(gx, c, dt, "gelu backward (fused)");
      EXPECT_CLOSE(gb, c.to(torch::kFloat).sum(0).to(dt), dt, "bias gradient");
#endif
    }
  }
}

TEST(SoftmaxCuda, MaskedSoftmaxAndBackwardMatchTheCpu_CUDA) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(7);
  // 128, 512, 2048: vector path (8, 16, 64 per lane); 51, 509: scalar; 2100: the ATen path.
  for (auto dt : kTypes) {
    for (int64_t s : {int64_t(128), int64_t(512), int64_t(2048), int64_t(51), int64_t(509), int64_t(2100)}) {
      const int64_t b = 2, heads = 3, sq = s > 600 ? 5 : s;
      auto scores = rnd({b, heads, sq, s}, dt, 3.0);
      auto mask = torch::zeros({b, 1, 1, s}, torch::kDouble);
      mask.index_put_({1, 0, 0, torch::indexing::Slice(s / 2, torch::indexing::None)}, -10000.0);
      mask = mask.to(dt);
      auto c = ds::nn::attn_softmax_forward(scores, mask);
      auto g = ds::nn::attn_softmax_forward(cuda(scores), cuda(mask));
      EXPECT_CLOSE(g, c, dt, "softmax S " + std::to_string(s));
      auto gp = rnd({b, heads, sq, s}, dt);
      EXPECT_CLOSE(ds::nn::softmax_backward(cuda(gp), g), ds::nn::softmax_backward(gp, c), dt,
                   "softmax backward S " + std::to_string(s));
    }
  }
}

#if DS_WITH_CUDA
// softmax + mask + dropout in one kernel against the CPU softmax followed by the CPU dropout of the
// same site: identical masks (also when S % 8 != 0 and mask bytes straddle rows), values within a
// rounding; the fused backward against the CPU dropout backward followed by the softmax backward.
TEST(SoftmaxCuda, FusedAttentionDropoutMatchesTheCpuComposition_CUDA) {
  DS_REQUIRE_CUDA();
  torch::manual_seed(8);
  for (auto dt : kTypes) {
    for (int64_t s : {int64_t(128), int64_t(51), int64_t(381)}) {
      const int64_t b = 3, heads = 2;
      auto scores = rnd({b, heads, s, s}, dt, 3.0);
      auto mask = rnd({b, 1, 1, s}, torch::kFloat);
      auto c = ds::nn::attn_softmax_forward(scores, mask);
      auto cd = ds::nn::dropout_forward(c, 0.1, 77, 3);
      auto g = ds::nn::cuda::attn_softmax_forward(cuda(scores), cuda(mask.reshape({b, s})), heads * s, {0.1, 77, 3},
                                                  /*in_place=*/false);
      ASSERT_TRUE(torch::equal(g.mask.cpu(), cd.mask)) << "S " << s;
      EXPECT_CLOSE(g.probs, c, dt, "probs S " + std::to_string(s));
      EXPECT_CLOSE(g.dropped, cd.y, dt, "dropped probs S " + std::to_string(s));
      auto gd = rnd({b, heads, s, s}, dt);
      auto cb = ds::nn::softmax_backward(ds::nn::dropout_apply(gd, cd.mask, 0.1), c);
      auto gb = ds::nn::cuda::attn_softmax_backward(cuda(gd), cuda(c), cuda(cd.mask), 0.1, /*in_place=*/false);
      EXPECT_CLOSE(gb, cb, dt, "backward S " + std::to_string(s));
    }
  }
}
#endif

}  // namespace
