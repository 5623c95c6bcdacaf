// DataParallelReducer: the Engine's GradientReducer for data parallelism (DDP-style buckets).
//
//  - broadcast_parameters: every parameter and buffer takes rank 0's values (coalesced per dtype);
//    first the ranks compare a signature of their tensor lists (count, elements, dtypes and shapes)
//    so different models fail with a message instead of a hang or silent garbage.
//  - Buckets: the optimized parameters in reverse order (the order backward produces gradients),
//    cut at data_parallel.bucket_cap_mb (default 25 MB) of wire bytes, the first bucket at
//    data_parallel.first_bucket_cap_mb (default 1 MB) so communication starts early; a new bucket also
//    starts where the wire dtype changes. Each bucket is one flat tensor in the wire dtype.
//  - Overlap (data_parallel.overlap_comm, default on): a post-hook on each parameter's gradient
//    accumulator (torch::autograd::impl::grad_accumulator(p)->add_post_hook, in LibTorch 1.13 and
//    2.x) copies the accumulated gradient into its bucket during the backward of the boundary
//    micro-step; when a bucket is full it is all-reduced at once (MPI: on the communicator's thread;
//    NCCL: on its stream), buckets always in order so every rank issues the same collectives. The
//    rest of backward runs meanwhile. Micro-steps before the boundary do not communicate. With
//    overlap off every bucket is packed and reduced after backward.
//  - Gradient accumulation: the bucket gets the whole accumulated gradient. When the Engine keeps
//    it outside param.grad() (bf16 training: fp32 accumulators folded after each backward), the
//    accumulator handed to end_backward() of the previous micro-step is remembered and added to the
//    new micro-step's gradient in the hook (the same float32 sum the Engine then computes).
//  - Parameters without a gradient contribute zeros, so every rank reduces the same buckets.
//  - Averaging (DeepSpeed's rules, deepspeed-behaviour.md 3.8): prescale_gradients: g *= 1/W,
//    all-reduce sum; otherwise g *= 1/predivide (if predivide != 1), sum, g *= predivide/W (if
//    predivide != W). The scaling is done on the bucket, in the wire dtype.
//  - Wire dtype: communication_data_type if set, else float32 if fp32_allreduce, else the gradient's
//    own dtype (fp32 training: fp32; fp16: fp16 as DeepSpeed; bf16: the fp32 accumulators; DeepSpeed
//    sends bf16 by default, which rounds the accumulated gradient to 8 bits before summing: set
//    "communication_data_type": "bf16" for that and half the traffic).
//  - end_backward at the boundary waits for every bucket and copies the averages into the engine's
//    gradient tensors (in place; new tensors where there were none).
//  - reduce_grad_stats: MAX over ranks of {sum of squares, non-finite count}; the averaged
//    gradients are identical on every rank, so this only removes rounding differences between ranks'
//    norm kernels, and a non-finite value on any rank (already spread by the average) skips the step
//    everywhere.
//  - Threads: hooks may run on autograd's device threads; one mutex guards the bucket state.
//    One compute stream per device is assumed (the hooks pack on the current stream).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "engine/comm/communicator.h"
#include "engine/config/ds_config.h"
#include "engine/grad_reducer.h"

namespace ds {

struct DataParallelOptions {
  double bucket_cap_mb = 25.0;
  double first_bucket_cap_mb = 1.0;
  bool overlap_comm = true;
  bool prescale_gradients = false;
  double gradient_predivide_factor = 1.0;
  std::optional<at::ScalarType> wire_dtype;   // nullopt: each gradient's own dtype

  static DataParallelOptions from_config(const DeepSpeedConfig& config);
};

class DataParallelReducer final : public GradientReducer {
 public:
  DataParallelReducer(std::shared_ptr<Communicator> comm, DataParallelOptions options = {});
  ~DataParallelReducer() override;
  DataParallelReducer(const DataParallelReducer&) = delete;
  DataParallelReducer& operator=(const DataParallelReducer&) = delete;

  int rank() const override;
  int world_size() const override;
  void broadcast_parameters(const std::vector<at::Tensor>& tensors) override;
  void begin_backward(bool boundary, const std::vector<at::Tensor>& params) override;
  void end_backward(bool boundary, std::vector<at::Tensor>& grads) override;
  void reduce_grad_stats(at::Tensor& stats) override;
  void barrier() override;

  // For tests and benchmarks.
  struct BucketInfo {
    std::vector<size_t> params;   // indices into the params of begin_backward, in packing order
    int64_t numel = 0;
    at::ScalarType wire_dtype = at::kFloat;
  };
  std::vector<BucketInfo> bucket_layout() const;
  // Buckets whose all-reduce started inside backward (from a hook) at the last boundary.
  int64_t buckets_started_in_backward() const;
  Communicator& communicator() const;

  struct State;   // shared with the autograd hooks (they hold a weak_ptr)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace ds
