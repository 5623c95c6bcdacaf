// How much one layer keeps for backward, measured: build a layer, run one training forward with
// grad on, and read back what its autograd node holds (saved_for_backward, transformer_function.h).
// Used by the saved-bytes test and the transformer_saved_bytes tool.
// Per layer: in a stack, a tensor two layers keep is counted in both. That happens only for post-LN
// with normalize_invertible, whose kept output is the next layer's kept input, so there the stack's
// real saving is one more [B, S, H] per layer than the per-layer figure shows.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "transformer/transformer_config.h"
#include "transformer/transformer_function.h"

namespace ds::transformer {

// cfg's sizes, ratios and flags; the layer and a random input in `dtype` on the CPU; a random
// [B, 1, 1, S] mask. The 12 parameters are not counted (see SavedBytes).
SavedBytes measure_saved_bytes(const DeepSpeedTransformerConfig& cfg, int64_t batch, int64_t seq, at::ScalarType dtype);

// What each flag should save, from the shapes alone (elem = bytes of one activation element,
// stat = bytes of one LayerNorm statistic):
//   attn_dropout_checkpoint: the dropped-out probabilities, B*heads*S*S*elem (0 when the attention
//                            dropout ratio is 0: they are soft_out itself then);
//   gelu_checkpoint:         the GELU output, B*S*I*elem;
//   normalize_invertible:    both LayerNorm means (2*B*S*stat) and add_res (B*S*H*elem), and with
//                            pre-LN also the input (B*S*H*elem).
struct FlagSavings {
  int64_t attn_dropout_checkpoint = 0;
  int64_t gelu_checkpoint = 0;
  int64_t normalize_invertible = 0;
};
FlagSavings expected_flag_savings(const DeepSpeedTransformerConfig& cfg, int64_t batch, int64_t seq, int64_t elem,
                                  int64_t stat);

}  // namespace ds::transformer
