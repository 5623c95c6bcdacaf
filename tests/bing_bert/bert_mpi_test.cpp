// bert_pretrain's loop on 2 ranks (label mpi: ctest runs it under `mpirun -np 2`): each rank reads
// its own shard (NVIDIA's per-rank index), gradients are averaged by engine/comm's reducer, the
// loss falls on every rank and the ranks end with the same weights.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <sstream>

#include "bert_test_util.h"
#include "engine/comm/distributed_context.h"
#include "examples/bing_bert/train/trainer.h"

namespace {

ds::DistributedContext* g_ctx = nullptr;

using ds::bert::test::TempDir;
using ds::bert::test::write_text;

TEST(BertDataParallel, TwentyStepsOnTwoRanks) {
  ASSERT_GE(g_ctx->world_size(), 2) << "run under mpirun -np 2";
  // Every rank writes the same recipe into its own folder (the synthetic shards are deterministic).
  TempDir dir;
  const std::string cf = dir / "bert.json", ds = dir / "ds.json";
  write_text(cf, R"({"name": "tiny_dp", "bert_model_config": {"vocab_size": 96, "hidden_size": 32,
      "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64},
    "data": {"mixed_seq_datasets": {"32": {"pretrain_dataset": "shards"}}},
    "mixed_seq_training": {"32": {"num_epochs": 3, "warmup_proportion": 0.1, "learning_rate": 5e-2,
      "decay_rate": 0.9, "decay_step": 20, "total_training_steps": 100}}})");
  write_text(ds, R"({"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 2,
    "optimizer": {"type": "Lamb", "params": {"lr": 1e-2, "weight_decay": 0.01, "bias_correction": false,
    "max_coeff": 0.3, "min_coeff": 0.01}}, "gradient_clipping": 1.0})");
  std::filesystem::create_directories(dir / "shards");
  for (int k = 0; k < 2; ++k) {
    ds::bert::write_pretraining_shard(dir / ("shards/t_training_shard_" + std::to_string(k) + ".hdf5"),
                                      ds::bert::test::synthetic_shard(200, 32, 5, 96, 1 + static_cast<uint64_t>(k)));
  }
  ds::bert::PretrainArgs a;
  a.config_file = cf;
  a.deepspeed_config = ds;
  a.max_seq_length = 32;
  a.max_predictions_per_seq = 5;
  a.output_dir = dir / "out";
  a.data_path_prefix = dir.path();
  a.max_steps = 20;
  a.print_steps = 5;
  a.num_threads = 1;
  std::ostringstream log;
  const ds::bert::PretrainResult res = ds::bert::run_pretraining(a, log, *g_ctx);
  ASSERT_EQ(res.step_losses.size(), 20u) << log.str();
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += res.step_losses[static_cast<size_t>(i)] / 5;
  for (int i = 15; i < 20; ++i) last += res.step_losses[static_cast<size_t>(i)] / 5;
  EXPECT_LT(last, first - 0.4) << "rank " << g_ctx->rank() << "\n" << log.str();

  auto comm = g_ctx->world_communicator();
  // 32 sequences per step: 8 x 2 accumulation x 2 ranks.
  if (g_ctx->rank() == 0) {
    EXPECT_NE(log.str().find("= 32 sequences per step"), std::string::npos) << log.str();
  }
  // The ranks read different shards...
  const auto name = std::filesystem::path(res.shards_read.at(0)).filename().string();
  auto mine = torch::full({1}, static_cast<int64_t>(std::hash<std::string>{}(name) & 0xffffffff), torch::kLong);
  auto all = torch::zeros({g_ctx->world_size()}, torch::kLong);
  comm->all_gather(mine, all);
  EXPECT_NE(all[0].item<int64_t>(), all[1].item<int64_t>());
  // ... and hold the same weights.
  auto sum = torch::full({1}, res.parameter_checksum, torch::kDouble);
  auto max = sum.clone();
  comm->all_reduce(max, ds::ReduceOp::Max);
  EXPECT_EQ(sum.item<double>(), max.item<double>());
  comm->barrier();  // rank 0 may still be reading its temporary folder
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  torch::set_num_threads(1);
  ds::DistributedContext ctx;
  g_ctx = &ctx;
  return RUN_ALL_TESTS();
}
