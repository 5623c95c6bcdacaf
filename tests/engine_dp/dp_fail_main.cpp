// A small data-parallel training job, for dp_abort_test and scripts/multi_gpu_check.sh (issue 13).
//
//   engine_dp_fail_main ok|throw|exit|kill|thread [--device cpu|cuda] [--steps N] [--fail-step K] ...
//
// With a failing MODE the last rank fails at step --fail-step the way MODE says, while the other
// ranks go on into the next all-reduce (where they would wait forever if nothing ended the job).
// `ok` trains --steps steps on every rank and prints "rank R finished". --print-every K makes rank 0
// print "step S" every K steps (a script waits for it before it kills a rank from outside);
// --hash makes every rank print a hash of its weights before and after training:
//   rank R params_hash=<fnv1a-64 of every master weight and module parameter> initial_hash=... tensors=T
// so a script can check the ranks hold identical bytes.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>

#include "engine/comm/distributed_context.h"
#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"
#include "tests/engine_dp/dp_test_util.h"

namespace {

struct Options {
  std::string mode = "ok", device = "cpu", dtype = "fp32";
  int steps = 6, fail_step = 3, print_every = 0;
  int64_t in = 6, hidden = 16, out = 3, layers = 1, micro = 2;
  double bucket_cap_mb = 25.0;
  bool hash = false;
};

// in -> hidden -> (layers - 1) x (hidden -> hidden) -> out, tanh between: several gradient buckets
// once hidden is large and --bucket-cap-mb small.
torch::nn::Sequential make_model(const Options& o) {
  const auto tanh_fn = [](const torch::Tensor& t) { return torch::tanh(t); };
  torch::nn::Sequential m;
  m->push_back(torch::nn::Linear(o.in, o.hidden));
  for (int64_t l = 1; l < o.layers; ++l) {
    m->push_back(torch::nn::Functional(tanh_fn));
    m->push_back(torch::nn::Linear(o.hidden, o.hidden));
  }
  m->push_back(torch::nn::Functional(tanh_fn));
  m->push_back(torch::nn::Linear(o.hidden, o.out));
  return m;
}

// FNV-1a over the bytes of every master weight (fp32) and module parameter, in a fixed order.
uint64_t weights_hash(ds::Engine& engine, int64_t* tensors) {
  uint64_t h = 1469598103934665603ULL;
  auto add = [&](const torch::Tensor& t) {
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ULL;
    ++*tensors;
  };
  *tensors = 0;
  for (const auto& [name, w] : ds::test::named_masters(engine)) add(w);
  for (const auto& p : engine.module().parameters()) add(p);
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"data-parallel job for the failure tests and the multi-GPU check"};
  app.add_option("mode", o.mode, "ok, or how the last rank fails")
      ->check(CLI::IsMember({"ok", "throw", "exit", "kill", "thread"}));
  app.add_option("--device", o.device, "cpu (MPI) or cuda (cuda:LOCAL_RANK, NCCL)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", o.dtype, "fp32, fp16 or bf16 (fp16 needs cuda)")->check(CLI::IsMember({"fp32", "fp16", "bf16"}));
  app.add_option("--steps", o.steps, "optimizer steps");
  app.add_option("--fail-step", o.fail_step, "the step at which the last rank fails");
  app.add_option("--print-every", o.print_every, "rank 0 prints 'step S' every K steps (0: never)");
  app.add_option("--hidden", o.hidden, "hidden width");
  app.add_option("--layers", o.layers, "hidden layers")->check(CLI::PositiveNumber);
  app.add_option("--micro", o.micro, "micro-batch per rank");
  app.add_option("--bucket-cap-mb", o.bucket_cap_mb, "data_parallel.bucket_cap_mb");
  app.add_flag("--hash", o.hash, "print a hash of the weights on every rank");
  CLI11_PARSE(app, argc, argv);
  if (o.dtype == "fp16" && o.device != "cuda") {
    std::cerr << "--dtype fp16 needs --device cuda (LibTorch has no fp16 matmul on the CPU)" << std::endl;
    return 2;
  }

  torch::set_num_threads(1);
  return ds::run_distributed([&](ds::DistributedContext& ctx) {
    const at::Device device = o.device == "cuda" ? ctx.device() : at::Device(at::kCPU);
    if (o.device == "cuda" && !device.is_cuda()) throw std::runtime_error("--device cuda: no CUDA device on this rank");
    torch::manual_seed(1 + ctx.rank());   // different on every rank: the engine's broadcast must align them
    auto model = make_model(o);
    ds::DeepSpeedConfig cfg = ds::test::config(o.micro, 1);
    cfg.world_size = ctx.world_size();
    cfg.train_batch_size = o.micro * ctx.world_size();
    cfg.fp16.enabled = o.dtype == "fp16";
    cfg.bf16.enabled = o.dtype == "bf16";
    cfg.data_parallel.bucket_cap_mb = o.bucket_cap_mb;
    ds::EngineOptions opts = ds::test::quiet_cpu();
    opts.device = device;
    opts.reducer = ds::make_gradient_reducer(ctx, cfg, device);
    ds::Engine engine(model, cfg, opts);
    std::printf("rank %d of %d pid %d on %s\n", ctx.rank(), ctx.world_size(), static_cast<int>(::getpid()),
                device.str().c_str());
    std::fflush(stdout);
    int64_t tensors = 0;
    const uint64_t initial = o.hash ? weights_hash(engine, &tensors) : 0;
    const bool victim = ctx.rank() == ctx.world_size() - 1;
    double loss_value = 0;
    for (int step = 0; step < o.steps; ++step) {
      if (victim && step == o.fail_step) {
        if (o.mode == "throw") throw std::runtime_error("injected failure on rank " + std::to_string(ctx.rank()));
        if (o.mode == "exit") return 3;
        if (o.mode == "kill") std::raise(SIGKILL);
        if (o.mode == "thread") {
          std::thread([] { throw std::runtime_error("injected failure in a helper thread"); }).join();
        }
      }
      auto [x, y] = ds::test::batch(step, ctx.rank(), o.micro, o.in, o.out);
      auto loss = ds::test::loss_of(engine, model, x.to(device), y.to(device));
      engine.backward(loss);
      engine.step();
      if (o.print_every > 0 && ctx.rank() == 0 && (step + 1) % o.print_every == 0) {
        loss_value = loss.item<double>();
        std::printf("step %d loss %.6f\n", step + 1, loss_value);
        std::fflush(stdout);
      }
    }
    if (o.hash) {
      const uint64_t final_hash = weights_hash(engine, &tensors);
      std::printf("rank %d params_hash=%016llx initial_hash=%016llx tensors=%lld steps=%lld skipped=%lld\n",
                  ctx.rank(), static_cast<unsigned long long>(final_hash), static_cast<unsigned long long>(initial),
                  static_cast<long long>(tensors), static_cast<long long>(engine.global_steps()),
                  static_cast<long long>(engine.skipped_steps()));
    }
    std::cout << "rank " << ctx.rank() << " finished" << std::endl;
    return 0;
  });
}
