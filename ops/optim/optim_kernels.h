// Launchers of the fused multi-tensor optimizer kernels (fused_adam.cu, fused_lamb.cu,
// grad_stats.cu): raw device pointers and plain params structs, no Torch header. The Torch boundary
// (optim_cuda.cpp) checks tensors and fills these; the kernels never see a tensor.
//
// A call covers many tensors ("lists" in apex's multi_tensor_apply sense): list d holds, for tensor t,
// the pointer ptrs[d][t]; every list has the same numel per tensor (sizes[t]). The launcher cuts the
// tensors into fixed-size chunks, one thread block per chunk, and packs as many (tensor, chunk) pairs
// into one launch as the kernel-argument budget allows.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "ops/common/scalar_kind.h"

namespace ds::optim_kernels {

constexpr int kMaxListDepth = 5;

struct TensorLists {
  int depth = 0;
  std::vector<void*> ptrs[kMaxListDepth];  // ptrs[d][t]: device pointer of tensor t in list d
  std::vector<int64_t> sizes;              // numel of tensor t (same in every list)
  int64_t num_tensors() const { return static_cast<int64_t>(sizes.size()); }
};

// Elements handled by one thread block. Large enough to amortise the per-block setup, small enough
// that a BERT-sized parameter list fills many blocks per SM (apex uses the same 64 Ki).
constexpr int64_t kChunkSize = 65536;

// Chunks of the largest tensor: the stride of per-(tensor, chunk) scratch arrays.
int64_t max_chunks_per_tensor(const TensorLists& l);

// Adam / AdamW (DeepSpeed FusedAdam math, csrc/adam/multi_tensor_adam.cu).
// Lists: grad (grad_kind), fp32 master param, fp32 exp_avg, fp32 exp_avg_sq[, model copy (model_kind)].
struct AdamParams {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.f;
  float bias_correction1 = 1.f, bias_correction2 = 1.f;  // 1 - beta^step, or 1 without bias correction
  float grad_scale = 1.f;                                // gradients are multiplied by this first
  bool adam_w_mode = true;                               // decoupled decay; false: L2 added to the gradient
  ScalarKind grad_kind = ScalarKind::F32;
  bool write_model_copy = false;                         // list 4 present: p rounded to model_kind
  ScalarKind model_kind = ScalarKind::F16;
};
void launch_fused_adam(const TensorLists& lists, const AdamParams& p, cudaStream_t stream);

// Lamb (DeepSpeed FusedLamb math, csrc/lamb/fused_lamb_cuda_kernel.cu), per-tensor trust ratio.
// Phase 1 (lists grad, p, m, v): update m, v; per (tensor, chunk) partial sums of p^2 and u^2 into
//   scratch (2 * num_tensors * max_chunks floats, zero-initialised by the caller).
// Phase 2: one block per tensor sums its partials in a fixed order and writes coeffs[t] =
//   clamp(||p|| / ||u||, min_coeff, max_coeff) (1 when either norm is 0).
// Phase 3 (lists p, m, v[, model copy]): recompute u from the stored m, v, p (bitwise the value of
//   phase 1) and apply p -= step_size * coeff * u.
struct LambParams {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.f;
  float step_size = 1e-3f;      // lr * sqrt(1 - beta2^t) / (1 - beta1^t), or lr without bias correction
  float grad_scale = 1.f;
  float max_coeff = 10.f, min_coeff = 0.01f;
  bool eps_inside_sqrt = false;
  ScalarKind grad_kind = ScalarKind::F32;
  bool write_model_copy = false;
  ScalarKind model_kind = ScalarKind::F16;
  float* scratch = nullptr;     // [2, num_tensors, max_chunks], zeroed
  float* coeffs = nullptr;      // [num_tensors] out: the trust ratio used per tensor
};
// lists_grad_p_m_v: depth 4; lists_p_m_v_copy: depth 3 or 4 (same tensors, same order).
void launch_fused_lamb(const TensorLists& lists_grad_p_m_v, const TensorLists& lists_p_m_v_copy,
                       const LambParams& p, cudaStream_t stream);

// Sum of squares and count of non-finite values over one list of gradients of one dtype.
// partials: [2, num_tensors, max_chunks] floats, zeroed by the caller; out: double[2] device memory
// receiving {sum of squares, non-finite count}. Deterministic (fixed reduction order, no atomics).
void launch_grad_stats(const TensorLists& grads, ScalarKind kind, float* partials, double* out,
                       cudaStream_t stream);

}  // namespace ds::optim_kernels
