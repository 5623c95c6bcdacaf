// Philox4x32-10 against Random123's published known answers, the mask layout contract of
// ops/nn/philox.h, and dropout's statistics and exact values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "ops/nn/dropout.h"
#include "ops/nn/philox.h"

namespace {

using ds::nn::Philox4x32;

void expect_philox(Philox4x32 ctr, uint32_t k0, uint32_t k1, Philox4x32 want) {
  const Philox4x32 got = ds::nn::philox4x32_10(ctr, k0, k1);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], want.v[i]) << "lane " << i;
}

TEST(Philox, Random123KnownAnswers) {
  expect_philox({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
  expect_philox({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
                {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
  expect_philox({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
                {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

TEST(Philox, UniformIsInHalfOpenUnitIntervalAndExact) {
  EXPECT_EQ(ds::nn::philox_uniform(0u), 1.0f / 16777216.0f);
  EXPECT_EQ(ds::nn::philox_uniform(0xffffffffu), 1.0f);
  EXPECT_EQ(ds::nn::philox_uniform(0x80000000u), 0.5f + 1.0f / 16777216.0f);
  // keep iff uniform > ratio: a ratio of 0 keeps everything, even the smallest draw.
  EXPECT_TRUE(ds::nn::dropout_keep(0u, 0.0f));
  EXPECT_FALSE(ds::nn::dropout_keep(0x7fffffffu, 0.5f));
}

// The mask equals a direct evaluation of the contract: element i is lane i % 4 of the block i / 4
// of stream (seed, offset); bit j of byte k is element 8k + j; bits past the end are 0.
TEST(DropoutMask, FollowsTheCounterLayoutContract) {
  const int64_t n = 1001;  // not a multiple of 8 or 4
  const uint64_t seed = 0x123456789abcdefULL, offset = (7ULL << 32) + 5;
  const double ratio = 0.3;
  auto mask = ds::nn::dropout_make_mask(n, ratio, seed, offset);
  ASSERT_EQ(mask.numel(), 126);
  const uint8_t* m = mask.data_ptr<uint8_t>();
  for (int64_t i = 0; i < 126 * 8; ++i) {
    bool want = false;
    if (i < n) {
      const auto blk = ds::nn::philox_block(seed, offset, static_cast<uint64_t>(i / 4));
      want = ds::nn::philox_uniform(blk.v[i % 4]) > static_cast<float>(ratio);
    }
    ASSERT_EQ(((m[i / 8] >> (i % 8)) & 1) != 0, want) << "element " << i;
  }
  auto unpacked = ds::nn::dropout_mask_unpack(mask, {7, 11, 13});
  EXPECT_EQ(unpacked.sizes(), torch::IntArrayRef({7, 11, 13}));
  EXPECT_EQ(unpacked.flatten()[17].item<bool>(), ((m[2] >> 1) & 1) != 0);
}

TEST(DropoutMask, KeepFractionMatchesRatio) {
  const int64_t n = 1 << 20;
  for (double ratio : {0.1, 0.5, 0.9}) {
    auto keep = ds::nn::dropout_mask_unpack(ds::nn::dropout_make_mask(n, ratio, 42, 3), {n});
    const double frac = keep.to(torch::kDouble).mean().item<double>();
    // Binomial: the kept fraction has std sqrt(p (1 - p) / n) <= 4.9e-4; allow 6 of them.
    const double sd = std::sqrt(ratio * (1 - ratio) / n);
    EXPECT_NEAR(frac, 1.0 - ratio, 6 * sd) << "ratio " << ratio;
  }
}

TEST(DropoutMask, StreamsAreRepeatableAndIndependent) {
  const int64_t n = 1 << 16;
  auto a = ds::nn::dropout_make_mask(n, 0.5, 1, 0);
  EXPECT_TRUE(torch::equal(a, ds::nn::dropout_make_mask(n, 0.5, 1, 0)));
  // Another offset or seed: independent masks disagree on about half the elements (p = 0.5).
  for (auto other : {ds::nn::dropout_make_mask(n, 0.5, 1, 1), ds::nn::dropout_make_mask(n, 0.5, 2, 0),
                     ds::nn::dropout_make_mask(n, 0.5, 1, 1ULL << 32)}) {
    const double differ = (ds::nn::dropout_mask_unpack(a, {n}) != ds::nn::dropout_mask_unpack(other, {n}))
                              .to(torch::kDouble)
                              .mean()
                              .item<double>();
    EXPECT_NEAR(differ, 0.5, 6 * std::sqrt(0.25 / n));
  }
}

TEST(Dropout, ForwardAndApplyScaleKeptValues) {
  auto x = torch::randn({5, 9, 7}, torch::kDouble);
  const double p = 0.25;
  auto r = ds::nn::dropout_forward(x, p, 9, 4);
  ASSERT_TRUE(r.mask.defined());
  EXPECT_EQ(r.mask.scalar_type(), torch::kByte);
  EXPECT_EQ(r.mask.numel(), (5 * 9 * 7 + 7) / 8);
  auto keep = ds::nn::dropout_mask_unpack(r.mask, x.sizes()).to(torch::kDouble);
  // The scale 1 / (1 - p) is applied as one multiplication: equal to x / (1 - p) up to one rounding.
  EXPECT_TRUE(torch::allclose(r.y, x * keep / (1 - p), 3e-16, 0));
  EXPECT_TRUE(torch::equal(r.mask, ds::nn::dropout_make_mask(x.numel(), p, 9, 4)));
  EXPECT_TRUE(torch::allclose(ds::nn::dropout_apply(x, r.mask, p), r.y, 0, 0));
  // Ratio 0: identity, no mask.
  auto z = ds::nn::dropout_forward(x, 0.0, 9, 4);
  EXPECT_FALSE(z.mask.defined());
  EXPECT_TRUE(torch::equal(z.y, x));
  EXPECT_TRUE(torch::equal(ds::nn::dropout_apply(x, at::Tensor(), 0.0), x));
}

TEST(Dropout, BiasDropoutResidual) {
  auto x = torch::randn({3, 4, 16}, torch::kDouble);
  auto bias = torch::randn({16}, torch::kDouble);
  auto res = torch::randn({3, 4, 16}, torch::kDouble);
  const double p = 0.4;
  auto r = ds::nn::bias_dropout_residual_forward(x, bias, res, p, 77, 2);
  auto keep = ds::nn::dropout_mask_unpack(r.mask, x.sizes()).to(torch::kDouble);
  EXPECT_LT((r.y - (res + (x + bias) * keep / (1 - p))).abs().max().item<double>(), 1e-14);
  auto r0 = ds::nn::bias_dropout_residual_forward(x, bias, res, 0.0, 77, 2);
  EXPECT_FALSE(r0.mask.defined());
  EXPECT_LT((r0.y - (res + x + bias)).abs().max().item<double>(), 1e-14);
}

TEST(Dropout, RejectsBadArguments) {
  auto x = torch::randn({4, 8});
  EXPECT_THROW(ds::nn::dropout_forward(x, 1.0, 0, 0), c10::Error);
  EXPECT_THROW(ds::nn::dropout_forward(x, -0.1, 0, 0), c10::Error);
  auto m = ds::nn::dropout_make_mask(32, 0.5, 0, 0);
  EXPECT_THROW(ds::nn::dropout_apply(torch::randn({4, 9}), m, 0.5), c10::Error);  // 36 elements need 5 bytes
  EXPECT_THROW(ds::nn::dropout_apply(x, at::Tensor(), 0.5), c10::Error);
  try {
    ds::nn::dropout_forward(torch::empty({4, 8}, torch::Device(torch::kMeta)), 0.1, 0, 0);
    FAIL() << "a meta tensor was accepted";
  } catch (const c10::Error& e) {
    // CPU-only builds say "only CPU tensors", CUDA builds "CPU and CUDA tensors are supported".
    const std::string what = e.what();
    EXPECT_TRUE(what.find("only CPU tensors") != std::string::npos ||
                what.find("CPU and CUDA tensors are supported") != std::string::npos)
        << what;
  }
}

}  // namespace
