// Small models, data and configs for the Engine tests (CPU, seconds).
#pragma once

#include <torch/torch.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "engine/config/ds_config.h"
#include "engine/engine.h"
#include "ops/common/fs_util.h"

namespace ds::test {

// Linear -> tanh -> dropout -> Linear: runs in fp32 and bf16 on the CPU.
struct TinyMLPImpl : torch::nn::Module {
  TinyMLPImpl(int64_t in, int64_t hidden, int64_t out, double dropout) {
    fc1 = register_module("fc1", torch::nn::Linear(in, hidden));
    drop = register_module("drop", torch::nn::Dropout(dropout));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, out));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(drop(torch::tanh(fc1(x)))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(TinyMLP);

// y = (x * w + b) * v, elementwise: LibTorch 1.13 has no fp16 matmul on the CPU, but fp16 mul/add
// and their backward work, so this model trains in fp16 on the CPU.
struct ElementwiseImpl : torch::nn::Module {
  explicit ElementwiseImpl(int64_t d) {
    w = register_parameter("w", torch::randn({d}));
    b = register_parameter("b", torch::randn({d}) * 0.1);
    v = register_parameter("v", torch::ones({d}));
  }
  torch::Tensor forward(const torch::Tensor& x) { return (x * w + b) * v; }
  torch::Tensor w, b, v;
};
TORCH_MODULE(Elementwise);

// Deterministic batch for (step, micro): its own generator, so the global RNG (dropout) is not touched.
inline std::pair<torch::Tensor, torch::Tensor> batch(int64_t step, int64_t micro, int64_t n, int64_t in, int64_t out) {
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 * step + micro + 1));
  auto x = torch::randn({n, in}, gen, torch::kFloat);
  auto y = torch::randn({n, out}, gen, torch::kFloat);
  return {x, y};
}

inline torch::Tensor mse(const torch::Tensor& pred, const torch::Tensor& target) {
  return (pred.to(torch::kFloat) - target).pow(2).mean();
}

inline DeepSpeedConfig config(int64_t micro, int64_t gas, OptimizerType type = OptimizerType::Adam, double lr = 1e-2) {
  DeepSpeedConfig c;
  c.world_size = 1;
  c.train_micro_batch_size_per_gpu = micro;
  c.gradient_accumulation_steps = gas;
  c.train_batch_size = micro * gas;
  c.optimizer.present = true;
  c.optimizer.type = type;
  c.optimizer.type_name = type == OptimizerType::Lamb ? "Lamb" : "Adam";
  c.optimizer.lr = lr;
  c.steps_per_print = 0;
  return c;
}

inline EngineOptions quiet_cpu() {
  EngineOptions o;
  o.device = at::Device(at::kCPU);
  o.quiet = true;
  return o;
}

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    path_ = std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
    ds::remove_tree(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    ds::remove_tree(path_);
  }
  std::string str() const { return path_.string(); }
  std::filesystem::path path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ds::test
