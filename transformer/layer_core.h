// The transformer layer as two plain functions: a forward that says what it keeps for backward,
// and an explicit backward that uses only that. The autograd Function (transformer_function.h)
// and the Python op wrap them; the CUDA path of issue 12 plugs in here, behind the same structs.
//
// Dataflow (DeepSpeed's BertTransformerLayer<T>::Forward, deepspeed-behaviour.md §2.5):
//  pre-LN:  inp_norm = LN(x; norm_w, norm_b)
//           qkv = inp_norm·attn_qkvwᵀ + attn_qkvb;  P = softmax(Q·Kᵀ/√d + mask);  ctx = dropout(P)·V
//           add_res = x + dropout(ctx·attn_owᵀ + attn_ob)
//           ff1_inp = LN(add_res; attn_nw, attn_nb)
//           gelu_inp = ff1_inp·inter_wᵀ;  ff2_inp = gelu(gelu_inp + inter_b)
//           out = add_res + dropout(ff2_inp·output_wᵀ + output_b)
//  post-LN: QKV from x; add_res and ff1_inp as above;
//           inp_norm = ff1_inp + dropout(ff2_inp·output_wᵀ + output_b);  out = LN(inp_norm; norm_w, norm_b)
// Dropout sites of one call: attention probabilities, attention output, layer output; site k draws
// from Philox stream (seed, offset + k) (ops/nn/dropout.h).
//
// Where the CUDA path (transformer kernel part 2, issue 12) plugs in:
//  - layer_forward/layer_backward are compositions of the ops/nn functions and ATen GEMMs; each ops/nn
//    function dispatches on its tensors' device, so once those get CUDA kernels this composition
//    runs on the GPU unchanged (the "CPU-path composition on the GPU" of the benchmark).
//  - A fused path for CUDA tensors can replace the bodies (dispatch on input.is_cuda() at the top of
//    each) as long as it keeps this header's contract: the same SavedActivations fields per flag (the
//    saved-bytes test and tool read them back from the autograd node), masks bit-packed in
//    ops/nn/philox.h's layout, and site k of a call drawing from (seed, offset + k), so GPU and CPU
//    results can be compared with dropout on.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ds {
struct DeepSpeedTransformerConfig;
}

namespace ds::transformer {

// The 12 parameters, in DeepSpeed's order (also the order of the Python op's `params`).
struct LayerWeights {
  at::Tensor attn_qkvw;  // [3H, H], rows cat(Wq, Wk, Wv)
  at::Tensor attn_qkvb;  // [3H]
  at::Tensor attn_ow;    // [H, H]
  at::Tensor attn_ob;    // [H]
  at::Tensor attn_nw;    // [H]  pre-LN: LN before the FFN; post-LN: LN after the attention residual
  at::Tensor attn_nb;    // [H]
  at::Tensor inter_w;    // [I, H]
  at::Tensor inter_b;    // [I]
  at::Tensor output_w;   // [H, I]
  at::Tensor output_b;   // [H]
  at::Tensor norm_w;     // [H]  pre-LN: input LN; post-LN: output LN
  at::Tensor norm_b;     // [H]

  static constexpr int kCount = 12;
  static const char* name(int i);
  std::vector<at::Tensor> list() const;
  static LayerWeights from_list(const std::vector<at::Tensor>& t);
};

// What the math needs from the config, for one call.
struct LayerSpec {
  int64_t heads = 1;
  bool pre_layer_norm = true;
  double layer_norm_eps = 1e-12;
  double attn_dropout_ratio = 0;    // 0 when not training
  double hidden_dropout_ratio = 0;  // 0 when not training
  bool attn_dropout_checkpoint = false;
  bool normalize_invertible = false;
  bool gelu_checkpoint = false;
  bool stochastic_mode = false;  // accepted; the CPU path is deterministic either way

  static LayerSpec from_config(const DeepSpeedTransformerConfig& c, bool training);
  bool has_dropout() const { return attn_dropout_ratio > 0 || hidden_dropout_ratio > 0; }
};

// The Philox stream of one call: site k (0 attention probs, 1 attention output, 2 layer output)
// uses offset + k; a layer advances its offset by kDropoutSites per training call with dropout on.
struct DropoutStream {
  uint64_t seed = 0;
  uint64_t offset = 0;
};
constexpr uint64_t kDropoutSites = 3;

// What the forward keeps for backward; undefined = not kept. Names are DeepSpeed's (§2.6).
struct SavedActivations {
  at::Tensor input;       // [B,S,H] x (pre-LN without normalize_invertible; post-LN always: QKV wgrad)
  at::Tensor inp_norm;    // [B,S,H] pre-LN: LN(x); post-LN: the sum before the output LN (not with invertible)
  at::Tensor qkv_tf;      // [3,B,heads,S,d] Q, K, V after bias add and transform
  at::Tensor soft_out;    // [B,heads,S,S] softmax output
  at::Tensor ctx_bufB;    // [B,heads,S,S] dropped-out probs (not with attn_dropout_checkpoint or ratio 0)
  at::Tensor attn_o_inp;  // [B,S,H] context before the output projection
  at::Tensor add_res;     // [B,S,H] x + attention branch (not with normalize_invertible)
  at::Tensor ff1_inp;     // [B,S,H] LN(add_res)
  at::Tensor gelu_inp;    // [B,S,I] FF1 GEMM output, before bias and GELU
  at::Tensor ff2_inp;     // [B,S,I] GELU output (not with gelu_checkpoint)
  at::Tensor output;      // [B,S,H] post-LN + normalize_invertible only (the output LN is inverted from it)
  at::Tensor attn_prob_dropout_mask;     // bit-packed, B*heads*S*S bits
  at::Tensor attn_output_dropout_mask;   // bit-packed, B*S*H bits
  at::Tensor layer_output_dropout_mask;  // bit-packed, B*S*H bits
  at::Tensor attn_layer_norm_mean;       // [B*S] LN with attn_nw (not with normalize_invertible)
  at::Tensor attn_layer_norm_var;        // [B*S] includes eps
  at::Tensor layer_norm_mean;            // [B*S] LN with norm_w (not with normalize_invertible)
  at::Tensor layer_norm_var;             // [B*S]

  static constexpr int kCount = 18;
  static const char* name(int i);
  std::vector<at::Tensor> list() const;
  static SavedActivations from_list(const std::vector<at::Tensor>& t);
};

struct LayerGrads {
  at::Tensor input;
  LayerWeights params;
};

// Checks shapes, dtypes and devices of one call (TORCH_CHECK with the offending values).
// input: [B, S, H]; mask: additive [B, 1, 1, S] or undefined.
void check_layer_inputs(const at::Tensor& input, const at::Tensor& mask, const LayerWeights& w, const LayerSpec& spec);

// The input dtype the config's precision flags allow: float16 with fp16, bfloat16 with bf16, else
// float32 (or float64, for reference tests). `who` starts the message.
void check_precision(const DeepSpeedTransformerConfig& c, at::ScalarType dtype, const char* who);

// keep == nullptr: inference or no-grad, nothing kept. Otherwise fills *keep per the flags.
at::Tensor layer_forward(const at::Tensor& input, const at::Tensor& mask, const LayerWeights& w, const LayerSpec& spec,
                         DropoutStream rng, SavedActivations* keep);

// Gradients of the input and the 12 parameters from grad_output [B,S,H] and what forward kept.
LayerGrads layer_backward(const at::Tensor& grad_output, const LayerWeights& w, const LayerSpec& spec,
                          const SavedActivations& saved);

}  // namespace ds::transformer
