// Fused multi-tensor CUDA kernels against the CPU reference loops on the same inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "ops/optim/fused_optim.h"
#include "tests/common/test_utils.h"

namespace {

using ds::test::max_abs_diff;

constexpr double kU32 = 6.0e-8;

// 150 tensors of awkward sizes (empty, 1, odd, over one 64 Ki chunk, a 3-chunk one) so the launcher
// packs several launches, splits a tensor across launches and skips empty ones.
std::vector<int64_t> sizes() {
  std::vector<int64_t> s;
  for (int i = 0; i < 150; ++i) {
    const int64_t pick[] = {1, 97, 40 * 72, 65536, 65537, 0, 3 * 65536 + 5, 1023};
    s.push_back(pick[i % 8] + (i % 3));
  }
  return s;
}

struct Case {
  std::vector<torch::Tensor> g, p, m, v, c;
};

Case make_case(torch::Generator& gen, torch::ScalarType gdt, bool copies, torch::ScalarType cdt) {
  Case k;
  for (int64_t n : sizes()) {
    k.p.push_back(torch::randn({n}, gen, torch::kFloat));
    k.m.push_back(torch::randn({n}, gen, torch::kFloat) * 0.1);
    k.v.push_back(torch::rand({n}, gen, torch::kFloat) * 0.01);
    k.g.push_back(torch::randn({n}, gen, torch::kFloat).to(gdt));
    if (copies) k.c.push_back(torch::empty({n}, cdt));
  }
  return k;
}

Case to_cuda(const Case& k) {
  auto mv = [](const std::vector<torch::Tensor>& ts) {
    std::vector<torch::Tensor> out;
    for (const auto& t : ts) out.push_back(t.to(torch::kCUDA));
    return out;
  };
  return Case{mv(k.g), mv(k.p), mv(k.m), mv(k.v), mv(k.c)};
}

void expect_close(const Case& cpu, const Case& gpu, int steps) {
  for (size_t i = 0; i < cpu.p.size(); ++i) {
    if (cpu.p[i].numel() == 0) continue;
    const double pmax = cpu.p[i].abs().max().item<double>();
    // fp32 on both sides in the same operation order; the GPU may contract a*b+c into an FMA, one
    // rounding of difference per operation per step.
    const double tol = steps * 16 * kU32 * (pmax + 1.0);
    EXPECT_LE(max_abs_diff(gpu.p[i], cpu.p[i]), tol) << "param " << i << " (" << cpu.p[i].numel() << ")";
    // m = b1*m + (1-b1)*g and v = b2*v + (1-b2)*g*g: up to two contractions per step, each one
    // rounding (u) of difference relative to the moment; they add over the steps (seen on H100:
    // 1.12e-6 after 3 steps, which the old flat 1e-6 rejected).
    const double mtol = steps * 8 * kU32;
    EXPECT_LE(ds::test::rel_error(gpu.m[i], cpu.m[i]), mtol) << "exp_avg " << i;
    EXPECT_LE(ds::test::rel_error(gpu.v[i], cpu.v[i]), mtol) << "exp_avg_sq " << i;
    if (!gpu.c.empty()) {
      EXPECT_TRUE(torch::equal(gpu.c[i], gpu.p[i].to(gpu.c[i].scalar_type()))) << "model copy " << i;
    }
  }
}

TEST(FusedAdamCUDA, MatchesCpuReference) {
  DS_REQUIRE_CUDA();
  auto gen = at::detail::createCPUGenerator(21);
  for (auto [gdt, copies, cdt, w_mode] :
       {std::make_tuple(torch::kFloat, false, torch::kHalf, true), std::make_tuple(torch::kHalf, true, torch::kHalf, false),
        std::make_tuple(torch::kBFloat16, true, torch::kBFloat16, true),
        std::make_tuple(torch::kFloat, true, torch::kBFloat16, true)}) {
    Case cpu = make_case(gen, gdt, copies, cdt);
    Case gpu = to_cuda(cpu);
    ds::AdamStepArgs a;
    a.weight_decay = 0.01;
    a.adam_w_mode = w_mode;
    a.grad_scale = 0.5;
    for (int t = 1; t <= 3; ++t) {
      a.step = t;
      ds::fused_adam_step(cpu.g, cpu.p, cpu.m, cpu.v, cpu.c, a);
      ds::fused_adam_step(gpu.g, gpu.p, gpu.m, gpu.v, gpu.c, a);
    }
    SCOPED_TRACE(std::string("grad dtype ") + c10::toString(gdt));
    expect_close(cpu, gpu, 3);
  }
}

TEST(FusedLambCUDA, MatchesCpuReferenceIncludingTrustRatios) {
  DS_REQUIRE_CUDA();
  auto gen = at::detail::createCPUGenerator(22);
  for (auto [gdt, copies, cdt, inside] :
       {std::make_tuple(torch::kFloat, false, torch::kHalf, false), std::make_tuple(torch::kHalf, true, torch::kHalf, true),
        std::make_tuple(torch::kBFloat16, true, torch::kBFloat16, false)}) {
    Case cpu = make_case(gen, gdt, copies, cdt);
    Case gpu = to_cuda(cpu);
    ds::LambStepArgs a;
    a.weight_decay = 0.01;
    a.eps_inside_sqrt = inside;
    a.grad_scale = 0.5;
    for (int t = 1; t <= 3; ++t) {
      a.step = t;
      const auto c_cpu = ds::fused_lamb_step(cpu.g, cpu.p, cpu.m, cpu.v, cpu.c, a);
      const auto c_gpu = ds::fused_lamb_step(gpu.g, gpu.p, gpu.m, gpu.v, gpu.c, a);
      ASSERT_TRUE(c_gpu.is_cuda());
      // Per-tensor norms: float partial sums on the GPU, double on the CPU.
      EXPECT_LE(ds::test::rel_error(c_gpu, c_cpu), 1e-5) << "step " << t;
    }
    SCOPED_TRACE(std::string("grad dtype ") + c10::toString(gdt));
    expect_close(cpu, gpu, 3);
  }
}

TEST(GradStatsCUDA, MatchesCpuAndCountsNonFinite) {
  DS_REQUIRE_CUDA();
  auto gen = at::detail::createCPUGenerator(23);
  std::vector<torch::Tensor> cpu, gpu;
  int i = 0;
  for (int64_t n : sizes()) {
    const auto dt = i % 3 == 0 ? torch::kFloat : i % 3 == 1 ? torch::kHalf : torch::kBFloat16;
    cpu.push_back(torch::randn({n}, gen, torch::kFloat).to(dt));
    ++i;
  }
  cpu[7][10] = std::numeric_limits<float>::infinity();
  cpu[20][0] = std::numeric_limits<float>::quiet_NaN();
  for (const auto& t : cpu) gpu.push_back(t.to(torch::kCUDA));
  const auto s_cpu = ds::grad_stats(cpu);
  const auto s_gpu = ds::grad_stats(gpu);
  ASSERT_TRUE(s_gpu.is_cuda());
  EXPECT_EQ(s_gpu[1].item<double>(), 2.0);
  EXPECT_EQ(s_cpu[1].item<double>(), 2.0);
  // Float partial sums of at most 128 values per thread before a tree: relative error ~ 137 u.
  EXPECT_NEAR(s_gpu[0].item<double>(), s_cpu[0].item<double>(), 2e-5 * s_cpu[0].item<double>());
}

}  // namespace
