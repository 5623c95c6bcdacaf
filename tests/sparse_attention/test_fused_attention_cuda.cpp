// ds::sparse_attention on CUDA (label gpu): the fused kernel (fused/) and part 1's block-sparse path
// (sdd -> softmax -> dsd kernels), each against the CPU reference path in float64 on the same
// rounded inputs (checked itself against dense float64 attention in the CPU tests) and against each
// other: every sparsity structure, blocks 16-128, fp16/bf16, head sizes 32/64/128, masks in both
// modes, rpe, unidirectional layouts (causal diagonal blocks), sequence lengths that are not a
// multiple of the block, rows that attend to nothing, batch 1 and a larger batch; determinism; both
// kernel families (sm80 mma.sync, sm90 wgmma); the path option and DS_SPARSE_ATTENTION_PATH; a dense
// layout against SDPA. Tolerances: cuda_test_utils.h.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_utils.h"
#include "dense_reference.h"
#include "sparse_attention/blocksparse.h"
#include "sparse_attention/layout_tables.h"
#include "sparse_attention/sparse_self_attention.h"
#include "sparse_attention/sparsity_config.h"
#include "tests/common/test_utils.h"

namespace ds {
namespace {

using test::rel_error;
using test::tolerance;
constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<std::pair<std::string, std::shared_ptr<const SparsityConfig>>> structures(int64_t H, int64_t block) {
  return {
      {"fixed-bi", std::make_shared<FixedSparsityConfig>(H, block, false, 4, 1, "bidirectional")},
      {"fixed-uni", std::make_shared<FixedSparsityConfig>(H, block, false, 4, 1, "unidirectional")},
      {"fixed-per-head", std::make_shared<FixedSparsityConfig>(H, block, true, 4, 1, "bidirectional", false, 2)},
      {"bigbird", std::make_shared<BigBirdSparsityConfig>(H, block, false, 1, 3, 1)},
      {"bslongformer", std::make_shared<BSLongformerSparsityConfig>(H, block)},
      {"variable", std::make_shared<VariableSparsityConfig>(H, block, false, 1, std::vector<int64_t>{2, 3})},
      {"dense", std::make_shared<DenseSparsityConfig>(H, block)},
      {"sliding-uni", std::make_shared<LocalSlidingWindowSparsityConfig>(H, block, 3, "unidirectional")},
  };
}

struct Inputs {
  torch::Tensor q, k, v;           // CPU, dtype dt
  torch::Tensor kp, am, rpe;       // CPU, dtype dt (undefined when absent)
  AttentionOptions options;        // masks unset; modes, causal set
};

// kp/am: 0 none, 1 add, 2 mul.
Inputs make_inputs(int64_t Z, int64_t H, int64_t S, int64_t D, torch::ScalarType dt, int kp, int am, bool rpe,
                   bool causal, uint64_t seed) {
  torch::manual_seed(static_cast<int64_t>(seed));
  Inputs in;
  in.q = torch::randn({Z, H, S, D}, torch::kFloat64).to(dt);
  in.k = torch::randn({Z, H, S, D}, torch::kFloat64).to(dt);
  in.v = torch::randn({Z, H, S, D}, torch::kFloat64).to(dt);
  if (kp) {
    in.kp = (kp == 1 ? torch::randn({Z, S}, torch::kFloat64).masked_fill(torch::rand({Z, S}).lt(0.1), -kInf)
                     : torch::rand({Z, S}).gt(0.1).to(torch::kFloat64))
                .to(dt);
    in.options.key_padding_mask_mode = kp == 1 ? MaskMode::Add : MaskMode::Mul;
  }
  if (am) {
    in.am = (am == 1 ? torch::randn({S, S}, torch::kFloat64) : torch::rand({S, S}).gt(0.2).to(torch::kFloat64)).to(dt);
    in.options.attn_mask_mode = am == 1 ? MaskMode::Add : MaskMode::Mul;
  }
  if (rpe) in.rpe = (torch::randn({Z, H, S, S}, torch::kFloat64) * 0.5).to(dt);
  in.options.causal_diagonal = causal;
  return in;
}

struct Result {
  torch::Tensor out, dq, dk, dv;
};

// Runs sparse_attention on `device` (inputs converted; float64 when device is CPU) with a fixed
// upstream gradient w; returns the output and q/k/v gradients on the CPU.
Result run(const Inputs& in, const LayoutTables& t, const torch::Device& device, AttentionPath path,
           const torch::Tensor& w) {
  const bool cpu = device.is_cpu();
  auto prep = [&](const torch::Tensor& x) {
    torch::Tensor y = cpu ? x.to(torch::kFloat64) : x.to(device);
    return y.detach().set_requires_grad(true);
  };
  auto plain = [&](const torch::Tensor& x) {
    return x.defined() ? (cpu ? x.to(torch::kFloat64) : x.to(device)) : torch::Tensor();
  };
  torch::Tensor q = prep(in.q), k = prep(in.k), v = prep(in.v);
  AttentionOptions o = in.options;
  o.key_padding_mask = plain(in.kp);
  o.attn_mask = plain(in.am);
  o.rpe = plain(in.rpe);
  o.path = path;
  torch::Tensor out = sparse_attention(q, k, v, t, o);
  auto g = torch::autograd::grad({(out.to(torch::kFloat64) * w.to(out.device())).sum()}, {q, k, v});
  return {out.detach().cpu(), g[0].cpu(), g[1].cpu(), g[2].cpu()};
}

// The fused and the unfused CUDA paths against the CPU float64 reference and each other.
void check_paths(const Inputs& in, const LayoutTables& t, const std::string& what) {
  const torch::ScalarType dt = in.q.scalar_type();
  const int64_t S = in.q.size(2);
  const torch::Tensor w = torch::randn(in.q.sizes(), torch::kFloat64);
  const Result ref = run(in, t, torch::kCPU, AttentionPath::Auto, w);
  const Result fused = run(in, t, torch::kCUDA, AttentionPath::Fused, w);
  const Result unfused = run(in, t, torch::kCUDA, AttentionPath::Unfused, w);
  // Fused: P (and dS) rounded to the dtype before their products, the output rounded: 4u forward,
  // 8u gradients (the lead's kernel harness bounds). Unfused: scores, probabilities and the output are
  // materialized in the dtype (DeepSpeed's formulation), and the backward rounds dP, dS and its
  // scaling too.
  const double tf = tolerance(dt, 1, S), tfg = tolerance(dt, 2, S);
  const double tu = tolerance(dt, 2, S), tug = tolerance(dt, 4, S);
  EXPECT_FALSE(fused.out.isnan().any().item<bool>()) << what;
  EXPECT_LT(rel_error(fused.out, ref.out), tf) << what << " fused out";
  EXPECT_LT(rel_error(fused.dq, ref.dq), tfg) << what << " fused dq";
  EXPECT_LT(rel_error(fused.dk, ref.dk), tfg) << what << " fused dk";
  EXPECT_LT(rel_error(fused.dv, ref.dv), tfg) << what << " fused dv";
  EXPECT_LT(rel_error(unfused.out, ref.out), tu) << what << " unfused out";
  EXPECT_LT(rel_error(unfused.dq, ref.dq), tug) << what << " unfused dq";
  EXPECT_LT(rel_error(unfused.dk, ref.dk), tug) << what << " unfused dk";
  EXPECT_LT(rel_error(unfused.dv, ref.dv), tug) << what << " unfused dv";
  EXPECT_LT(rel_error(fused.out, unfused.out), tf + tu) << what << " fused vs unfused";
  EXPECT_LT(rel_error(fused.dq, unfused.dq), tfg + tug) << what << " fused vs unfused dq";
}

class FusedAttentionStructures : public ::testing::TestWithParam<std::tuple<int64_t, torch::ScalarType>> {};

TEST_P(FusedAttentionStructures, EveryStructureMaskAndModeMatchesCpuFloat64_CUDA) {
  DS_REQUIRE_CUDA();
  const auto [block, dt] = GetParam();
  const int64_t H = 2, S = std::max<int64_t>(256, 4 * block);  // >= 4 blocks: sliding windows of 3 fit
  // (kp, am, rpe) variants, cycled over the structures.
  const int variants[][3] = {{0, 0, 0}, {1, 2, 0}, {2, 1, 1}, {1, 0, 1}, {0, 2, 0}, {2, 2, 0}};
  int i = 0;
  for (const auto& [name, cfg] : structures(H, block)) {
    const int* var = variants[i % 6];
    Inputs in = make_inputs(2, H, S, 64, dt, var[0], var[1], var[2] != 0, cfg->unidirectional(), 300 + i);
    LayoutTables t = LayoutTables::build(cfg->make_layout(S), block);
    check_paths(in, t, name + " block " + std::to_string(block) + " " + c10::toString(dt) + " kp " +
                           std::to_string(var[0]) + " am " + std::to_string(var[1]) + " rpe " + std::to_string(var[2]));
    ++i;
  }
}

INSTANTIATE_TEST_SUITE_P(BlocksAndDtypes, FusedAttentionStructures,
                         ::testing::Combine(::testing::Values<int64_t>(16, 32, 64, 128),
                                            ::testing::Values(torch::kFloat16, torch::kBFloat16)),
                         [](const auto& info) {
                           return "block" + std::to_string(std::get<0>(info.param)) + "_" +
                                  c10::toString(std::get<1>(info.param));
                         });

TEST(FusedAttention, HeadSizes32And128AndAwkwardLengths_CUDA) {
  DS_REQUIRE_CUDA();
  // (block, S, D): S not a multiple of the block is padded inside (s_valid on the fused path).
  const int64_t cases[][3] = {{16, 200, 32}, {32, 97, 128}, {64, 130, 64}, {128, 250, 32}, {16, 64, 128}};
  int i = 0;
  for (const auto& c : cases) {
    const int64_t block = c[0], S = c[1], D = c[2];
    const int64_t nb = (S + block - 1) / block;
    FixedSparsityConfig cfg(2, block, false, 2, 1, i % 2 ? "unidirectional" : "bidirectional");
    LayoutTables t = LayoutTables::build(cfg.make_layout(nb * block), block);
    Inputs in = make_inputs(2, 2, S, D, i % 2 ? torch::kFloat16 : torch::kBFloat16, 1 + i % 2, i % 3, i % 2 == 0,
                            cfg.unidirectional(), 400 + i);
    check_paths(in, t, "block " + std::to_string(block) + " S " + std::to_string(S) + " D " + std::to_string(D));
    ++i;
  }
}

TEST(FusedAttention, BatchOneAndLargeBatchAndBothKernelFamilies_CUDA) {
  DS_REQUIRE_CUDA();
  BigBirdSparsityConfig cfg(4, 16, false, 2, 3, 1);
  LayoutTables t = LayoutTables::build(cfg.make_layout(192), 16);
  for (int64_t Z : {1, 16}) {
    Inputs in = make_inputs(Z, 4, 192, 64, torch::kBFloat16, 1, 0, false, false, 500 + Z);
    for (const char* kernel : {"sm80", "auto"}) {
      test::ScopedEnv env("DS_BSA_KERNEL", kernel);
      check_paths(in, t, std::string("batch ") + std::to_string(Z) + " kernels " + kernel);
    }
  }
}

TEST(FusedAttention, RowsThatAttendToNothingGiveZerosNotNaN_CUDA) {
  DS_REQUIRE_CUDA();
  // Block rows 1 and 3 of head 0 are empty; batch 1's keys are all masked.
  torch::Tensor layout = torch::ones({2, 4, 4}, torch::kLong);
  layout[0][1].zero_();
  layout[0][3].zero_();
  LayoutTables t = LayoutTables::build(layout, 32);
  Inputs in = make_inputs(2, 2, 128, 64, torch::kFloat16, 0, 0, false, false, 601);
  in.kp = torch::zeros({2, 128}, torch::kFloat16);
  in.kp[1].fill_(-kInf);
  check_paths(in, t, "empty rows");
  const torch::Tensor w = torch::randn(in.q.sizes(), torch::kFloat64);
  for (AttentionPath path : {AttentionPath::Fused, AttentionPath::Unfused}) {
    const Result r = run(in, t, torch::kCUDA, path, w);
    EXPECT_TRUE(r.out.isfinite().all().item<bool>() && r.dq.isfinite().all().item<bool>() &&
                r.dk.isfinite().all().item<bool>() && r.dv.isfinite().all().item<bool>())
        << attention_path_name(path);
    EXPECT_TRUE(r.out[0][0].narrow(0, 32, 32).eq(0).all().item<bool>()) << attention_path_name(path);
    EXPECT_TRUE(r.out[0][0].narrow(0, 96, 32).eq(0).all().item<bool>()) << attention_path_name(path);
    EXPECT_TRUE(r.out[1].eq(0).all().item<bool>()) << attention_path_name(path);
    EXPECT_TRUE(r.dq[1].eq(0).all().item<bool>()) << attention_path_name(path);
  }
}

TEST(FusedAttention, ForwardAndBackwardAreDeterministic_CUDA) {
  DS_REQUIRE_CUDA();
  FixedSparsityConfig cfg(4, 16);
  LayoutTables t = LayoutTables::build(cfg.make_layout(512), 16);
  Inputs in = make_inputs(2, 4, 512, 64, torch::kBFloat16, 1, 2, false, false, 701);
  const torch::Tensor w = torch::randn(in.q.sizes(), torch::kFloat64);
  const Result a = run(in, t, torch::kCUDA, AttentionPath::Fused, w);
  for (int i = 0; i < 3; ++i) {
    const Result b = run(in, t, torch::kCUDA, AttentionPath::Fused, w);
    EXPECT_TRUE(a.out.equal(b.out));
    EXPECT_TRUE(a.dq.equal(b.dq) && a.dk.equal(b.dk) && a.dv.equal(b.dv));
  }
}

TEST(FusedAttention, PathOptionAndEnvironmentVariable_CUDA) {
  DS_REQUIRE_CUDA();
  test::ScopedEnv clear("DS_SPARSE_ATTENTION_PATH", nullptr);
  FixedSparsityConfig cfg(2, 16);
  LayoutTables t = LayoutTables::build(cfg.make_layout(128), 16);
  auto opts = torch::device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::Tensor q = torch::randn({1, 2, 128, 64}, opts), k = torch::randn_like(q), v = torch::randn_like(q);
  AttentionOptions o;
  EXPECT_EQ(resolve_attention_path(q, t, o), AttentionPath::Fused);
  // Auto falls back where the fused kernel does not apply.
  EXPECT_EQ(resolve_attention_path(q.to(torch::kFloat32), t, o), AttentionPath::Unfused);
  torch::Tensor q40 = torch::randn({1, 2, 128, 40}, opts);
  EXPECT_EQ(resolve_attention_path(q40, t, o), AttentionPath::Unfused);
  AttentionOptions with_rpe;
  with_rpe.rpe = torch::zeros({1, 2, 128, 128}, opts).set_requires_grad(true);
  EXPECT_EQ(resolve_attention_path(q, t, with_rpe), AttentionPath::Unfused);
  {
    torch::NoGradGuard no_grad;  // no gradient wanted: the fused kernel takes it
    EXPECT_EQ(resolve_attention_path(q, t, with_rpe), AttentionPath::Fused);
  }
  // The environment variable forces a path when the option is Auto; the option wins over it.
  AttentionOptions unfused;
  unfused.path = AttentionPath::Unfused;
  const torch::Tensor expected = sparse_attention(q, k, v, t, unfused);
  {
    test::ScopedEnv env("DS_SPARSE_ATTENTION_PATH", "unfused");
    EXPECT_EQ(resolve_attention_path(q, t, o), AttentionPath::Unfused);
    EXPECT_TRUE(sparse_attention(q, k, v, t, o).equal(expected));
    AttentionOptions fused;
    fused.path = AttentionPath::Fused;
    EXPECT_EQ(resolve_attention_path(q, t, fused), AttentionPath::Fused);
  }
  {
    test::ScopedEnv env("DS_SPARSE_ATTENTION_PATH", "fused");
    const torch::Tensor q32 = q.to(torch::kFloat32);
    DS_EXPECT_THROW_MSG(sparse_attention(q32, q32, q32, t, o), c10::ValueError,
                        "the fused path is forced by DS_SPARSE_ATTENTION_PATH but the fused kernel takes float16 or "
                        "bfloat16");
  }
  {
    test::ScopedEnv env("DS_SPARSE_ATTENTION_PATH", "fast");
    DS_EXPECT_THROW_MSG(sparse_attention(q, k, v, t, o), c10::ValueError,
                        "DS_SPARSE_ATTENTION_PATH must be 'auto', 'fused' or 'unfused', got 'fast'");
  }
  AttentionOptions forced;
  forced.path = AttentionPath::Fused;
  DS_EXPECT_THROW_MSG(sparse_attention(q40, q40, q40, t, forced), c10::ValueError,
                      "the fused kernel supports head sizes 32, 64 and 128, q has 40");
}

TEST(FusedAttention, DenseLayoutIsCloseToSdpa_CUDA) {
  DS_REQUIRE_CUDA();
  auto opts = torch::device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::manual_seed(801);
  torch::Tensor q = torch::randn({2, 4, 512, 64}, opts), k = torch::randn_like(q), v = torch::randn_like(q);
  // Dense layout = full attention; lower-triangular blocks with causal diagonal blocks = causal.
  LayoutTables dense = LayoutTables::build(torch::ones({4, 8, 8}, torch::kLong), 64);
  LayoutTables tril = LayoutTables::build(torch::ones({4, 8, 8}, torch::kLong).tril(), 64);
  AttentionOptions o;
  o.path = AttentionPath::Fused;
  const torch::Tensor full = sparse_attention(q, k, v, dense, o);
  o.causal_diagonal = true;
  const torch::Tensor causal = sparse_attention(q, k, v, tril, o);
  const double tol = 2 * tolerance(torch::kBFloat16, 1, 512);  // both sides within ~4u of exact
#if TORCH_VERSION_MAJOR >= 2
  EXPECT_LT(rel_error(full, at::scaled_dot_product_attention(q, k, v)), tol);
  EXPECT_LT(rel_error(causal, at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true)), tol);
#else
  test::DenseSoftmaxArgs r;
  r.scale = 0.125;
  auto d64 = [](const torch::Tensor& x) { return x.cpu().to(torch::kFloat64); };
  EXPECT_LT(rel_error(full, test::dense_attention(d64(q), d64(k), d64(v), dense.layout, 64, r)), tol);
  r.causal_diagonal = true;
  EXPECT_LT(rel_error(causal, test::dense_attention(d64(q), d64(k), d64(v), tril.layout, 64, r)), tol);
#endif
}

TEST(FusedAttention, SparseSelfAttentionModuleOnCuda_CUDA) {
  DS_REQUIRE_CUDA();
  // A unidirectional module: causal diagonal blocks on every path; BERT's [B, 1, 1, S] additive mask.
  auto cfg = std::make_shared<FixedSparsityConfig>(2, 32, false, 2, 1, "unidirectional");
  SparseSelfAttention attn(cfg, "add", "mul", 512);
  torch::manual_seed(901);
  torch::Tensor q = torch::randn({2, 2, 200, 64}, torch::kFloat64), k = torch::randn_like(q), v = torch::randn_like(q);
  torch::Tensor mask = torch::zeros({2, 1, 1, 200}, torch::kFloat64);
  mask[1].narrow(-1, 150, 50).fill_(-10000.0);
  auto g = [](const torch::Tensor& x) { return x.to(torch::kCUDA, torch::kBFloat16); };
  const torch::Tensor q16 = g(q).to(torch::kFloat64), k16 = g(k).to(torch::kFloat64), v16 = g(v).to(torch::kFloat64);
  const torch::Tensor ref16 = attn->forward(q16.cpu(), k16.cpu(), v16.cpu(), {}, mask);  // float64 on the rounded inputs
  attn->to(torch::kCUDA);
  const torch::Tensor fused = attn->forward(g(q), g(k), g(v), {}, g(mask));
  attn->set_attention_path(AttentionPath::Unfused);
  const torch::Tensor unfused = attn->forward(g(q), g(k), g(v), {}, g(mask));
  EXPECT_LT(rel_error(fused, ref16), tolerance(torch::kBFloat16, 1, 200));
  EXPECT_LT(rel_error(unfused, ref16), tolerance(torch::kBFloat16, 2, 200));
}

TEST(FusedAttention, NonContiguousInputs_CUDA) {
  DS_REQUIRE_CUDA();
  // [B, S, H, D] projections viewed as [B, H, S, D] (BertSparseSelfAttention's layout).
  auto opts = torch::device(torch::kCUDA).dtype(torch::kFloat16);
  torch::manual_seed(1001);
  auto view = [&] { return torch::randn({2, 96, 2, 64}, opts).permute({0, 2, 1, 3}).set_requires_grad(true); };
  torch::Tensor q = view(), k = view(), v = view();
  LayoutTables t = LayoutTables::build(FixedSparsityConfig(2, 16).make_layout(96), 16);
  AttentionOptions fused, unfused;
  fused.path = AttentionPath::Fused;
  unfused.path = AttentionPath::Unfused;
  const torch::Tensor a = sparse_attention(q, k, v, t, fused), b = sparse_attention(q, k, v, t, unfused);
  EXPECT_LT(rel_error(a, b), tolerance(torch::kFloat16, 3, 96));
  auto ga = torch::autograd::grad({a.sum()}, {q, k, v});
  auto gb = torch::autograd::grad({b.sum()}, {q, k, v});
  for (int i = 0; i < 3; ++i) EXPECT_LT(rel_error(ga[i], gb[i]), tolerance(torch::kFloat16, 6, 96)) << i;
}

}  // namespace
}  // namespace ds
