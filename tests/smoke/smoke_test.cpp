#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ops/common/torch_utils.h"
#include "tests/common/test_utils.h"
#if DS_WITH_CUDA
#include "tests/smoke/axpby.h"
#endif

TEST(Smoke, TorchCpuWorks) {
  auto a = torch::arange(6, torch::kFloat64).reshape({2, 3});
  EXPECT_EQ(a.sum().item<double>(), 15.0);
}

TEST(Smoke, AxpbyAllDtypes_CUDA) {
  DS_REQUIRE_CUDA();
#if DS_WITH_CUDA
  for (auto dt : {torch::kFloat32, torch::kFloat16, torch::kBFloat16}) {
    // 1000003 elements: not a multiple of the block, and more than the grid so the loop strides.
    auto x = torch::randn({1000003}, torch::dtype(dt).device(torch::kCUDA));
    auto y = torch::randn({1000003}, torch::dtype(dt).device(torch::kCUDA));
    auto ref = (2.5 * x.to(torch::kFloat64) - 0.5 * y.to(torch::kFloat64)).cpu();
    ds::smoke::AxpbyParams p{ds::scalar_kind_of(x, "x"), x.data_ptr(), y.data_ptr(), x.numel(), 2.5f, -0.5f};
    ds::smoke::launch_axpby(p, ds::current_stream());
    // One rounding of the result in the output dtype: |err| <= u * |ref| (+ fp32 math slack).
    double u = ds::test::unit_roundoff(dt);
    EXPECT_LT(ds::test::rel_error(y, ref), 2 * u) << dt;
  }
#endif
}
