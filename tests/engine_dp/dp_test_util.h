// Helpers for the data-parallel tests: configs for W ranks, training loops that give each rank its
// slice of a global batch, and comparisons across ranks.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/comm/communicator.h"
#include "engine/comm/data_parallel_reducer.h"
#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"

namespace ds::test {

inline DeepSpeedConfig dp_config(int64_t micro, int64_t gas, int world, double clip = 0.05) {
  DeepSpeedConfig c = config(micro, gas);
  c.world_size = world;
  c.train_batch_size = micro * gas * world;
  // Adam is invariant to the gradient's scale; clipping makes the scale (sum vs average) matter.
  c.gradient_clipping = clip;
  return c;
}

// Rows [rank * micro, (rank + 1) * micro) of the global micro-batch (step, k) of world * micro rows.
inline std::pair<torch::Tensor, torch::Tensor> rank_slice(int64_t step, int64_t k, int64_t micro, int world, int rank,
                                                          int64_t in, int64_t out) {
  auto [x, y] = batch(step, k, micro * world, in, out);
  return {x.slice(0, rank * micro, (rank + 1) * micro), y.slice(0, rank * micro, (rank + 1) * micro)};
}

// A loss for engine e on (x, y); fp16/bf16 models get their input cast.
template <typename M>
torch::Tensor loss_of(Engine& e, M& model, const torch::Tensor& x, const torch::Tensor& y) {
  return e.forward([&] { return mse(model->forward(x.to(e.model_dtype())), y); });
}

// Bitwise: every rank holds the same bytes as rank 0 (gathered over `comm`, a CPU communicator).
inline bool same_on_all_ranks(Communicator& comm, const torch::Tensor& t) {
  const torch::Tensor flat = t.detach().to(torch::kCPU).contiguous().reshape({-1});
  const torch::Tensor all = torch::empty({flat.numel() * comm.world_size()}, flat.options());
  comm.all_gather(flat, all);
  const int64_t n = flat.numel();
  for (int r = 1; r < comm.world_size(); ++r) {
    if (!torch::equal(all.narrow(0, r * n, n), all.narrow(0, 0, n))) return false;
  }
  return true;
}

inline std::vector<std::pair<std::string, torch::Tensor>> named_masters(Engine& e) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& group : e.param_group_names()) {
    for (const auto& name : group) out.emplace_back(name, e.master_weight(name));
  }
  return out;
}

inline EngineOptions cpu_options(std::shared_ptr<GradientReducer> reducer) {
  EngineOptions o = quiet_cpu();
  o.reducer = std::move(reducer);
  return o;
}

}  // namespace ds::test
