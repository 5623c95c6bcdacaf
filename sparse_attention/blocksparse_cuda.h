// CUDA side of the block-sparse ops (internal; implemented in blocksparse_cuda.cpp and
// fused_attention_cuda.cpp, compiled only when DS_WITH_CUDA). The public functions in blocksparse.h
// validate shapes and dtypes and dispatch here for CUDA tensors; these functions check what the
// kernels rely on (device, dtype, contiguity, alignment, divisibility) and name the offending values.
#pragma once

#include <torch/types.h>

#include "sparse_attention/blocksparse.h"
#include "sparse_attention/layout_tables.h"

namespace ds::sparse_cuda {

// The five primitives of blocksparse_cpu.h, same shapes and meaning, on CUDA tensors of float32,
// float16 or bfloat16 (computed natively with float32 accumulation).
at::Tensor sdd(const at::Tensor& a, const at::Tensor& b, bool trans_a, bool trans_b, const LayoutTables& t);
at::Tensor dsd(const at::Tensor& s, const at::Tensor& b, bool trans_a, bool trans_b, const LayoutTables& t);
at::Tensor dds(const at::Tensor& a, const at::Tensor& s, bool trans_a, bool trans_b, const LayoutTables& t);
at::Tensor softmax_forward(const at::Tensor& x, const LayoutTables& t, const SoftmaxOptions& o);
at::Tensor softmax_backward(const at::Tensor& y, const at::Tensor& dy, const LayoutTables& t);

// The fused attention (fused/): q, k, v [Z, H, S, D] (any S: padded to whole blocks inside, the
// padding passed to the kernel as s_valid), differentiable in q, k, v. The caller has checked
// fused_attention_unsupported() is empty.
at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const LayoutTables& t,
                           const AttentionOptions& o);

}  // namespace ds::sparse_cuda
