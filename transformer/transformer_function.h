// The layer as one autograd node with an explicit backward (DeepSpeedTransformerFunction).
// What the node keeps is decided by layer_forward (layer_core.h) from the memory flags; eval mode
// and no-grad keep nothing.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "transformer/layer_core.h"

namespace ds::transformer {

// One call of the layer. training: dropout on (spec's ratios are used as given) and, when grad
// mode is on and anything requires grad, activations kept for backward. In eval mode with grad
// on, the output still has a node (so gradients are not silently cut) whose backward throws, as
// DeepSpeed's asserts `config.training`.
at::Tensor transformer_layer_apply(const at::Tensor& input, const at::Tensor& mask, const LayerWeights& w,
                                   const LayerSpec& spec, DropoutStream rng, bool training);

struct SavedTensor {
  std::string name;  // SavedActivations' field name
  std::vector<int64_t> sizes;
  at::ScalarType dtype;
  int64_t bytes;  // bytes of its storage; 0 when it shares one counted before
};

// What the layer's autograd node holds for backward, read back from the node itself
// (AutogradContext's saved variables): activations, masks and statistics, each storage counted
// once. The 12 parameters are not counted (the module owns them anyway). An output without the
// layer's node (eval without grad, no-grad) holds nothing: total 0.
struct SavedBytes {
  std::vector<SavedTensor> tensors;
  int64_t total = 0;
};
SavedBytes saved_for_backward(const at::Tensor& layer_output);

}  // namespace ds::transformer
