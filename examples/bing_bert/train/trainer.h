// bing_bert's deepspeed_train.py on ds::Engine: the training loop behind bert_pretrain.
//
// Setup (everything that can be wrong with the input is found here, before the first step, and
// thrown as InputError naming the file and the field): the model config (--cf) and its
// mixed_seq_training / mixed_seq_datasets entries for --max_seq_length, the DeepSpeed config, the
// layer switches, the position table against --max_seq_length, every training shard's keys and
// shapes, the first shard's values against the model's vocabulary, the validation shards, the
// checkpoint to resume.
//
// Loop (reference §5.8): epoch = one shard per rank; per micro-batch forward / backward; at each
// accumulation boundary the bing_bert LR (lr_schedule.h) goes into every parameter group, then
// engine.step(). Progress every --print_steps optimizer steps (rank 0):
//   bing_bert_progress: step=N, loss=L, lr=X, sample_count=S, samples/s=..., TFLOP/s=...
// loss is the mean micro-batch loss since the previous line (bing_bert prints the last micro-batch's);
// TFLOP/s counts 3x forward_flops_per_sequence (bert_model.h) of every sequence of every rank over
// the wall time since the previous line. Checkpoints (every epoch, every --ckpt_every steps, at
// the end) go to {output_dir}/saved_models/{job_name}/epoch{e}_step{n} with client state epoch,
// last_global_step, last_global_data_samples (bing_bert's) plus the position inside the epoch, so a
// resumed run continues exactly where the saved one stopped; rank 0 then prints the validation loss
// and MLM / NSP accuracy. CSV files of the curves: {output_dir}/runs/{job_name}/{train,validation}.csv.
#pragma once

#include <cmath>
#include <cstdint>
#include <iosfwd>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "examples/bing_bert/train/lr_schedule.h"
#include "examples/bing_bert/train/recipe_config.h"

namespace ds {
class DistributedContext;
}

namespace ds::bert {

struct PretrainArgs {
  std::string config_file;                    // --cf
  std::string deepspeed_config;               // --deepspeed_config
  int64_t max_seq_length = 512;
  int64_t max_predictions_per_seq = 80;
  std::string output_dir;
  std::string job_name;                       // "" -> the config's "name"
  std::string data_path_prefix;
  std::string validation_data_path_prefix;    // "" -> no validation (bing_bert)
  uint64_t seed = 42;
  LrSchedule lr_schedule = LrSchedule::LE;
  double lr_offset = 0.0;
  int64_t max_steps = std::numeric_limits<int64_t>::max();
  int64_t max_steps_per_epoch = std::numeric_limits<int64_t>::max();
  int64_t print_steps = 100;
  std::string load_training_checkpoint;       // checkpoint folder ({output_dir}/saved_models/{job})
  std::string load_checkpoint_id;             // tag; "" -> the folder's `latest`
  bool rewarmup = false;
  int64_t ckpt_every = 0;                     // > 0: also checkpoint every N optimizer steps
  // bing_bert's switches. The DeepSpeed config decides; these add a default section when it has none.
  bool deepspeed_transformer_kernel = false;
  bool deepspeed_sparse_attention = false;
  bool attention_dropout_checkpoint = false, normalize_invertible = false, gelu_checkpoint = false,
       stochastic_mode = false;
  int num_threads = 0;                        // 0: cores / ranks on this node
  int64_t max_validation_batches = 0;         // 0: the whole validation set
};

struct PretrainResult {
  int64_t global_step = 0;                    // optimizer steps done (after a resume: in all)
  int64_t steps_this_run = 0;
  std::vector<double> step_losses;            // mean micro-batch loss of every optimizer step of this run
  std::vector<std::string> checkpoints;       // written, in order
  double validation_loss = std::nan(""), validation_mlm_accuracy = std::nan("");  // last validation
  double seconds = 0.0;                       // training loop wall time
  std::vector<std::string> shards_read;       // this rank's training shard of every epoch run
  double parameter_checksum = 0.0;            // sum of every model parameter at the end (float64)
};

// Runs the recipe on this rank of `ctx` (engine/comm/distributed_context.h: rank, world size,
// device, the data-parallel gradient reducer). Progress goes to `log` (rank 0). InputError: bad
// input (before any step); other exceptions: failures while training.
PretrainResult run_pretraining(const PretrainArgs& args, std::ostream& log, DistributedContext& ctx);

}  // namespace ds::bert
