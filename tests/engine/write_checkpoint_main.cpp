// Writes checkpoints for test_checkpoint_python.py: an fp32 TinyMLP and an fp16 elementwise model,
// each trained two steps, plus expected.txt listing every module tensor (name, dtype, shape, sum) so
// the Python side can check what torch.load returns without sharing code with the C++ writer.
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>

#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"

namespace {

void train_and_save(ds::Engine& e, torch::nn::Module& m, const std::function<torch::Tensor(int)>& loss,
                    const std::string& dir, std::ofstream& expected, const std::string& label) {
  for (int s = 0; s < 2; ++s) {
    e.backward(loss(s));
    e.step();
  }
  e.save_checkpoint(dir, std::nullopt, {{"epoch", int64_t{7}}, {"note", std::string(label)}});
  for (const auto& item : m.named_parameters()) {
    const auto& t = item.value();
    expected << label << " " << item.key() << " " << c10::toString(t.scalar_type()) << " ";
    for (int64_t d = 0; d < t.dim(); ++d) expected << (d ? "x" : "") << t.size(d);
    expected << " " << std::setprecision(17) << t.to(torch::kFloat64).sum().item<double>() << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " <output dir>\n";
    return 2;
  }
  const std::string out = argv[1];
  std::ofstream expected(out + "/expected.txt");
  torch::manual_seed(0);
  {
    ds::test::TinyMLP m(6, 16, 3, 0.0);
    ds::Engine e(m, ds::test::config(2, 1), ds::test::quiet_cpu());
    train_and_save(e, *m, [&](int s) { auto [x, y] = ds::test::batch(s, 0, 2, 6, 3); return ds::test::mse(m->forward(x), y); },
                   out + "/fp32", expected, "fp32");
  }
  {
    ds::test::Elementwise m(5);
    auto c = ds::test::config(2, 1);
    c.fp16.enabled = true;
    ds::Engine e(m, c, ds::test::quiet_cpu());
    train_and_save(e, *m,
                   [&](int s) { auto [x, y] = ds::test::batch(s, 0, 2, 5, 5); return ds::test::mse(m->forward(x.to(torch::kHalf)), y); },
                   out + "/fp16", expected, "fp16");
  }
  return 0;
}
