// BertForPreTrainingPreLN on the CPU: the loss and every parameter's gradient against a plain
// float64 composition of ATen ops written from modelingpreln.py; the transformer-kernel and
// sparse-attention switches; the sparse padding fix; the SparseAttentionUtils model functions; init.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <map>

#include "bert_test_util.h"
#include "engine/config/ds_config.h"
#include "examples/bing_bert/model/bert_model.h"
#include "sparse_attention/nm/nm_attention.h"
#include "sparse_attention/sparse_self_attention.h"
#include "sparse_attention/sparsity_config.h"

namespace ds::bert {
namespace {

using test::random_batch;
using test::tiny_config;
using Params = std::map<std::string, at::Tensor>;

// ---------------------------------------------------------------------------------------------
// The reference: bing_bert's forward written out with ATen ops on a name -> tensor map.
at::Tensor ln(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  const at::Tensor mean = x.mean(-1, true);
  const at::Tensor var = (x - mean).pow(2).mean(-1, true);
  return (x - mean) / (var + eps).sqrt() * w + b;
}

at::Tensor gelu_erf(const at::Tensor& x) { return x * 0.5 * (1.0 + at::erf(x / std::sqrt(2.0))); }

at::Tensor lin(const at::Tensor& x, const Params& p, const std::string& name) {
  return at::matmul(x, p.at(name + ".weight").t()) + p.at(name + ".bias");
}

// q, k, v [B, heads, S, d], BERT's additive mask [B, 1, 1, S] -> context [B, heads, S, d].
using AttentionFn = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>;

// attention empty: dense softmax attention, as bing_bert.
at::Tensor reference_loss(const Params& p, const BertConfig& c, const PretrainingBatch& b,
                          const AttentionFn& attention = {}) {
  const int64_t B = b.input_ids.size(0), S = b.input_ids.size(1), H = c.hidden_size;
  const int64_t heads = c.num_attention_heads, d = H / heads;
  const double eps = c.layer_norm_eps;
  at::Tensor x = p.at("bert.embeddings.word_embeddings.weight").index_select(0, b.input_ids.reshape(-1)).view({B, S, H}) +
                 p.at("bert.embeddings.position_embeddings.weight").slice(0, 0, S).unsqueeze(0) +
                 p.at("bert.embeddings.token_type_embeddings.weight").index_select(0, b.segment_ids.reshape(-1)).view({B, S, H});
  x = ln(x, p.at("bert.embeddings.LayerNorm.weight"), p.at("bert.embeddings.LayerNorm.bias"), eps);
  const at::Tensor mask = (1.0 - b.input_mask.to(torch::kDouble)).view({B, 1, 1, S}) * -10000.0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string pre = "bert.encoder.layer." + std::to_string(l) + ".";
    const at::Tensor h = ln(x, p.at(pre + "PreAttentionLayerNorm.weight"), p.at(pre + "PreAttentionLayerNorm.bias"), eps);
    auto split = [&](const at::Tensor& t) { return t.view({B, S, heads, d}).permute({0, 2, 1, 3}); };
    const at::Tensor q = split(lin(h, p, pre + "attention.self.query"));
    const at::Tensor k = split(lin(h, p, pre + "attention.self.key"));
    const at::Tensor v = split(lin(h, p, pre + "attention.self.value"));
    at::Tensor ctx;
    if (attention) {
      ctx = attention(q, k, v, mask);
    } else {
      const at::Tensor probs =
          at::softmax(at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d)) + mask, -1);
      ctx = at::matmul(probs, v);
    }
    ctx = ctx.permute({0, 2, 1, 3}).reshape({B, S, H});
    const at::Tensor y = x + lin(ctx, p, pre + "attention.output.dense");
    const at::Tensor z = ln(y, p.at(pre + "PostAttentionLayerNorm.weight"), p.at(pre + "PostAttentionLayerNorm.bias"), eps);
    x = y + lin(gelu_erf(lin(z, p, pre + "intermediate.dense_act")), p, pre + "output.dense");
  }
  x = ln(x, p.at("bert.encoder.FinalLayerNorm.weight"), p.at("bert.encoder.FinalLayerNorm.bias"), eps);
  const at::Tensor pooled = at::tanh(lin(x.select(1, 0), p, "bert.pooler.dense_act"));
  // MLM over every position, then the masked ones picked: the same as gathering first.
  at::Tensor t = gelu_erf(lin(x, p, "cls.predictions.transform.dense_act"));
  t = ln(t, p.at("cls.predictions.transform.LayerNorm.weight"), p.at("cls.predictions.transform.LayerNorm.bias"), eps);
  const at::Tensor logits = at::matmul(t, p.at("bert.embeddings.word_embeddings.weight").t()) + p.at("cls.predictions.bias");
  const at::Tensor logp = at::log_softmax(logits.reshape({B * S, -1}), -1);
  const at::Tensor labels = b.masked_lm_labels.reshape(-1);
  const at::Tensor keep = labels.ne(-1);
  const at::Tensor picked = logp.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1);
  const at::Tensor mlm = -(picked * keep.to(torch::kDouble)).sum() / keep.sum().to(torch::kDouble);
  const at::Tensor nsp_logp = at::log_softmax(lin(pooled, p, "cls.seq_relationship"), -1);
  const at::Tensor nsp = -nsp_logp.gather(1, b.next_sentence_labels.unsqueeze(1)).mean();
  return mlm + nsp;
}

double max_rel_error(const at::Tensor& a, const at::Tensor& ref) {
  return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item<double>();
}

// Both gradients float64 from different orders of the same math: 1e-9 relative leaves room for
// rounding (~1e-13 seen), not for a wrong term. The key bias is the exception: it shifts every score
// of a query row by the same amount, which softmax ignores, so its exact gradient is 0 and both
// sides hold rounding noise only.
void expect_same_grad(const std::string& name, const at::Tensor& g, const at::Tensor& ref) {
  ASSERT_TRUE(g.defined()) << name << " has no gradient";
  ASSERT_TRUE(ref.defined()) << name;
  if (name.size() >= 8 && name.compare(name.size() - 8, 8, "key.bias") == 0) {
    EXPECT_LT(g.abs().max().item<double>(), 1e-12) << name;
    EXPECT_LT(ref.abs().max().item<double>(), 1e-12) << name;
    return;
  }
  EXPECT_GT(ref.abs().max().item<double>(), 1e-6) << name << ": the reference gradient is zero";
  EXPECT_LT(max_rel_error(g, ref), 1e-9) << name;
}

TEST(BertModel, ForwardBackwardMatchesFloat64Composition) {
  torch::manual_seed(1);
  const BertConfig c = tiny_config();
  BertForPreTrainingPreLN model(c);
  model->to(torch::kDouble);
  model->train();
  const PretrainingBatch b = random_batch(3, 13, c.vocab_size, 7);
  const at::Tensor loss = model->forward(b);
  loss.backward();

  Params ref;
  for (const auto& item : model->named_parameters()) {
    ref[item.key()] = item.value().detach().clone().requires_grad_(true);
  }
  const at::Tensor ref_loss = reference_loss(ref, c, b);
  ref_loss.backward();
  EXPECT_NEAR(loss.item<double>(), ref_loss.item<double>(), 1e-9 * std::abs(ref_loss.item<double>()));
  size_t checked = 0;
  for (const auto& item : model->named_parameters()) {
    expect_same_grad(item.key(), item.value().grad(), ref.at(item.key()).grad());
    ++checked;
  }
  // 5 embedding tensors + 16 per layer + final LN 2 + pooler 2 + MLM bias, transform 4 + NSP 2.
  EXPECT_EQ(checked, 5u + 16u * 2 + 2 + 2 + 5 + 2);
}

TEST(BertModel, NamesVocabularyPaddingAndInit) {
  torch::manual_seed(2);
  BertConfig c = tiny_config();
  c.initializer_range = 0.02;
  c.num_hidden_layers = 8;
  c.hidden_size = 256;
  c.num_attention_heads = 4;
  c.intermediate_size = 512;
  BertForPreTrainingPreLN model(c);
  const auto p = model->named_parameters();
  EXPECT_EQ(p["bert.embeddings.word_embeddings.weight"].size(0), 40);   // 37 padded to a multiple of 8
  EXPECT_EQ(BertConfig{}.padded_vocab_size(), 30528);                   // bert-base-uncased's 30522
  EXPECT_EQ(p["cls.predictions.bias"].size(0), 40);
  for (const char* name : {"bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.7.output.dense.bias",
                           "bert.encoder.layer.3.PreAttentionLayerNorm.weight", "bert.encoder.FinalLayerNorm.bias",
                           "bert.pooler.dense_act.weight", "cls.predictions.transform.dense_act.weight",
                           "cls.predictions.transform.LayerNorm.weight", "cls.seq_relationship.weight"}) {
    EXPECT_TRUE(p.contains(name)) << name;
  }
  EXPECT_FALSE(p.contains("cls.predictions.decoder.weight"));  // tied: listed once
  auto stddev = [](const at::Tensor& t) { return t.std().item<double>(); };
  // nn.Linear / nn.Embedding: N(0, 0.02); output layers N(0, 0.02 / sqrt(2 * 8)) = N(0, 0.005).
  EXPECT_NEAR(stddev(p["bert.encoder.layer.2.attention.self.key.weight"]), 0.02, 0.001);
  EXPECT_NEAR(stddev(p["bert.embeddings.word_embeddings.weight"]), 0.02, 0.002);
  EXPECT_NEAR(stddev(p["bert.encoder.layer.2.attention.output.dense.weight"]), 0.005, 0.0003);
  EXPECT_NEAR(stddev(p["bert.encoder.layer.2.output.dense.weight"]), 0.005, 0.0003);
  EXPECT_EQ(p["bert.encoder.layer.2.attention.self.key.bias"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(p["cls.predictions.bias"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(p["bert.encoder.layer.5.PostAttentionLayerNorm.weight"].min().item<double>(), 1.0);
  // LinearActivation keeps kaiming_uniform(a = sqrt 5): U(+-1/sqrt(fan_in)), std bound/sqrt(3).
  const double bound = 1.0 / std::sqrt(256.0);
  const at::Tensor inter = p["bert.encoder.layer.1.intermediate.dense_act.weight"];
  EXPECT_LE(inter.abs().max().item<double>(), bound);
  EXPECT_GT(inter.abs().max().item<double>(), 0.95 * bound);
  EXPECT_NEAR(stddev(inter), bound / std::sqrt(3.0), 0.002);
  EXPECT_GT(p["bert.pooler.dense_act.bias"].abs().max().item<double>(), 0.0);
  // Layers get their own draws (bing_bert's deep copies would make these equal).
  EXPECT_FALSE(torch::equal(inter, p["bert.encoder.layer.2.intermediate.dense_act.weight"]));
}

// ---------------------------------------------------------------------------------------------
DeepSpeedConfig ds_config(const std::string& extra) {
  return load_config_text(R"({"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "Lamb", "params": {}})" +
                          extra + "}");
}

// The plain model's weights in a transformer-kernel model: attn_qkvw = cat(Wq, Wk, Wv), norm_w =
// PreAttentionLayerNorm, attn_nw = PostAttentionLayerNorm (reference §2.3).
void copy_plain_into_kernel(BertForPreTrainingPreLN& plain, BertForPreTrainingPreLN& kernel) {
  const torch::NoGradGuard no_grad;
  auto src = plain->named_parameters();
  auto dst = kernel->named_parameters();
  for (const auto& item : dst) {
    if (src.contains(item.key())) item.value().copy_(src[item.key()]);
  }
  for (int64_t l = 0; l < plain->config().num_hidden_layers; ++l) {
    const std::string s = "bert.encoder.layer." + std::to_string(l) + ".", k = s;
    auto cat3 = [&](const char* what) {
      return torch::cat({src[s + "attention.self.query." + what], src[s + "attention.self.key." + what],
                         src[s + "attention.self.value." + what]});
    };
    dst[k + "attn_qkvw"].copy_(cat3("weight"));
    dst[k + "attn_qkvb"].copy_(cat3("bias"));
    dst[k + "attn_ow"].copy_(src[s + "attention.output.dense.weight"]);
    dst[k + "attn_ob"].copy_(src[s + "attention.output.dense.bias"]);
    dst[k + "attn_nw"].copy_(src[s + "PostAttentionLayerNorm.weight"]);
    dst[k + "attn_nb"].copy_(src[s + "PostAttentionLayerNorm.bias"]);
    dst[k + "inter_w"].copy_(src[s + "intermediate.dense_act.weight"]);
    dst[k + "inter_b"].copy_(src[s + "intermediate.dense_act.bias"]);
    dst[k + "output_w"].copy_(src[s + "output.dense.weight"]);
    dst[k + "output_b"].copy_(src[s + "output.dense.bias"]);
    dst[k + "norm_w"].copy_(src[s + "PreAttentionLayerNorm.weight"]);
    dst[k + "norm_b"].copy_(src[s + "PreAttentionLayerNorm.bias"]);
  }
}

TEST(BertModel, TransformerKernelSwitchBuildsAndMatchesThePlainLayer) {
  const BertConfig c = tiny_config();
  const DeepSpeedConfig ds = ds_config(R"(, "transformer_kernel": {"attn_dropout_checkpoint": true})");
  const BertModelOptions o = model_options_from_ds_config(c, ds, 42, 64);
  ASSERT_EQ(o.kind, EncoderKind::TransformerKernel);
  EXPECT_EQ(o.kernel.batch_size, 4);
  EXPECT_EQ(o.kernel.hidden_size, 80);
  EXPECT_EQ(o.kernel.heads, 2);
  EXPECT_EQ(o.kernel.intermediate_size, 72);
  EXPECT_EQ(o.kernel.num_hidden_layers, 2);
  EXPECT_EQ(o.kernel.seed, 42);
  EXPECT_TRUE(o.kernel.pre_layer_norm);
  EXPECT_TRUE(o.kernel.attn_dropout_checkpoint);
  EXPECT_DOUBLE_EQ(o.kernel.initializer_range, 0.2);

  torch::manual_seed(3);
  BertForPreTrainingPreLN plain(c);
  BertForPreTrainingPreLN kernel(c, o);
  EXPECT_EQ(kernel->encoder_kind(), EncoderKind::TransformerKernel);
  const auto kp = kernel->named_parameters();
  EXPECT_TRUE(kp.contains("bert.encoder.layer.1.attn_qkvw"));
  EXPECT_TRUE(kp.contains("bert.encoder.FinalLayerNorm.weight"));
  copy_plain_into_kernel(plain, kernel);
  plain->to(torch::kDouble);
  kernel->to(torch::kDouble);
  const PretrainingBatch b = random_batch(2, 19, c.vocab_size, 11);
  const at::Tensor lp = plain->forward(b);
  const at::Tensor lk = kernel->forward(b);
  lk.backward();
  // The kernel's GELU is the tanh approximation (|tanh form - erf form| < 2e-4 everywhere); with
  // the same weights the losses agree to that order, a wrong weight mapping or layer order is O(1).
  EXPECT_NEAR(lk.item<double>(), lp.item<double>(), 1e-3 * lp.item<double>());
  EXPECT_NE(lk.item<double>(), lp.item<double>());  // the kernel really ran
  for (const auto& item : kernel->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
  }
}

TEST(BertModel, SparseAttentionSwitchPadsToBlocksAndMasksThePaddedKeys) {
  const BertConfig c = tiny_config();
  // Dense "sparsity" (every block present) must give exactly the plain model's loss; seq 19 is
  // padded to 32, and that holds only if the 13 padded keys are masked out.
  const DeepSpeedConfig dense = ds_config(R"(, "sparse_attention": {"mode": "dense", "block": 16})");
  const BertModelOptions o = model_options_from_ds_config(c, dense, 0, 64);
  ASSERT_EQ(o.kind, EncoderKind::SparseAttention);
  EXPECT_EQ(o.sparse_max_seq_length, 2048);
  torch::manual_seed(4);
  BertForPreTrainingPreLN plain(c);
  BertForPreTrainingPreLN sparse(c, o);
  {
    const torch::NoGradGuard no_grad;
    auto dst = sparse->named_parameters();
    for (const auto& item : plain->named_parameters()) dst[item.key()].copy_(item.value());
  }
  EXPECT_TRUE(sparse->named_buffers().contains("bert.encoder.layer.0.attention.self.sparse_self_attention.master_layout"));
  plain->to(torch::kDouble);
  sparse->to(torch::kDouble);
  const PretrainingBatch b = random_batch(3, 19, c.vocab_size, 5);
  const at::Tensor lp = plain->forward(b);
  const at::Tensor ls = sparse->forward(b);
  EXPECT_NEAR(ls.item<double>(), lp.item<double>(), 1e-10 * lp.item<double>());
  ls.backward();
  lp.backward();
  auto sp = sparse->named_parameters();
  for (const auto& item : plain->named_parameters()) expect_same_grad(item.key(), sp[item.key()].grad(), item.value().grad());

  // A real sparse structure builds and trains on the CPU too.
  const DeepSpeedConfig fixed = ds_config(
      R"(, "sparse_attention": {"mode": "fixed", "block": 16, "num_local_blocks": 2, "num_global_blocks": 1,
            "different_layout_per_head": true, "num_different_global_patterns": 2})");
  BertForPreTrainingPreLN fixed_model(c, model_options_from_ds_config(c, fixed, 0, 64));
  const at::Tensor lf = fixed_model->forward(random_batch(2, 50, c.vocab_size, 6));
  lf.backward();
  EXPECT_TRUE(std::isfinite(lf.item<double>()));
  EXPECT_TRUE(fixed_model->named_parameters()["bert.encoder.layer.1.attention.self.query.weight"].grad().defined());
}

TEST(BertModel, DynamicNMSwitchPadsNothingAndMatchesTheNMComposition) {
  const BertConfig c = tiny_config();
  const BertModelOptions o =
      model_options_from_ds_config(c, ds_config(R"(, "sparse_attention": {"mode": "dynamic_nm", "n": 2, "m": 4})"), 0, 64);
  ASSERT_EQ(o.kind, EncoderKind::SparseAttention);
  EXPECT_EQ(o.sparsity->name(), "dynamic_nm");
  torch::manual_seed(5);
  BertForPreTrainingPreLN model(c, o);
  EXPECT_EQ(model->bert->sparse_block, 0);  // no blocks: the input is not padded
  EXPECT_FALSE(model->named_buffers().contains("bert.encoder.layer.0.attention.self.sparse_self_attention.master_layout"));
  model->to(torch::kDouble);
  // Seq 19: not a multiple of 4; random_batch pads some sequences, so the key padding mask matters.
  const PretrainingBatch b = random_batch(3, 19, c.vocab_size, 5);
  const at::Tensor loss = model->forward(b);
  loss.backward();

  Params ref;
  for (const auto& item : model->named_parameters()) ref[item.key()] = item.value().detach().clone().requires_grad_(true);
  const AttentionFn nm = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
    NMOptions opt;
    opt.n = 2;
    opt.m = 4;
    opt.key_padding_mask = mask.view({q.size(0), q.size(2)});
    return nm_sparse_attention_reference(q, k, v, opt);
  };
  const at::Tensor ref_loss = reference_loss(ref, c, b, nm);
  ref_loss.backward();
  EXPECT_NEAR(loss.item<double>(), ref_loss.item<double>(), 1e-10 * std::abs(ref_loss.item<double>()));
  for (const auto& item : model->named_parameters())
    expect_same_grad(item.key(), item.value().grad(), ref.at(item.key()).grad());
  // The selection is not a no-op: dense attention gives another loss.
  const double dense = reference_loss(ref, c, b).item<double>();
  EXPECT_GT(std::abs(dense - ref_loss.item<double>()), 1e-6 * std::abs(dense));
}

TEST(BertModel, KernelAndSparseTogetherIsAConfigError) {
  // The parser refuses the pair; a config assembled in code is refused by the model builder.
  EXPECT_THROW(ds_config(R"(, "transformer_kernel": {}, "sparse_attention": {"mode": "fixed"})"), ConfigError);
  DeepSpeedConfig ds = ds_config("");
  ds.transformer_kernel = TransformerKernelConfig{};
  ds.sparse_attention = SparseAttentionConfig{};
  try {
    model_options_from_ds_config(tiny_config(), ds, 0, 64);
    FAIL() << "no error";
  } catch (const ModelConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("do not support Sparse Attention"), std::string::npos) << e.what();
  }
  // A kernel section that contradicts the model names the key.
  try {
    model_options_from_ds_config(tiny_config(), ds_config(R"(, "transformer_kernel": {"hidden_size": 64})"), 0, 64);
    FAIL() << "no error";
  } catch (const ModelConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("transformer_kernel.hidden_size"), std::string::npos) << e.what();
  }
}

TEST(BertModel, ReplaceSelfAttentionKeepsTheProjectionWeights) {
  const BertConfig c = tiny_config();
  torch::manual_seed(5);
  BertForPreTrainingPreLN model(c);
  model->to(torch::kDouble);
  const PretrainingBatch b = random_batch(2, 21, c.vocab_size, 9);
  const double before = model->forward(b).item<double>();
  const at::Tensor q = model->named_parameters()["bert.encoder.layer.1.attention.self.query.weight"];
  replace_model_self_attention_with_sparse_self_attention(*model, 256, std::make_shared<DenseSparsityConfig>(2, 16));
  EXPECT_EQ(model->encoder_kind(), EncoderKind::SparseAttention);
  EXPECT_EQ(model->config().max_position_embeddings, 256);
  const auto p = model->named_parameters();
  // The same Linear modules, so the same parameter tensors.
  EXPECT_TRUE(p["bert.encoder.layer.1.attention.self.query.weight"].is_same(q));
  model->to(torch::kDouble);  // the new layout buffers
  EXPECT_NEAR(model->forward(b).item<double>(), before, 1e-10 * before);

  BertModelOptions ko = model_options_from_ds_config(c, ds_config(R"(, "transformer_kernel": {})"), 1, 64);
  BertForPreTrainingPreLN kernel(c, ko);
  EXPECT_THROW(replace_model_self_attention_with_sparse_self_attention(*kernel, 256,
                                                                       std::make_shared<DenseSparsityConfig>(2, 16)),
               std::invalid_argument);
}

TEST(BertModel, ExtendPositionEmbeddingTilesTheTable) {
  torch::manual_seed(6);
  BertForPreTrainingPreLN model(tiny_config());
  const at::Tensor before = model->bert->embeddings->position_embeddings->weight.detach().clone();
  EXPECT_EQ(extend_position_embedding(*model, 150), 150);
  const at::Tensor after = model->bert->embeddings->position_embeddings->weight;
  ASSERT_EQ(after.size(0), 150);
  EXPECT_TRUE(torch::equal(after.slice(0, 64, 128), before));
  EXPECT_TRUE(torch::equal(after.slice(0, 128, 150), before.slice(0, 0, 22)));
  EXPECT_EQ(model->config().max_position_embeddings, 150);
  // Sequences longer than the table are a clear error, not an index crash.
  BertForPreTrainingPreLN small(tiny_config());
  try {
    small->forward(random_batch(1, 65, 37, 1));
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("max_position_embeddings"), std::string::npos) << e.what();
  }
}

TEST(BertModel, FlopCountFormula) {
  BertConfig c;  // BERT-base, vocab 30528 after padding
  const double S = 128, H = 768, I = 3072, L = 12, V = 30528, M = 20;
  const double expected = L * (2 * S * (4 * H * H + 2 * H * I) + 4 * S * S * H) + 2 * M * (H * H + H * V) + 2 * (H * H + 2 * H);
  EXPECT_DOUBLE_EQ(forward_flops_per_sequence(c, 128, 20), expected);
  // About 23.3 GFLOP forward per sequence: 22.3 in the layers, 0.96 in the masked-token head.
  EXPECT_NEAR(expected / 1e9, 23.3, 0.1);
}

TEST(BertConfigParse, ErrorsNameTheField) {
  auto expect_error = [](const char* json, const char* needle) {
    try {
      parse_bert_config(nlohmann::json::parse(json), "m.json: bert_model_config");
      FAIL() << "no error for " << json;
    } catch (const ModelConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"hidden_size": 100, "num_attention_heads": 12})", "m.json: bert_model_config.num_attention_heads");
  expect_error(R"({"hiden_size": 768})", "bert_model_config.hiden_size: unknown key");
  expect_error(R"({"vocab_size": "big"})", "bert_model_config.vocab_size: expected an integer");
  expect_error(R"({"hidden_act": "elu"})", "bert_model_config.hidden_act");
  const BertConfig c = parse_bert_config(nlohmann::json::parse(R"({"vocab_size": 119547, "hidden_size": 1024,
      "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096})"), "x");
  EXPECT_EQ(c.padded_vocab_size(), 119552);
  EXPECT_EQ(c.head_size(), 64);
}

}  // namespace
}  // namespace ds::bert
