// Fused multi-tensor Lamb (DeepSpeed FusedLamb math) in two phases around a per-tensor norm
// reduction: the trust ratio ||p|| / ||u|| needs the whole tensor's update before any element moves.
#include <cuda_runtime.h>

#include "ops/common/dispatch.cuh"
#include "ops/common/numeric.cuh"
#include "ops/optim/multi_tensor_apply.cuh"

namespace ds::optim_kernels {
namespace {

__device__ __forceinline__ float lamb_update(const LambParams& p, float m, float v, float w) {
  const float denom = p.eps_inside_sqrt ? sqrtf(v + p.eps) : sqrtf(v) + p.eps;
  return m / denom + p.weight_decay * w;
}

__device__ __forceinline__ void lamb_moments(const LambParams& p, float g, float& m, float& v) {
  g = g * p.grad_scale;
  m = p.beta1 * m + (1.f - p.beta1) * g;
  v = p.beta2 * v + (1.f - p.beta2) * g * g;
}

// Phase 1. Lists: grad (GradT), master param, exp_avg, exp_avg_sq (fp32).
template <typename GradT>
struct LambMomentsFunctor {
  LambParams p;
  int64_t num_tensors, max_chunks;

  __device__ void operator()(void* const* ptrs, int64_t start, int64_t len, int tensor, int chunk) const {
    const GradT* g = static_cast<const GradT*>(ptrs[0]) + start;
    const float* w = static_cast<const float*>(ptrs[1]) + start;
    float* m = static_cast<float*>(ptrs[2]) + start;
    float* v = static_cast<float*>(ptrs[3]) + start;
    float w_sq = 0.f, u_sq = 0.f;
    const bool aligned = pack_aligned(g) && pack_aligned(w) && pack_aligned(m) && pack_aligned(v);
    const int64_t n_vec = aligned ? len / kILP * kILP : 0;
    for (int64_t i = threadIdx.x * kILP; i < n_vec; i += kBlockThreads * kILP) {
      const Pack<GradT> gp = load_pack(g + i);
      const Pack<float> wp = load_pack(w + i);
      Pack<float> mp = load_pack(m + i), vp = load_pack(v + i);
#pragma unroll
      for (int k = 0; k < kILP; ++k) {
        lamb_moments(p, to_float(gp.v[k]), mp.v[k], vp.v[k]);
        const float u = lamb_update(p, mp.v[k], vp.v[k], wp.v[k]);
        u_sq += u * u;
        w_sq += wp.v[k] * wp.v[k];
      }
      store_pack(m + i, mp);
      store_pack(v + i, vp);
    }
    for (int64_t i = n_vec + threadIdx.x; i < len; i += kBlockThreads) {
      float mi = m[i], vi = v[i];
      lamb_moments(p, to_float(g[i]), mi, vi);
      m[i] = mi;
      v[i] = vi;
      const float u = lamb_update(p, mi, vi, w[i]);
      u_sq += u * u;
      w_sq += w[i] * w[i];
    }
    __shared__ float shared[kBlockThreads / 32];
    w_sq = block_sum(w_sq, shared);
    u_sq = block_sum(u_sq, shared);
    if (threadIdx.x == 0) {
      const int64_t at = static_cast<int64_t>(tensor) * max_chunks + chunk;
      p.scratch[at] = w_sq;
      p.scratch[num_tensors * max_chunks + at] = u_sq;
    }
  }
};

// Phase 2: one block per tensor.
__global__ void __launch_bounds__(kBlockThreads)
lamb_coeff_kernel(const float* scratch, int64_t num_tensors, int64_t max_chunks, float max_coeff,
                  float min_coeff, float* coeffs) {
  const int64_t t = blockIdx.x;
  float w_sq = 0.f, u_sq = 0.f;
  for (int64_t c = threadIdx.x; c < max_chunks; c += kBlockThreads) {
    w_sq += scratch[t * max_chunks + c];
    u_sq += scratch[(num_tensors + t) * max_chunks + c];
  }
  __shared__ float shared[kBlockThreads / 32];
  w_sq = block_sum(w_sq, shared);
  u_sq = block_sum(u_sq, shared);
  if (threadIdx.x == 0) {
    const float w_norm = sqrtf(w_sq), u_norm = sqrtf(u_sq);
    float coeff = 1.f;
    if (w_norm != 0.f && u_norm != 0.f) coeff = fminf(fmaxf(w_norm / u_norm, min_coeff), max_coeff);
    coeffs[t] = coeff;
  }
}

// Phase 3. Lists: master param, exp_avg, exp_avg_sq[, model copy (ModelT)].
template <typename ModelT, bool kCopy>
struct LambApplyFunctor {
  LambParams p;

  __device__ void operator()(void* const* ptrs, int64_t start, int64_t len, int tensor, int) const {
    float* w = static_cast<float*>(ptrs[0]) + start;
    const float* m = static_cast<const float*>(ptrs[1]) + start;
    const float* v = static_cast<const float*>(ptrs[2]) + start;
    ModelT* out = nullptr;
    if constexpr (kCopy) out = static_cast<ModelT*>(ptrs[3]) + start;
    const float scaled_step = p.step_size * p.coeffs[tensor];
    bool aligned = pack_aligned(w) && pack_aligned(m) && pack_aligned(v);
    if constexpr (kCopy) aligned = aligned && pack_aligned(out);
    const int64_t n_vec = aligned ? len / kILP * kILP : 0;
    for (int64_t i = threadIdx.x * kILP; i < n_vec; i += kBlockThreads * kILP) {
      Pack<float> wp = load_pack(w + i);
      const Pack<float> mp = load_pack(m + i), vp = load_pack(v + i);
      Pack<ModelT> op;
#pragma unroll
      for (int k = 0; k < kILP; ++k) {
        wp.v[k] = wp.v[k] - scaled_step * lamb_update(p, mp.v[k], vp.v[k], wp.v[k]);
        if constexpr (kCopy) op.v[k] = from_float<ModelT>(wp.v[k]);
      }
      store_pack(w + i, wp);
      if constexpr (kCopy) store_pack(out + i, op);
    }
    for (int64_t i = n_vec + threadIdx.x; i < len; i += kBlockThreads) {
      const float wi = w[i] - scaled_step * lamb_update(p, m[i], v[i], w[i]);
      w[i] = wi;
      if constexpr (kCopy) out[i] = from_float<ModelT>(wi);
    }
  }
};

}  // namespace

void launch_fused_lamb(const TensorLists& lists_grad_p_m_v, const TensorLists& lists_p_m_v_copy,
                       const LambParams& p, cudaStream_t stream) {
  const int64_t n = lists_grad_p_m_v.num_tensors();
  if (n == 0) return;
  if (lists_p_m_v_copy.num_tensors() != n) {
    throw std::invalid_argument("launch_fused_lamb: the two list sets hold " + std::to_string(n) + " and " +
                                std::to_string(lists_p_m_v_copy.num_tensors()) + " tensors");
  }
  const int64_t max_chunks = max_chunks_per_tensor(lists_grad_p_m_v);
  DS_DISPATCH_SCALAR(p.grad_kind, GradT, [&] {
    multi_tensor_apply<4>(lists_grad_p_m_v, LambMomentsFunctor<GradT>{p, n, max_chunks}, stream);
  });
  lamb_coeff_kernel<<<static_cast<unsigned>(n), kBlockThreads, 0, stream>>>(p.scratch, n, max_chunks, p.max_coeff,
                                                                            p.min_coeff, p.coeffs);
  DS_CUDA_CHECK_LAUNCH();
  if (!p.write_model_copy) {
    multi_tensor_apply<3>(lists_p_m_v_copy, LambApplyFunctor<float, false>{p}, stream);
    return;
  }
  DS_DISPATCH_HALF(p.model_kind, ModelT, [&] {
    multi_tensor_apply<4>(lists_p_m_v_copy, LambApplyFunctor<ModelT, true>{p}, stream);
  });
}

}  // namespace ds::optim_kernels
