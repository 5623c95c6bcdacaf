// The NCCL backend at world size 1 (a normal process, bootstrapped over the self communicator):
// collectives, stream ordering, errors, and Engine training through the DataParallelReducer, which
// must be bitwise identical to the single-process Engine (the all-reduce of one rank is a copy).
// Several GPUs and ranks: issue 13 runs the mpi tests with NCCL on a multi-GPU machine.
#include <gtest/gtest.h>
#include <torch/torch.h>

#if DS_WITH_CUDA
// Debian's CPU-only LibTorch ships the c10/cuda headers without their generated
// cuda_cmake_macros.h; CI syntax-checks this file against them (kernel_check_boundaries). A CUDA
// LibTorch has the file, and then nothing changes.
#if !defined(C10_CUDA_NO_CMAKE_CONFIGURE_FILE) && !__has_include(<c10/cuda/impl/cuda_cmake_macros.h>)
#define C10_CUDA_NO_CMAKE_CONFIGURE_FILE
#endif
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <tuple>

#include "engine/comm/distributed_context.h"
#include "engine/comm/nccl_communicator.h"
#include "tests/common/test_utils.h"
#include "tests/engine_dp/dp_test_util.h"

namespace {

std::shared_ptr<ds::Communicator> nccl_world_of_one() {
  static ds::DistributedContext ctx(ds::LaunchInfo{});   // standalone: rank 0 of 1, no MPI
  return ctx.make_communicator(at::Device(at::kCUDA, 0));
}

TEST(NcclCommunicator, CollectivesAtWorldSizeOne_CUDA) {
  DS_REQUIRE_CUDA();
  auto comm = nccl_world_of_one();
  EXPECT_EQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->world_size(), 1);
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16, torch::kDouble}) {
    const auto opts = torch::TensorOptions().dtype(dtype).device(torch::kCUDA, 0);
    auto t = torch::arange(1000, opts);
    for (auto op : {ds::ReduceOp::Sum, ds::ReduceOp::Avg, ds::ReduceOp::Max}) {
      comm->all_reduce(t, op);
      EXPECT_TRUE(torch::equal(t, torch::arange(1000, opts))) << c10::toString(dtype) << " " << ds::reduce_op_name(op);
    }
  }
  auto b = torch::full({17}, 3.0, torch::TensorOptions().device(torch::kCUDA, 0));
  comm->broadcast(b, 0);
  EXPECT_EQ(b.sum().item<double>(), 51.0);
  auto in = torch::arange(5, torch::TensorOptions().dtype(torch::kInt).device(torch::kCUDA, 0));
  auto out = torch::zeros({5}, in.options());
  comm->all_gather(in, out);
  EXPECT_TRUE(torch::equal(in, out));
  comm->barrier();

  EXPECT_THROW(comm->all_reduce(torch::zeros({3}), ds::ReduceOp::Sum), std::invalid_argument);   // CPU tensor
  EXPECT_THROW(comm->all_reduce(torch::zeros({3}, torch::TensorOptions().dtype(torch::kShort).device(torch::kCUDA, 0)),
                                ds::ReduceOp::Sum),
               std::invalid_argument);
}

TEST(NcclCommunicator, OrderedAgainstTheCallersCurrentStream_CUDA) {
  DS_REQUIRE_CUDA();
#if DS_WITH_CUDA
  auto comm = nccl_world_of_one();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, 0);
  const c10::cuda::CUDAStreamGuard guard(side);
  // Large enough that the fill is still running when the all-reduce is queued.
  auto t = torch::empty({1 << 24}, torch::TensorOptions().device(torch::kCUDA, 0));
  for (int k = 0; k < 20; ++k) {
    t.fill_(static_cast<double>(k));
    auto work = comm->all_reduce_async(t, ds::ReduceOp::Sum);
    work->wait();   // the side stream waits for the all-reduce
    t.add_(1.0);
    EXPECT_EQ(t.max().item<float>(), static_cast<float>(k + 1));
    EXPECT_EQ(t.min().item<float>(), static_cast<float>(k + 1));
  }
  auto work = comm->all_reduce_async(t, ds::ReduceOp::Max);
  work->synchronize();
#endif
}

// (model dtype, accumulation steps, overlap)
using GpuCase = std::tuple<torch::ScalarType, int, bool>;
class NcclDataParallel : public ::testing::TestWithParam<GpuCase> {};

TEST_P(NcclDataParallel, EngineTrainsBitwiseLikeSingleProcess_CUDA) {
  DS_REQUIRE_CUDA();
  const auto [dtype, gas, overlap] = GetParam();
  torch::manual_seed(21);
  ds::test::TinyMLP ma(64, 256, 32, 0.0), mb(64, 256, 32, 0.0);
  {
    torch::NoGradGuard g;
    auto src = ma->named_parameters();
    for (auto& item : mb->named_parameters()) item.value().copy_(src[item.key()]);
  }
  auto cfg = ds::test::dp_config(8, gas, 1);
  cfg.fp16.enabled = dtype == torch::kHalf;
  cfg.fp16.initial_scale_power = 10;
  cfg.fp16.dynamic_args_given = true;
  cfg.bf16.enabled = dtype == torch::kBFloat16;
  ds::DataParallelOptions o;
  o.overlap_comm = overlap;
  o.first_bucket_cap_mb = 1e-3;
  o.bucket_cap_mb = 0.02;   // several buckets
  auto reducer = std::make_shared<ds::DataParallelReducer>(nccl_world_of_one(), o);
  ds::EngineOptions oa, ob;
  oa.device = ob.device = at::Device(at::kCUDA, 0);
  oa.quiet = ob.quiet = true;
  oa.reducer = reducer;
  ds::Engine a(ma, cfg, oa), b(mb, cfg, ob);
  for (int step = 0; step < 5; ++step) {
    for (int k = 0; k < gas; ++k) {
      auto [x, y] = ds::test::batch(step, k, 8, 64, 32);
      x = x.to(a.device());
      y = y.to(a.device());
      a.backward(ds::test::loss_of(a, ma, x, y));
      b.backward(ds::test::loss_of(b, mb, x, y));
      a.step();
      b.step();
    }
    EXPECT_EQ(a.last_grad_norm(), b.last_grad_norm()) << "step " << step;
    EXPECT_EQ(a.last_step_skipped(), b.last_step_skipped());
  }
  if (overlap) {
    EXPECT_GT(reducer->buckets_started_in_backward(), 0);
  }
  for (const auto& [name, w] : ds::test::named_masters(a)) {
    EXPECT_TRUE(torch::equal(w, b.master_weight(name))) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, NcclDataParallel,
                         ::testing::Values(GpuCase{torch::kFloat, 1, true}, GpuCase{torch::kFloat, 3, false},
                                           GpuCase{torch::kHalf, 2, true}, GpuCase{torch::kBFloat16, 3, true}));

}  // namespace
