// A small data-parallel training job for dp_abort_test: the last rank fails at step 3 the way
// argv[1] says, while the other ranks go on into the next all-reduce (where they would wait forever
// if nothing ended the job).
//   engine_dp_fail_main ok|throw|exit|kill|thread
#include <torch/torch.h>

#include <csignal>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>

#include "engine/comm/distributed_context.h"
#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "ok";
  if (mode != "ok" && mode != "throw" && mode != "exit" && mode != "kill" && mode != "thread") {
    std::cerr << "usage: " << argv[0] << " ok|throw|exit|kill|thread" << std::endl;
    return 2;
  }
  torch::set_num_threads(1);
  return ds::run_distributed([&](ds::DistributedContext& ctx) {
    torch::manual_seed(1);
    ds::test::TinyMLP model(6, 16, 3, 0.0);
    ds::DeepSpeedConfig cfg = ds::test::config(2, 1);
    cfg.world_size = ctx.world_size();
    cfg.train_batch_size = 2 * ctx.world_size();
    ds::EngineOptions opts = ds::test::quiet_cpu();
    opts.reducer = ds::make_gradient_reducer(ctx, cfg, at::Device(at::kCPU));
    ds::Engine engine(model, cfg, opts);
    const bool victim = ctx.rank() == ctx.world_size() - 1;
    for (int step = 0; step < 6; ++step) {
      if (victim && step == 3) {
        if (mode == "throw") throw std::runtime_error("injected failure on rank " + std::to_string(ctx.rank()));
        if (mode == "exit") return 3;
        if (mode == "kill") std::raise(SIGKILL);
        if (mode == "thread") {
          std::thread([] { throw std::runtime_error("injected failure in a helper thread"); }).join();
        }
      }
      auto [x, y] = ds::test::batch(step, ctx.rank(), 2, 6, 3);
      engine.backward(engine.forward([&] { return ds::test::mse(model->forward(x), y); }));
      engine.step();
    }
    std::cout << "rank " << ctx.rank() << " finished" << std::endl;
    return 0;
  });
}
