#include "launcher/cli.h"

#include <CLI/CLI.hpp>

#include "launcher/errors.h"

namespace ds::launcher {
namespace {

// CLI11 2.1 prints "Usage: dsrun [OPTIONS]"; PROGRAM and its arguments are the point of the command.
class DsrunFormatter : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App*, std::string) const override {
    return "Usage: dsrun [OPTIONS] PROGRAM [ARGS...]\n";
  }
};

}  // namespace

CliOptions parse_command_line(const std::vector<std::string>& args) {
  CliOptions o;
  std::string launcher = "openmpi";
  bool ignored = false;
  CLI::App app{
      "dsrun: start PROGRAM on every selected GPU (or CPU rank) of one or many nodes, through OpenMPI's "
      "mpirun (default), Slurm's srun or by itself, with DeepSpeed's launcher flags.",
      "dsrun"};
  app.prefix_command();  // stop at PROGRAM: its own flags are not ours
  app.formatter(std::make_shared<DsrunFormatter>());
  app.add_option("-H,--hostfile", o.hostfile,
                 "hostfile of '<host> slots=<N>' lines (default /job/hostfile when it exists, else this machine)");
  app.add_option("-i,--include", o.include, "resources to use: NAME[:SLOT[,SLOT...]][@NAME...], e.g. worker-0@worker-1:0,2");
  app.add_option("-e,--exclude", o.exclude, "resources to leave out, same syntax as --include");
  app.add_option("--num_nodes", o.num_nodes, "use the first N hosts");
  app.add_option("--num_gpus,--num_accelerators", o.num_gpus, "use GPUs 0..N-1 of every host");
  app.add_option("--num_procs", o.num_procs, "start N CPU ranks on this machine (default 1 when there is no GPU)");
  app.add_option("--master_addr", o.master_addr, "MASTER_ADDR (default 127.0.0.1 on one node, else the first host)");
  app.add_option("--master_port", o.master_port, "MASTER_PORT")->check(CLI::Range(1, 65535))->capture_default_str();
  app.add_option("--launcher", launcher, "openmpi (default), slurm or local (dsrun forks the ranks itself)");
  app.add_option("--launcher_args", o.launcher_args,
                 "extra arguments for mpirun/srun, split like a shell line; use --launcher_args=\"--flag\"");
  app.add_flag("--dry-run,--dry_run", o.dry_run, "print the exact command(s) and environment, start nothing");
  app.add_flag("--no_python,--no_local_rank,--force_multi", ignored,
               "accepted for DeepSpeed compatibility: dsrun never runs python, never appends --local_rank, "
               "and always uses the chosen backend");
  app.footer(
      "PROGRAM [ARGS...] follows the options.\n"
      "Examples:\n"
      "  dsrun --num_gpus 8 ./bert_pretrain --deepspeed_config ds.json\n"
      "  dsrun -H hostfile -i \"worker-0@worker-1:0,2\" ./bert_pretrain --deepspeed_config ds.json\n"
      "  dsrun --num_procs 2 --launcher local ./my_cpu_job\n"
      "Every rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_SIZE, CROSS_RANK, CROSS_SIZE, MASTER_ADDR, MASTER_PORT\n"
      "and, with GPUs, CUDA_VISIBLE_DEVICES of its node.\n");

  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes argv reversed
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    o.help = true;
    o.help_text = app.help();
    return o;
  } catch (const CLI::ParseError& e) {
    throw UsageError(std::string(e.what()) + " (see dsrun --help)");
  }
  o.hostfile_given = app.count("--hostfile") > 0;
  o.backend = parse_backend(launcher);

  std::vector<std::string> rest = app.remaining();
  if (!rest.empty() && rest.front() == "--") {
    rest.erase(rest.begin());
  } else if (!rest.empty() && rest.front().size() > 1 && rest.front().front() == '-') {
    // prefix_command hands unknown options over as if they were PROGRAM; a typo such as
    // --num_gpu must not be run as a program.
    throw UsageError("unrecognized arguments: " + rest.front() +
                     " (dsrun options go before PROGRAM; a PROGRAM starting with '-' goes after '--'; see dsrun --help)");
  }
  if (rest.empty()) throw UsageError("the following arguments are required: PROGRAM (see dsrun --help)");
  o.program = std::move(rest);
  return o;
}

}  // namespace ds::launcher
