#include "engine/optimizer.h"

#include <ATen/core/grad_mode.h>

#include <stdexcept>

#include "engine/ivalue_util.h"
#include "ops/optim/fused_optim.h"

namespace ds {
namespace {

std::string param_label(const OptimParamGroup& g, size_t gi, size_t i) {
  std::string s = "param_groups[" + std::to_string(gi) + "].params[" + std::to_string(i) + "]";
  if (i < g.names.size() && !g.names[i].empty()) s += " ('" + g.names[i] + "')";
  return s;
}

}  // namespace

Optimizer::Optimizer(std::vector<OptimParamGroup> groups) : groups_(std::move(groups)) {
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    auto& g = groups_[gi];
    if (!g.names.empty() && g.names.size() != g.params.size()) {
      throw std::invalid_argument("param_groups[" + std::to_string(gi) + "]: " + std::to_string(g.names.size()) +
                                  " names for " + std::to_string(g.params.size()) + " params");
    }
    if (!g.model_params.empty() && g.model_params.size() != g.params.size()) {
      throw std::invalid_argument("param_groups[" + std::to_string(gi) + "]: " +
                                  std::to_string(g.model_params.size()) + " model copies for " +
                                  std::to_string(g.params.size()) + " params");
    }
    for (size_t i = 0; i < g.params.size(); ++i) {
      const auto& p = g.params[i];
      if (!p.defined() || p.scalar_type() != at::kFloat || !p.is_contiguous()) {
        throw std::invalid_argument(param_label(g, gi, i) +
                                    " must be a contiguous float32 tensor (the optimizer updates fp32 master weights)");
      }
    }
  }
  state_.resize(groups_.size());
  for (size_t gi = 0; gi < groups_.size(); ++gi) state_[gi].resize(groups_[gi].params.size());
}

void Optimizer::step() {
  std::vector<std::vector<at::Tensor>> grads(groups_.size());
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (const auto& p : groups_[gi].params) grads[gi].push_back(p.grad());
  }
  step(grads, 1.0);
}

void Optimizer::step(const std::vector<std::vector<at::Tensor>>& grads, double grad_scale) {
  if (grads.size() != groups_.size()) {
    throw std::invalid_argument(std::string(name()) + ".step: " + std::to_string(grads.size()) +
                                " gradient groups for " + std::to_string(groups_.size()) + " param groups");
  }
  const at::NoGradGuard no_grad;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    auto& group = groups_[gi];
    if (grads[gi].size() != group.params.size()) {
      throw std::invalid_argument(std::string(name()) + ".step: group " + std::to_string(gi) + " has " +
                                  std::to_string(group.params.size()) + " params but " +
                                  std::to_string(grads[gi].size()) + " gradients");
    }
    std::vector<at::Tensor> g, p, m, v, copies;
    for (size_t i = 0; i < group.params.size(); ++i) {
      if (!grads[gi][i].defined()) continue;
      auto& st = state_[gi][i];
      if (!st.exp_avg.defined()) {
        st.exp_avg = at::zeros_like(group.params[i], at::MemoryFormat::Contiguous);
        st.exp_avg_sq = at::zeros_like(group.params[i], at::MemoryFormat::Contiguous);
      }
      g.push_back(grads[gi][i]);
      p.push_back(group.params[i]);
      m.push_back(st.exp_avg);
      v.push_back(st.exp_avg_sq);
      if (!group.model_params.empty()) copies.push_back(group.model_params[i]);
    }
    if (p.empty()) continue;
    group.step += 1;
    update_group(group, g, p, m, v, copies, grad_scale, gi);
  }
}

at::IValue Optimizer::state_dict() const {
  ivalue::Dict state(c10::IntType::get(), c10::AnyType::get());
  ivalue::List groups = ivalue::new_list();
  int64_t index = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const auto& g = groups_[gi];
    std::vector<int64_t> ids;
    for (size_t i = 0; i < g.params.size(); ++i, ++index) {
      ids.push_back(index);
      const auto& st = state_[gi][i];
      if (!st.exp_avg.defined()) continue;
      ivalue::Dict s = ivalue::new_dict();
      s.insert("step", g.step);
      s.insert("exp_avg", st.exp_avg);
      s.insert("exp_avg_sq", st.exp_avg_sq);
      state.insert(index, s);
    }
    ivalue::Dict d = ivalue::new_dict();
    d.insert("lr", g.lr);
    d.insert("betas", ivalue::double_list({g.betas[0], g.betas[1]}));
    d.insert("eps", g.eps);
    d.insert("weight_decay", g.weight_decay);
    d.insert("step", g.step);
    save_group_options(d);
    d.insert("params", ivalue::int_list(ids));
    d.insert("param_names", ivalue::string_list(g.names));
    groups.push_back(d);
  }
  ivalue::Dict out = ivalue::new_dict();
  out.insert("type", std::string(name()));
  out.insert("state", state);
  out.insert("param_groups", groups);
  return out;
}

void Optimizer::load_state_dict(const at::IValue& value) {
  const std::string where = "optimizer";
  const ivalue::Dict sd = ivalue::as_dict(value, where);
  const std::string type = ivalue::get_string(sd, "type", where);
  // "Adam" and "AdamW" share one state layout; adam_w_mode is compared by check_group_options.
  auto family = [](const std::string& n) { return n.rfind("Adam", 0) == 0 ? std::string("Adam") : n; };
  if (family(type) != family(name())) {
    throw std::invalid_argument(where + ": the checkpoint holds " + type + " state but this optimizer is " + name() +
                                "; use the optimizer type the checkpoint was written with");
  }
  const ivalue::List groups = ivalue::get_list(sd, "param_groups", where);
  if (groups.size() != groups_.size()) {
    throw std::invalid_argument(where + ": the checkpoint has " + std::to_string(groups.size()) +
                                " parameter groups, this optimizer " + std::to_string(groups_.size()));
  }
  // Validate everything before touching any state, so a mismatch leaves the optimizer unchanged.
  std::vector<ivalue::Dict> gds;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const std::string gw = where + ".param_groups[" + std::to_string(gi) + "]";
    gds.push_back(ivalue::as_dict(groups.get(gi), gw));
    const auto ids = ivalue::to_ints(ivalue::get_list(gds[gi], "params", gw), gw + ".params");
    if (ids.size() != groups_[gi].params.size()) {
      throw std::invalid_argument(gw + ": " + std::to_string(ids.size()) + " params in the checkpoint, " +
                                  std::to_string(groups_[gi].params.size()) + " here");
    }
    if (ivalue::has(gds[gi], "param_names")) {
      const auto names = ivalue::to_strings(ivalue::get_list(gds[gi], "param_names", gw), gw + ".param_names");
      for (size_t i = 0; i < names.size() && i < groups_[gi].names.size(); ++i) {
        if (!names[i].empty() && !groups_[gi].names[i].empty() && names[i] != groups_[gi].names[i]) {
          throw std::invalid_argument(gw + ".params[" + std::to_string(i) + "] is '" + names[i] +
                                      "' in the checkpoint but '" + groups_[gi].names[i] + "' here");
        }
      }
    }
  }
  if (!gds.empty()) check_group_options(gds[0]);
  const ivalue::Dict state = ivalue::get_dict(sd, "state", where);
  std::vector<std::vector<std::pair<at::Tensor, at::Tensor>>> loaded(groups_.size());
  int64_t index = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (size_t i = 0; i < groups_[gi].params.size(); ++i, ++index) {
      auto it = state.find(index);
      if (it == state.end()) {
        loaded[gi].emplace_back();
        continue;
      }
      const std::string sw = where + ".state[" + std::to_string(index) + "]";
      const ivalue::Dict s = ivalue::as_dict(it->value(), sw);
      at::Tensor m = ivalue::get_tensor(s, "exp_avg", sw), v = ivalue::get_tensor(s, "exp_avg_sq", sw);
      const auto& p = groups_[gi].params[i];
      if (m.sizes() != p.sizes() || v.sizes() != p.sizes()) {
        throw std::invalid_argument(sw + ": state shape " + c10::str(m.sizes()) + " does not match " +
                                    param_label(groups_[gi], gi, i) + " of shape " + c10::str(p.sizes()));
      }
      loaded[gi].emplace_back(m, v);
    }
  }
  const at::NoGradGuard no_grad;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const std::string gw = where + ".param_groups[" + std::to_string(gi) + "]";
    auto& g = groups_[gi];
    g.lr = ivalue::get_double(gds[gi], "lr", gw);
    const auto betas = ivalue::to_doubles(ivalue::get_list(gds[gi], "betas", gw), gw + ".betas");
    if (betas.size() != 2) throw std::invalid_argument(gw + ".betas: expected 2 values");
    g.betas = {betas[0], betas[1]};
    g.eps = ivalue::get_double(gds[gi], "eps", gw);
    g.weight_decay = ivalue::get_double(gds[gi], "weight_decay", gw);
    g.step = ivalue::get_int(gds[gi], "step", gw);
    for (size_t i = 0; i < g.params.size(); ++i) {
      auto& st = state_[gi][i];
      if (!loaded[gi][i].first.defined()) {
        st = ParamState{};
        continue;
      }
      st.exp_avg = at::empty_like(g.params[i], at::MemoryFormat::Contiguous).copy_(loaded[gi][i].first);
      st.exp_avg_sq = at::empty_like(g.params[i], at::MemoryFormat::Contiguous).copy_(loaded[gi][i].second);
    }
  }
}

Adam::Adam(std::vector<OptimParamGroup> groups, AdamOptions options, std::string display_name)
    : Optimizer(std::move(groups)), options_(options), display_name_(std::move(display_name)) {}

void Adam::update_group(OptimParamGroup& group, const std::vector<at::Tensor>& grads,
                        const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& exp_avg,
                        const std::vector<at::Tensor>& exp_avg_sq, const std::vector<at::Tensor>& model_params,
                        double grad_scale, size_t) {
  AdamStepArgs a;
  a.lr = group.lr;
  a.beta1 = group.betas[0];
  a.beta2 = group.betas[1];
  a.eps = group.eps;
  a.weight_decay = group.weight_decay;
  a.bias_correction = options_.bias_correction;
  a.adam_w_mode = options_.adam_w_mode;
  a.step = group.step;
  a.grad_scale = grad_scale;
  fused_adam_step(grads, params, exp_avg, exp_avg_sq, model_params, a);
}

void Adam::save_group_options(c10::impl::GenericDict& d) const {
  d.insert("bias_correction", options_.bias_correction);
  d.insert("adam_w_mode", options_.adam_w_mode);
}

void Adam::check_group_options(const c10::impl::GenericDict& d) const {
  const std::string w = "optimizer.param_groups[0]";
  const bool mode = ivalue::get_bool(d, "adam_w_mode", w);
  if (mode != options_.adam_w_mode) {
    throw std::invalid_argument(w + ".adam_w_mode is " + (mode ? "true" : "false") + " in the checkpoint but " +
                                (options_.adam_w_mode ? "true" : "false") +
                                " here; set optimizer.params.adam_w_mode to match");
  }
}

Lamb::Lamb(std::vector<OptimParamGroup> groups, LambOptions options)
    : Optimizer(std::move(groups)), options_(options), last_coeffs_(groups_.size()) {}

void Lamb::update_group(OptimParamGroup& group, const std::vector<at::Tensor>& grads,
                        const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& exp_avg,
                        const std::vector<at::Tensor>& exp_avg_sq, const std::vector<at::Tensor>& model_params,
                        double grad_scale, size_t group_index) {
  LambStepArgs a;
  a.lr = group.lr;
  a.beta1 = group.betas[0];
  a.beta2 = group.betas[1];
  a.eps = group.eps;
  a.weight_decay = group.weight_decay;
  a.bias_correction = options_.bias_correction;
  a.eps_inside_sqrt = options_.eps_inside_sqrt;
  a.max_coeff = options_.max_coeff;
  a.min_coeff = options_.min_coeff;
  a.step = group.step;
  a.grad_scale = grad_scale;
  last_coeffs_[group_index] = fused_lamb_step(grads, params, exp_avg, exp_avg_sq, model_params, a);
}

std::vector<double> Lamb::lamb_coeffs() const {
  std::vector<double> out;
  for (const auto& c : last_coeffs_) {
    if (!c.defined()) continue;
    const at::Tensor cpu = c.to(at::kCPU, at::kDouble);
    const double* x = cpu.data_ptr<double>();
    out.insert(out.end(), x, x + cpu.numel());
  }
  return out;
}

void Lamb::save_group_options(c10::impl::GenericDict& d) const {
  d.insert("bias_correction", options_.bias_correction);
  d.insert("eps_inside_sqrt", options_.eps_inside_sqrt);
  d.insert("max_coeff", options_.max_coeff);
  d.insert("min_coeff", options_.min_coeff);
}

void Lamb::check_group_options(const c10::impl::GenericDict&) const {
  // max/min coeff and eps placement come from the config, which may change on purpose on resume.
}

OptimParamGroup group_defaults(const OptimizerConfig& config) {
  OptimParamGroup g;
  g.lr = config.lr;
  g.betas = config.betas;
  g.eps = config.eps;
  g.weight_decay = config.weight_decay;
  return g;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, std::vector<OptimParamGroup> groups) {
  if (config.amsgrad) {
    throw std::invalid_argument("optimizer.params.amsgrad: true is not supported (DeepSpeed's FusedAdam has none); "
                                "remove it or set it to false");
  }
  switch (config.type) {
    case OptimizerType::Adam:
    case OptimizerType::AdamW: {
      AdamOptions o;
      o.adam_w_mode = config.decoupled_weight_decay();
      o.bias_correction = config.bias_correction;
      return std::make_unique<Adam>(std::move(groups), o,
                                    config.type == OptimizerType::AdamW ? "AdamW" : "Adam");
    }
    case OptimizerType::Lamb: {
      LambOptions o;
      o.bias_correction = config.bias_correction;
      o.eps_inside_sqrt = config.eps_inside_sqrt;
      o.max_coeff = config.max_coeff;
      o.min_coeff = config.min_coeff;
      return std::make_unique<Lamb>(std::move(groups), o);
    }
  }
  throw std::invalid_argument("optimizer.type: unsupported optimizer");
}

}  // namespace ds
