// bert_pretrain: bing_bert's deepspeed_train.py as a C++ program (examples/bing_bert/README.md).
//
//   dsrun --num_gpus 8 build/bin/bert_pretrain --cf configs/bert_base.json
//       --deepspeed_config configs/ds_bert_base_gpu.json --max_seq_length 128
//       --output_dir out --job_name base_seq128 --data_path_prefix data --lr_schedule EE
//
// Exit status: 0 done; 2 bad input (flags, configs, shards, checkpoint to resume: found before the
// first training step, the message names the file and the field); 1 a failure while training.
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <exception>
#include <iostream>

#include "engine/comm/distributed_context.h"
#include "examples/bing_bert/train/trainer.h"

int main(int argc, char** argv) {
  ds::bert::PretrainArgs a;
  std::string lr_schedule = "LE";
  bool deepspeed = false, use_nvidia_dataset = false;

  CLI::App app{"bing_bert BERT pretraining (pre-LN BERT, MLM + NSP) on the deepspeed_cpp engine"};
  app.option_defaults()->always_capture_default();
  app.add_option("--cf,--config-file", a.config_file, "model/training config (bing_bert format, e.g. configs/bert_base.json)")
      ->required();
  app.add_option("--deepspeed_config", a.deepspeed_config, "DeepSpeed JSON config")->required();
  app.add_option("--max_seq_length", a.max_seq_length,
                 "sequence length; picks the mixed_seq_training / mixed_seq_datasets entries of --cf");
  app.add_option("--max_predictions_per_seq,--max_pred", a.max_predictions_per_seq,
                 "masked positions per sequence in the shards");
  app.add_option("--output_dir", a.output_dir, "checkpoints go to OUTPUT_DIR/saved_models/JOB, curves to OUTPUT_DIR/runs/JOB")
      ->required();
  app.add_option("--job_name", a.job_name, "default: the \"name\" of --cf");
  app.add_option("--data_path_prefix", a.data_path_prefix, "prefix of data.mixed_seq_datasets.<seq>.pretrain_dataset");
  app.add_option("--validation_data_path_prefix", a.validation_data_path_prefix,
                 "validation shards' prefix; without it no validation runs (as bing_bert)");
  app.add_option("--seed", a.seed, "model init, dropout, shard and instance order");
  app.add_option("--lr_schedule", lr_schedule, "EE, EP or LE (bing_bert's schedules)")
      ->check(CLI::IsMember({"EE", "EP", "LE"}));
  app.add_option("--lr_offset", a.lr_offset, "added to the scheduled learning rate");
  app.add_option("--max_steps", a.max_steps, "stop after this many optimizer steps (since the restore with --rewarmup)");
  app.add_option("--max_steps_per_epoch", a.max_steps_per_epoch, "optimizer steps per epoch at most");
  app.add_option("--print_steps", a.print_steps, "progress line every N optimizer steps");
  app.add_option("--load_training_checkpoint,--load_cp", a.load_training_checkpoint,
                 "checkpoint folder to resume (OUTPUT_DIR/saved_models/JOB of the earlier run)");
  app.add_option("--load_checkpoint_id,--load_cp_id", a.load_checkpoint_id, "tag to resume (default: the folder's latest)");
  app.add_flag("--rewarmup", a.rewarmup, "restart the LR schedule (and --max_steps) at the restored step");
  app.add_option("--ckpt_every", a.ckpt_every, "also checkpoint every N optimizer steps (0: per epoch only)");
  app.add_flag("--deepspeed_transformer_kernel", a.deepspeed_transformer_kernel,
               "use DeepSpeedTransformerLayer (same as an enabled transformer_kernel section)");
  app.add_flag("--deepspeed_sparse_attention", a.deepspeed_sparse_attention,
               "use BertSparseSelfAttention (Fixed sparsity when the config has no sparse_attention section)");
  app.add_flag("--attention_dropout_checkpoint", a.attention_dropout_checkpoint, "transformer kernel memory flag");
  app.add_flag("--normalize_invertible", a.normalize_invertible, "transformer kernel memory flag");
  app.add_flag("--gelu_checkpoint", a.gelu_checkpoint, "transformer kernel memory flag");
  app.add_flag("--stochastic_mode", a.stochastic_mode, "transformer kernel flag");
  app.add_option("--num_threads", a.num_threads, "CPU threads (0: cores / ranks on this node)");
  app.add_option("--max_validation_batches", a.max_validation_batches, "0: the whole validation set");
  app.add_flag("--deepspeed", deepspeed, "accepted for bing_bert scripts (always on)");
  app.add_flag("--use_nvidia_dataset", use_nvidia_dataset, "accepted for bing_bert scripts (HDF5 shards are the only format)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  // With several ranks, a non-zero return on any of them ends the whole job (MPI_Abort).
  return ds::run_distributed([&](ds::DistributedContext& ctx) {
    const std::string who = ctx.world_size() > 1 ? " (rank " + std::to_string(ctx.rank()) + ")" : "";
    try {
      a.lr_schedule = ds::bert::parse_lr_schedule(lr_schedule);
      ds::bert::run_pretraining(a, std::cout, ctx);
    } catch (const ds::bert::InputError& e) {
      std::cerr << "bert_pretrain: error" << who << ": " << e.what() << std::endl;
      return 2;
    } catch (const c10::Error& e) {
      std::cerr << "bert_pretrain: training failed" << who << ": " << e.what_without_backtrace() << std::endl;
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "bert_pretrain: training failed" << who << ": " << e.what() << std::endl;
      return 1;
    }
    return 0;
  });
}
