// DeepSpeed's optimizers with their math and defaults: Adam / AdamW (FusedAdam, `adam_w_mode`
// rule) and Lamb (FusedLamb: per-tensor trust ratio clamped to [min_coeff, max_coeff]).
//
// An optimizer owns parameter groups of fp32 master weights and their state (exp_avg,
// exp_avg_sq, per-group step). step() takes one gradient per master weight (any float dtype, on
// the weight's device) and a scale that multiplies every gradient first (loss unscaling and
// clipping folded into the update); optional model copies (the fp16/bf16 weights of the module)
// receive the updated weights rounded. CPU and CUDA tensors both work (ops/optim/fused_optim.h).
//
// state_dict() has PyTorch's layout ({"state": {i: {...}}, "param_groups": [{..., "params": [i]}]})
// so a Python user reading a checkpoint finds what torch.optim would write.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "engine/config/ds_config.h"

namespace ds {

struct OptimParamGroup {
  std::vector<at::Tensor> params;        // fp32 master weights, updated in place
  std::vector<at::Tensor> model_params;  // empty, or one fp16/bf16 copy per param written after each update
  std::vector<std::string> names;        // for messages and checkpoints ("" when unnamed)
  double lr = 1e-3;
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 0;                      // updates done (DeepSpeed FusedAdam keeps it per group)
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual const char* name() const = 0;  // "Adam", "AdamW", "Lamb"

  std::vector<OptimParamGroup>& param_groups() { return groups_; }
  const std::vector<OptimParamGroup>& param_groups() const { return groups_; }

  // One update. grads[g][i] is the gradient of param_groups()[g].params[i]; an undefined tensor means
  // "no gradient": that parameter and its state are left alone (PyTorch / DeepSpeed skip p.grad None).
  void step(const std::vector<std::vector<at::Tensor>>& grads, double grad_scale = 1.0);
  // Convenience for standalone use: the gradients are the master weights' own .grad().
  void step();

  at::IValue state_dict() const;
  // Throws std::invalid_argument naming the group/param when the layout does not match.
  void load_state_dict(const at::IValue& state);

  // Exp averages of params()[g][i] (undefined until its first update).
  const at::Tensor& exp_avg(size_t group, size_t i) const { return state_[group][i].exp_avg; }
  const at::Tensor& exp_avg_sq(size_t group, size_t i) const { return state_[group][i].exp_avg_sq; }

 protected:
  explicit Optimizer(std::vector<OptimParamGroup> groups);
  struct ParamState {
    at::Tensor exp_avg, exp_avg_sq;
  };
  // Updates one group; every list holds only the params that have a gradient.
  virtual void update_group(OptimParamGroup& group, const std::vector<at::Tensor>& grads,
                            const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& exp_avg,
                            const std::vector<at::Tensor>& exp_avg_sq, const std::vector<at::Tensor>& model_params,
                            double grad_scale, size_t group_index) = 0;
  // Extra per-group options saved beside lr/betas/eps/weight_decay/step; check_group_options throws
  // when saved options contradict this optimizer's (before load_state_dict changes anything).
  virtual void save_group_options(c10::impl::GenericDict& d) const = 0;
  virtual void check_group_options(const c10::impl::GenericDict& d) const = 0;

  std::vector<OptimParamGroup> groups_;
  std::vector<std::vector<ParamState>> state_;
};

struct AdamOptions {
  bool adam_w_mode = true;       // decoupled weight decay (AdamW); false: L2 added to the gradient
  bool bias_correction = true;
};

class Adam final : public Optimizer {
 public:
  // `display_name` is "Adam" or "AdamW" (what the config said); the math follows adam_w_mode alone.
  Adam(std::vector<OptimParamGroup> groups, AdamOptions options, std::string display_name = "Adam");
  const char* name() const override { return display_name_.c_str(); }
  const AdamOptions& options() const { return options_; }

 private:
  void update_group(OptimParamGroup& group, const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& params,
                    const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq,
                    const std::vector<at::Tensor>& model_params, double grad_scale, size_t group_index) override;
  void save_group_options(c10::impl::GenericDict& d) const override;
  void check_group_options(const c10::impl::GenericDict& d) const override;
  AdamOptions options_;
  std::string display_name_;
};

struct LambOptions {
  bool bias_correction = true;
  bool eps_inside_sqrt = false;  // sqrt(v + eps) instead of sqrt(v) + eps
  double max_coeff = 10.0;
  double min_coeff = 0.01;
};

class Lamb final : public Optimizer {
 public:
  Lamb(std::vector<OptimParamGroup> groups, LambOptions options);
  const char* name() const override { return "Lamb"; }
  const LambOptions& options() const { return options_; }
  // DeepSpeed's get_lamb_coeffs(): the trust ratios of the last step, one per updated param, in
  // group order (empty before the first step).
  std::vector<double> lamb_coeffs() const;

 private:
  void update_group(OptimParamGroup& group, const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& params,
                    const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq,
                    const std::vector<at::Tensor>& model_params, double grad_scale, size_t group_index) override;
  void save_group_options(c10::impl::GenericDict& d) const override;
  void check_group_options(const c10::impl::GenericDict& d) const override;
  LambOptions options_;
  std::vector<at::Tensor> last_coeffs_;  // per group, float32 [n updated]
};

// Builds the optimizer the config's "optimizer" section names over `groups` (whose lr / betas /
// eps / weight_decay are taken as they are: start them from group_defaults()).
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, std::vector<OptimParamGroup> groups);

// An empty group carrying the section's lr / betas / eps / weight_decay.
OptimParamGroup group_defaults(const OptimizerConfig& config);

}  // namespace ds
