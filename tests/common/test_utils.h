// Shared test helpers: GPU skipping with a reason, and tolerance-aware comparisons against a
// float64 reference.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "ops/common/device.h"

// Skip a test that needs a CUDA device, saying why it cannot run here.
#define DS_REQUIRE_CUDA()                                                       \
  do {                                                                          \
    if (!::ds::cuda_device_available())                                         \
      GTEST_SKIP() << "needs a CUDA device: " << ::ds::cuda_unavailable_reason(); \
  } while (0)

namespace ds::test {

// ||a - b|| / ||b|| in float64 (b the reference).
inline double rel_error(const torch::Tensor& a, const torch::Tensor& b) {
  auto a64 = a.detach().to(torch::kCPU, torch::kFloat64);
  auto b64 = b.detach().to(torch::kCPU, torch::kFloat64);
  double denom = b64.norm().item<double>();
  double num = (a64 - b64).norm().item<double>();
  return denom == 0.0 ? num : num / denom;
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.detach().to(torch::kCPU, torch::kFloat64) - b.detach().to(torch::kCPU, torch::kFloat64))
      .abs().max().item<double>();
}

// Unit roundoff of a dtype: the scale of a single rounding error, from which tolerances derive.
inline double unit_roundoff(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat64: return 1.1e-16;
    case torch::kFloat32: return 6.0e-8;
    case torch::kFloat16: return 4.9e-4;
    case torch::kBFloat16: return 3.9e-3;
    default: return 1.0;
  }
}

}  // namespace ds::test
