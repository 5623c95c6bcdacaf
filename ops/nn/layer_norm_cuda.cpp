// Torch boundary of the LayerNorm kernels (ops/nn/layer_norm.cu): the plain LayerNorm, the fused
// bias + dropout + residual (+ LayerNorm) forward, and both LayerNorm backward forms.
#include <c10/cuda/CUDAGuard.h>

#include "ops/nn/cuda_boundary.h"

namespace ds::nn::cuda {

using detail::cptr;
using detail::mptr;

bool kernel_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kHalf || t == at::kBFloat16; }

bool row_supported(int64_t n) { return n > 0 && n <= 16384 && kern::row_length_supported(static_cast<int>(n)); }

ResidualLnOutput residual_ln_forward(const at::Tensor& x_, const at::Tensor& bias_, const at::Tensor& residual_,
                                     const DropoutSpec& drop, const at::Tensor& gamma_, const at::Tensor& beta_,
                                     double eps, bool keep_sum) {
  constexpr const char* op = "residual_ln_forward (CUDA)";
  const at::Tensor x = detail::operand(x_, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const int n = detail::row_length(x, op);
  const int64_t rows = detail::rows_of(x);
  const at::Tensor bias = detail::optional_operand(bias_, x, op, "bias");
  const at::Tensor residual = detail::optional_operand(residual_, x, op, "residual");
  const at::Tensor gamma = detail::optional_operand(gamma_, x, op, "gamma");
  const at::Tensor beta = detail::optional_operand(beta_, x, op, "beta");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == n), op, ": bias must be [", n, "], got ",
              bias.sizes());
  TORCH_CHECK(!residual.defined() || residual.sizes() == x.sizes(), op, ": residual must have x's shape ", x.sizes(),
              ", got ", residual.sizes());
  TORCH_CHECK(!gamma.defined() || (gamma.dim() == 1 && gamma.size(0) == n && beta.defined() && beta.sizes() == gamma.sizes()),
              op, ": gamma and beta must both be [", n, "]");
  detail::check_ratio(drop.ratio, op);

  kern::ResidualLnParams p;
  p.kind = scalar_kind_of(x, "x");
  p.rows = rows;
  p.n = n;
  p.x = cptr(x);
  p.bias = cptr(bias);
  p.residual = cptr(residual);
  ResidualLnOutput out;
  if (drop.ratio > 0) {
    p.drop = detail::site(drop);
    out.mask = detail::mask_bytes(x.numel(), x);
    p.mask = out.mask.data_ptr<uint8_t>();
  }
  const bool ln = gamma.defined();
  if (!ln || keep_sum) {
    out.sum = at::empty(x.sizes(), x.options());
    p.sum = mptr(out.sum);
  }
  if (ln) {
    out.ln.y = at::empty(x.sizes(), x.options());
    out.ln.mean = at::empty({rows}, x.options().dtype(at::kFloat));
    out.ln.var = at::empty({rows}, x.options().dtype(at::kFloat));
    p.gamma = cptr(gamma);
    p.beta = cptr(beta);
    p.eps = static_cast<float>(eps);
    p.y = mptr(out.ln.y);
    p.mean = out.ln.mean.data_ptr<float>();
    p.var = out.ln.var.data_ptr<float>();
  }
  kern::launch_residual_ln_forward(p, current_stream());
  return out;
}

LayerNormGrads layer_norm_backward(const at::Tensor& grad_y_, const at::Tensor& grad_y2_, const at::Tensor& x_,
                                   const at::Tensor& mean_, const at::Tensor& y_, const at::Tensor& beta_,
                                   const at::Tensor& var_, const at::Tensor& gamma_,
                                   const at::Tensor& grad_residual_) {
  constexpr const char* op = "layer_norm_backward (CUDA)";
  const at::Tensor g = detail::operand(grad_y_, op, "grad_y");
  const c10::cuda::CUDAGuard guard(g.device());
  const int n = detail::row_length(g, op);
  const int64_t rows = detail::rows_of(g);
  const bool inv = !x_.defined();
  const at::Tensor g2 = detail::optional_operand(grad_y2_, g, op, "grad_y2");
  const at::Tensor x = detail::optional_operand(x_, g, op, "x");
  const at::Tensor y = inv ? detail::optional_operand(y_, g, op, "y") : at::Tensor();
  const at::Tensor gamma = detail::optional_operand(gamma_, g, op, "gamma");
  const at::Tensor beta = inv ? detail::optional_operand(beta_, g, op, "beta") : at::Tensor();
  const at::Tensor res = detail::optional_operand(grad_residual_, g, op, "grad_residual");
  TORCH_CHECK(!g2.defined() || g2.sizes() == g.sizes(), op, ": grad_y2 must have grad_y's shape");
  TORCH_CHECK(!res.defined() || res.sizes() == g.sizes(), op, ": grad_residual must have grad_y's shape");
  TORCH_CHECK(inv ? (y.defined() && y.sizes() == g.sizes()) : x.sizes() == g.sizes(), op, ": ",
              inv ? "y" : "x", " must have grad_y's shape ", g.sizes());
  TORCH_CHECK(gamma.defined() && gamma.dim() == 1 && gamma.size(0) == n, op, ": gamma must be [", n, "]");
  TORCH_CHECK(!inv || (beta.defined() && beta.sizes() == gamma.sizes()), op, ": beta must be [", n, "]");
  auto stat = [&](const at::Tensor& s, const char* name) {
    TORCH_CHECK(s.defined() && s.scalar_type() == at::kFloat && s.numel() == rows && s.device() == g.device(), op,
                ": ", name, " must be float32 with one value per row (", rows, ") on ", g.device());
    return s.contiguous();
  };
  const at::Tensor var = stat(var_, "var");
  const at::Tensor mean = inv ? at::Tensor() : stat(mean_, "mean");

  LayerNormGrads out;
  out.grad_x = at::empty(g.sizes(), g.options());
  out.grad_gamma = at::empty({n}, gamma.options());
  out.grad_beta = at::empty({n}, gamma.options());
  const at::Tensor ws = detail::float_workspace(kern::column_partials_floats(rows, n, 2), g);
  kern::LnBackwardParams p;
  p.kind = scalar_kind_of(g, "grad_y");
  p.rows = rows;
  p.n = n;
  p.grad_y = cptr(g);
  p.grad_y2 = cptr(g2);
  p.x = inv ? nullptr : cptr(x);
  p.mean = inv ? nullptr : mean.data_ptr<float>();
  p.y = cptr(y);
  p.beta = cptr(beta);
  p.var = var.data_ptr<float>();
  p.gamma = cptr(gamma);
  p.grad_residual = cptr(res);
  p.grad_x = mptr(out.grad_x);
  p.grad_gamma = mptr(out.grad_gamma);
  p.grad_beta = mptr(out.grad_beta);
  p.workspace = ws.data_ptr<float>();
  kern::launch_ln_backward(p, current_stream());
  return out;
}

}  // namespace ds::nn::cuda
