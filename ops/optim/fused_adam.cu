// Fused multi-tensor Adam / AdamW: one launch updates many parameters (DeepSpeed FusedAdam math).
#include <cuda_runtime.h>

#include "ops/common/dispatch.cuh"
#include "ops/common/numeric.cuh"
#include "ops/optim/multi_tensor_apply.cuh"

namespace ds::optim_kernels {
namespace {

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
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < len; i += kBlockThreads) {
      float gi = to_float(g[i]) * p.grad_scale;
      float wi = w[i];
      if (!p.adam_w_mode) gi = gi + p.weight_decay * wi;  // L2: decay joins the gradient
      const float mi = p.beta1 * m[i] + (1.f - p.beta1) * gi;
      const float vi = p.beta2 * v[i] + (1.f - p.beta2) * gi * gi;
      const float denom = sqrtf(vi / p.bias_correction2) + p.eps;
      float update = (mi / p.bias_correction1) / denom;
      if (p.adam_w_mode) update = update + p.weight_decay * wi;  // decoupled decay
      wi = wi - p.lr * update;
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
