// CPU reference path of the block-sparse primitives (internal). The public functions in
// blocksparse.h validate shapes, dtypes and devices, upcast 16-bit inputs, and dispatch here for CPU
// tensors; a CUDA backend provides the same five primitives.
//
// Inputs are float32 or float64 CPU tensors whose shapes the caller has checked.
#pragma once

#include <torch/types.h>

#include "sparse_attention/blocksparse.h"
#include "sparse_attention/layout_tables.h"

namespace ds::sparse_cpu {

// [Z, nnz, b, b] = mask(op(a) op(b)); a: [Z,H,M,K] ([Z,H,K,M] if trans_a), b: [Z,H,K,N] ([Z,H,N,K] if trans_b).
at::Tensor sdd(const at::Tensor& a, const at::Tensor& b, bool trans_a, bool trans_b, const LayoutTables& t);
// [Z, H, M, N] = op(s) op(b); s: [Z, nnz, b, b].
at::Tensor dsd(const at::Tensor& s, const at::Tensor& b, bool trans_a, bool trans_b, const LayoutTables& t);
// [Z, H, M, N] = op(a) op(s).
at::Tensor dds(const at::Tensor& a, const at::Tensor& s, bool trans_a, bool trans_b, const LayoutTables& t);

// y = softmax over the present blocks of each row of (x*scale + rpe + masks); rpe [Z|1, H|1, S, S]
// and masks already in x's dtype.
at::Tensor softmax_forward(const at::Tensor& x, const LayoutTables& t, const SoftmaxOptions& o);
// y * (dy - rowsum(y * dy)): the gradient w.r.t. the pre-softmax scores (multiply by scale for x).
at::Tensor softmax_backward(const at::Tensor& y, const at::Tensor& dy, const LayoutTables& t);

// out[z, s, :] = sum (or max) over the blocks of segment s of src[z, n, :]; the blocks of s are
// order[ptr[s] .. ptr[s+1]) (order undefined: the identity). src: [Z, nnz, X]; out: [Z, S, X].
at::Tensor segment_sum(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& order = {});
at::Tensor segment_max(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& order = {});

// The cap on gathered temporaries per batched GEMM (default 128 MiB); returns the previous value.
// Tests lower it to run the chunked paths on small inputs.
int64_t set_gather_budget_bytes(int64_t bytes);

}  // namespace ds::sparse_cpu
