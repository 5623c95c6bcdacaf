// All-reduce bus bandwidth of our NCCL communicator (nccl-tests style) and the training step time
// of a data-parallel Engine with and without overlapping the gradient all-reduce with backward.
// Run under mpirun, one rank per GPU: benchmarks/bench_allreduce.sh does that.
//
// Part 1, for each size from --min-bytes to --max-bytes (doubling): fill every rank with a pattern
// whose sum is exact, all-reduce once and count wrong elements (#wrong, as nccl-tests), then time
// --iters in-place all-reduces (sum) after --warmup, on CUDA events; the slowest rank's time counts.
//   algbw = bytes / time;  busbw = algbw * 2 (n - 1) / n  (what a ring moves per rank; 0 for n = 1)
// Part 2: a BERT-like stack (per layer: LayerNorm, Linear H->3H, gating, Linear H->H, LayerNorm,
// Linear H->4H, GELU, Linear 4H->H, residuals; no attention across positions: a stand-in until the
// recipe's BERT model exists), fp16 with fp32 master weights and Adam, through ds::Engine with the
// DataParallelReducer, overlap_comm on and off; prints ms per step and samples/s.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "engine/comm/data_parallel_reducer.h"
#include "engine/comm/distributed_context.h"
#include "engine/engine.h"

namespace {

struct Options {
  std::string min_bytes = "1M", max_bytes = "1G";
  int iters = 20, warmup = 5;
  std::string dtype = "float";
  double ref_busbw = 370.0;   // GB/s: ring all-reduce over H100/H200 NVLink without multicast
  bool model = true, collectives = true;
  int layers = 24, hidden = 1024, batch = 16, seq = 128, steps = 10;
  double bucket_cap_mb = 25.0;
  bool cpu = false;
};

int64_t parse_bytes(const std::string& s) {
  size_t pos = 0;
  const double v = std::stod(s, &pos);
  const std::string unit = s.substr(pos);
  double mult = 1;
  if (unit == "K" || unit == "k") mult = 1024.0;
  else if (unit == "M" || unit == "m") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "g") mult = 1024.0 * 1024 * 1024;
  else if (!unit.empty()) throw std::invalid_argument("size '" + s + "': use a number with K, M or G");
  return static_cast<int64_t>(v * mult);
}

torch::ScalarType parse_dtype(const std::string& s) {
  if (s == "float" || s == "fp32") return torch::kFloat;
  if (s == "half" || s == "fp16") return torch::kHalf;
  if (s == "bfloat16" || s == "bf16") return torch::kBFloat16;
  throw std::invalid_argument("--dtype '" + s + "': use float, half or bfloat16");
}

void device_sync(const at::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index());
}

// The slowest rank's value (every rank gets it).
double max_over_ranks(ds::Communicator& world, double v) {
  auto t = torch::tensor({v}, torch::kDouble);
  world.all_reduce(t, ds::ReduceOp::Max);
  return t.item<double>();
}

void bench_collectives(const Options& o, ds::DistributedContext& ctx, ds::Communicator& comm, at::Device device) {
  const auto dtype = parse_dtype(o.dtype);
  const int n = comm.world_size();
  const double bus_factor = n > 1 ? 2.0 * (n - 1) / n : 0.0;
  const int64_t esize = static_cast<int64_t>(c10::elementSize(dtype));
  if (ctx.rank() == 0) {
    std::printf("# all-reduce (in place, sum) on %d ranks, backend %s, device %s; busbw = algbw * 2(n-1)/n\n", n,
                comm.backend().c_str(), device.str().c_str());
    std::printf("# %12s %12s %8s %6s %11s %12s %12s %7s\n", "size(B)", "count", "type", "redop", "time(us)",
                "algbw(GB/s)", "busbw(GB/s)", "#wrong");
  }
  double busbw_sum = 0, busbw_max = 0;
  int rows = 0;
  int64_t wrong_total = 0;
  for (int64_t bytes = parse_bytes(o.min_bytes); bytes <= parse_bytes(o.max_bytes); bytes *= 2) {
    const int64_t count = bytes / esize;
    // Small integers: the sum over ranks is exact in every dtype (< 256 for bf16 up to 16 ranks).
    const auto pattern = torch::remainder(torch::arange(count, torch::TensorOptions().dtype(torch::kLong).device(device)), 5);
    auto t = (pattern + ctx.rank()).to(dtype);
    const auto expect = (pattern * n + n * (n - 1) / 2).to(dtype);
    comm.all_reduce(t, ds::ReduceOp::Sum);
    const int64_t wrong = t.ne(expect).sum().item<int64_t>();
    auto wrong_all = torch::tensor({static_cast<double>(wrong)}, torch::kDouble);
    ctx.world_communicator()->all_reduce(wrong_all, ds::ReduceOp::Sum);
    wrong_total += static_cast<int64_t>(wrong_all.item<double>());

    for (int i = 0; i < o.warmup; ++i) comm.all_reduce(t, ds::ReduceOp::Sum);
    device_sync(device);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < o.iters; ++i) comm.all_reduce(t, ds::ReduceOp::Sum);
    device_sync(device);
    const double local = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / o.iters;
    const double seconds = max_over_ranks(*ctx.world_communicator(), local);
    const double algbw = static_cast<double>(count * esize) / seconds / 1e9;
    const double busbw = algbw * bus_factor;
    busbw_sum += busbw;
    busbw_max = std::max(busbw_max, busbw);
    ++rows;
    if (ctx.rank() == 0) {
      std::printf("  %12lld %12lld %8s %6s %11.1f %12.2f %12.2f %7lld\n", static_cast<long long>(count * esize),
                  static_cast<long long>(count), c10::toString(dtype), "sum", seconds * 1e6, algbw, busbw,
                  static_cast<long long>(wrong_all.item<double>()));
    }
  }
  if (ctx.rank() == 0) {
    std::printf("# out of bounds values: %lld %s\n", static_cast<long long>(wrong_total), wrong_total ? "ERROR" : "OK");
    std::printf("# avg bus bandwidth: %.2f GB/s, peak %.2f GB/s", rows ? busbw_sum / rows : 0.0, busbw_max);
    if (n > 1) {
      std::printf(" = %.1f%% of the %.0f GB/s ring reference (goal >= 90%%)", 100.0 * busbw_max / o.ref_busbw,
                  o.ref_busbw);
    } else {
      std::printf(" (one rank: nothing crosses a link; run on several GPUs for the real figure)");
    }
    std::printf("\n");
  }
  if (wrong_total) throw std::runtime_error("all-reduce results were wrong (#wrong > 0)");
}

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(int64_t h) {
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
    qkv = register_module("qkv", torch::nn::Linear(h, 3 * h));
    proj = register_module("proj", torch::nn::Linear(h, h));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
    fc1 = register_module("fc1", torch::nn::Linear(h, 4 * h));
    fc2 = register_module("fc2", torch::nn::Linear(4 * h, h));
  }
  torch::Tensor forward(torch::Tensor x) {
    auto parts = qkv(ln1(x)).chunk(3, -1);
    x = x + proj(torch::sigmoid(parts[0]) * parts[1] + parts[2]);
    return x + fc2(torch::gelu(fc1(ln2(x))));
  }
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Block);

struct StackImpl : torch::nn::Module {
  StackImpl(int layers, int64_t h) {
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int i = 0; i < layers; ++i) blocks->push_back(Block(h));
  }
  torch::Tensor forward(torch::Tensor x) {
    for (const auto& b : *blocks) x = b->as<BlockImpl>()->forward(x);
    return x;
  }
  torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(Stack);

// ms per optimizer step, median of o.steps after 3 warm-up steps (slowest rank).
double time_steps(const Options& o, ds::DistributedContext& ctx, at::Device device, bool use_dp, bool overlap,
                  int64_t* params_out) {
  torch::manual_seed(1);
  Stack model(o.layers, o.hidden);
  ds::DeepSpeedConfig cfg;
  cfg.world_size = ctx.world_size();
  cfg.train_micro_batch_size_per_gpu = o.batch;
  cfg.gradient_accumulation_steps = 1;
  cfg.train_batch_size = static_cast<int64_t>(o.batch) * ctx.world_size();
  cfg.optimizer.present = true;
  cfg.optimizer.type = ds::OptimizerType::Adam;
  cfg.optimizer.type_name = "Adam";
  cfg.optimizer.lr = 1e-4;
  cfg.fp16.enabled = device.is_cuda();   // the CPU has no fp16 matmul in LibTorch 1.13
  cfg.fp16.loss_scale = 128;             // static: no overflow-skipped steps in the timing
  cfg.steps_per_print = 0;
  ds::EngineOptions opts;
  opts.device = device;
  opts.quiet = true;
  if (use_dp) {
    ds::DataParallelOptions dp;
    dp.overlap_comm = overlap;
    dp.bucket_cap_mb = o.bucket_cap_mb;
    opts.reducer = std::make_shared<ds::DataParallelReducer>(ctx.make_communicator(device), dp);
  }
  ds::Engine engine(model, cfg, opts);
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  *params_out = params;
  auto x = torch::randn({static_cast<int64_t>(o.batch) * o.seq, o.hidden},
                        torch::TensorOptions().device(device).dtype(engine.model_dtype()));
  std::vector<double> ms;
  for (int s = 0; s < o.steps + 3; ++s) {
    device_sync(device);
    const auto start = std::chrono::steady_clock::now();
    auto loss = engine.forward([&] { return model->forward(x).to(torch::kFloat).pow(2).mean(); });
    engine.backward(loss);
    engine.step();
    device_sync(device);
    const double local = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const double step_ms = max_over_ranks(*ctx.world_communicator(), local);
    if (s >= 3) ms.push_back(step_ms);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void bench_model(const Options& o, ds::DistributedContext& ctx, at::Device device) {
  int64_t params = 0;
  const int n = ctx.world_size();
  struct Row {
    const char* name;
    bool dp, overlap;
  };
  std::vector<Row> rows{{"overlap_comm=true", true, true}, {"overlap_comm=false", true, false}};
  if (n == 1) rows.push_back({"no reducer (1 rank)", false, false});
  if (ctx.rank() == 0) {
    std::printf("# step time: BERT-like stack, %d layers, hidden %d, micro-batch %d x seq %d, %s, %d rank(s), "
                "bucket_cap_mb %.0f\n",
                o.layers, o.hidden, o.batch, o.seq, device.is_cuda() ? "fp16" : "fp32", n, o.bucket_cap_mb);
  }
  double on_ms = 0;
  for (const auto& r : rows) {
    const double ms = time_steps(o, ctx, device, r.dp, r.overlap, &params);
    if (r.overlap) on_ms = ms;
    if (ctx.rank() == 0) {
      std::printf("  %-22s %10.2f ms/step %10.1f samples/s", r.name, ms, 1000.0 * o.batch * n / ms);
      if (!r.overlap && r.dp && on_ms > 0) std::printf("   (overlap saves %.1f%%)", 100.0 * (ms - on_ms) / ms);
      std::printf("\n");
    }
  }
  if (ctx.rank() == 0) {
    std::printf("# %lld parameters (%.1f MB of %s gradients per all-reduce)\n", static_cast<long long>(params),
                params * (device.is_cuda() ? 2.0 : 4.0) / 1e6, device.is_cuda() ? "fp16" : "fp32");
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"All-reduce bus bandwidth and data-parallel step time (run one rank per GPU under mpirun)"};
  app.add_option("--min-bytes", o.min_bytes, "smallest message, e.g. 1M")->capture_default_str();
  app.add_option("--max-bytes", o.max_bytes, "largest message, e.g. 1G")->capture_default_str();
  app.add_option("--iters", o.iters, "timed all-reduces per size")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed all-reduces per size")->capture_default_str();
  app.add_option("--dtype", o.dtype, "float, half or bfloat16")->capture_default_str();
  app.add_option("--ref-busbw", o.ref_busbw, "GB/s the peak bus bandwidth is compared with")->capture_default_str();
  app.add_flag("!--no-collectives", o.collectives, "skip the bandwidth table");
  app.add_flag("!--no-model", o.model, "skip the step-time measurement");
  app.add_option("--layers", o.layers, "model layers")->capture_default_str();
  app.add_option("--hidden", o.hidden, "model hidden size")->capture_default_str();
  app.add_option("--batch", o.batch, "micro-batch per rank")->capture_default_str();
  app.add_option("--seq", o.seq, "sequence length (rows per sample)")->capture_default_str();
  app.add_option("--steps", o.steps, "timed optimizer steps")->capture_default_str();
  app.add_option("--bucket-cap-mb", o.bucket_cap_mb, "data_parallel.bucket_cap_mb")->capture_default_str();
  app.add_flag("--cpu", o.cpu, "CPU tensors and the MPI backend (no GPU needed)");
  CLI11_PARSE(app, argc, argv);

  return ds::run_distributed([&](ds::DistributedContext& ctx) {
    const at::Device device = o.cpu ? at::Device(at::kCPU) : ctx.device();
    if (!o.cpu && !device.is_cuda()) {
      throw std::runtime_error("no CUDA device here; pass --cpu to measure the MPI backend");
    }
    if (o.collectives) {
      auto comm = ctx.make_communicator(device);
      bench_collectives(o, ctx, *comm, device);
    }
    if (o.model) bench_model(o, ctx, device);
    return 0;
  });
}
