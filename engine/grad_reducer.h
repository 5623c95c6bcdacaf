// The seam between the Engine and data parallelism. The Engine calls these hooks at fixed points
// of every micro-step and optimizer step; the single-process implementation does nothing, and the
// data-parallel one (NCCL / MPI, issue 6) reduces gradients and statistics across ranks.
//
// Call order for one optimizer step of k micro-steps (boundary = the k-th):
//   for each micro-step:  begin_backward(boundary) -> loss.backward() -> [bf16: fold into fp32
//                         accumulators] -> end_backward(boundary, grads)
//   at the boundary:      grad_stats(grads) -> reduce_grad_stats(stats) -> overflow / clip decision
//                         -> optimizer step (or skip)
// Checkpoints: only rank() == 0 writes files; every rank calls barrier() after the save.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace ds {

class GradientReducer {
 public:
  virtual ~GradientReducer() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Once, after the model is on its device and cast: make every rank start from rank 0's values.
  virtual void broadcast_parameters(const std::vector<at::Tensor>& tensors) = 0;

  // Around the backward of every micro-step. `boundary`: this micro-step ends an accumulation window
  // (DeepSpeed reduces only then). `params` are the optimized module parameters in optimizer order;
  // an implementation that overlaps communication with backward registers hooks on them.
  virtual void begin_backward(bool boundary, const std::vector<at::Tensor>& params) = 0;

  // After backward. At a boundary, on return `grads` (the accumulated gradients the optimizer will
  // read, one per optimized parameter, same order; undefined = none) must hold the average over
  // ranks. An implementation may replace undefined entries (with zeros, so every rank reduces the
  // same buffers); the engine installs replaced tensors as the parameters' gradients.
  virtual void end_backward(bool boundary, std::vector<at::Tensor>& grads) = 0;

  // stats: float64 [2] = {sum of squares, count of non-finite values} of this rank's gradients after
  // end_backward, on their device. Make every rank hold the same values so all take the same
  // skip / clip decision. With plain data parallelism the averaged gradients are already equal on
  // every rank (agreeing is cheap: e.g. MAX of both entries); with gradients sharded across ranks the
  // sums of squares and counts add up (SUM).
  virtual void reduce_grad_stats(at::Tensor& stats) = 0;

  virtual void barrier() = 0;
};

// World size 1: every hook is a no-op.
class SingleProcessReducer final : public GradientReducer {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void broadcast_parameters(const std::vector<at::Tensor>&) override {}
  void begin_backward(bool, const std::vector<at::Tensor>&) override {}
  void end_backward(bool, std::vector<at::Tensor>&) override {}
  void reduce_grad_stats(at::Tensor&) override {}
  void barrier() override {}
};

}  // namespace ds
