// Fused multi-tensor Adam / AdamW: one launch updates many parameters (DeepSpeed FusedAdam math).
#include <cuda_runtime.h>

#include "ops/common/dispatch.cuh"
#include "ops/common/numeric.cuh"
#include "ops/optim/multi_tensor_apply.cuh"

namespace ds::optim_kernels {
namespace {

__device__ __forceinline__ void adam_element(const AdamParams& p, float g, float& w, float& m, float& v) {
  g = g * p.grad_scale;
  if (!p.adam_w_mode) g = g + p.weight_decay * w;  // L2: decay joins the gradient
  m = p.beta1 * m + (1.f - p.beta1) * g;
  v = p.beta2 * v + (1.f - p.beta2) * g * g;
  const float denom = sqrtf(v / p.bias_correction2) + p.eps;
  float update = (m / p.bias_correction1) / denom;
  if (p.adam_w_mode) update = update + p.weight_decay * w;  // decoupled decay
  w = w - p.lr * update;
}

// Lists: grad (GradT), master param (fp32), exp_avg (fp32), exp_avg_sq (fp32)[, model copy (ModelT)].
template <typename GradT, typename ModelT, bool kCopy>
struct AdamFunctor {
  AdamParams p;

  __device__ void operator()(void* const* ptrs, int64_t start, int64_t len, int, int) const {
    const GradT* g = static_cast<const GradT*>(ptrs[0]) + start;
    float* w = static_cast<float*>(ptrs[1]) + start;
    float* m = static_cast<float*>(ptrs[2]) + start;
    float* v = static_cast<float*>(ptrs[3]) + start;
    ModelT* out = nullptr;
    if constexpr (kCopy) out = static_cast<ModelT*>(ptrs[4]) + start;
    bool aligned = pack_aligned(g) && pack_aligned(w) && pack_aligned(m) && pack_aligned(v);
    if constexpr (kCopy) aligned = aligned && pack_aligned(out);
    const int64_t n_vec = aligned ? len / kILP * kILP : 0;
    for (int64_t i = threadIdx.x * kILP; i < n_vec; i += kBlockThreads * kILP) {
      const Pack<GradT> gp = load_pack(g + i);
      Pack<float> wp = load_pack(w + i), mp = load_pack(m + i), vp = load_pack(v + i);
      Pack<ModelT> op;
#pragma unroll
      for (int k = 0; k < kILP; ++k) {
        adam_element(p, to_float(gp.v[k]), wp.v[k], mp.v[k], vp.v[k]);
        if constexpr (kCopy) op.v[k] = from_float<ModelT>(wp.v[k]);
      }
      store_pack(w + i, wp);
      store_pack(m + i, mp);
      store_pack(v + i, vp);
      if constexpr (kCopy) store_pack(out + i, op);
    }
    for (int64_t i = n_vec + threadIdx.x; i < len; i += kBlockThreads) {
      float wi = w[i], mi = m[i], vi = v[i];
      adam_element(p, to_float(g[i]), wi, mi, vi);
      w[i] = wi;
      m[i] = mi;
      v[i] = vi;
      if constexpr (kCopy) out[i] = from_float<ModelT>(wi);
    }
  }
};

}  // namespace

void launch_fused_adam(const TensorLists& lists, const AdamParams& p, cudaStream_t stream) {
  if (lists.num_tensors() == 0) return;
  DS_DISPATCH_SCALAR(p.grad_kind, GradT, [&] {
    if (!p.write_model_copy) {
      multi_tensor_apply<4>(lists, AdamFunctor<GradT, float, false>{p}, stream);
      return;
    }
    DS_DISPATCH_HALF(p.model_kind, ModelT, [&] {
      multi_tensor_apply<5>(lists, AdamFunctor<GradT, ModelT, true>{p}, stream);
    });
  });
}

int64_t max_chunks_per_tensor(const TensorLists& l) {
  int64_t most = 0;
  for (int64_t s : l.sizes) most = s > most ? s : most;
  return (most + kChunkSize - 1) / kChunkSize;
}

}  // namespace ds::optim_kernels
