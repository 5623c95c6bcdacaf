// Sum of squares and non-finite count over a list of gradients: the global gradient norm for
// clipping and the fp16 overflow check come from one pass over the gradients.
#include <cuda_runtime.h>

#include "ops/common/dispatch.cuh"
#include "ops/common/numeric.cuh"
#include "ops/optim/multi_tensor_apply.cuh"

namespace ds::optim_kernels {
namespace {

template <typename GradT>
struct GradStatsFunctor {
  float* partials;  // [2, num_tensors, max_chunks]
  int64_t num_tensors, max_chunks;

  __device__ void operator()(void* const* ptrs, int64_t start, int64_t len, int tensor, int chunk) const {
    const GradT* g = static_cast<const GradT*>(ptrs[0]) + start;
    float sq = 0.f, bad = 0.f;  // bad counts up to kChunkSize, exact in float
    auto add = [&](float x) {
      if (isfinite(x)) {
        sq += x * x;
      } else {
        bad += 1.f;
      }
    };
    const int64_t n_vec = pack_aligned(g) ? len / kILP * kILP : 0;
    for (int64_t i = threadIdx.x * kILP; i < n_vec; i += kBlockThreads * kILP) {
      const Pack<GradT> gp = load_pack(g + i);
#pragma unroll
      for (int k = 0; k < kILP; ++k) add(to_float(gp.v[k]));
    }
    for (int64_t i = n_vec + threadIdx.x; i < len; i += kBlockThreads) add(to_float(g[i]));
    __shared__ float shared[kBlockThreads / 32];
    sq = block_sum(sq, shared);
    bad = block_sum(bad, shared);
    if (threadIdx.x == 0) {
      const int64_t at = static_cast<int64_t>(tensor) * max_chunks + chunk;
      partials[at] = sq;
      partials[num_tensors * max_chunks + at] = bad;
    }
  }
};

// One block: double-precision total over every (tensor, chunk) partial, in a fixed order.
__global__ void __launch_bounds__(kBlockThreads)
grad_stats_total_kernel(const float* partials, int64_t count, double* out) {
  double sq = 0.0, bad = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kBlockThreads) {
    sq += partials[i];
    bad += partials[count + i];
  }
  __shared__ double shared[kBlockThreads / 32];
  sq = block_sum(sq, shared);
  bad = block_sum(bad, shared);
  if (threadIdx.x == 0) {
    out[0] = sq;
    out[1] = bad;
  }
}

}  // namespace

void launch_grad_stats(const TensorLists& grads, ScalarKind kind, float* partials, double* out, cudaStream_t stream) {
  const int64_t n = grads.num_tensors();
  const int64_t max_chunks = max_chunks_per_tensor(grads);
  if (n > 0) {
    DS_DISPATCH_SCALAR(kind, GradT, [&] {
      multi_tensor_apply<1>(grads, GradStatsFunctor<GradT>{partials, n, max_chunks}, stream);
    });
  }
  grad_stats_total_kernel<<<1, kBlockThreads, 0, stream>>>(partials, n * max_chunks, out);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::optim_kernels
