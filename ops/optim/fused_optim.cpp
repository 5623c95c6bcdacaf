// Validation and device dispatch of the multi-tensor optimizer ops, and their CPU reference loops.
#include "ops/optim/fused_optim.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <string>
#include <vector>

#include "ops/optim/optim_impl.h"

namespace ds {
namespace {

// Elements per parallel task and per norm partial: the GPU's chunk size, so partial sums group alike.
constexpr int64_t kCpuChunk = 65536;

bool is_half_kind(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }
bool is_grad_kind(at::ScalarType t) { return t == at::kFloat || is_half_kind(t); }

void check_update_lists(const char* op, at::TensorList grads, at::TensorList params, at::TensorList m,
                        at::TensorList v, at::TensorList copies) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && m.size() == n && v.size() == n, op, ": list lengths differ: grads ", grads.size(),
              ", params ", n, ", exp_avg ", m.size(), ", exp_avg_sq ", v.size());
  TORCH_CHECK(copies.empty() || copies.size() == n, op, ": model_copies has ", copies.size(),
              " tensors; pass none or one per param (", n, ")");
  if (n == 0) return;
  const at::Device dev = params[0].device();
  const at::ScalarType gtype = grads[0].defined() ? grads[0].scalar_type() : at::kFloat;
  TORCH_CHECK(is_grad_kind(gtype), op, ": grads dtype ", gtype, " is not supported; use float32, float16 or bfloat16");
  const at::ScalarType ctype = copies.empty() ? at::kHalf : copies[0].scalar_type();
  TORCH_CHECK(is_half_kind(ctype), op, ": model_copies dtype ", ctype, " is not supported; use float16 or bfloat16");
  for (size_t i = 0; i < n; ++i) {
    const auto& p = params[i];
    TORCH_CHECK(p.defined() && p.scalar_type() == at::kFloat && p.is_contiguous(), op, ": params[", i,
                "] must be a contiguous float32 tensor (the fp32 master weights)");
    TORCH_CHECK(p.device() == dev, op, ": params[", i, "] is on ", p.device(), ", params[0] on ", dev);
    for (const auto* st : {&m[i], &v[i]}) {
      TORCH_CHECK(st->defined() && st->scalar_type() == at::kFloat && st->is_contiguous() &&
                      st->sizes() == p.sizes() && st->device() == dev,
                  op, ": optimizer state of params[", i, "] must be contiguous float32 of shape ", p.sizes(), " on ",
                  dev);
    }
    const auto& g = grads[i];
    TORCH_CHECK(g.defined(), op, ": grads[", i, "] is undefined; leave params without a gradient out of the call");
    TORCH_CHECK(g.scalar_type() == gtype, op, ": grads[", i, "] is ", g.scalar_type(), " but grads[0] is ", gtype,
                "; one call takes one gradient dtype");
    TORCH_CHECK(g.numel() == p.numel() && g.device() == dev, op, ": grads[", i, "] has ", g.numel(),
                " elements on ", g.device(), "; params[", i, "] has ", p.numel(), " on ", dev);
    if (!copies.empty()) {
      const auto& c = copies[i];
      TORCH_CHECK(c.defined() && c.scalar_type() == ctype && c.is_contiguous() && c.numel() == p.numel() &&
                      c.device() == dev,
                  op, ": model_copies[", i, "] must be a contiguous ", ctype, " tensor of ", p.numel(),
                  " elements on ", dev);
    }
  }
}

// Runs body(begin, end) over [0, n) in pieces of at least kCpuChunk on the intra-op pool.
template <class F>
void for_chunks(int64_t n, const F& body) {
  at::parallel_for(0, n, kCpuChunk, body);
}

// Runs body(k, start, stop) for every chunk k = [k * kCpuChunk, min(n, (k + 1) * kCpuChunk)):
// per-chunk partial sums land in slot k whatever the thread count.
template <class F>
void for_each_chunk(int64_t n, const F& body) {
  const int64_t chunks = (n + kCpuChunk - 1) / kCpuChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t kb, int64_t ke) {
    for (int64_t k = kb; k < ke; ++k) body(k, k * kCpuChunk, std::min(n, (k + 1) * kCpuChunk));
  });
}

template <typename G>
void adam_cpu_one(const G* g, float* w, float* m, float* v, int64_t n, const optim_impl::AdamConsts& c) {
  for_chunks(n, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float gi = static_cast<float>(g[i]) * c.grad_scale;
      float wi = w[i];
      if (!c.adam_w_mode) gi = gi + c.weight_decay * wi;
      const float mi = c.beta1 * m[i] + (1.f - c.beta1) * gi;
      const float vi = c.beta2 * v[i] + (1.f - c.beta2) * gi * gi;
      const float denom = std::sqrt(vi / c.bias_correction2) + c.eps;
      float update = (mi / c.bias_correction1) / denom;
      if (c.adam_w_mode) update = update + c.weight_decay * wi;
      w[i] = wi - c.lr * update;
      m[i] = mi;
      v[i] = vi;
    }
  });
}

inline float lamb_update(const optim_impl::LambConsts& c, float m, float v, float w) {
  const float denom = c.eps_inside_sqrt ? std::sqrt(v + c.eps) : std::sqrt(v) + c.eps;
  return m / denom + c.weight_decay * w;
}

// One tensor: moments, per-chunk norm partials (summed in chunk order, so the result does not
// depend on the thread count), trust ratio, update. Returns the trust ratio.
template <typename G>
float lamb_cpu_one(const G* g, float* w, float* m, float* v, int64_t n, const optim_impl::LambConsts& c) {
  const int64_t chunks = (n + kCpuChunk - 1) / kCpuChunk;
  std::vector<double> w_sq(chunks, 0.0), u_sq(chunks, 0.0);
  for_each_chunk(n, [&](int64_t k, int64_t start, int64_t stop) {
    double ws = 0.0, us = 0.0;
    for (int64_t i = start; i < stop; ++i) {
      const float gi = static_cast<float>(g[i]) * c.grad_scale;
      const float mi = c.beta1 * m[i] + (1.f - c.beta1) * gi;
      const float vi = c.beta2 * v[i] + (1.f - c.beta2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      const double u = lamb_update(c, mi, vi, w[i]);
      us += u * u;
      ws += static_cast<double>(w[i]) * w[i];
    }
    w_sq[k] = ws;
    u_sq[k] = us;
  });
  double ws = 0.0, us = 0.0;
  for (int64_t k = 0; k < chunks; ++k) {
    ws += w_sq[k];
    us += u_sq[k];
  }
  const double w_norm = std::sqrt(ws), u_norm = std::sqrt(us);
  float coeff = 1.f;
  if (w_norm != 0.0 && u_norm != 0.0) {
    coeff = std::fmin(std::fmax(static_cast<float>(w_norm / u_norm), c.min_coeff), c.max_coeff);
  }
  const float scaled_step = c.step_size * coeff;
  for_chunks(n, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) w[i] = w[i] - scaled_step * lamb_update(c, m[i], v[i], w[i]);
  });
  return coeff;
}

#define DS_CPU_GRAD_DISPATCH(TYPE, NAME, ...)                                        \
  [&] {                                                                              \
    switch (TYPE) {                                                                  \
      case at::kFloat: { using NAME = float; return __VA_ARGS__(); }                  \
      case at::kHalf: { using NAME = at::Half; return __VA_ARGS__(); }                \
      case at::kBFloat16: { using NAME = at::BFloat16; return __VA_ARGS__(); }        \
      default: break;                                                                \
    }                                                                                \
    TORCH_CHECK(false, "unsupported gradient dtype ", TYPE);                         \
  }()

}  // namespace

namespace optim_impl {

AdamConsts adam_consts(const AdamStepArgs& a) {
  const float b1 = static_cast<float>(a.beta1), b2 = static_cast<float>(a.beta2);
  AdamConsts c{static_cast<float>(a.lr), b1, b2, static_cast<float>(a.eps), static_cast<float>(a.weight_decay),
               1.f, 1.f, static_cast<float>(a.grad_scale), a.adam_w_mode};
  if (a.bias_correction) {
    c.bias_correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(b1), static_cast<double>(a.step)));
    c.bias_correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(b2), static_cast<double>(a.step)));
  }
  return c;
}

LambConsts lamb_consts(const LambStepArgs& a) {
  const float b1 = static_cast<float>(a.beta1), b2 = static_cast<float>(a.beta2);
  float step_size = static_cast<float>(a.lr);
  if (a.bias_correction) {
    const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(b1), static_cast<double>(a.step)));
    const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(b2), static_cast<double>(a.step)));
    step_size = static_cast<float>(a.lr * std::sqrt(static_cast<double>(bc2)) / bc1);
  }
  return LambConsts{b1, b2, static_cast<float>(a.eps), static_cast<float>(a.weight_decay), step_size,
                    static_cast<float>(a.grad_scale), static_cast<float>(a.max_coeff),
                    static_cast<float>(a.min_coeff), a.eps_inside_sqrt};
}

void adam_cpu(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
              at::TensorList model_copies, const AdamStepArgs& args) {
  const AdamConsts c = adam_consts(args);
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor g = grads[i].contiguous();
    DS_CPU_GRAD_DISPATCH(g.scalar_type(), G, [&] {
      adam_cpu_one(g.data_ptr<G>(), params[i].data_ptr<float>(), exp_avg[i].data_ptr<float>(),
                   exp_avg_sq[i].data_ptr<float>(), params[i].numel(), c);
    });
    if (!model_copies.empty()) model_copies[i].view_as(params[i]).copy_(params[i]);
  }
}

at::Tensor lamb_cpu(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                    at::TensorList model_copies, const LambStepArgs& args) {
  const LambConsts c = lamb_consts(args);
  at::Tensor coeffs = at::empty({static_cast<int64_t>(params.size())}, at::kFloat);
  float* out = coeffs.data_ptr<float>();
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor g = grads[i].contiguous();
    DS_CPU_GRAD_DISPATCH(g.scalar_type(), G, [&] {
      out[i] = lamb_cpu_one(g.data_ptr<G>(), params[i].data_ptr<float>(), exp_avg[i].data_ptr<float>(),
                            exp_avg_sq[i].data_ptr<float>(), params[i].numel(), c);
    });
    if (!model_copies.empty()) model_copies[i].view_as(params[i]).copy_(params[i]);
  }
  return coeffs;
}

at::Tensor grad_stats_cpu(at::TensorList grads) {
  double sq = 0.0, bad = 0.0;
  for (const auto& g0 : grads) {
    if (!g0.defined()) continue;
    const at::Tensor g = g0.contiguous();
    const int64_t n = g.numel(), chunks = (n + kCpuChunk - 1) / kCpuChunk;
    std::vector<double> sq_part(chunks, 0.0), bad_part(chunks, 0.0);
    DS_CPU_GRAD_DISPATCH(g.scalar_type(), G, [&] {
      const G* x = g.data_ptr<G>();
      for_each_chunk(n, [&](int64_t k, int64_t start, int64_t stop) {
        double s = 0.0, b = 0.0;
        for (int64_t i = start; i < stop; ++i) {
          const float xi = static_cast<float>(x[i]);
          if (std::isfinite(xi)) {
            s += static_cast<double>(xi) * xi;
          } else {
            b += 1.0;
          }
        }
        sq_part[k] = s;
        bad_part[k] = b;
      });
    });
    for (int64_t k = 0; k < chunks; ++k) {
      sq += sq_part[k];
      bad += bad_part[k];
    }
  }
  at::Tensor out = at::empty({2}, at::kDouble);
  out.data_ptr<double>()[0] = sq;
  out.data_ptr<double>()[1] = bad;
  return out;
}

}  // namespace optim_impl

void fused_adam_step(at::TensorList grads, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                     at::TensorList model_copies, const AdamStepArgs& args) {
  check_update_lists("fused_adam_step", grads, params, exp_avg, exp_avg_sq, model_copies);
  if (params.empty()) return;
  if (params[0].is_cuda()) {
#if DS_WITH_CUDA
    optim_impl::adam_cuda(grads, params, exp_avg, exp_avg_sq, model_copies, args);
    return;
#else
    TORCH_CHECK(false, "fused_adam_step: CUDA tensors given but this build has no CUDA kernels");
#endif
  }
  TORCH_CHECK(params[0].is_cpu(), "fused_adam_step: tensors on ", params[0].device(), " are not supported");
  optim_impl::adam_cpu(grads, params, exp_avg, exp_avg_sq, model_copies, args);
}

at::Tensor fused_lamb_step(at::TensorList grads, at::TensorList params, at::TensorList exp_avg,
                           at::TensorList exp_avg_sq, at::TensorList model_copies, const LambStepArgs& args) {
  check_update_lists("fused_lamb_step", grads, params, exp_avg, exp_avg_sq, model_copies);
  if (params.empty()) return at::empty({0}, at::kFloat);
  if (params[0].is_cuda()) {
#if DS_WITH_CUDA
    return optim_impl::lamb_cuda(grads, params, exp_avg, exp_avg_sq, model_copies, args);
#else
    TORCH_CHECK(false, "fused_lamb_step: CUDA tensors given but this build has no CUDA kernels");
#endif
  }
  TORCH_CHECK(params[0].is_cpu(), "fused_lamb_step: tensors on ", params[0].device(), " are not supported");
  return optim_impl::lamb_cpu(grads, params, exp_avg, exp_avg_sq, model_copies, args);
}

at::Tensor grad_stats(at::TensorList grads) {
  const at::Tensor* first = nullptr;
  for (const auto& g : grads) {
    if (!g.defined()) continue;
    TORCH_CHECK(is_grad_kind(g.scalar_type()), "grad_stats: gradient dtype ", g.scalar_type(),
                " is not supported; use float32, float16 or bfloat16");
    if (!first) first = &g;
    TORCH_CHECK(g.device() == first->device(), "grad_stats: gradients on ", first->device(), " and ", g.device(),
                "; pass one device's gradients per call");
  }
  if (first && first->is_cuda()) {
#if DS_WITH_CUDA
    return optim_impl::grad_stats_cuda(grads);
#else
    TORCH_CHECK(false, "grad_stats: CUDA tensors given but this build has no CUDA kernels");
#endif
  }
  return optim_impl::grad_stats_cpu(grads);
}

}  // namespace ds
