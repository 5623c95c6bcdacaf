#include "examples/bing_bert/train/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "engine/checkpoint.h"
#include "engine/comm/distributed_context.h"
#include "engine/config/ds_config.h"
#include "engine/engine.h"
#include "engine/grad_reducer.h"
#include "engine/optimizer.h"
#include "examples/bing_bert/model/bert_model.h"
#include "examples/bing_bert/train/pretrain_data.h"

namespace ds::bert {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

// c10::Error's what() carries a C++ backtrace; users get the message.
std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Everything about one run that the loop needs beside the engine.
struct Run {
  Run(const PretrainArgs& a, std::ostream& l, DistributedContext& c) : args(a), log(l), ctx(c) {}
  const PretrainArgs& args;
  std::ostream& log;
  DistributedContext& ctx;
  RecipeConfig recipe;
  SeqTrainingConfig training;
  std::string job, save_dir, runs_dir;
  BertForPreTrainingPreLN model{nullptr};
  std::unique_ptr<Engine> engine;
  std::unique_ptr<ShardProvider> provider;
  std::vector<std::shared_ptr<const PretrainingShard>> validation;
  int64_t micro = 1, gas = 1;
  int64_t last_restore = 0;
  std::ofstream train_csv, validation_csv;
  PretrainResult result;

  bool rank0() const { return ctx.rank() == 0; }
};

void open_csv(std::ofstream& out, const std::string& path, const char* header) {
  const bool fresh = !fs::exists(path);
  out.open(path, std::ios::app);
  if (!out) throw InputError("cannot write '" + path + "' (check --output_dir)");
  if (fresh) out << header << "\n";
}

// The DeepSpeed config, with bing_bert's command-line switches folded in.
DeepSpeedConfig load_ds_config(const PretrainArgs& a, int64_t world, std::ostream& log, bool rank0) {
  DeepSpeedConfig ds;
  try {
    ds = load_config(a.deepspeed_config, static_cast<int>(world));
  } catch (const ConfigError& e) {
    throw InputError(a.deepspeed_config + ": " + e.what());
  }
  if (ds.scheduler.present) {
    throw InputError(a.deepspeed_config + ": scheduler: bert_pretrain sets the learning rate itself (--lr_schedule "
                     "with mixed_seq_training of --cf, as bing_bert does); remove the \"scheduler\" section");
  }
  if (a.deepspeed_transformer_kernel) {
    if (ds.transformer_kernel && !ds.transformer_kernel->enabled) {
      throw InputError(a.deepspeed_config + ": transformer_kernel.enabled: false, but --deepspeed_transformer_kernel "
                       "asks for the kernel; drop the flag or enable the section");
    }
    if (!ds.transformer_kernel) {
      ds.transformer_kernel = TransformerKernelConfig{};
      ds.transformer_kernel->fp16 = ds.fp16.enabled;
      ds.transformer_kernel->bf16 = ds.bf16.enabled;
    }
  }
  if (ds.transformer_kernel_enabled()) {
    auto& k = *ds.transformer_kernel;
    k.attn_dropout_checkpoint |= a.attention_dropout_checkpoint;
    k.normalize_invertible |= a.normalize_invertible;
    k.gelu_checkpoint |= a.gelu_checkpoint;
    k.stochastic_mode |= a.stochastic_mode;
  } else if (a.attention_dropout_checkpoint || a.normalize_invertible || a.gelu_checkpoint || a.stochastic_mode) {
    throw InputError("--attention_dropout_checkpoint / --normalize_invertible / --gelu_checkpoint / --stochastic_mode "
                     "are transformer kernel flags, but " + a.deepspeed_config +
                     " has no enabled transformer_kernel section (add one or pass --deepspeed_transformer_kernel)");
  }
  if (a.deepspeed_sparse_attention && !ds.sparse_attention) {
    if (rank0) log << "deepspeed sparse attention is not set; Fixed sparsity is used as default." << std::endl;
    ds.sparse_attention = SparseAttentionConfig{};
  }
  return ds;
}

// bing_bert's prepare_optimizer_parameters: no pooler; no decay on biases and LayerNorms (and, with
// the kernel, on its LayerNorm and bias parameters).
std::vector<ParamGroupSpec> bert_param_groups(const torch::nn::Module& model, double weight_decay, bool kernel) {
  std::vector<std::string> no_decay{"bias", "LayerNorm.bias", "LayerNorm.weight"};
  if (kernel) {
    for (const char* n : {"attn_nw", "attn_nb", "norm_w", "norm_b", "attn_qkvb", "attn_ob", "inter_b", "output_b"}) {
      no_decay.emplace_back(n);
    }
  }
  return decay_param_groups(model, weight_decay, no_decay, {"pooler"});
}

std::vector<int64_t> kernel_rng_offsets(BertForPreTrainingPreLN& model) {
  std::vector<int64_t> out;
  auto& enc = *model->bert->encoder;
  if (enc.kind() != EncoderKind::TransformerKernel) return out;
  for (size_t i = 0; i < enc.num_layers(); ++i) out.push_back(static_cast<int64_t>(enc.kernel_layer(i)->rng_offset()));
  return out;
}

void set_kernel_rng_offsets(BertForPreTrainingPreLN& model, const std::vector<int64_t>& offsets) {
  auto& enc = *model->bert->encoder;
  if (enc.kind() != EncoderKind::TransformerKernel || offsets.size() != enc.num_layers()) return;
  for (size_t i = 0; i < enc.num_layers(); ++i) {
    auto layer = enc.kernel_layer(i);
    layer->set_rng_state(layer->rng_seed(), static_cast<uint64_t>(offsets[i]));
  }
}

// Validation loss (MLM mean over masked tokens + NSP mean over sequences) and accuracies, rank 0.
void validate(Run& r) {
  if (r.validation.empty() || !r.rank0()) return;
  const auto start = Clock::now();
  r.engine->eval();
  const torch::NoGradGuard no_grad;
  double mlm_sum = 0, nsp_sum = 0, mlm_n = 0, nsp_n = 0, mlm_ok = 0, nsp_ok = 0;
  int64_t batches = 0;
  for (const auto& shard : r.validation) {
    for (int64_t first = 0; first < shard->num_instances; first += r.micro) {
      if (r.args.max_validation_batches > 0 && batches >= r.args.max_validation_batches) break;
      const int64_t count = std::min(r.micro, shard->num_instances - first);
      std::vector<int64_t> rows(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) rows[static_cast<size_t>(i)] = first + i;
      const PretrainingBatch b = make_batch(*shard, rows.data(), count).to(r.engine->device());
      const PretrainingOutput o = r.model->forward_outputs(b, true);
      const double m = static_cast<double>(o.mlm_count.item<int64_t>());
      const double n = static_cast<double>(o.nsp_count.item<int64_t>());
      mlm_sum += o.mlm_loss.item<double>() * m;
      nsp_sum += o.nsp_loss.item<double>() * n;
      mlm_n += m;
      nsp_n += n;
      mlm_ok += static_cast<double>(o.mlm_correct.item<int64_t>());
      nsp_ok += static_cast<double>(o.nsp_correct.item<int64_t>());
      ++batches;
    }
  }
  r.engine->train();
  const double mlm = mlm_n > 0 ? mlm_sum / mlm_n : 0.0, nsp = nsp_n > 0 ? nsp_sum / nsp_n : 0.0;
  const double mlm_acc = mlm_n > 0 ? mlm_ok / mlm_n : 0.0, nsp_acc = nsp_n > 0 ? nsp_ok / nsp_n : 0.0;
  r.result.validation_loss = mlm + nsp;
  r.result.validation_mlm_accuracy = mlm_acc;
  const int64_t step = r.engine->global_steps();
  std::ostringstream os;
  os << std::fixed << std::setprecision(4) << "validation: step=" << step << ", loss=" << mlm + nsp << " (mlm " << mlm
     << ", nsp " << nsp << "), mlm_accuracy=" << std::setprecision(2) << 100.0 * mlm_acc
     << "%, nsp_accuracy=" << 100.0 * nsp_acc << "% over " << static_cast<int64_t>(nsp_n) << " sequences ("
     << std::setprecision(1) << seconds_since(start) << " s)";
  r.log << os.str() << std::endl;
  r.validation_csv << step << "," << mlm + nsp << "," << mlm << "," << nsp << "," << mlm_acc << "," << nsp_acc << "\n";
  r.validation_csv.flush();
}

void save(Run& r, int64_t epoch, int64_t epoch_micro_step, bool epoch_complete) {
  const int64_t step = r.engine->global_steps();
  const std::string tag = "epoch" + std::to_string(epoch + 1) + "_step" + std::to_string(step);
  ClientState client{
      {"epoch", at::IValue(epoch + 1)},
      {"last_global_step", at::IValue(step)},
      {"last_global_data_samples", at::IValue(r.engine->global_samples())},
      {"epoch_micro_step", at::IValue(epoch_micro_step)},
      {"epoch_complete", at::IValue(epoch_complete)},
      {"train_micro_batch_size_per_gpu", at::IValue(r.micro)},
      {"data_world_size", at::IValue(static_cast<int64_t>(r.ctx.world_size()))},
      {"seed", at::IValue(static_cast<int64_t>(r.args.seed))},
      {"transformer_kernel_rng_offsets", at::IValue(kernel_rng_offsets(r.model))},
  };
  const std::string path = r.engine->save_checkpoint(r.save_dir, tag, client);
  r.result.checkpoints.push_back(path);
  if (r.rank0()) r.log << "checkpoint: " << path << std::endl;
  validate(r);
}

// Reads the client state of a loaded checkpoint: where to continue.
void resume(Run& r, const LoadedCheckpoint& loaded, int64_t& start_epoch, int64_t& start_micro) {
  const auto& cs = loaded.client_state;
  auto get_int = [&](const char* key, int64_t fallback) {
    auto it = cs.find(key);
    return it != cs.end() && it->second.isInt() ? it->second.toInt() : fallback;
  };
  const int64_t epoch = get_int("epoch", 0);
  auto complete_it = cs.find("epoch_complete");
  const bool complete = complete_it == cs.end() || !complete_it->second.isBool() || complete_it->second.toBool();
  const bool same_batching = get_int("train_micro_batch_size_per_gpu", -1) == r.micro &&
                             get_int("data_world_size", -1) == r.ctx.world_size() &&
                             get_int("seed", -1) == static_cast<int64_t>(r.args.seed);
  if (complete || epoch < 1) {
    start_epoch = epoch;            // bing_bert: training continues at range(epoch, num_epochs)
    start_micro = 0;
  } else if (same_batching) {
    start_epoch = epoch - 1;        // the same shard, from the next micro-batch on
    start_micro = get_int("epoch_micro_step", 0);
  } else {
    start_epoch = epoch;
    start_micro = 0;
    if (r.rank0()) {
      r.log << "note: the checkpoint stopped inside epoch " << epoch
            << " with another micro batch size, world size or seed; continuing with the next epoch" << std::endl;
    }
  }
  auto off = cs.find("transformer_kernel_rng_offsets");
  if (off != cs.end() && off->second.isIntList()) set_kernel_rng_offsets(r.model, off->second.toIntVector());
  if (r.args.rewarmup) r.last_restore = r.engine->global_steps();
  if (r.rank0()) {
    r.log << "resumed from " << loaded.path << ": global step " << r.engine->global_steps() << ", samples "
          << r.engine->global_samples() << ", continuing in epoch " << start_epoch + 1 << " at micro-batch "
          << start_micro << (r.args.rewarmup ? " (LR schedule restarts: --rewarmup)" : "") << std::endl;
  }
}

}  // namespace

PretrainResult run_pretraining(const PretrainArgs& a, std::ostream& log, DistributedContext& ctx) {
  // ------------------------------------------------------------------ setup: every input checked
  if (a.config_file.empty()) throw InputError("--cf (the model config, e.g. configs/bert_tiny.json) is required");
  if (a.deepspeed_config.empty()) throw InputError("--deepspeed_config is required");
  if (a.output_dir.empty()) throw InputError("--output_dir is required");
  if (a.max_seq_length <= 0) throw InputError("--max_seq_length must be > 0, got " + std::to_string(a.max_seq_length));
  if (a.max_predictions_per_seq <= 0) {
    throw InputError("--max_predictions_per_seq must be > 0, got " + std::to_string(a.max_predictions_per_seq));
  }
  if (a.print_steps <= 0) throw InputError("--print_steps must be > 0, got " + std::to_string(a.print_steps));
  if (a.max_steps <= 0 || a.max_steps_per_epoch <= 0) throw InputError("--max_steps and --max_steps_per_epoch must be > 0");
  if (a.ckpt_every < 0) throw InputError("--ckpt_every must be >= 0, got " + std::to_string(a.ckpt_every));

  Run r(a, log, ctx);
  r.recipe = load_recipe_config(a.config_file);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const int threads = a.num_threads > 0 ? a.num_threads : std::max(1, cores / std::max(1, ctx.local_size()));
  torch::set_num_threads(threads);
  r.training = r.recipe.training_for(a.max_seq_length);
  const SeqDataConfig data = r.recipe.data_for(a.max_seq_length);
  r.job = !a.job_name.empty() ? a.job_name : !r.recipe.name.empty() ? r.recipe.name : std::string("bing_bert");
  r.save_dir = a.output_dir + "/saved_models/" + r.job;
  r.runs_dir = a.output_dir + "/runs/" + r.job;

  DeepSpeedConfig ds = load_ds_config(a, ctx.world_size(), log, r.rank0());
  r.micro = ds.train_micro_batch_size_per_gpu;
  r.gas = ds.gradient_accumulation_steps;

  BertConfig model_cfg = r.recipe.model;
  BertModelOptions options;
  try {
    options = model_options_from_ds_config(model_cfg, ds, static_cast<int64_t>(a.seed), a.max_seq_length);
  } catch (const std::exception& e) {
    throw InputError(a.deepspeed_config + ": " + message_of(e));
  }
  const bool extend_positions = a.max_seq_length > model_cfg.max_position_embeddings;
  if (extend_positions && options.kind != EncoderKind::SparseAttention) {
    throw InputError(a.config_file + ": bert_model_config.max_position_embeddings: the position table has " +
                     std::to_string(model_cfg.max_position_embeddings) + " rows, but --max_seq_length is " +
                     std::to_string(a.max_seq_length) +
                     "; raise max_position_embeddings, or use sparse attention (a \"sparse_attention\" section in "
                     "the DeepSpeed config), which extends the table for long sequences");
  }

  DataOptions dopt;
  dopt.world_size = ctx.world_size();
  dopt.rank = ctx.rank();
  dopt.seed = a.seed;
  dopt.micro_batch = r.micro;
  dopt.gradient_accumulation_steps = r.gas;
  dopt.read.vocab_size = model_cfg.padded_vocab_size();
  dopt.read.expected_seq_length = a.max_seq_length;
  dopt.read.expected_max_predictions = a.max_predictions_per_seq;
  dopt.error_context = "; the model's vocabulary is " + a.config_file + ": bert_model_config.vocab_size " +
                       std::to_string(model_cfg.vocab_size) + " (padded to " +
                       std::to_string(model_cfg.padded_vocab_size()) + "): use the vocabulary the shards were made with";
  const std::string seq_key = "data.mixed_seq_datasets." + std::to_string(a.max_seq_length);
  const std::string train_dir = join_path(a.data_path_prefix, data.pretrain_dataset);
  std::vector<std::string> train_files;
  try {
    train_files = list_shard_files(train_dir, "training");
  } catch (const std::exception& e) {
    throw InputError(std::string(e.what()) + " (" + a.config_file + ": " + seq_key + ".pretrain_dataset '" +
                     data.pretrain_dataset + "' under --data_path_prefix '" + a.data_path_prefix +
                     "'; make shards with examples/bing_bert/fetch_data.sh or bert_prep)");
  }
  r.provider = std::make_unique<ShardProvider>(train_files, dopt);
  // Only rank 0 validates, so only rank 0 reads (and checks) the validation shards.
  if (!a.validation_data_path_prefix.empty() && r.rank0()) {
    const std::string vdir = join_path(a.validation_data_path_prefix,
                                       data.validation_dataset.empty() ? data.pretrain_dataset : data.validation_dataset);
    std::vector<std::string> vfiles;
    try {
      vfiles = list_shard_files(vdir, "validation");
    } catch (const std::exception& e) {
      throw InputError(std::string(e.what()) + " (" + a.config_file + ": " + seq_key +
                       ".validation_dataset under --validation_data_path_prefix '" + a.validation_data_path_prefix + "')");
    }
    r.validation = read_validation_shards(vfiles, dopt);
  }

  BertForPreTrainingPreLN model{nullptr};
  try {
    torch::manual_seed(a.seed);
    model = BertForPreTrainingPreLN(model_cfg, options);
    if (extend_positions) extend_position_embedding(*model, a.max_seq_length);
    r.model = model;
    EngineOptions eo;
    eo.param_groups = bert_param_groups(*model, r.training.weight_decay, options.kind == EncoderKind::TransformerKernel);
    eo.device = ctx.device();
    eo.reducer = make_gradient_reducer(ctx, ds, *eo.device);
    eo.log = &log;
    r.engine = std::make_unique<Engine>(model, ds, eo);
  } catch (const std::exception& e) {
    throw InputError("building the model of " + a.config_file + " with " + a.deepspeed_config + ": " + message_of(e));
  }

  int64_t start_epoch = 0, start_micro = 0;
  if (!a.load_training_checkpoint.empty()) {
    LoadedCheckpoint loaded;
    try {
      loaded = r.engine->load_checkpoint(a.load_training_checkpoint,
                                         a.load_checkpoint_id.empty() ? std::nullopt
                                                                      : std::optional<std::string>(a.load_checkpoint_id));
    } catch (const std::exception& e) {
      throw InputError("--load_training_checkpoint '" + a.load_training_checkpoint + "': " + message_of(e));
    }
    resume(r, loaded, start_epoch, start_micro);
  }
  const int64_t num_epochs = r.training.num_epochs;
  // The first shard's values (ids against the vocabulary) are checked now, before any step.
  std::shared_ptr<const PretrainingShard> first_shard;
  if (start_epoch < num_epochs) first_shard = r.provider->shard(start_epoch);

  if (r.rank0()) {
    fs::create_directories(r.runs_dir);
    open_csv(r.train_csv, r.runs_dir + "/train.csv", "step,sample_count,loss,lr");
    open_csv(r.validation_csv, r.runs_dir + "/validation.csv", "step,loss,mlm_loss,nsp_loss,mlm_accuracy,nsp_accuracy");
    int64_t params = 0;
    for (const auto& p : model->parameters()) params += p.numel();
    log << "bert_pretrain: job " << r.job << ", model " << a.config_file << " (H " << model_cfg.hidden_size << ", L "
        << model_cfg.num_hidden_layers << ", heads " << model_cfg.num_attention_heads << ", I "
        << model_cfg.intermediate_size << ", vocab " << model_cfg.padded_vocab_size() << ", " << params
        << " parameters), layer " << encoder_kind_name(options.kind) << ", " << dtype_name(ds.model_dtype()) << " on "
        << r.engine->device() << ", " << threads << " threads" << std::endl;
    log << "bert_pretrain: seq " << a.max_seq_length << ", micro batch " << r.micro << " x accumulation " << r.gas
        << " x ranks " << ctx.world_size() << " = " << ds.train_batch_size << " sequences per step; "
        << train_files.size() << " training shards in " << train_dir << ", "
        << (r.validation.empty() ? std::string("no validation") : std::to_string(r.validation.size()) + " validation shards")
        << "; LR " << lr_schedule_name(a.lr_schedule) << " peak " << r.training.learning_rate << " + offset "
        << a.lr_offset << ", warmup " << r.training.warmup_proportion << " of " << r.training.total_training_steps
        << " steps; checkpoints in " << r.save_dir << std::endl;
  }

  // ------------------------------------------------------------------ training
  const auto run_start = Clock::now();
  auto interval_start = Clock::now();
  int64_t interval_samples_start = r.engine->global_samples();
  double interval_flops = 0.0, interval_loss = 0.0;
  int64_t interval_losses = 0;
  at::Tensor step_loss;  // sum of this step's micro-batch losses, on the device (one sync per step)
  int64_t step_losses = 0;
  bool stop = r.engine->global_steps() - r.last_restore >= a.max_steps;
  r.engine->train();
  for (int64_t epoch = start_epoch; epoch < num_epochs && !stop; ++epoch) {
    const auto epoch_start = Clock::now();
    std::shared_ptr<const PretrainingShard> shard = first_shard ? std::move(first_shard) : r.provider->shard(epoch);
    first_shard.reset();
    r.result.shards_read.push_back(shard->path);
    if (epoch + 1 < num_epochs) r.provider->prefetch(epoch + 1);
    const std::vector<int64_t> order = r.provider->order(epoch, shard->num_instances);
    const int64_t nb = std::min(r.provider->micro_batches(epoch),
                                a.max_steps_per_epoch < std::numeric_limits<int64_t>::max() / r.gas
                                    ? a.max_steps_per_epoch * r.gas
                                    : std::numeric_limits<int64_t>::max());
    int64_t mb = epoch == start_epoch ? std::min(start_micro, nb) : 0;
    for (; mb < nb && !stop; ++mb) {
      int64_t masked = 0;
      const PretrainingBatch batch =
          make_batch(*shard, order.data() + mb * r.micro, r.micro, &masked).to(r.engine->device());
      const at::Tensor loss = r.engine->forward([&] { return r.model->forward(batch); });
      r.engine->backward(loss);
      {
        const torch::NoGradGuard no_grad;
        const at::Tensor v = loss.detach().to(at::kFloat);
        step_loss = step_loss.defined() ? step_loss + v : v;
      }
      ++step_losses;
      interval_flops += 3.0 * static_cast<double>(ctx.world_size()) * static_cast<double>(r.micro) *
                        forward_flops_per_sequence(model_cfg, a.max_seq_length,
                                                   static_cast<double>(masked) / static_cast<double>(r.micro));
      const bool boundary = r.engine->is_gradient_accumulation_boundary();
      double lr = 0.0;
      if (boundary) {
        lr = scheduled_lr(a.lr_schedule, r.engine->global_steps() - r.last_restore, r.training, a.lr_offset);
        for (auto& g : r.engine->optimizer().param_groups()) g.lr = lr;
      }
      r.engine->step();
      if (!boundary) continue;

      const int64_t step = r.engine->global_steps();
      const double mean_loss = step_loss.item<double>() / static_cast<double>(step_losses);
      r.result.step_losses.push_back(mean_loss);
      interval_loss += mean_loss;
      ++interval_losses;
      ++r.result.steps_this_run;
      if (r.rank0()) {
        r.train_csv << step << "," << r.engine->global_samples() << "," << std::setprecision(8)
                    << r.result.step_losses.back() << "," << lr << "\n";
      }
      step_loss = at::Tensor();
      step_losses = 0;
      if (step % a.print_steps == 0) {
        const double dt = seconds_since(interval_start);
        if (r.rank0()) {
          std::ostringstream os;
          os << "bing_bert_progress: step=" << step << ", loss=" << std::fixed << std::setprecision(5)
             << interval_loss / static_cast<double>(interval_losses) << ", lr=" << std::scientific
             << std::setprecision(4) << lr << ", sample_count=" << r.engine->global_samples() << std::fixed
             << std::setprecision(1) << ", samples/s="
             << static_cast<double>(r.engine->global_samples() - interval_samples_start) / dt
             << std::setprecision(4) << ", TFLOP/s=" << interval_flops / dt / 1e12;
          if (r.engine->last_step_skipped()) os << " (step skipped: fp16 overflow)";
          log << os.str() << std::endl;
          r.train_csv.flush();
        }
        interval_start = Clock::now();
        interval_samples_start = r.engine->global_samples();
        interval_flops = interval_loss = 0.0;
        interval_losses = 0;
      }
      stop = step - r.last_restore >= a.max_steps;
      if (!stop && a.ckpt_every > 0 && step % a.ckpt_every == 0 && mb + 1 < nb) {
        // Checkpoint and validation time stays out of the throughput figures.
        const auto t = Clock::now();
        save(r, epoch, mb + 1, false);
        interval_start += Clock::now() - t;
      }
    }
    save(r, epoch, mb, mb >= nb);
    interval_start = Clock::now();
    interval_samples_start = r.engine->global_samples();
    interval_flops = interval_loss = 0.0;
    interval_losses = 0;
    if (r.rank0()) {
      log << "Time for shard " << r.provider->file_index(epoch) << " (epoch " << epoch + 1 << "): " << std::fixed
          << std::setprecision(1) << seconds_since(epoch_start) << " seconds" << std::endl;
    }
  }
  r.result.global_step = r.engine->global_steps();
  r.result.seconds = seconds_since(run_start);
  for (const auto& p : model->parameters()) r.result.parameter_checksum += p.detach().to(at::kDouble).sum().item<double>();
  if (r.rank0()) {
    log << "bert_pretrain: done, " << r.result.steps_this_run << " steps in " << std::fixed << std::setprecision(1)
        << r.result.seconds << " s (global step " << r.result.global_step << ")" << std::endl;
  }
  return r.result;
}

}  // namespace ds::bert
