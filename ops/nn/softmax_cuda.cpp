// Torch boundary of the attention softmax kernels (ops/nn/softmax.cu): softmax + additive mask +
// attention dropout in one pass, and the backward through dropout and softmax.
#include <c10/cuda/CUDAGuard.h>

#include "ops/nn/cuda_boundary.h"

namespace ds::nn::cuda {

using detail::cptr;
using detail::mptr;

bool attn_softmax_supported(int64_t cols) { return cols > 0 && cols <= kern::kAttnSoftmaxMaxCols; }

AttnSoftmaxOutput attn_softmax_forward(const at::Tensor& scores_, const at::Tensor& mask_rows_,
                                       int64_t rows_per_batch, const DropoutSpec& drop, bool in_place) {
  constexpr const char* op = "attn_softmax_forward (CUDA)";
  TORCH_CHECK(!in_place || scores_.is_contiguous(), op, ": in place needs contiguous scores");
  const at::Tensor s = detail::operand(scores_, op, "scores");
  const c10::cuda::CUDAGuard guard(s.device());
  detail::check_ratio(drop.ratio, op);
  TORCH_CHECK(s.dim() >= 1 && attn_softmax_supported(s.size(-1)), op, ": rows of ", s.size(-1),
              " scores; the kernel takes 1 .. ", kern::kAttnSoftmaxMaxCols);
  const int64_t rows = detail::rows_of(s), cols = s.size(-1);
  at::Tensor mask;
  if (mask_rows_.defined()) {
    TORCH_CHECK(mask_rows_.scalar_type() == at::kFloat && mask_rows_.dim() == 2 && mask_rows_.size(1) == cols, op,
                ": mask rows must be float32 [batches, ", cols, "], got ", mask_rows_.scalar_type(), " ",
                mask_rows_.sizes());
    TORCH_CHECK(rows_per_batch > 0 && rows == mask_rows_.size(0) * rows_per_batch, op, ": ", rows,
                " score rows do not split into ", mask_rows_.size(0), " mask rows of ", rows_per_batch);
    DS_CHECK_SAME_DEVICE(mask_rows_, s, "mask", "scores");
    mask = mask_rows_.contiguous();
  }
  AttnSoftmaxOutput out;
  out.probs = in_place ? s : at::empty(s.sizes(), s.options());
  kern::AttnSoftmaxParams p;
  p.kind = scalar_kind_of(s, "scores");
  p.rows = rows;
  p.cols = static_cast<int>(cols);
  p.rows_per_batch = mask.defined() ? rows_per_batch : 1;
  p.mask = mask.defined() ? mask.data_ptr<float>() : nullptr;
  p.scores = cptr(s);
  p.probs = mptr(out.probs);
  if (drop.ratio > 0) {
    out.dropped = at::empty(s.sizes(), s.options());
    out.mask = detail::mask_bytes(s.numel(), s);
    p.dropped = mptr(out.dropped);
    p.mask_bits = out.mask.data_ptr<uint8_t>();
    p.drop = detail::site(drop);
  }
  kern::launch_attn_softmax_forward(p, current_stream());
  return out;
}

at::Tensor attn_softmax_backward(const at::Tensor& grad_, const at::Tensor& probs_, const at::Tensor& mask_,
                                 double ratio, bool in_place) {
  constexpr const char* op = "attn_softmax_backward (CUDA)";
  TORCH_CHECK(!in_place || grad_.is_contiguous(), op, ": in place needs a contiguous grad");
  const at::Tensor g = detail::operand(grad_, op, "grad");
  const c10::cuda::CUDAGuard guard(g.device());
  detail::check_ratio(ratio, op);
  const at::Tensor probs = detail::optional_operand(probs_, g, op, "probs");
  TORCH_CHECK(probs.defined() && probs.sizes() == g.sizes(), op, ": probs must have grad's shape ", g.sizes());
  TORCH_CHECK(attn_softmax_supported(g.size(-1)), op, ": rows of ", g.size(-1), " scores; the kernel takes 1 .. ",
              kern::kAttnSoftmaxMaxCols);
  at::Tensor mask;
  if (ratio > 0) {
    TORCH_CHECK(mask_.defined() && mask_.scalar_type() == at::kByte && mask_.numel() == dropout_mask_bytes(g.numel()),
                op, ": mask must be uint8 [", dropout_mask_bytes(g.numel()), "]");
    DS_CHECK_SAME_DEVICE(mask_, g, "mask", "grad");
    mask = mask_.contiguous();
  }
  at::Tensor out = in_place ? g : at::empty(g.sizes(), g.options());
  kern::AttnSoftmaxBackwardParams p;
  p.kind = scalar_kind_of(g, "grad");
  p.rows = detail::rows_of(g);
  p.cols = static_cast<int>(g.size(-1));
  p.grad = cptr(g);
  p.probs = cptr(probs);
  p.mask_bits = mask.defined() ? mask.data_ptr<uint8_t>() : nullptr;
  p.scale = detail::site({ratio, 0, 0}).scale;
  p.grad_scores = mptr(out);
  kern::launch_attn_softmax_backward(p, current_stream());
  return out;
}

}  // namespace ds::nn::cuda
