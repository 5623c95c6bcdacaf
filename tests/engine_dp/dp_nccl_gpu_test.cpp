// The NCCL backend: collectives, stream ordering, errors, and Engine training through the
// DataParallelReducer on cuda:LOCAL_RANK.
//  - ctest runs it as one process (label gpu): world size 1, the NCCL id bootstrapped over the self
//    communicator; training must then be bitwise identical to the single-process Engine (the
//    all-reduce of one rank is a copy).
//  - Under `mpirun -np N` on N GPUs (issue 13) the same tests run with N ranks: sums and averages
//    over ranks, parameters bitwise identical on every rank after every step, and equal (within
//    float tolerance) to one process accumulating all ranks' micro-batches.
#include <gtest/gtest.h>
#include <torch/torch.h>

#if DS_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <tuple>

#include "engine/comm/distributed_context.h"
#include "engine/comm/nccl_communicator.h"
#include "tests/common/test_utils.h"
#include "tests/engine_dp/dp_test_util.h"

namespace {

ds::DistributedContext* g_ctx = nullptr;

int rank() { return g_ctx->rank(); }
int world() { return g_ctx->world_size(); }
at::Device gpu() { return g_ctx->device(); }

std::shared_ptr<ds::Communicator> nccl() { return g_ctx->make_communicator(gpu()); }

TEST(NcclCommunicator, Collectives_CUDA) {
  DS_REQUIRE_CUDA();
  auto comm = nccl();
  EXPECT_EQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->world_size(), world());
  const double r = rank() + 1, w = world();
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16, torch::kDouble}) {
    const auto opts = torch::TensorOptions().dtype(dtype).device(gpu());
    // Small integers: exact in every dtype for up to 16 ranks.
    const auto base = torch::remainder(torch::arange(1000, opts), 7);
    auto t = base + r;
    comm->all_reduce(t, ds::ReduceOp::Sum);
    EXPECT_TRUE(torch::equal(t, base * w + w * (w + 1) / 2)) << c10::toString(dtype);
    t = base * 2 + r;
    comm->all_reduce(t, ds::ReduceOp::Max);
    EXPECT_TRUE(torch::equal(t, base * 2 + w)) << c10::toString(dtype);
    t = torch::full({1000}, 2 * r, opts);
    comm->all_reduce(t, ds::ReduceOp::Avg);
    EXPECT_TRUE(torch::equal(t, torch::full({1000}, w + 1, opts))) << c10::toString(dtype);
  }
  const int root = world() - 1;
  auto b = torch::full({17}, rank() == root ? 3.0 : -1.0, torch::TensorOptions().device(gpu()));
  comm->broadcast(b, root);
  EXPECT_EQ(b.sum().item<double>(), 51.0);
  auto in = torch::full({5}, rank(), torch::TensorOptions().dtype(torch::kInt).device(gpu()));
  auto out = torch::zeros({5 * world()}, in.options());
  comm->all_gather(in, out);
  for (int q = 0; q < world(); ++q) EXPECT_EQ(out[5 * q + 4].item<int>(), q);
  comm->barrier();

  EXPECT_THROW(comm->all_reduce(torch::zeros({3}), ds::ReduceOp::Sum), std::invalid_argument);   // CPU tensor
  EXPECT_THROW(comm->all_reduce(torch::zeros({3}, torch::TensorOptions().dtype(torch::kShort).device(gpu())),
                                ds::ReduceOp::Sum),
               std::invalid_argument);
}

TEST(NcclCommunicator, OrderedAgainstTheCallersCurrentStream_CUDA) {
  DS_REQUIRE_CUDA();
#if DS_WITH_CUDA
  auto comm = nccl();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, gpu().index());
  const c10::cuda::CUDAStreamGuard guard(side);
  // Large enough that the fill is still running when the all-reduce is queued.
  auto t = torch::empty({1 << 24}, torch::TensorOptions().device(gpu()));
  for (int k = 0; k < 20; ++k) {
    t.fill_(static_cast<double>(k));
    auto work = comm->all_reduce_async(t, ds::ReduceOp::Sum);
    work->wait();   // the side stream waits for the all-reduce
    t.add_(1.0);
    const float expect = static_cast<float>(k * world() + 1);
    EXPECT_EQ(t.max().item<float>(), expect);
    EXPECT_EQ(t.min().item<float>(), expect);
  }
  comm->all_reduce_async(t, ds::ReduceOp::Max)->synchronize();
#endif
}

// (model dtype, accumulation steps, overlap)
using GpuCase = std::tuple<torch::ScalarType, int, bool>;
class NcclDataParallel : public ::testing::TestWithParam<GpuCase> {};

TEST_P(NcclDataParallel, EngineTrainsLikeOneProcess_CUDA) {
  DS_REQUIRE_CUDA();
  const auto [dtype, gas, overlap] = GetParam();
  const int64_t micro = 8;
  torch::manual_seed(21);
  ds::test::TinyMLP ma(64, 256, 32, 0.0), mb(64, 256, 32, 0.0);
  {
    torch::NoGradGuard g;
    auto src = ma->named_parameters();
    for (auto& item : mb->named_parameters()) item.value().copy_(src[item.key()]);
  }
  auto cfg = ds::test::dp_config(micro, gas, world());
  cfg.fp16.enabled = dtype == torch::kHalf;
  cfg.fp16.initial_scale_power = 10;
  cfg.fp16.dynamic_args_given = true;
  cfg.bf16.enabled = dtype == torch::kBFloat16;
  if (world() > 1) {   // see dp_mpi_test.cpp: an SGD-like Adam makes the tolerance derivable
    cfg.optimizer.eps = 1.0;
    cfg.optimizer.lr = 0.1;
    cfg.gradient_clipping = 0.0;
  }
  // The reference: one process, every rank's micro-batches as accumulation steps.
  auto ref_cfg = cfg;
  ref_cfg.world_size = 1;
  ref_cfg.gradient_accumulation_steps = gas * world();
  ref_cfg.train_batch_size = micro * gas * world();
  ds::DataParallelOptions o;
  o.overlap_comm = overlap;
  o.first_bucket_cap_mb = 1e-3;
  o.bucket_cap_mb = 0.02;   // several buckets
  auto reducer = std::make_shared<ds::DataParallelReducer>(nccl(), o);
  ds::EngineOptions oa, ob;
  oa.device = ob.device = gpu();
  oa.quiet = ob.quiet = true;
  oa.reducer = reducer;
  ds::Engine a(ma, cfg, oa), b(mb, ref_cfg, ob);
  for (int step = 0; step < 5; ++step) {
    for (int k = 0; k < gas; ++k) {
      auto [x, y] = ds::test::rank_slice(step, k, micro, world(), rank(), 64, 32);
      a.backward(ds::test::loss_of(a, ma, x.to(gpu()), y.to(gpu())));
      a.step();
      for (int q = 0; q < world(); ++q) {
        auto [xq, yq] = ds::test::rank_slice(step, k, micro, world(), q, 64, 32);
        b.backward(ds::test::loss_of(b, mb, xq.to(gpu()), yq.to(gpu())));
        b.step();
      }
    }
    if (world() == 1) {
      EXPECT_EQ(a.last_grad_norm(), b.last_grad_norm()) << "step " << step;
    }
    EXPECT_EQ(a.last_step_skipped(), b.last_step_skipped());
    for (const auto& [name, w] : ds::test::named_masters(a)) {
      EXPECT_TRUE(ds::test::same_on_all_ranks(*g_ctx->world_communicator(), w)) << name << " step " << step;
    }
  }
  if (overlap) {
    EXPECT_GT(reducer->buckets_started_in_backward(), 0);
  }
  // Tolerance for several ranks (dp_mpi_test.cpp derives it): fp32 1e-6, fp16 / bf16 weights read by
  // the forward may differ by an ulp, ~lr * 2^-8 per step.
  const double tol = world() == 1 ? 0.0 : dtype == torch::kFloat ? 1e-6 : 3e-3;
  for (const auto& [name, w] : ds::test::named_masters(a)) {
    if (tol == 0.0) {
      EXPECT_TRUE(torch::equal(w, b.master_weight(name))) << name;
    } else {
      EXPECT_LE(ds::test::max_abs_diff(w, b.master_weight(name)), tol) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, NcclDataParallel,
                         ::testing::Values(GpuCase{torch::kFloat, 1, true}, GpuCase{torch::kFloat, 3, false},
                                           GpuCase{torch::kHalf, 2, true}, GpuCase{torch::kBFloat16, 3, true}));

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ds::DistributedContext ctx;   // one process under ctest; N ranks under mpirun
  g_ctx = &ctx;
  return RUN_ALL_TESTS();
}
