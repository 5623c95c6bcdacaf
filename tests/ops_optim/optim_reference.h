// float64 reference implementations of the fused optimizer math (DeepSpeed FusedAdam / FusedLamb),
// written independently of ops/optim, for the tests. The kernels (DeepSpeed's and ours) hold the
// hyper-parameters as float32, so the reference takes them rounded to float (1 - 0.999f differs from
// 1 - 0.999 by 1.7e-5 relative, far above fp32 arithmetic error).
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <vector>

namespace ds::test {

inline double f32(double x) { return static_cast<double>(static_cast<float>(x)); }

struct RefAdam {
  double lr, beta1, beta2, eps, weight_decay;
  bool bias_correction, adam_w_mode;
  // One step on float64 tensors p, m, v with gradient g (already multiplied by any scale).
  void step(torch::Tensor& p, torch::Tensor& m, torch::Tensor& v, torch::Tensor g, int64_t t) const {
    const double lr = f32(this->lr), beta1 = f32(this->beta1), beta2 = f32(this->beta2), eps = f32(this->eps),
                 weight_decay = f32(this->weight_decay);
    if (!adam_w_mode) g = g + weight_decay * p;
    m = beta1 * m + (1 - beta1) * g;
    v = beta2 * v + (1 - beta2) * g * g;
    const double bc1 = bias_correction ? 1 - std::pow(beta1, static_cast<double>(t)) : 1.0;
    const double bc2 = bias_correction ? 1 - std::pow(beta2, static_cast<double>(t)) : 1.0;
    torch::Tensor update = (m / bc1) / ((v / bc2).sqrt() + eps);
    if (adam_w_mode) update = update + weight_decay * p;
    p = p - lr * update;
  }
};

struct RefLamb {
  double lr, beta1, beta2, eps, weight_decay, max_coeff, min_coeff;
  bool bias_correction, eps_inside_sqrt;
  // Returns the trust ratio used.
  double step(torch::Tensor& p, torch::Tensor& m, torch::Tensor& v, const torch::Tensor& g, int64_t t) const {
    const double lr = f32(this->lr), beta1 = f32(this->beta1), beta2 = f32(this->beta2), eps = f32(this->eps),
                 weight_decay = f32(this->weight_decay), max_coeff = f32(this->max_coeff),
                 min_coeff = f32(this->min_coeff);
    m = beta1 * m + (1 - beta1) * g;
    v = beta2 * v + (1 - beta2) * g * g;
    const torch::Tensor denom = eps_inside_sqrt ? (v + eps).sqrt() : v.sqrt() + eps;
    const torch::Tensor u = m / denom + weight_decay * p;
    const double pn = p.norm().item<double>(), un = u.norm().item<double>();
    double coeff = 1.0;
    if (pn != 0 && un != 0) coeff = std::min(std::max(pn / un, min_coeff), max_coeff);
    double step_size = lr;
    if (bias_correction) {
      step_size = lr * std::sqrt(1 - std::pow(beta2, static_cast<double>(t))) / (1 - std::pow(beta1, static_cast<double>(t)));
    }
    p = p - step_size * coeff * u;
    return coeff;
  }
};

}  // namespace ds::test
