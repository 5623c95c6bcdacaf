// Engine::save_checkpoint / load_checkpoint: what goes into the files (engine/checkpoint.h writes them).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <sstream>

#include "engine/checkpoint.h"
#include "engine/engine.h"
#include "engine/ivalue_util.h"
#include "engine/lr_schedules.h"
#include "engine/optimizer.h"

namespace ds {
namespace {

constexpr const char* kVersion = "deepspeed_cpp 0.1.0";

// Keys of the model-states file the engine owns; everything else is client state.
const std::set<std::string>& reserved_keys() {
  static const std::set<std::string> keys{
      "module", "buffer_names", "param_shapes", "optimizer", "lr_scheduler", "loss_scaler", "global_steps",
      "global_samples", "skipped_steps", "micro_steps", "dp_world_size", "mp_world_size", "ds_config", "ds_version",
      "model_dtype", "rng_state", "sparse_tensor_module_names"};
  return keys;
}

const char* dtype_label(at::ScalarType t) {
  return t == at::kHalf ? "fp16" : t == at::kBFloat16 ? "bf16" : "fp32";
}

std::string list_names(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 10; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > 10) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

// Generators are shared handles: a copy reads and writes the default generator itself.
at::Generator default_generator(const at::Device& device) {
  return device.is_cpu() ? at::detail::getDefaultCPUGenerator() : at::globalContext().defaultGenerator(device);
}

at::Tensor rng_state(const at::Device& device) {
  at::Generator gen = default_generator(device);
  const std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const at::Device& device, const at::Tensor& state) {
  at::Generator gen = default_generator(device);
  const std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace

std::string Engine::save_checkpoint(const std::string& dir, std::optional<std::string> tag,
                                    const ClientState& client_state, bool save_latest) {
  const std::string t = tag ? *tag : "global_step" + std::to_string(global_steps_);
  checkpoint::check_tag(t);
  for (const auto& [key, value] : client_state) {
    if (reserved_keys().count(key)) {
      throw CheckpointError("client_state key '" + key +
                            "' collides with a key the engine writes; rename it (reserved: module, optimizer, "
                            "lr_scheduler, global_steps, ...)");
    }
  }
  std::string path = dir + "/" + t;
  if (rank() == 0) {
    const at::NoGradGuard no_grad;
    ivalue::Dict module_sd(c10::StringType::get(), c10::TensorType::get());
    std::vector<std::string> buffer_names;
    for (const auto& item : module_->named_parameters(true)) module_sd.insert(item.key(), item.value().detach().cpu());
    for (const auto& item : module_->named_buffers(true)) {
      module_sd.insert(item.key(), item.value().detach().cpu());
      buffer_names.push_back(item.key());
    }
    ivalue::List param_shapes = ivalue::new_list();
    ivalue::Dict masters(c10::StringType::get(), c10::TensorType::get());
    size_t k = 0;
    for (size_t n : group_sizes_) {
      ivalue::Dict shapes = ivalue::new_dict();
      for (size_t i = 0; i < n; ++i, ++k) {
        shapes.insert(slots_[k].name, ivalue::int_list(slots_[k].master.sizes().vec()));
        masters.insert(slots_[k].name, slots_[k].master.detach().cpu());
      }
      param_shapes.push_back(shapes);
    }
    ivalue::Dict rng = ivalue::new_dict();
    rng.insert("cpu", rng_state(at::Device(at::kCPU)));
    if (device_.is_cuda()) rng.insert("cuda", rng_state(device_));

    ivalue::Dict model = ivalue::new_dict();
    model.insert("module", module_sd);
    model.insert("buffer_names", ivalue::string_list(buffer_names));
    model.insert("param_shapes", param_shapes);
    model.insert("optimizer", at::IValue());  // in mp_rank_00_optim_states.pt
    model.insert("lr_scheduler", scheduler_ ? scheduler_->state_dict() : at::IValue());
    model.insert("loss_scaler", scaler_.state_dict());
    model.insert("global_steps", global_steps_);
    model.insert("global_samples", global_samples_);
    model.insert("skipped_steps", skipped_steps_);
    model.insert("micro_steps", micro_steps_);
    model.insert("dp_world_size", static_cast<int64_t>(world_size()));
    model.insert("mp_world_size", int64_t{1});
    model.insert("ds_config", to_json_text(config_));
    model.insert("ds_version", std::string(kVersion));
    model.insert("model_dtype", std::string(dtype_label(model_dtype_)));
    model.insert("rng_state", rng);
    for (const auto& [key, value] : client_state) model.insert(key, ivalue::to_cpu(value));

    ivalue::Dict optim = ivalue::new_dict();
    optim.insert("optimizer_state_dict", ivalue::to_cpu(optimizer_->state_dict()));
    // fp32 training: the module holds the fp32 weights, no second copy.
    optim.insert("fp32_master_weights", model_dtype_ == at::kFloat ? at::IValue() : at::IValue(masters));
    ivalue::List names = ivalue::new_list();
    for (const auto& g : param_group_names()) names.push_back(ivalue::string_list(g));
    optim.insert("param_names", names);
    optim.insert("model_dtype", std::string(dtype_label(model_dtype_)));

    path = checkpoint::write_atomic(dir, t, {{checkpoint::kModelStatesFile, model}, {checkpoint::kOptimStatesFile, optim}},
                                    save_latest);
  }
  reducer_->barrier();
  return path;
}

LoadedCheckpoint Engine::load_checkpoint(const std::string& dir, std::optional<std::string> tag,
                                         const LoadCheckpointOptions& options) {
  LoadedCheckpoint out;
  out.tag = checkpoint::resolve_tag(dir, tag);
  out.path = dir + "/" + out.tag;
  const std::string model_file = out.path + "/" + checkpoint::kModelStatesFile;
  const std::string optim_file = out.path + "/" + checkpoint::kOptimStatesFile;
  const ivalue::Dict model = ivalue::as_dict(checkpoint::read_file(model_file), model_file);

  try {
    // 1. Check everything that can fail before changing anything.
    const ivalue::Dict saved = ivalue::get_dict(model, "module", model_file);
    std::map<std::string, at::Tensor> ours;
    for (const auto& item : module_->named_parameters(true)) ours[item.key()] = item.value();
    for (const auto& item : module_->named_buffers(true)) ours[item.key()] = item.value();
    std::vector<std::string> missing, unexpected, wrong_shape;
    for (const auto& [name, tensor] : ours) {
      auto it = saved.find(name);
      if (it == saved.end()) {
        missing.push_back(name);
      } else if (!it->value().isTensor() || it->value().toTensor().sizes() != tensor.sizes()) {
        std::ostringstream os;
        os << name << " (checkpoint "
           << (it->value().isTensor() ? c10::str(it->value().toTensor().sizes()) : std::string("not a tensor"))
           << ", model " << tensor.sizes() << ")";
        wrong_shape.push_back(os.str());
      }
    }
    for (const auto& e : saved) {
      if (!ours.count(e.key().toStringRef())) unexpected.push_back(e.key().toStringRef());
    }
    if (!wrong_shape.empty() || (options.load_module_strict && (!missing.empty() || !unexpected.empty()))) {
      std::string msg = "checkpoint '" + model_file + "' does not match the model:";
      if (!missing.empty()) msg += " missing keys [" + list_names(missing) + "];";
      if (!unexpected.empty()) msg += " unexpected keys [" + list_names(unexpected) + "];";
      if (!wrong_shape.empty()) msg += " shape mismatch [" + list_names(wrong_shape) + "];";
      msg += " load the checkpoint of this model, or pass load_module_strict=false to skip missing/unexpected keys";
      throw CheckpointError(msg);
    }
    std::optional<ivalue::Dict> optim;
    if (options.load_optimizer_states) {
      optim = ivalue::as_dict(checkpoint::read_file(optim_file), optim_file);
    }

    // 2. The optimizer validates its whole state before it changes anything.
    if (optim) optimizer_->load_state_dict(ivalue::field(*optim, "optimizer_state_dict", optim_file));

    // 3. Apply.
    const at::NoGradGuard no_grad;
    for (auto& [name, tensor] : ours) {
      auto it = saved.find(name);
      if (it != saved.end()) tensor.copy_(it->value().toTensor());
    }
    std::optional<ivalue::Dict> saved_masters;
    if (optim && ivalue::has(*optim, "fp32_master_weights") && !ivalue::field(*optim, "fp32_master_weights", "").isNone()) {
      saved_masters = ivalue::get_dict(*optim, "fp32_master_weights", optim_file);
    }
    for (auto& s : slots_) {
      if (saved_masters) {
        auto it = saved_masters->find(s.name);
        if (it != saved_masters->end() && it->value().isTensor() && it->value().toTensor().sizes() == s.master.sizes()) {
          s.master.copy_(it->value().toTensor());
          if (!s.master.is_same(s.model_param)) s.model_param.copy_(s.master);
          continue;
        }
      }
      if (!s.master.is_same(s.model_param)) s.master.copy_(s.model_param);
    }
    if (scheduler_ && options.load_lr_scheduler_states && ivalue::has(model, "lr_scheduler") &&
        !ivalue::field(model, "lr_scheduler", "").isNone()) {
      scheduler_->load_state_dict(ivalue::field(model, "lr_scheduler", model_file));
    }
    if (ivalue::has(model, "loss_scaler")) scaler_.load_state_dict(ivalue::field(model, "loss_scaler", model_file));
    global_steps_ = ivalue::get_int(model, "global_steps", model_file);
    global_samples_ = ivalue::has(model, "global_samples") ? ivalue::get_int(model, "global_samples", model_file)
                                                           : global_steps_ * config_.train_batch_size;
    skipped_steps_ = ivalue::has(model, "skipped_steps") ? ivalue::get_int(model, "skipped_steps", model_file) : 0;
    micro_steps_ = ivalue::has(model, "micro_steps") ? ivalue::get_int(model, "micro_steps", model_file)
                                                     : global_steps_ * config_.gradient_accumulation_steps;
    if (ivalue::has(model, "rng_state")) {
      const ivalue::Dict rng = ivalue::get_dict(model, "rng_state", model_file);
      if (ivalue::has(rng, "cpu")) set_rng_state(at::Device(at::kCPU), ivalue::get_tensor(rng, "cpu", "rng_state"));
      if (device_.is_cuda() && ivalue::has(rng, "cuda")) {
        set_rng_state(device_, ivalue::get_tensor(rng, "cuda", "rng_state"));
      }
    }
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError("cannot load checkpoint '" + out.path + "': " + e.what());
  }
  zero_grad();
  interval_loss_sum_ = at::Tensor();
  step_loss_sum_ = at::Tensor();
  interval_losses_ = step_losses_ = interval_steps_ = interval_samples_ = 0;

  for (const auto& e : model) {
    const std::string key = e.key().toStringRef();
    if (!reserved_keys().count(key)) out.client_state[key] = e.value();
  }
  return out;
}

}  // namespace ds
