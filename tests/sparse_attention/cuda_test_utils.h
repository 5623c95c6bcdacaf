// Helpers of the CUDA sparse attention tests: tolerances derived from the dtype, and running the same
// computation on the CPU float64 reference path and on the GPU.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/common/test_utils.h"

namespace ds::test {

// Relative (Frobenius) error budget of a CUDA result against the float64 reference computed from the
// same, already rounded, inputs:
//  - every rounding of a value to the 16-bit dtype (a materialized intermediate or the output)
//    contributes at most u relative (unit roundoff: 2^-8 bf16, 2^-11 fp16), RMS well below that;
//  - float32 accumulation over K random-sign terms contributes ~sqrt(K) u32 relative (the partial
//    sums random-walk); exact products (FFMA, tensor-core fp32 accumulation) add nothing beyond that;
//  - a factor 4 margin for the errors adding up in the same direction on a few elements.
// For float32 results only the accumulation term and one u32 remain.
inline double tolerance(torch::ScalarType dt, int roundings, int64_t K) {
  const double u32 = unit_roundoff(torch::kFloat32);
  const double u = dt == torch::kFloat32 ? u32 : unit_roundoff(dt);
  return 4.0 * (std::max(roundings, 1) * u + std::sqrt(static_cast<double>(std::max<int64_t>(K, 1))) * u32);
}

inline torch::Tensor cuda(const torch::Tensor& x) { return x.detach().to(torch::kCUDA).set_requires_grad(true); }
inline torch::Tensor cpu64(const torch::Tensor& x) {
  return x.detach().to(torch::kCPU, torch::kFloat64).set_requires_grad(true);
}

// Random values in [-1, 1) rounded to dt (held as dt on the CPU).
inline torch::Tensor uniform(std::vector<int64_t> shape, torch::ScalarType dt) {
  return (torch::rand(shape, torch::kFloat64) * 2 - 1).to(dt);
}

// Sets an environment variable for the lifetime of the object, restoring the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

}  // namespace ds::test
