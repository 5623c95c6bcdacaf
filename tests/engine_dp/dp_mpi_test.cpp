// Data parallelism over MPI (label mpi: ctest runs this under `mpirun -np 2`; it also runs with more
// ranks). Every rank runs every test; collectives pair up because the tests run in the same order.
//
// Bitwise vs tolerance: W ranks with micro-batch b and 1 rank with W micro-steps of b (gradient
// accumulation) compute the same per-micro-batch gradients; with W = 2 the sums agree exactly
// (g0/2 + g1/2 == (g0 + g1) * 1/2 in binary floating point, the halvings being exact), so those runs
// are compared bitwise. Against 1 rank with one batch of W*b the gradient is a mean over other
// partial sums (different rounding), so parameters agree within float tolerance only.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <tuple>

#include "engine/comm/distributed_context.h"
#include "tests/common/test_utils.h"
#include "tests/engine_dp/dp_test_util.h"
#include "ops/common/fs_util.h"

namespace {

ds::DistributedContext* g_ctx = nullptr;

using ds::test::max_abs_diff;
using ds::test::mse;
using ds::test::rank_slice;

int rank() { return g_ctx->rank(); }
int world() { return g_ctx->world_size(); }
ds::Communicator& world_comm() { return *g_ctx->world_communicator(); }

std::shared_ptr<ds::DataParallelReducer> mpi_reducer(ds::DataParallelOptions o = {}) {
  return std::make_shared<ds::DataParallelReducer>(g_ctx->make_communicator(at::Device(at::kCPU)), o);
}

// ---- the MPI communicator -------------------------------------------------------------------------

TEST(MpiCommunicator, AllReduceSumAvgMaxForEveryDtype) {
  auto comm = g_ctx->make_communicator(at::Device(at::kCPU));
  ASSERT_EQ(comm->backend(), "mpi");
  const double r = rank() + 1, w = world();
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16}) {
    auto t = torch::full({37}, r, torch::TensorOptions().dtype(dtype));
    comm->all_reduce(t, ds::ReduceOp::Sum);
    EXPECT_TRUE(torch::equal(t, torch::full({37}, w * (w + 1) / 2, t.options()))) << c10::toString(dtype);
    t.fill_(r);
    comm->all_reduce(t, ds::ReduceOp::Avg);
    EXPECT_TRUE(torch::equal(t, torch::full({37}, (w + 1) / 2, t.options()))) << c10::toString(dtype);
    t.fill_(r);
    comm->all_reduce(t, ds::ReduceOp::Max);
    EXPECT_TRUE(torch::equal(t, torch::full({37}, w, t.options()))) << c10::toString(dtype);
  }
  auto i = torch::full({5}, static_cast<int64_t>(rank() + 1), torch::kLong);
  comm->all_reduce(i, ds::ReduceOp::Sum);
  EXPECT_EQ(i[0].item<int64_t>(), world() * (world() + 1) / 2);
  EXPECT_THROW(comm->all_reduce(i, ds::ReduceOp::Avg), std::invalid_argument);
  auto strided = torch::zeros({4, 4}).t();
  EXPECT_THROW(comm->all_reduce(strided, ds::ReduceOp::Sum), std::invalid_argument);
}

TEST(MpiCommunicator, BroadcastAllGatherBarrierAndManyOperationsInFlight) {
  auto comm = g_ctx->make_communicator(at::Device(at::kCPU));
  const int root = world() - 1;
  auto b = torch::arange(11, torch::kFloat) * (rank() == root ? 1 : -7);
  comm->broadcast(b, root);
  EXPECT_TRUE(torch::equal(b, torch::arange(11, torch::kFloat)));
  auto flags = torch::full({3}, rank() == 0, torch::kBool);
  comm->broadcast(flags, 0);
  EXPECT_TRUE(flags.all().item<bool>());

  auto in = torch::full({3}, rank(), torch::kInt);
  auto out = torch::empty({3 * world()}, torch::kInt);
  comm->all_gather(in, out);
  for (int r = 0; r < world(); ++r) EXPECT_EQ(out[3 * r + 2].item<int>(), r);
  EXPECT_THROW(comm->all_gather(in, torch::empty({3}, torch::kInt)), std::invalid_argument);

  // Eight all-reduces in flight at once finish in submission order with the right values.
  std::vector<torch::Tensor> ts;
  std::vector<std::shared_ptr<ds::CommWork>> works;
  for (int k = 0; k < 8; ++k) {
    ts.push_back(torch::full({1000 + k}, static_cast<double>(k * (rank() + 1)), torch::kDouble));
    works.push_back(comm->all_reduce_async(ts.back(), ds::ReduceOp::Sum));
  }
  for (int k = 0; k < 8; ++k) {
    works[k]->wait();
    EXPECT_EQ(ts[k][999].item<double>(), k * world() * (world() + 1) / 2.0);
  }
  comm->barrier();
}

// ---- the reducer on hand-made gradients -------------------------------------------------------------

struct AveragingCase {
  bool prescale;
  double predivide;
  std::optional<torch::ScalarType> wire;
  double tol;   // relative, against the float64 average
  bool bitwise_to_plain;
};

class DataParallelAveraging : public ::testing::TestWithParam<AveragingCase> {};

TEST_P(DataParallelAveraging, PrescaleAndPredivideVariantsAllGiveTheAverage) {
  const auto c = GetParam();
  ds::DataParallelOptions o;
  o.prescale_gradients = c.prescale;
  o.gradient_predivide_factor = c.predivide;
  o.wire_dtype = c.wire;
  o.overlap_comm = false;
  o.first_bucket_cap_mb = 1e-4;   // several buckets
  std::vector<torch::Tensor> params{torch::zeros({5}).requires_grad_(), torch::zeros({3, 2}).requires_grad_(),
                                    torch::zeros({70}).requires_grad_()};
  auto grad_of = [](int r, int64_t n, int p) {
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(100 * r + p + 1));
    return torch::randn({n}, gen, torch::kFloat);
  };
  // Rank 1 has no gradient for parameter 1 (unused there): it contributes zeros.
  std::vector<torch::Tensor> grads;
  for (int p = 0; p < 3; ++p) {
    grads.push_back(rank() == 1 && p == 1 ? torch::Tensor() : grad_of(rank(), params[p].numel(), p).view(params[p].sizes()));
  }
  auto reducer = mpi_reducer(o);
  reducer->begin_backward(true, params);
  reducer->end_backward(true, grads);
  auto plain = mpi_reducer();
  std::vector<torch::Tensor> plain_grads;
  for (int p = 0; p < 3; ++p) {
    plain_grads.push_back(rank() == 1 && p == 1 ? torch::Tensor()
                                                : grad_of(rank(), params[p].numel(), p).view(params[p].sizes()));
  }
  plain->begin_backward(true, params);
  plain->end_backward(true, plain_grads);
  for (int p = 0; p < 3; ++p) {
    torch::Tensor expect = torch::zeros({params[p].numel()}, torch::kDouble);
    for (int r = 0; r < world(); ++r) {
      if (!(r == 1 && p == 1)) expect += grad_of(r, params[p].numel(), p).to(torch::kDouble);
    }
    expect /= world();
    ASSERT_TRUE(grads[p].defined());
    EXPECT_LE(ds::test::rel_error(grads[p].reshape({-1}), expect), c.tol) << "parameter " << p;
    EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), grads[p])) << "parameter " << p;
    // Prescaling by 1/W rounds each rank's gradient unless W is a power of two.
    const bool w_power_of_two = (world() & (world() - 1)) == 0;
    if (c.bitwise_to_plain && (!c.prescale || w_power_of_two)) {
      EXPECT_TRUE(torch::equal(grads[p], plain_grads[p])) << "parameter " << p;
    }
  }
}

// Power-of-two scalings are exact, so those variants equal the plain average bitwise (predivide p
// then p/W is the plain 1/W times exact powers of two); predivide 3 rounds.
INSTANTIATE_TEST_SUITE_P(
    Variants, DataParallelAveraging,
    ::testing::Values(AveragingCase{false, 1.0, std::nullopt, 1e-6, true},
                      AveragingCase{false, 2.0, std::nullopt, 1e-6, true},
                      AveragingCase{false, 4.0, std::nullopt, 1e-6, true},
                      AveragingCase{false, 3.0, std::nullopt, 1e-6, false},
                      AveragingCase{true, 1.0, std::nullopt, 1e-6, true},
                      AveragingCase{true, 8.0, std::nullopt, 1e-6, true},   // predivide ignored
                      AveragingCase{false, 1.0, torch::kHalf, 2e-3, false},
                      AveragingCase{false, 1.0, torch::kBFloat16, 1.6e-2, false}));

TEST(DataParallelReducer, GradStatsAgreeAcrossRanks) {
  auto reducer = mpi_reducer();
  auto stats = torch::tensor({1.0 + rank(), rank() == 1 ? 3.0 : 0.0}, torch::kDouble);
  reducer->reduce_grad_stats(stats);
  EXPECT_EQ(stats[0].item<double>(), world());
  EXPECT_EQ(stats[1].item<double>(), 3.0);
}

TEST(DataParallelReducer, DifferentModelsOnDifferentRanksAreAnErrorNotAHang) {
  auto reducer = mpi_reducer();
  std::vector<torch::Tensor> tensors{torch::zeros({4}), torch::zeros({2, 2})};
  if (rank() == 1) tensors.push_back(torch::zeros({1}));
  try {
    reducer->broadcast_parameters(tensors);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("the ranks' models differ"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 1 has 3 tensors"), std::string::npos) << e.what();
  }
  std::vector<torch::Tensor> reshaped{torch::zeros({4}), rank() == 1 ? torch::zeros({4}) : torch::zeros({2, 2})};
  EXPECT_THROW(reducer->broadcast_parameters(reshaped), std::invalid_argument);
}

// ---- the Engine ------------------------------------------------------------------------------------

TEST(DataParallelEngine, BroadcastAtStartMakesDifferentSeedsAgree) {
  torch::manual_seed(1000 + rank());   // a different model on every rank
  ds::test::TinyMLP m(6, 8, 3, 0.0);
  auto buffer = m->register_buffer("running", torch::full({3}, static_cast<double>(rank())));
  if (world() > 1) {
    EXPECT_FALSE(ds::test::same_on_all_ranks(world_comm(), m->fc1->weight));
  }
  ds::Engine e(m, ds::test::dp_config(2, 1, world()), ds::test::cpu_options(mpi_reducer()));
  for (const auto& p : m->parameters()) EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), p));
  EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), buffer));
  EXPECT_EQ(buffer[0].item<double>(), 0.0);   // rank 0's value
}

// Adam is invariant to the gradient's scale and its first steps are sign-like (m / sqrt(v) = +-1),
// which hides an average-vs-sum mistake and turns rounding noise in near-zero gradients into
// lr-sized differences. With eps = 1 the update lr * m / (sqrt(v) + 1) is close to lr * g for
// |g| << 1 and its derivative in g is at most lr: parameter differences between runs stay within
// steps * lr * (gradient difference), which makes the tolerances below derivable.
void sgd_like(ds::DeepSpeedConfig& c) {
  c.optimizer.eps = 1.0;
  c.optimizer.lr = 0.1;
  c.gradient_clipping = 0.0;
}

struct DpRun {
  torch::ScalarType dtype;
  int gas;
  bool overlap;
  bool sgd = false;
};

// Trains `steps` steps on W ranks and checks the parameters are identical on all ranks after each.
std::vector<std::pair<std::string, torch::Tensor>> train_dp(const DpRun& run, int64_t micro, int steps) {
  torch::manual_seed(7);
  ds::test::TinyMLP m(6, 16, 3, 0.0);
  auto cfg = ds::test::dp_config(micro, run.gas, world());
  cfg.bf16.enabled = run.dtype == torch::kBFloat16;
  if (run.sgd) sgd_like(cfg);
  ds::DataParallelOptions o;
  o.overlap_comm = run.overlap;
  o.first_bucket_cap_mb = 1e-4;   // several buckets on this small model
  o.bucket_cap_mb = 2e-3;
  auto reducer = mpi_reducer(o);
  ds::Engine e(m, cfg, ds::test::cpu_options(reducer));
  for (int step = 0; step < steps; ++step) {
    for (int k = 0; k < run.gas; ++k) {
      auto [x, y] = rank_slice(step, k, micro, world(), rank(), 6, 3);
      e.backward(ds::test::loss_of(e, m, x, y));
      e.step();
    }
    for (const auto& [name, w] : ds::test::named_masters(e)) {
      EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), w)) << name << " after step " << step;
    }
    for (const auto& p : m->parameters()) EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), p));
    if (run.overlap && world() > 1) {
      EXPECT_GT(reducer->buckets_started_in_backward(), 0);
    }
  }
  return ds::test::named_masters(e);
}

// One rank, the same samples: either one batch of W * micro rows per accumulation step, or the W
// ranks' micro-batches one after the other as W times more accumulation steps.
std::vector<std::pair<std::string, torch::Tensor>> train_single(const DpRun& run, int64_t micro, bool one_big_batch,
                                                                int steps) {
  torch::manual_seed(7);
  ds::test::TinyMLP m(6, 16, 3, 0.0);
  const int w = world();
  const int gas = one_big_batch ? run.gas : run.gas * w;
  const int64_t mb = one_big_batch ? micro * w : micro;
  auto cfg = ds::test::dp_config(mb, gas, 1);
  cfg.bf16.enabled = run.dtype == torch::kBFloat16;
  if (run.sgd) sgd_like(cfg);
  ds::Engine e(m, cfg, ds::test::quiet_cpu());
  for (int step = 0; step < steps; ++step) {
    for (int k = 0; k < run.gas; ++k) {
      if (one_big_batch) {
        auto [x, y] = ds::test::batch(step, k, micro * w, 6, 3);
        e.backward(ds::test::loss_of(e, m, x, y));
        e.step();
      } else {
        for (int r = 0; r < w; ++r) {
          auto [x, y] = rank_slice(step, k, micro, w, r, 6, 3);
          e.backward(ds::test::loss_of(e, m, x, y));
          e.step();
        }
      }
    }
  }
  return ds::test::named_masters(e);
}

TEST(DataParallelEngine, TwoRanksEqualOneRankAccumulatingTheirMicroBatchesBitwise) {
  if (world() != 2) GTEST_SKIP() << "the bitwise argument holds for 2 ranks (run with -np 2)";
  const DpRun run{torch::kFloat, 1, true};   // Adam with clipping: the global norm of reduced gradients
  const auto dp = train_dp(run, 3, 4);
  const auto ref = train_single(run, 3, /*one_big_batch=*/false, 4);
  for (size_t i = 0; i < dp.size(); ++i) {
    EXPECT_TRUE(torch::equal(dp[i].second, ref[i].second)) << dp[i].first << " max diff "
                                                           << max_abs_diff(dp[i].second, ref[i].second);
  }
}

TEST(DataParallelEngine, OverlapOnAndOffAreBitwiseEqual) {
  const auto on = train_dp({torch::kFloat, 2, true}, 2, 3);
  const auto off = train_dp({torch::kFloat, 2, false}, 2, 3);
  for (size_t i = 0; i < on.size(); ++i) EXPECT_TRUE(torch::equal(on[i].second, off[i].second)) << on[i].first;
}

// (dtype, gradient accumulation steps, overlap, tolerance on the fp32 master weights)
using TolCase = std::tuple<torch::ScalarType, int, bool, double>;
class DataParallelVsOneRank : public ::testing::TestWithParam<TolCase> {};

TEST_P(DataParallelVsOneRank, MatchesOneRankWithTheWholeBatch) {
  const auto [dtype, gas, overlap, tol] = GetParam();
  const int steps = 4;
  const DpRun run{dtype, gas, overlap, /*sgd=*/true};
  const auto dp = train_dp(run, 3, steps);
  const auto big = train_single(run, 3, /*one_big_batch=*/true, steps);
  const auto acc = train_single(run, 3, /*one_big_batch=*/false, steps);
  torch::manual_seed(7);
  ds::test::TinyMLP init(6, 16, 3, 0.0);
  auto init_params = init->named_parameters();
  double moved = 0;
  for (size_t i = 0; i < dp.size(); ++i) {
    const auto& name = dp[i].first;
    moved = std::max(moved, max_abs_diff(dp[i].second, init_params[name]));
    EXPECT_LE(max_abs_diff(dp[i].second, big[i].second), tol) << name;
    EXPECT_LE(max_abs_diff(dp[i].second, acc[i].second), tol) << name;
  }
  // Training moved the weights far more than the runs differ (a sum instead of an average, or a
  // missing rank, would differ by about as much as the weights moved).
  EXPECT_GT(moved, 20 * tol);
}

// Gradient differences between the runs: fp32, rounding of the partial sums (~1e-7 relative); bf16,
// each micro-batch's weight gradient is rounded to bf16 (2^-8 relative) before the fp32
// accumulation, so W micro-batches and one big batch differ by up to ~4e-3 |g|, with |g| < 0.5 here.
// Times lr = 0.1 and 4 steps: ~1e-8 (gradients O(0.1)) and ~8e-4. Measured: 3e-8 and 2.2e-4.
INSTANTIATE_TEST_SUITE_P(Cases, DataParallelVsOneRank,
                         ::testing::Values(TolCase{torch::kFloat, 1, true, 1e-6}, TolCase{torch::kFloat, 3, true, 1e-6},
                                           TolCase{torch::kFloat, 2, false, 1e-6},
                                           TolCase{torch::kBFloat16, 1, true, 1e-3},
                                           TolCase{torch::kBFloat16, 3, true, 1e-3}));

TEST(DataParallelEngine, OverflowOnOneRankSkipsTheStepOnAll) {
  torch::manual_seed(5);
  ds::test::Elementwise m(4);
  auto cfg = ds::test::dp_config(2, 1, world(), 0.0);
  cfg.fp16.enabled = true;
  cfg.fp16.initial_scale_power = 4;
  cfg.fp16.hysteresis = 1;
  cfg.fp16.dynamic_args_given = true;
  ds::Engine e(m, cfg, ds::test::cpu_options(mpi_reducer()));
  const int last = world() - 1;
  for (int step = 0; step < 4; ++step) {
    auto [x, y] = rank_slice(step, 0, 2, world(), rank(), 4, 4);
    if (step == 2 && rank() == last) x = x * 1e6;   // inf in fp16 on one rank only
    const std::vector<torch::Tensor> before = [&] {
      std::vector<torch::Tensor> v;
      for (const auto& [n, w] : ds::test::named_masters(e)) v.push_back(w.clone());
      return v;
    }();
    const double scale_before = e.loss_scale();
    e.backward(e.forward([&] { return mse(m->forward(x.to(torch::kHalf)), y); }));
    e.step();
    EXPECT_EQ(e.last_step_skipped(), step == 2) << "step " << step << " rank " << rank();
    if (step == 2) {
      EXPECT_EQ(e.loss_scale(), scale_before / 2);
      const auto after = ds::test::named_masters(e);
      for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(torch::equal(after[i].second, before[i])) << after[i].first;
    }
    for (const auto& p : m->parameters()) EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), p));
  }
  EXPECT_EQ(e.skipped_steps(), 1);
  auto scale = torch::tensor({e.loss_scale()}, torch::kDouble);
  EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), scale));
}

TEST(DataParallelEngine, Fp16WithGradientAccumulationAgreesAcrossRanks) {
  torch::manual_seed(9);
  ds::test::Elementwise m(5);
  auto cfg = ds::test::dp_config(2, 2, world());
  cfg.fp16.enabled = true;
  cfg.fp16.initial_scale_power = 6;
  cfg.fp16.dynamic_args_given = true;
  ds::Engine e(m, cfg, ds::test::cpu_options(mpi_reducer()));
  for (int step = 0; step < 3; ++step) {
    for (int k = 0; k < 2; ++k) {
      auto [x, y] = rank_slice(step, k, 2, world(), rank(), 5, 5);
      e.backward(e.forward([&] { return mse(m->forward(x.to(torch::kHalf)), y); }));
      e.step();
    }
    EXPECT_FALSE(e.last_step_skipped());
    for (const auto& [name, w] : ds::test::named_masters(e)) EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), w));
  }
}

TEST(DataParallelEngine, CheckpointWrittenByRankZeroResumesIdenticallyOnAllRanks) {
  // One directory for all ranks (they share this machine's file system): named after rank 0's pid.
  auto pid = torch::tensor({static_cast<int64_t>(::getpid())}, torch::kLong);
  world_comm().broadcast(pid, 0);
  const auto dir = std::filesystem::temp_directory_path() / ("dp_ckpt_" + std::to_string(pid.item<int64_t>()));
  if (rank() == 0) ds::remove_tree(dir);
  world_comm().barrier();

  const auto cfg = ds::test::dp_config(2, 2, world());
  auto run_steps = [&](ds::Engine& e, ds::test::TinyMLP& m, int from, int to) {
    for (int step = from; step < to; ++step) {
      for (int k = 0; k < 2; ++k) {
        auto [x, y] = rank_slice(step, k, 2, world(), rank(), 6, 3);
        e.backward(ds::test::loss_of(e, m, x, y));
        e.step();
      }
    }
  };
  torch::manual_seed(3);
  ds::test::TinyMLP m(6, 16, 3, 0.0);
  ds::Engine e(m, cfg, ds::test::cpu_options(mpi_reducer()));
  run_steps(e, m, 0, 2);
  e.save_checkpoint(dir.string());   // rank 0 writes, everyone meets at the barrier
  EXPECT_TRUE(std::filesystem::exists(dir / "latest"));
  run_steps(e, m, 2, 4);
  const auto expected = ds::test::named_masters(e);

  torch::manual_seed(99 + rank());   // different weights on every rank, replaced by the checkpoint
  ds::test::TinyMLP m2(6, 16, 3, 0.0);
  ds::Engine e2(m2, cfg, ds::test::cpu_options(mpi_reducer()));
  e2.load_checkpoint(dir.string());
  EXPECT_EQ(e2.global_steps(), 2);
  run_steps(e2, m2, 2, 4);
  const auto resumed = ds::test::named_masters(e2);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_TRUE(torch::equal(resumed[i].second, expected[i].second)) << resumed[i].first;
    EXPECT_TRUE(ds::test::same_on_all_ranks(world_comm(), resumed[i].second)) << resumed[i].first;
  }
  world_comm().barrier();
  if (rank() == 0) ds::remove_tree(dir);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  torch::set_num_threads(1);   // two ranks share two cores
  ds::DistributedContext ctx;  // MPI_Init under mpirun; a lone process is a world of 1
  g_ctx = &ctx;
  return RUN_ALL_TESTS();
}
