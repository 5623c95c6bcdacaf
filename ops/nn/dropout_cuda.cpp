// Torch boundary of the dropout kernels (ops/nn/dropout.cu): masks bit-identical to the CPU path's
// for the same (seed, offset), dropout forward/apply, and the dropout backward fused with the
// column sums of its result (a bias gradient).
#include <c10/cuda/CUDAGuard.h>

#include "ops/nn/cuda_boundary.h"

namespace ds::nn::cuda {

using detail::cptr;
using detail::mptr;

namespace {

at::Tensor checked_mask(const at::Tensor& mask, const at::Tensor& x, const char* op) {
  TORCH_CHECK(mask.defined(), op, ": a dropout ratio > 0 needs the mask made by the forward, got none");
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 1 && mask.size(0) == dropout_mask_bytes(x.numel()),
              op, ": mask must be uint8 [", dropout_mask_bytes(x.numel()), "] (bit-packed, ", x.numel(),
              " elements), got ", mask.scalar_type(), " ", mask.sizes());
  DS_CHECK_SAME_DEVICE(mask, x, "mask", "x");
  return mask.contiguous();
}

}  // namespace

at::Tensor make_mask(int64_t numel, double ratio, uint64_t seed, uint64_t offset, at::Device device) {
  constexpr const char* op = "dropout_make_mask (CUDA)";
  detail::check_ratio(ratio, op);
  TORCH_CHECK(device.is_cuda(), op, ": device must be CUDA, got ", device);
  TORCH_CHECK(numel >= 0, op, ": numel must be >= 0, got ", numel);
  const c10::cuda::CUDAGuard guard(device);
  at::Tensor mask = at::empty({dropout_mask_bytes(numel)}, at::TensorOptions().dtype(at::kByte).device(device));
  kern::DropoutFlatParams p;
  p.numel = numel;
  p.mask_out = mask.data_ptr<uint8_t>();
  p.drop = detail::site({ratio, seed, offset});
  kern::launch_dropout_flat(p, current_stream());
  return mask;
}

DropoutOutput dropout_forward(const at::Tensor& x_, double ratio, uint64_t seed, uint64_t offset) {
  constexpr const char* op = "dropout_forward (CUDA)";
  detail::check_ratio(ratio, op);
  if (ratio == 0.0) return {x_, at::Tensor()};
  const at::Tensor x = detail::operand(x_, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  DropoutOutput out;
  out.mask = detail::mask_bytes(x.numel(), x);
  out.y = at::empty(x.sizes(), x.options());
  kern::DropoutFlatParams p;
  p.kind = scalar_kind_of(x, "x");
  p.numel = x.numel();
  p.x = cptr(x);
  p.mask_out = out.mask.data_ptr<uint8_t>();
  p.drop = detail::site({ratio, seed, offset});
  p.y = mptr(out.y);
  kern::launch_dropout_flat(p, current_stream());
  return out;
}

at::Tensor dropout_apply(const at::Tensor& x_, const at::Tensor& mask_, double ratio, bool in_place) {
  constexpr const char* op = "dropout_apply (CUDA)";
  detail::check_ratio(ratio, op);
  if (ratio == 0.0) return x_;
  TORCH_CHECK(!in_place || x_.is_contiguous(), op, ": in-place dropout needs a contiguous x");
  const at::Tensor x = detail::operand(x_, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor mask = checked_mask(mask_, x, op);
  at::Tensor y = in_place ? x : at::empty(x.sizes(), x.options());
  kern::DropoutFlatParams p;
  p.kind = scalar_kind_of(x, "x");
  p.numel = x.numel();
  p.x = cptr(x);
  p.mask_in = mask.data_ptr<uint8_t>();
  p.drop.scale = detail::site({ratio, 0, 0}).scale;
  p.y = mptr(y);
  kern::launch_dropout_flat(p, current_stream());
  return y;
}

std::pair<at::Tensor, at::Tensor> dropout_apply_colsum(const at::Tensor& x_, const at::Tensor& mask_, double ratio) {
  constexpr const char* op = "dropout_apply_colsum (CUDA)";
  detail::check_ratio(ratio, op);
  const at::Tensor x = detail::operand(x_, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const int n = detail::row_length(x, op);
  const int64_t rows = detail::rows_of(x);
  kern::DropoutColsumParams p;
  p.kind = scalar_kind_of(x, "x");
  p.rows = rows;
  p.n = n;
  p.x = cptr(x);
  at::Tensor y = x, mask;
  if (ratio > 0.0) {
    mask = checked_mask(mask_, x, op);
    y = at::empty(x.sizes(), x.options());
    p.mask = mask.data_ptr<uint8_t>();
    p.scale = detail::site({ratio, 0, 0}).scale;
    p.y = mptr(y);
  }
  at::Tensor colsum = at::empty({n}, x.options());
  const at::Tensor ws = detail::float_workspace(kern::column_partials_floats(rows, n, 1), x);
  p.colsum = mptr(colsum);
  p.workspace = ws.data_ptr<float>();
  kern::launch_dropout_colsum(p, current_stream());
  return {y, colsum};
}

}  // namespace ds::nn::cuda
