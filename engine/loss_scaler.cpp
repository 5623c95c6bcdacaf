#include "engine/loss_scaler.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "engine/ivalue_util.h"

namespace ds {

std::string LossScaleUpdate::describe() const {
  std::ostringstream os;
  if (overflow && hysteresis_absorbed) {
    os << "fp16 overflow: skipping step; loss scale stays " << scale << " (hysteresis left " << hysteresis_left << ")";
  } else if (overflow && scale != previous_scale) {
    os << "fp16 overflow: skipping step; loss scale " << previous_scale << " -> " << scale;
  } else if (overflow) {
    os << "fp16 overflow: skipping step; loss scale " << scale << " (at its minimum or static)";
  } else if (grew) {
    os << "loss scale " << previous_scale << " -> " << scale << " after a clean window";
  }
  return os.str();
}

LossScaler::LossScaler(LossScalerOptions options)
    : options_(options), cur_scale_(options.init_scale), cur_hysteresis_(options.hysteresis) {
  if (!(options_.init_scale > 0) || !std::isfinite(options_.init_scale)) {
    throw std::invalid_argument("fp16 loss scale must be a positive finite number, got " +
                                std::to_string(options_.init_scale));
  }
  if (options_.dynamic) {
    if (options_.scale_window < 1) {
      throw std::invalid_argument("fp16.loss_scale_window must be >= 1, got " + std::to_string(options_.scale_window));
    }
    if (options_.hysteresis < 1) {
      throw std::invalid_argument("fp16.hysteresis must be >= 1, got " + std::to_string(options_.hysteresis));
    }
    if (!(options_.min_scale > 0)) {
      throw std::invalid_argument("fp16.min_loss_scale must be > 0, got " + std::to_string(options_.min_scale));
    }
  }
}

LossScaler LossScaler::from_config(const DeepSpeedConfig& c) {
  LossScalerOptions o;
  if (!c.fp16.enabled) return LossScaler(o);
  if (!c.fp16.dynamic()) {
    o.init_scale = c.fp16.loss_scale;
    return LossScaler(o);
  }
  o.dynamic = true;
  o.init_scale = std::ldexp(1.0, c.fp16.initial_scale_power);
  o.scale_window = c.fp16.loss_scale_window;
  o.min_scale = c.fp16.min_loss_scale;
  o.hysteresis = c.fp16.hysteresis;
  o.consecutive_hysteresis = c.fp16.consecutive_hysteresis;
  if (c.optimizer.type == OptimizerType::Lamb && !c.fp16.dynamic_args_given) o.min_scale = 0.25;
  return LossScaler(o);
}

LossScaleUpdate LossScaler::update(bool overflow) {
  LossScaleUpdate u;
  u.overflow = overflow;
  u.previous_scale = cur_scale_;
  if (options_.dynamic) {
    if (overflow) {
      if (options_.hysteresis == 1 || cur_hysteresis_ == 1) {
        cur_scale_ = std::max(cur_scale_ / options_.scale_factor, options_.min_scale);
      } else {
        cur_hysteresis_ -= 1;
        u.hysteresis_absorbed = true;
      }
      last_overflow_iter_ = cur_iter_;
    } else {
      if (options_.consecutive_hysteresis) cur_hysteresis_ = options_.hysteresis;
      if ((cur_iter_ - last_overflow_iter_) % options_.scale_window == 0) {
        if (!options_.consecutive_hysteresis) cur_hysteresis_ = options_.hysteresis;
        cur_scale_ *= options_.scale_factor;
        u.grew = true;
      }
    }
  }
  ++cur_iter_;
  u.scale = cur_scale_;
  u.hysteresis_left = cur_hysteresis_;
  return u;
}

at::IValue LossScaler::state_dict() const {
  ivalue::Dict d = ivalue::new_dict();
  d.insert("dynamic", options_.dynamic);
  d.insert("cur_scale", cur_scale_);
  d.insert("cur_iter", cur_iter_);
  d.insert("last_overflow_iter", last_overflow_iter_);
  d.insert("cur_hysteresis", cur_hysteresis_);
  d.insert("scale_factor", options_.scale_factor);
  d.insert("scale_window", options_.scale_window);
  d.insert("min_scale", options_.min_scale);
  d.insert("hysteresis", options_.hysteresis);
  d.insert("consecutive_hysteresis", options_.consecutive_hysteresis);
  return d;
}

void LossScaler::load_state_dict(const at::IValue& state) {
  const std::string w = "loss_scaler";
  const ivalue::Dict d = ivalue::as_dict(state, w);
  const bool saved_dynamic = ivalue::get_bool(d, "dynamic", w);
  const int64_t it = ivalue::get_int(d, "cur_iter", w);
  if (!options_.dynamic || !saved_dynamic) {
    cur_iter_ = it;
    return;
  }
  const double scale = ivalue::get_double(d, "cur_scale", w);
  if (!(scale > 0) || !std::isfinite(scale)) throw std::invalid_argument(w + ".cur_scale: invalid value");
  cur_scale_ = scale;
  cur_iter_ = it;
  last_overflow_iter_ = ivalue::get_int(d, "last_overflow_iter", w);
  cur_hysteresis_ = std::min(ivalue::get_int(d, "cur_hysteresis", w), options_.hysteresis);
}

}  // namespace ds
