// dsrun's command line: DeepSpeed's `deepspeed` flags (shared/reference/deepspeed-behaviour.md
// §4.1), parsed with CLI11. Everything up to PROGRAM belongs to dsrun; PROGRAM and everything
// after it are passed to the program untouched (`--` may separate them).
#pragma once

#include <string>
#include <vector>

#include "launcher/plan.h"

namespace ds::launcher {

// DeepSpeed's default hostfile: used when it exists and -H is not given.
inline constexpr const char* kDefaultHostfile = "/job/hostfile";

struct CliOptions {
  std::string hostfile = kDefaultHostfile;
  bool hostfile_given = false;
  std::string include, exclude;
  int num_nodes = -1, num_gpus = -1, num_procs = -1;
  std::string master_addr;
  int master_port = kDefaultMasterPort;
  Backend backend = Backend::openmpi;
  std::string launcher_args;
  bool dry_run = false;
  std::vector<std::string> program;  // PROGRAM ARGS
  bool help = false;                 // -h/--help: print help_text, exit 0
  std::string help_text;
};

// Throws UsageError (exit 2) on an unknown option before PROGRAM, a bad value, or no PROGRAM.
CliOptions parse_command_line(const std::vector<std::string>& args);  // args without argv[0]

}  // namespace ds::launcher
