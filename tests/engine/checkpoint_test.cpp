// Engine checkpoints: save -> load -> continue is bitwise identical to not stopping (CPU); a crash
// between the temporary write and the rename leaves the previous checkpoint loadable; missing tags and
// mismatched models are clear errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "engine/checkpoint.h"
#include "engine/engine.h"
#include "engine/ivalue_util.h"
#include "engine/lr_schedules.h"
#include "engine/optimizer.h"
#include "tests/engine/engine_test_util.h"

namespace {

using ds::test::batch;
using ds::test::mse;

enum class Mode { FP32, FP16, BF16 };

ds::DeepSpeedConfig mode_config(Mode mode) {
  auto c = ds::test::config(2, 2);
  c.gradient_clipping = 0.5;
  c.scheduler.present = true;
  c.scheduler.type = ds::SchedulerType::WarmupDecayLR;
  c.scheduler.warmup_num_steps = 3;
  c.scheduler.total_num_steps = 10;
  c.scheduler.warmup_max_lr = {0.01};
  if (mode == Mode::FP16) {
    c.fp16.enabled = true;
    c.fp16.initial_scale_power = 10;
    c.fp16.loss_scale_window = 2;  // growth inside the run, so the scaler state matters
    c.fp16.dynamic_args_given = true;
  }
  if (mode == Mode::BF16) c.bf16.enabled = true;
  return c;
}

// A model per mode: TinyMLP with dropout (RNG state matters) for fp32 / bf16, the elementwise model
// for fp16 (no fp16 matmul on the CPU).
struct Trainer {
  Mode mode;
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(int, int)> loss;  // (step, micro) -> loss
  std::unique_ptr<ds::Engine> engine;

  Trainer(Mode m, uint64_t seed) : mode(m) {
    torch::manual_seed(seed);
    if (m == Mode::FP16) {
      ds::test::Elementwise e(8);
      module = e.ptr();
      loss = [e](int s, int k) mutable {
        auto [x, y] = batch(s, k, 2, 8, 8);
        return mse(e->forward(x.to(torch::kHalf)), y);
      };
    } else {
      ds::test::TinyMLP t(6, 16, 3, 0.2);
      module = t.ptr();
      const auto dt = m == Mode::BF16 ? torch::kBFloat16 : torch::kFloat;
      loss = [t, dt](int s, int k) mutable {
        auto [x, y] = batch(s, k, 2, 6, 3);
        return mse(t->forward(x.to(dt)), y);
      };
    }
    engine = std::make_unique<ds::Engine>(module, mode_config(m), ds::test::quiet_cpu());
  }

  // Optimizer steps [from, to); returns every micro-batch loss. In fp16 runs step 1 overflows
  // (injected), so the skipped count and the loss scaler are part of the saved state.
  std::vector<float> train(int from, int to) {
    std::vector<float> out;
    for (int s = from; s < to; ++s) {
      for (int k = 0; k < 2; ++k) {
        auto l = loss(s, k);
        out.push_back(l.item<float>());
        engine->backward(l);
        if (mode == Mode::FP16 && s == 1 && k == 1) {
          torch::NoGradGuard g;
          module->parameters()[0].grad()[0] = std::numeric_limits<float>::quiet_NaN();
        }
        engine->step();
      }
    }
    return out;
  }
};

class Resume : public ::testing::TestWithParam<Mode> {};

TEST_P(Resume, SaveLoadContinueIsBitwiseIdenticalToNotStopping) {
  ds::test::TempDir dir("ds_engine_resume");
  Trainer a(GetParam(), 10);
  a.train(0, 3);
  const std::string path = a.engine->save_checkpoint(dir.str());
  EXPECT_EQ(path, dir.str() + "/global_step3");
  const std::vector<float> expect = a.train(3, 7);

  Trainer b(GetParam(), 99);  // different initial weights and RNG: all must come from the checkpoint
  const auto loaded = b.engine->load_checkpoint(dir.str());
  EXPECT_EQ(loaded.tag, "global_step3");
  EXPECT_EQ(b.engine->global_steps(), 3);
  const std::vector<float> got = b.train(3, 7);
  ASSERT_EQ(got.size(), expect.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], expect[i]) << "micro-batch " << i;
  EXPECT_EQ(b.engine->global_steps(), a.engine->global_steps());
  EXPECT_EQ(b.engine->global_samples(), a.engine->global_samples());
  EXPECT_EQ(b.engine->skipped_steps(), a.engine->skipped_steps());
  EXPECT_EQ(b.engine->loss_scale(), a.engine->loss_scale());
  EXPECT_EQ(b.engine->get_lr(), a.engine->get_lr());
  auto pa = a.module->named_parameters();
  for (auto& item : b.module->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), pa[item.key()])) << item.key();
  if (GetParam() == Mode::FP16) {
    EXPECT_EQ(a.engine->skipped_steps(), 1);
    EXPECT_NE(a.engine->loss_scale(), 1024.0) << "the scaler moved, so its restore was exercised";
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, Resume, ::testing::Values(Mode::FP32, Mode::FP16, Mode::BF16),
                         [](const auto& info) {
                           return std::string(info.param == Mode::FP32 ? "fp32" : info.param == Mode::FP16 ? "fp16" : "bf16");
                         });

TEST(Checkpoint, LayoutContentsAndClientState) {
  ds::test::TempDir dir("ds_engine_layout");
  Trainer a(Mode::FP16, 1);
  a.train(0, 2);
  ds::ClientState client{{"epoch", int64_t{3}}, {"note", std::string("hello")}, {"table", torch::arange(4)}};
  a.engine->save_checkpoint(dir.str(), "epoch3", client);
  std::ifstream latest(dir.path() / "latest");
  std::string tag;
  latest >> tag;
  EXPECT_EQ(tag, "epoch3");
  const auto model = ds::ivalue::as_dict(ds::checkpoint::read_file(dir.str() + "/epoch3/mp_rank_00_model_states.pt"), "m");
  for (const char* key : {"module", "buffer_names", "param_shapes", "optimizer", "lr_scheduler", "loss_scaler",
                          "global_steps", "global_samples", "skipped_steps", "micro_steps", "dp_world_size",
                          "mp_world_size", "ds_config", "ds_version", "rng_state", "epoch", "note", "table"}) {
    EXPECT_TRUE(ds::ivalue::has(model, key)) << key;
  }
  const auto module = ds::ivalue::get_dict(model, "module", "m");
  EXPECT_TRUE(torch::equal(module.at("w").toTensor(), a.module->named_parameters()["w"]));
  EXPECT_EQ(module.at("w").toTensor().scalar_type(), torch::kHalf);
  EXPECT_EQ(ds::ivalue::get_int(model, "global_steps", ""), 2);
  // The config travels as JSON text that the parser reads back.
  const auto parsed = ds::parse_config_text(ds::ivalue::get_string(model, "ds_config", ""));
  EXPECT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed.config.fp16.enabled);
  const auto optim = ds::ivalue::as_dict(ds::checkpoint::read_file(dir.str() + "/epoch3/mp_rank_00_optim_states.pt"), "o");
  const auto masters = ds::ivalue::get_dict(optim, "fp32_master_weights", "o");
  EXPECT_TRUE(torch::equal(masters.at("w").toTensor(), a.engine->master_weight("w")));
  EXPECT_TRUE(ds::ivalue::has(ds::ivalue::get_dict(optim, "optimizer_state_dict", "o"), "param_groups"));

  Trainer b(Mode::FP16, 2);
  const auto loaded = b.engine->load_checkpoint(dir.str());
  ASSERT_EQ(loaded.client_state.size(), 3u);
  EXPECT_EQ(loaded.client_state.at("epoch").toInt(), 3);
  EXPECT_EQ(loaded.client_state.at("note").toStringRef(), "hello");
  EXPECT_TRUE(torch::equal(loaded.client_state.at("table").toTensor(), torch::arange(4)));
  EXPECT_THROW(b.engine->save_checkpoint(dir.str(), "x", {{"module", int64_t{1}}}), ds::CheckpointError);
  EXPECT_THROW(b.engine->save_checkpoint(dir.str(), "../escape"), ds::CheckpointError);
}

std::vector<torch::Tensor> weights(const Trainer& r) {
  std::vector<torch::Tensor> out;
  for (const auto& p : r.module->parameters()) out.push_back(p.detach().clone());
  return out;
}

bool same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

struct HookReset {
  ~HookReset() { ds::checkpoint::set_fault_hook(nullptr); }
};

TEST(Checkpoint, CrashBetweenTempWriteAndRenameLeavesThePreviousCheckpointLoadable) {
  ds::test::TempDir dir("ds_engine_crash");
  const HookReset reset;
  Trainer a(Mode::FP32, 3);
  a.train(0, 2);
  a.engine->save_checkpoint(dir.str(), "a");
  const auto at_a = weights(a);
  a.train(2, 3);
  auto crash_at = [](const std::string& stage) {
    ds::checkpoint::set_fault_hook([stage](const std::string& s) {
      if (s == stage) throw std::runtime_error("injected crash at " + s);
    });
  };

  crash_at("temp_written");
  EXPECT_THROW(a.engine->save_checkpoint(dir.str(), "b"), std::runtime_error);
  crash_at("temp_written");
  EXPECT_THROW(a.engine->save_checkpoint(dir.str(), "a"), std::runtime_error) << "overwriting a tag, crashing";
  crash_at("renamed");
  EXPECT_THROW(a.engine->save_checkpoint(dir.str(), "c"), std::runtime_error);
  ds::checkpoint::set_fault_hook(nullptr);
  EXPECT_EQ(ds::checkpoint::list_tags(dir.str()), std::vector<std::string>({"a", "c"}));

  Trainer b(Mode::FP32, 4);
  EXPECT_EQ(b.engine->load_checkpoint(dir.str()).tag, "a") << "latest still names the old checkpoint";
  EXPECT_EQ(b.engine->global_steps(), 2);
  EXPECT_TRUE(same(weights(b), at_a)) << "the interrupted overwrite of 'a' left the old files";
  EXPECT_EQ(b.engine->load_checkpoint(dir.str(), "c").tag, "c") << "a crash after the rename keeps the new one";
  EXPECT_EQ(b.engine->global_steps(), 3);

  // A later save of the interrupted tag succeeds and removes the leftovers.
  a.engine->save_checkpoint(dir.str(), "b");
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename().string().rfind(".b.tmp-", 0), std::string::npos) << e.path();
  }
  EXPECT_EQ(b.engine->load_checkpoint(dir.str()).tag, "b");
}

TEST(Checkpoint, MissingTagsAndMismatchedModelsAreClearErrors) {
  ds::test::TempDir dir("ds_engine_errors");
  Trainer a(Mode::FP32, 5);
  auto expect_error = [](const std::function<void()>& f, const std::vector<std::string>& needles) {
    try {
      f();
      ADD_FAILURE() << "no error";
    } catch (const ds::CheckpointError& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << n << " in: " << e.what();
    }
  };
  expect_error([&] { a.engine->load_checkpoint(dir.str()); }, {"latest", "does not exist", "no checkpoints exist"});
  a.train(0, 1);
  a.engine->save_checkpoint(dir.str());
  expect_error([&] { a.engine->load_checkpoint(dir.str(), "global_step7"); },
               {"'global_step7' not found", "tags present", "global_step1"});

  // Same names, other shapes.
  torch::manual_seed(6);
  ds::test::TinyMLP narrow(6, 8, 3, 0.2);
  ds::Engine e(narrow, mode_config(Mode::FP32), ds::test::quiet_cpu());
  const auto before = narrow->fc1->weight.detach().clone();
  expect_error([&] { e.load_checkpoint(dir.str()); }, {"does not match the model", "shape mismatch", "fc1.weight"});
  EXPECT_TRUE(torch::equal(narrow->fc1->weight, before)) << "a rejected load changes nothing";

  // Other names: strict load fails; non-strict loads what matches.
  struct OneLayerImpl : torch::nn::Module {
    OneLayerImpl() { fc1 = register_module("fc1", torch::nn::Linear(6, 16)); }
    torch::nn::Linear fc1{nullptr};
  };
  auto one = std::make_shared<OneLayerImpl>();
  ds::Engine o(one, mode_config(Mode::FP32), ds::test::quiet_cpu());
  expect_error([&] { o.load_checkpoint(dir.str()); }, {"unexpected keys [fc2.weight, fc2.bias]"});
  expect_error([&] { o.load_checkpoint(dir.str(), std::nullopt, ds::LoadCheckpointOptions{false, true, true}); },
               {"params in the checkpoint"});
  o.load_checkpoint(dir.str(), std::nullopt, ds::LoadCheckpointOptions{false, false, true});
  EXPECT_TRUE(torch::equal(one->fc1->weight, a.module->named_parameters()["fc1.weight"]));

  // A damaged file.
  std::ofstream(dir.path() / "global_step1" / "mp_rank_00_model_states.pt", std::ios::trunc) << "not a checkpoint";
  expect_error([&] { a.engine->load_checkpoint(dir.str()); }, {"corrupt"});
}

}  // namespace
