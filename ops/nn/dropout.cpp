#include "ops/nn/dropout.h"

#include <ATen/Parallel.h>

#include "ops/nn/nn_common.h"
#include "ops/nn/philox.h"

namespace ds::nn {
namespace {

void check_ratio(double ratio, const char* op) {
  TORCH_CHECK(ratio >= 0.0 && ratio < 1.0, op, ": dropout ratio must be in [0, 1), got ", ratio);
}

void check_mask(const at::Tensor& mask, int64_t numel, const char* op) {
  TORCH_CHECK(mask.defined(), op, ": a dropout ratio > 0 needs the mask made by the forward, got none");
  detail::check_device(mask, op, "mask");
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 1 && mask.size(0) == dropout_mask_bytes(numel), op,
              ": mask must be uint8 [", dropout_mask_bytes(numel), "] (bit-packed, ", numel, " elements), got ",
              mask.scalar_type(), " ", mask.sizes());
}

// keep / (1 - ratio) as a tensor of x's accumulation type, shaped like x.
at::Tensor keep_scale(const at::Tensor& mask, const at::Tensor& x, double ratio) {
  const auto acc = detail::acc_type(x.scalar_type());
  return dropout_mask_unpack(mask, x.sizes()).to(acc) * (1.0 / (1.0 - ratio));
}

}  // namespace

int64_t dropout_mask_bytes(int64_t numel) { return (numel + 7) / 8; }

at::Tensor dropout_make_mask(int64_t numel, double ratio, uint64_t seed, uint64_t offset, at::Device device) {
  constexpr const char* op = "dropout_make_mask";
  check_ratio(ratio, op);
  TORCH_CHECK(numel >= 0, op, ": numel must be >= 0, got ", numel);
  TORCH_CHECK(!device.is_cuda(), op, ": the CUDA path is not built yet (transformer kernel part 2, issue 12)");
  TORCH_CHECK(device.is_cpu(), op, ": only CPU masks are supported, got device ", device);
  const int64_t nbytes = dropout_mask_bytes(numel);
  auto mask = at::empty({nbytes}, at::TensorOptions().dtype(at::kByte).device(device));
  uint8_t* out = mask.data_ptr<uint8_t>();
  const float r = static_cast<float>(ratio);
  at::parallel_for(0, nbytes, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) out[k] = dropout_mask_byte(seed, offset, static_cast<uint64_t>(k), r);
  });
  if (numel % 8 != 0) out[nbytes - 1] &= static_cast<uint8_t>((1u << (numel % 8)) - 1u);
  return mask;
}

at::Tensor dropout_mask_unpack(const at::Tensor& mask, at::IntArrayRef sizes) {
  constexpr const char* op = "dropout_mask_unpack";
  const int64_t numel = c10::multiply_integers(sizes);
  check_mask(mask, numel, op);
  auto bit = at::tensor({1, 2, 4, 8, 16, 32, 64, 128}, mask.options());
  return mask.unsqueeze(1).bitwise_and(bit).ne(0).reshape({-1}).narrow(0, 0, numel).view(sizes);
}

DropoutOutput dropout_forward(const at::Tensor& x, double ratio, uint64_t seed, uint64_t offset) {
  constexpr const char* op = "dropout_forward";
  detail::check_device(x, op, "x");
  detail::check_floating(x, op, "x");
  check_ratio(ratio, op);
  if (ratio == 0.0) return {x, at::Tensor()};
  DropoutOutput out;
  out.mask = dropout_make_mask(x.numel(), ratio, seed, offset, x.device());
  out.y = (x.to(detail::acc_type(x.scalar_type())) * keep_scale(out.mask, x, ratio)).to(x.scalar_type());
  return out;
}

at::Tensor dropout_apply(const at::Tensor& x, const at::Tensor& mask, double ratio) {
  constexpr const char* op = "dropout_apply";
  detail::check_device(x, op, "x");
  check_ratio(ratio, op);
  if (ratio == 0.0) return x;
  check_mask(mask, x.numel(), op);
  return (x.to(detail::acc_type(x.scalar_type())) * keep_scale(mask, x, ratio)).to(x.scalar_type());
}

DropoutOutput bias_dropout_residual_forward(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& residual,
                                            double ratio, uint64_t seed, uint64_t offset) {
  constexpr const char* op = "bias_dropout_residual_forward";
  detail::check_device(x, op, "x");
  detail::check_device(bias, op, "bias");
  detail::check_device(residual, op, "residual");
  detail::check_floating(x, op, "x");
  check_ratio(ratio, op);
  TORCH_CHECK(residual.sizes() == x.sizes(), op, ": residual must have x's shape ", x.sizes(), ", got ",
              residual.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == x.size(-1)), op, ": bias must have shape [",
              x.size(-1), "] (x's last dim), got ", bias.sizes());
  const auto acc = detail::acc_type(x.scalar_type());
  auto z = bias.defined() ? x.to(acc) + bias.to(acc) : x.to(acc);
  DropoutOutput out;
  if (ratio > 0.0) {
    out.mask = dropout_make_mask(x.numel(), ratio, seed, offset, x.device());
    z = z * keep_scale(out.mask, x, ratio);
  }
  out.y = (residual.to(acc) + z).to(x.scalar_type());
  return out;
}

}  // namespace ds::nn
