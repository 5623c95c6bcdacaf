// Torch boundary of the bias + GELU kernels (ops/nn/gelu.cu).
#include <c10/cuda/CUDAGuard.h>

#include "ops/nn/cuda_boundary.h"

namespace ds::nn::cuda {

using detail::cptr;
using detail::mptr;

at::Tensor bias_gelu_forward(const at::Tensor& x_, const at::Tensor& bias_) {
  constexpr const char* op = "bias_gelu_forward (CUDA)";
  const at::Tensor x = detail::operand(x_, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) <= INT_MAX, op, ": x must be [..., n], got ", x.sizes());
  const at::Tensor bias = detail::optional_operand(bias_, x, op, "bias");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == x.size(-1)), op, ": bias must be [",
              x.size(-1), "], got ", bias.sizes());
  at::Tensor y = at::empty(x.sizes(), x.options());
  kern::BiasGeluParams p;
  p.kind = scalar_kind_of(x, "x");
  p.rows = detail::rows_of(x);
  p.n = static_cast<int>(x.size(-1));
  p.x = cptr(x);
  p.bias = cptr(bias);
  p.y = mptr(y);
  kern::launch_bias_gelu_forward(p, current_stream());
  return y;
}

std::pair<at::Tensor, at::Tensor> bias_gelu_backward(const at::Tensor& grad_y_, const at::Tensor& x_,
                                                     const at::Tensor& bias_, bool want_bias_grad, bool in_place) {
  constexpr const char* op = "bias_gelu_backward (CUDA)";
  TORCH_CHECK(!in_place || grad_y_.is_contiguous(), op, ": in place needs a contiguous grad_y");
  const at::Tensor g = detail::operand(grad_y_, op, "grad_y");
  const c10::cuda::CUDAGuard guard(g.device());
  const int n = detail::row_length(g, op);
  const int64_t rows = detail::rows_of(g);
  const at::Tensor x = detail::optional_operand(x_, g, op, "x");
  const at::Tensor bias = detail::optional_operand(bias_, g, op, "bias");
  TORCH_CHECK(x.defined() && x.sizes() == g.sizes(), op, ": x must have grad_y's shape ", g.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == n), op, ": bias must be [", n, "]");
  TORCH_CHECK(!want_bias_grad || bias.defined(), op, ": a bias gradient needs the bias");
  at::Tensor gx = in_place ? g : at::empty(g.sizes(), g.options());
  at::Tensor gb, ws;
  kern::BiasGeluBackwardParams p;
  p.kind = scalar_kind_of(g, "grad_y");
  p.rows = rows;
  p.n = n;
  p.grad_y = cptr(g);
  p.x = cptr(x);
  p.bias = cptr(bias);
  p.grad_x = mptr(gx);
  if (want_bias_grad) {
    gb = at::empty({n}, bias.options());
    ws = detail::float_workspace(kern::column_partials_floats(rows, n, 1), g);
    p.grad_bias = mptr(gb);
    p.workspace = ws.data_ptr<float>();
  }
  kern::launch_bias_gelu_backward(p, current_stream());
  return {gx, gb};
}

}  // namespace ds::nn::cuda
