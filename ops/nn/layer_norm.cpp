#include "ops/nn/layer_norm.h"

#include "ops/nn/nn_common.h"

namespace ds::nn {
namespace {

constexpr const char* kFwd = "layer_norm_forward";

int64_t hidden_of(const at::Tensor& x, const at::Tensor& gamma, const char* op) {
  TORCH_CHECK(x.dim() >= 1 && x.numel() > 0, op, ": x must be a non-empty tensor [..., H], got ", x.sizes());
  const int64_t h = x.size(-1);
  TORCH_CHECK(gamma.dim() == 1 && gamma.size(0) == h, op, ": gamma must have shape [", h, "] (x's last dim), got ",
              gamma.sizes());
  return h;
}

void check_stat(const at::Tensor& s, int64_t rows, const char* op, const char* name) {
  TORCH_CHECK(s.defined() && s.numel() == rows, op, ": ", name, " must hold one value per row (", rows, "), got ",
              s.defined() ? s.sizes() : at::IntArrayRef{});
}

// Shared tail of both backward forms. xhat: [rows, H] acc; rstd: [rows] acc.
LayerNormGrads backward_from_xhat(const at::Tensor& grad_y, const at::Tensor& xhat, const at::Tensor& rstd,
                                  const at::Tensor& gamma, const at::Tensor& grad_residual, const at::Tensor& like) {
  const auto acc = xhat.scalar_type();
  const int64_t h = xhat.size(1);
  auto g = grad_y.reshape({-1, h}).to(acc);
  auto gg = g * gamma.to(acc);
  // d x = rstd * (gg - mean(gg) - xhat * mean(gg * xhat)), all per row.
  auto dx = rstd.unsqueeze(1) * (gg - gg.mean(1, true) - xhat * (gg * xhat).mean(1, true));
  if (grad_residual.defined()) dx = dx + grad_residual.reshape({-1, h}).to(acc);
  LayerNormGrads out;
  out.grad_x = dx.to(like.scalar_type()).view(like.sizes());
  out.grad_gamma = (g * xhat).sum(0).to(gamma.scalar_type());
  out.grad_beta = g.sum(0).to(gamma.scalar_type());
  return out;
}

void check_backward_args(const at::Tensor& grad_y, const at::Tensor& ref, const at::Tensor& grad_residual,
                         const char* op, const char* ref_name) {
  detail::check_device(grad_y, op, "grad_y");
  detail::check_device(ref, op, ref_name);
  detail::check_device(grad_residual, op, "grad_residual");
  TORCH_CHECK(grad_y.sizes() == ref.sizes(), op, ": grad_y must have ", ref_name, "'s shape ", ref.sizes(), ", got ",
              grad_y.sizes());
  TORCH_CHECK(!grad_residual.defined() || grad_residual.sizes() == ref.sizes(), op, ": grad_residual must have shape ",
              ref.sizes(), ", got ", grad_residual.sizes());
}

}  // namespace

void check_invertible_gamma(const at::Tensor& gamma, const char* what) {
  const auto zeros = gamma.eq(0);
  const int64_t n = zeros.sum().item<int64_t>();
  if (n == 0) return;
  const int64_t first = zeros.nonzero().flatten()[0].item<int64_t>();
  TORCH_CHECK(false, "normalize_invertible: ", what, " has ", n, " zero entr", (n == 1 ? "y" : "ies"),
              " (first at index ", first,
              "); the invertible LayerNorm backward divides by it. "
              "Turn normalize_invertible off or keep the LayerNorm weights non-zero");
}

LayerNormOutput layer_norm_forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, double eps) {
  detail::check_device(x, kFwd, "x");
  detail::check_device(gamma, kFwd, "gamma");
  detail::check_device(beta, kFwd, "beta");
  detail::check_floating(x, kFwd, "x");
  const int64_t h = hidden_of(x, gamma, kFwd);
  TORCH_CHECK(beta.sizes() == gamma.sizes(), kFwd, ": beta must have shape [", h, "], got ", beta.sizes());
  TORCH_CHECK(eps >= 0, kFwd, ": eps must be >= 0, got ", eps);

  const auto acc = detail::acc_type(x.scalar_type());
  auto x2 = x.reshape({-1, h}).to(acc);
  LayerNormOutput out;
  out.mean = x2.mean(1);
  auto xc = x2 - out.mean.unsqueeze(1);
  out.var = (xc * xc).mean(1) + eps;
  auto y = xc * out.var.rsqrt().unsqueeze(1) * gamma.to(acc) + beta.to(acc);
  out.y = y.to(x.scalar_type()).view(x.sizes());
  return out;
}

LayerNormGrads layer_norm_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& gamma,
                                   const at::Tensor& mean, const at::Tensor& var, const at::Tensor& grad_residual) {
  constexpr const char* op = "layer_norm_backward";
  check_backward_args(grad_y, x, grad_residual, op, "x");
  detail::check_device(gamma, op, "gamma");
  const int64_t h = hidden_of(x, gamma, op);
  const int64_t rows = x.numel() / h;
  check_stat(mean, rows, op, "mean");
  check_stat(var, rows, op, "var");
  const auto acc = detail::acc_type(x.scalar_type());
  auto rstd = var.reshape({rows}).to(acc).rsqrt();
  auto xhat = (x.reshape({rows, h}).to(acc) - mean.reshape({rows, 1}).to(acc)) * rstd.unsqueeze(1);
  return backward_from_xhat(grad_y, xhat, rstd, gamma, grad_residual, x);
}

LayerNormGrads layer_norm_backward_invertible(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& gamma,
                                              const at::Tensor& beta, const at::Tensor& var,
                                              const at::Tensor& grad_residual) {
  constexpr const char* op = "layer_norm_backward_invertible";
  check_backward_args(grad_y, y, grad_residual, op, "y");
  detail::check_device(gamma, op, "gamma");
  detail::check_device(beta, op, "beta");
  const int64_t h = hidden_of(y, gamma, op);
  TORCH_CHECK(beta.sizes() == gamma.sizes(), op, ": beta must have shape [", h, "], got ", beta.sizes());
  const int64_t rows = y.numel() / h;
  check_stat(var, rows, op, "var");
  check_invertible_gamma(gamma, "gamma");
  const auto acc = detail::acc_type(y.scalar_type());
  auto rstd = var.reshape({rows}).to(acc).rsqrt();
  auto xhat = (y.reshape({rows, h}).to(acc) - beta.to(acc)) / gamma.to(acc);
  return backward_from_xhat(grad_y, xhat, rstd, gamma, grad_residual, y);
}

}  // namespace ds::nn
