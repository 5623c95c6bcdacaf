#include "ops/nn/gelu.h"

#include "ops/nn/nn_common.h"

namespace ds::nn {
namespace {

constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi); DeepSpeed writes 0.7978845608
constexpr double kCubic = 0.044715;

// z = x + bias in the accumulation type.
at::Tensor biased(const at::Tensor& x, const at::Tensor& bias, const char* op) {
  detail::check_device(x, op, "x");
  detail::check_device(bias, op, "bias");
  detail::check_floating(x, op, "x");
  TORCH_CHECK(x.dim() >= 1, op, ": x must be [..., I], got a scalar");
  const auto acc = detail::acc_type(x.scalar_type());
  if (!bias.defined()) return x.to(acc);
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == x.size(-1), op, ": bias must have shape [", x.size(-1),
              "] (x's last dim), got ", bias.sizes());
  return x.to(acc) + bias.to(acc);
}

}  // namespace

at::Tensor bias_gelu_forward(const at::Tensor& x, const at::Tensor& bias) {
  auto z = biased(x, bias, "bias_gelu_forward");
  auto t = at::tanh(kSqrt2OverPi * (z + kCubic * z * z * z));
  return (0.5 * z * (1 + t)).to(x.scalar_type());
}

at::Tensor bias_gelu_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& bias) {
  constexpr const char* op = "bias_gelu_backward";
  detail::check_device(grad_y, op, "grad_y");
  TORCH_CHECK(grad_y.sizes() == x.sizes(), op, ": grad_y must have x's shape ", x.sizes(), ", got ", grad_y.sizes());
  auto z = biased(x, bias, op);
  auto t = at::tanh(kSqrt2OverPi * (z + kCubic * z * z * z));
  // d/dz: 0.5 (1 + t) + 0.5 z (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 z^2)
  auto d = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * kSqrt2OverPi * (1 + 3 * kCubic * z * z);
  return (grad_y.to(z.scalar_type()) * d).to(x.scalar_type());
}

}  // namespace ds::nn
