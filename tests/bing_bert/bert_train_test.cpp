// bert_pretrain's pieces on the CPU: bing_bert's parameter groups and LR schedules, the --cf
// config, bad input (each a clear error naming the file and the field, before any step), a short
// training run whose loss falls, and resume = not stopping (bitwise).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sys/wait.h>
#include <sstream>

#include "bert_test_util.h"
#include "engine/checkpoint.h"
#include "engine/comm/distributed_context.h"
#include "engine/engine.h"
#include "examples/bing_bert/train/pretrain_data.h"
#include "examples/bing_bert/train/trainer.h"
#include "ops/common/fs_util.h"

namespace ds::bert {
namespace {

using test::TempDir;
using test::write_text;

// A plain process: rank 0 of 1, no MPI.
PretrainResult run(const PretrainArgs& a, std::ostream& log) {
  DistributedContext ctx;
  return run_pretraining(a, log, ctx);
}

// ---------------------------------------------------------------------------------------------
TEST(BertParamGroups, NoPoolerNoDecayOnBiasesAndLayerNorms) {
  torch::manual_seed(0);
  BertForPreTrainingPreLN model(test::tiny_config());
  const auto groups = decay_param_groups(*model, 0.01, {"bias", "LayerNorm.bias", "LayerNorm.weight"}, {"pooler"});
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_DOUBLE_EQ(*groups[0].weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(*groups[1].weight_decay, 0.0);
  size_t total = 0;
  for (const auto& g : groups) {
    for (const auto& n : g.names) {
      EXPECT_EQ(n.find("pooler"), std::string::npos) << n;
      ++total;
    }
  }
  EXPECT_EQ(total, model->named_parameters().size() - 2);  // pooler weight and bias frozen
  for (const auto& n : groups[0].names) {
    EXPECT_EQ(n.find("bias"), std::string::npos) << n;
    EXPECT_EQ(n.find("LayerNorm"), std::string::npos) << n;
  }
  auto in = [](const ParamGroupSpec& g, const std::string& n) {
    return std::find(g.names.begin(), g.names.end(), n) != g.names.end();
  };
  EXPECT_TRUE(in(groups[1], "bert.encoder.layer.0.PreAttentionLayerNorm.weight"));  // substring match, as bing_bert
  EXPECT_TRUE(in(groups[1], "bert.encoder.FinalLayerNorm.weight"));
  EXPECT_TRUE(in(groups[1], "cls.predictions.bias"));
  EXPECT_TRUE(in(groups[0], "bert.embeddings.word_embeddings.weight"));
  EXPECT_TRUE(in(groups[0], "cls.predictions.transform.dense_act.weight"));
}

// ---------------------------------------------------------------------------------------------
TEST(BertLrSchedule, ValuesAtTheEdgesFollowTheFormulas) {
  SeqTrainingConfig t;
  t.learning_rate = 11e-3;
  t.warmup_proportion = 0.06;
  t.total_training_steps = 7500;  // warmup ends at t = 450
  t.decay_rate = 0.9;
  t.decay_step = 250;
  // EE: quadratic warmup, exponential decay (bert_large_lamb seq 128 + lr_offset 1e-3).
  EXPECT_DOUBLE_EQ(scheduled_lr(LrSchedule::EE, 0, t, 1e-3), 1e-3);
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EE, 225, t), std::pow((225.0 / 7500) / 0.06, 2.0));  // 0.25
  EXPECT_NEAR(lr_factor(LrSchedule::EE, 225, t), 0.25, 1e-12);
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EE, 449, t), std::pow((449.0 / 7500) / 0.06, 2.0));
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EE, 450, t), 1.0);          // x == w: decay branch, exponent 0
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EE, 700, t), 0.9);          // one decay_step later
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EE, 575, t), std::pow(0.9, 0.5));  // not a staircase
  // LE: linear warmup, the same decay.
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::LE, 0, t), 0.0);
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::LE, 225, t), (225.0 / 7500) / 0.06);
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::LE, 950, t), 0.81);
  // EP: warmup to the power 1.5, then (1 - x)^2 down to 0 at the last step.
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EP, 225, t), std::pow((225.0 / 7500) / 0.06, 1.5));
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EP, 450, t), std::pow(1.0 - 0.06, 2.0));
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EP, 7500, t), 0.0);
  // No warmup: EE and LE start at the peak; EP goes straight to its decay.
  t.warmup_proportion = 0.0;
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EE, 0, t), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::LE, 3000, t), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(LrSchedule::EP, 3750, t), 0.25);
  EXPECT_EQ(parse_lr_schedule("EP"), LrSchedule::EP);
  EXPECT_THROW(parse_lr_schedule("ee"), InputError);
}

// ---------------------------------------------------------------------------------------------
// A tiny recipe in a temporary folder: model and DeepSpeed configs, training and validation shards.
struct Recipe {
  TempDir dir;
  std::string cf, ds;
  PretrainArgs args() const {
    PretrainArgs a;
    a.config_file = cf;
    a.deepspeed_config = ds;
    a.max_seq_length = 32;
    a.max_predictions_per_seq = 5;
    a.output_dir = dir / "out";
    a.data_path_prefix = dir.path();
    a.validation_data_path_prefix = dir.path();
    a.seed = 7;
    a.lr_schedule = LrSchedule::LE;
    a.print_steps = 5;
    a.num_threads = 1;
    return a;
  }
};

constexpr int64_t kVocab = 96;

std::string model_config_json(double dropout, int64_t vocab = kVocab, int64_t max_pos = 64, int64_t epochs = 3) {
  std::ostringstream os;
  os << R"({"name": "tiny_test", "bert_token_file": "x", "bert_model_config": {"vocab_size": )" << vocab
     << R"(, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
      "hidden_dropout_prob": )" << dropout << R"(, "attention_probs_dropout_prob": )" << dropout
     << R"(, "max_position_embeddings": )" << max_pos << R"(, "initializer_range": 0.02},
    "data": {"flags": {"pretrain_dataset": true}, "mixed_seq_datasets": {"32": {"pretrain_dataset": "shards"}}},
    "mixed_seq_training": {"32": {"num_epochs": )" << epochs << R"(, "warmup_proportion": 0.1,
      "learning_rate": 5e-2, "decay_rate": 0.9, "decay_step": 20, "total_training_steps": 100}}})";
  return os.str();
}

std::string ds_config_json(const std::string& extra = "") {
  return R"({"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 2, "steps_per_print": 1000,
    "optimizer": {"type": "Lamb", "params": {"lr": 1e-2, "weight_decay": 0.01, "bias_correction": false,
    "max_coeff": 0.3, "min_coeff": 0.01}}, "gradient_clipping": 1.0)" + extra + "}";
}

std::unique_ptr<Recipe> make_recipe(double dropout, const std::string& ds_extra = "") {
  auto r = std::make_unique<Recipe>();
  r->cf = r->dir / "bert_test.json";
  r->ds = r->dir / "ds_test.json";
  write_text(r->cf, model_config_json(dropout));
  write_text(r->ds, ds_config_json(ds_extra));
  std::filesystem::create_directories(r->dir / "shards");
  // 2 training shards of 200 instances (12 steps of 16 per epoch) and one validation shard.
  write_pretraining_shard(r->dir / "shards/t_training_shard_0.hdf5", test::synthetic_shard(200, 32, 5, kVocab, 1));
  write_pretraining_shard(r->dir / "shards/t_training_shard_1.hdf5", test::synthetic_shard(200, 32, 5, kVocab, 2));
  write_pretraining_shard(r->dir / "shards/t_validation_shard_0.hdf5", test::synthetic_shard(40, 32, 5, kVocab, 3));
  return r;
}

double mean(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

TEST(BertTraining, TwentyStepsLossFalls) {
  auto r = make_recipe(0.1);
  PretrainArgs a = r->args();
  a.max_steps = 20;
  std::ostringstream log;
  const PretrainResult res = run(a, log);
  ASSERT_EQ(res.step_losses.size(), 20u) << log.str();
  EXPECT_EQ(res.global_step, 20);
  // Start: ln(96) + ln(2) = 5.26. The tokens follow a skewed distribution, which 20 steps learn.
  EXPECT_NEAR(res.step_losses.front(), std::log(96.0) + std::log(2.0), 0.3);
  EXPECT_LT(mean(res.step_losses, 15, 20), mean(res.step_losses, 0, 5) - 0.4) << log.str();
  std::cout << "first 5 steps " << mean(res.step_losses, 0, 5) << ", last 5 " << mean(res.step_losses, 15, 20)
            << ", validation " << res.validation_loss << " (MLM accuracy " << res.validation_mlm_accuracy << ")\n";
  // 12 steps per epoch: one end-of-epoch checkpoint and the final one, each validated.
  ASSERT_EQ(res.checkpoints.size(), 2u);
  EXPECT_EQ(res.checkpoints[0], a.output_dir + "/saved_models/tiny_test/epoch1_step12");
  EXPECT_EQ(res.checkpoints[1], a.output_dir + "/saved_models/tiny_test/epoch2_step20");
  EXPECT_TRUE(std::isfinite(res.validation_loss));
  EXPECT_GT(res.validation_mlm_accuracy, 0.0);
  const std::string out = log.str();
  EXPECT_NE(out.find("bing_bert_progress: step=5, loss="), std::string::npos) << out;
  EXPECT_NE(out.find("TFLOP/s="), std::string::npos);
  EXPECT_NE(out.find("validation: step=20"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(a.output_dir + "/runs/tiny_test/train.csv"));
  // bing_bert's client state is in the checkpoint.
  const at::IValue states = checkpoint::read_file(res.checkpoints[1] + "/" + checkpoint::kModelStatesFile);
  const auto dict = states.toGenericDict();
  EXPECT_EQ(dict.at("epoch").toInt(), 2);
  EXPECT_EQ(dict.at("last_global_step").toInt(), 20);
  EXPECT_EQ(dict.at("last_global_data_samples").toInt(), 20 * 16);
}

// Stop after 7 steps (inside epoch 1), resume, go on to 16: steps 8..16 are bitwise those of a run
// that never stopped. Dropout is on, so the RNG state travels with the checkpoint.
void check_resume_is_bitwise(const std::string& ds_extra) {
  auto r = make_recipe(0.1, ds_extra);
  PretrainArgs full = r->args();
  full.max_steps = 16;
  full.job_name = "full";
  std::ostringstream log;
  const PretrainResult a = run(full, log);
  ASSERT_EQ(a.step_losses.size(), 16u) << log.str();

  PretrainArgs first = r->args();
  first.job_name = "split";
  first.max_steps = 7;
  const PretrainResult b1 = run(first, log);
  ASSERT_EQ(b1.checkpoints.back(), first.output_dir + "/saved_models/split/epoch1_step7");
  PretrainArgs second = first;
  second.max_steps = 16;
  second.load_training_checkpoint = first.output_dir + "/saved_models/split";
  const PretrainResult b2 = run(second, log);
  ASSERT_EQ(b2.step_losses.size(), 9u) << log.str();
  EXPECT_EQ(b2.global_step, 16);
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(b1.step_losses[i], a.step_losses[i]) << "step " << i + 1;
  for (size_t i = 0; i < 9; ++i) EXPECT_EQ(b2.step_losses[i], a.step_losses[7 + i]) << "step " << i + 8;
}

TEST(BertTraining, ResumeGivesTheSameLossesAsNotStopping) { check_resume_is_bitwise(""); }

TEST(BertTraining, ResumeWithTheTransformerKernelIsBitwiseToo) {
  check_resume_is_bitwise(R"(, "transformer_kernel": {"enabled": true})");
}

TEST(BertTraining, RewarmupRestartsTheSchedule) {
  auto r = make_recipe(0.0);
  PretrainArgs a = r->args();
  a.max_steps = 4;
  std::ostringstream log;
  run(a, log);
  PretrainArgs b = a;
  b.load_training_checkpoint = a.output_dir + "/saved_models/tiny_test";
  b.load_checkpoint_id = "epoch1_step4";
  b.rewarmup = true;
  b.max_steps = 2;  // counted from the restore with --rewarmup
  const PretrainResult res = run(b, log);
  EXPECT_EQ(res.global_step, 6);
  std::ifstream csv(a.output_dir + "/runs/tiny_test/train.csv");
  std::string line, last;
  std::vector<std::string> lines;
  while (std::getline(csv, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 7u);  // header + 4 + 2
  // Step 5 is the first after the restore: t = 0 again, LE gives lr 0.
  EXPECT_EQ(lines[5].substr(0, 2), "5,");
  EXPECT_EQ(lines[5].substr(lines[5].rfind(',') + 1), "0");
}

TEST(BertTraining, LongSequencesWithSparseAttentionExtendThePositionTable) {
  auto r = make_recipe(0.0, R"(, "sparse_attention": {"mode": "fixed", "block": 16, "num_local_blocks": 1})");
  write_text(r->cf, model_config_json(0.0, kVocab, /*max_pos=*/16));  // the shards have 32 tokens
  PretrainArgs a = r->args();
  a.max_steps = 2;
  std::ostringstream log;
  const PretrainResult res = run(a, log);
  ASSERT_EQ(res.step_losses.size(), 2u) << log.str();
  EXPECT_NE(log.str().find("layer sparse_attention"), std::string::npos) << log.str();
  const auto dict = checkpoint::read_file(res.checkpoints.back() + "/" + checkpoint::kModelStatesFile).toGenericDict();
  const auto module = dict.at("module").toGenericDict();
  EXPECT_EQ(module.at("bert.embeddings.position_embeddings.weight").toTensor().size(0), 32);
}

// ---------------------------------------------------------------------------------------------
// Bad input: InputError naming the file and the field, thrown before any training step.
void expect_input_error(const PretrainArgs& a, const std::vector<std::string>& needles) {
  std::ostringstream log;
  try {
    run(a, log);
    FAIL() << "no error; log:\n" << log.str();
  } catch (const InputError& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
  EXPECT_EQ(log.str().find("bing_bert_progress"), std::string::npos);
}

TEST(BertBadInput, MissingSeqSectionNamesTheFile) {
  auto r = make_recipe(0.0);
  PretrainArgs a = r->args();
  a.max_seq_length = 64;
  expect_input_error(a, {r->cf, "mixed_seq_training.64", "has: 32"});
}

TEST(BertBadInput, VocabularySmallerThanTheData) {
  auto r = make_recipe(0.0);
  write_text(r->cf, model_config_json(0.0, /*vocab=*/50));
  // The validation shard is read (and checked) first; either way the shard, the field and the
  // model config's field are named.
  expect_input_error(r->args(), {"shard '" + r->dir.path() + "/shards/t_", "field 'input_ids'",
                                 "bert_model_config.vocab_size 50", r->cf});
}

TEST(BertBadInput, PositionTableShorterThanTheSequence) {
  auto r = make_recipe(0.0);
  write_text(r->cf, model_config_json(0.0, kVocab, /*max_pos=*/16));
  expect_input_error(r->args(), {r->cf, "bert_model_config.max_position_embeddings", "--max_seq_length is 32",
                                 "sparse_attention"});
}

TEST(BertBadInput, ShardProblemsNameFileAndField) {
  auto r = make_recipe(0.0);
  const std::string shard = r->dir / "shards/t_training_shard_1.hdf5";
  // Wrong sequence length for --max_seq_length.
  write_pretraining_shard(shard, test::synthetic_shard(200, 48, 5, kVocab, 2));
  expect_input_error(r->args(), {shard, "field 'input_ids'", "sequence length 48"});
  // Fewer predictions per sequence than --max_predictions_per_seq (mismatched datasets inside one
  // shard are the reader's errors too: bert_shard_test writes such files).
  PretrainingShard bad = test::synthetic_shard(200, 32, 5, kVocab, 2);
  bad.masked_lm_ids.resize(200 * 4);
  bad.masked_lm_positions.resize(200 * 4);
  bad.max_predictions = 4;
  write_pretraining_shard(shard, bad);
  expect_input_error(r->args(), {shard, "masked_lm_positions", "--max_predictions_per_seq"});
  // Unreadable file.
  write_text(shard, "not an hdf5 file");
  expect_input_error(r->args(), {shard, "HDF5"});
  // No shards at all.
  ds::remove_tree(r->dir / "shards");
  expect_input_error(r->args(), {"shards", "data.mixed_seq_datasets.32.pretrain_dataset", r->cf});
}

TEST(BertBadInput, ConfigProblems) {
  auto r = make_recipe(0.0);
  PretrainArgs a = r->args();
  write_text(r->ds, ds_config_json(R"(, "scheduler": {"type": "WarmupLR"})"));
  expect_input_error(a, {r->ds, "scheduler"});
  write_text(r->ds, ds_config_json(R"(, "transformer_kernel": {}, "sparse_attention": {"mode": "fixed"})"));
  expect_input_error(a, {r->ds, "sparse_attention"});
  write_text(r->ds, ds_config_json());
  write_text(r->cf, "{\"bert_model_config\": {}, \"data\": {}, \"mixed_seq_training\": {}, \"epochs\": 3}");
  expect_input_error(a, {r->cf, "epochs: unknown key"});
  a.config_file = r->dir / "missing.json";
  expect_input_error(a, {"missing.json"});
}

TEST(BertData, ShardOrderFollowsNvidiasIndex) {
  auto r = make_recipe(0.0);
  DataOptions o;
  o.world_size = 3;
  o.rank = 2;
  o.micro_batch = 8;
  o.gradient_accumulation_steps = 2;
  ShardProvider p({r->dir / "shards/t_training_shard_0.hdf5", r->dir / "shards/t_training_shard_1.hdf5"}, o);
  // world 3 > 2 files: index = (e * 3 + r + (3 % 2) * e) % 2.
  EXPECT_EQ(p.file_index(0), 0);
  EXPECT_EQ(p.file_index(1), (1 * 3 + 2 + 1) % 2);
  EXPECT_EQ(p.micro_batches(0), 24);  // 200 / 8 = 25, down to whole windows of 2
  const auto order = p.order(1, 200);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 200; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_NE(order, p.order(2, 200));
  p.prefetch(1);
  EXPECT_EQ(p.shard(1)->num_instances, 200);
}

#ifdef DS_BERT_PRETRAIN
TEST(BertPretrainCli, BadInputExitsWithTwo) {
  auto r = make_recipe(0.0);
  const std::string cmd = std::string(DS_BERT_PRETRAIN) + " --cf " + r->cf + " --deepspeed_config " + r->ds +
                          " --output_dir " + (r->dir / "out") + " --max_seq_length 128 2>" + (r->dir / "err.txt");
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream in(r->dir / "err.txt");
  std::stringstream err;
  err << in.rdbuf();
  EXPECT_NE(err.str().find("bert_pretrain: error: " + r->cf + ": mixed_seq_training.128: missing"), std::string::npos)
      << err.str();
}
#endif

}  // namespace
}  // namespace ds::bert
