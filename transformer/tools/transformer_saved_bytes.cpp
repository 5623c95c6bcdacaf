// transformer_saved_bytes: the bytes one DeepSpeedTransformerLayer keeps for backward, per memory
// flag, measured (not computed): each row builds the layer in the chosen dtype on the CPU, runs
// one training forward and reads back what its autograd node holds. The measurement runs at a small
// batch and is scaled to --batch after checking that it is linear in the batch (bytes at 2 x the
// small batch == 2 x bytes at the small batch, exactly); otherwise it runs at --batch itself.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "transformer/saved_bytes.h"

namespace {

struct Row {
  const char* name;
  bool attn_ckpt, invertible, gelu_ckpt;
};

int64_t measured(const ds::DeepSpeedTransformerConfig& c, int64_t batch, int64_t small, int64_t seq,
                 at::ScalarType dt) {
  const int64_t b1 = ds::transformer::measure_saved_bytes(c, small, seq, dt).total;
  const int64_t b2 = ds::transformer::measure_saved_bytes(c, 2 * small, seq, dt).total;
  if (b2 == 2 * b1 && batch % small == 0) return b1 * (batch / small);
  std::fprintf(stderr, "note: not linear in the batch at seq %lld (%lld vs 2 x %lld), measuring at batch %lld\n",
               (long long)seq, (long long)b2, (long long)b1, (long long)batch);
  return ds::transformer::measure_saved_bytes(c, batch, seq, dt).total;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Bytes saved for backward by one DeepSpeedTransformerLayer, per memory flag (measured)"};
  int64_t hidden = 1024, heads = 16, inter = 4096, batch = 8, small = 1, layers = 24;
  double attn_p = 0.1, hidden_p = 0.1;
  std::vector<int64_t> seqs{128, 512};
  std::string dtype = "fp16";
  bool post_ln = false;
  app.add_option("--hidden", hidden, "hidden size")->capture_default_str();
  app.add_option("--heads", heads, "attention heads")->capture_default_str();
  app.add_option("--intermediate", inter, "FFN size")->capture_default_str();
  app.add_option("--batch", batch, "micro-batch the table is for")->capture_default_str();
  app.add_option("--measure-batch", small, "batch the measurement runs at (scaled to --batch)")->capture_default_str();
  app.add_option("--seq", seqs, "sequence lengths")->capture_default_str();
  app.add_option("--layers", layers, "layers, for the whole-model column")->capture_default_str();
  app.add_option("--attn-dropout", attn_p, "attention dropout ratio")->capture_default_str();
  app.add_option("--hidden-dropout", hidden_p, "hidden dropout ratio")->capture_default_str();
  app.add_option("--dtype", dtype, "fp16, bf16 or fp32")
      ->check(CLI::IsMember({"fp16", "bf16", "fp32"}))
      ->capture_default_str();
  app.add_flag("--post-ln", post_ln, "post-LN layer (default pre-LN, as bing_bert)");
  CLI11_PARSE(app, argc, argv);

  const at::ScalarType dt = dtype == "fp16" ? at::kHalf : dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const int64_t elem = dt == at::kFloat ? 4 : 2;
  torch::manual_seed(0);
  ds::DeepSpeedTransformerConfig base;
  base.hidden_size = hidden;
  base.heads = heads;
  base.intermediate_size = inter;
  base.attn_dropout_ratio = attn_p;
  base.hidden_dropout_ratio = hidden_p;
  base.num_hidden_layers = layers;
  base.initializer_range = 0.02;
  base.pre_layer_norm = !post_ln;
  base.seed = 1;

  const Row rows[] = {{"none", false, false, false},
                      {"attn_dropout_checkpoint", true, false, false},
                      {"normalize_invertible", false, true, false},
                      {"gelu_checkpoint", false, false, true},
                      {"all three", true, true, true}};
  std::printf(
      "Bytes saved for backward by one %s layer: H %lld, heads %lld, I %lld, batch %lld, %s activations "
      "(LayerNorm statistics fp32, dropout masks 1 bit/element), dropout %.2g/%.2g.\n"
      "Measured on the CPU at batch %lld and 2x that (checked linear), scaled to batch %lld.\n\n",
      post_ln ? "post-LN" : "pre-LN", (long long)hidden, (long long)heads, (long long)inter, (long long)batch,
      dtype.c_str(), attn_p, hidden_p, (long long)small, (long long)batch);
  std::printf(
      "| seq | flags | saved MiB / layer | saved by the flag MiB | expected MiB | vs none | x%lld layers GiB |\n",
      (long long)layers);
  std::printf("|---|---|---|---|---|---|---|\n");
  const double mib = 1024.0 * 1024.0;
  for (int64_t seq : seqs) {
    int64_t none_bytes = 0;
    for (const Row& r : rows) {
      ds::DeepSpeedTransformerConfig c = base;
      c.attn_dropout_checkpoint = r.attn_ckpt;
      c.normalize_invertible = r.invertible;
      c.gelu_checkpoint = r.gelu_ckpt;
      const int64_t bytes = measured(c, batch, small, seq, dt);
      if (!r.attn_ckpt && !r.invertible && !r.gelu_ckpt) none_bytes = bytes;
      const auto e = ds::transformer::expected_flag_savings(base, batch, seq, elem, 4);
      const int64_t expect = (r.attn_ckpt ? e.attn_dropout_checkpoint : 0) +
                             (r.invertible ? e.normalize_invertible : 0) + (r.gelu_ckpt ? e.gelu_checkpoint : 0);
      std::printf("| %lld | %s | %.2f | %.2f | %.2f | %.1f%% | %.3f |\n", (long long)seq, r.name, bytes / mib,
                  (none_bytes - bytes) / mib, expect / mib, 100.0 * bytes / none_bytes,
                  bytes * double(layers) / (mib * 1024.0));
    }
  }
  return 0;
}
