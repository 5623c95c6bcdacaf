#include "launcher/rank_wrapper.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "launcher/errors.h"

namespace ds::launcher {
namespace {

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

int read_int(const std::function<const char*(const char*)>& getenv, const char* name, const char* backend) {
  const char* value = getenv(name);
  if (value == nullptr) {
    throw UsageError(std::string(name) + " is not set: dsrun --rank-wrapper runs under " + backend +
                     " started by dsrun, not by hand");
  }
  int out = 0;
  std::string_view s(value);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc() || end != s.data() + s.size() || out < 0) {
    throw UsageError(std::string(name) + "='" + value + "' is not a rank number");
  }
  return out;
}

std::string short_name(const std::string& host) { return host.substr(0, host.find('.')); }

}  // namespace

std::vector<std::string> encode_wrapper_args(const WrapperSpec& spec) {
  std::vector<std::string> args{"--from", spec.source == RankSource::ompi ? "ompi" : "slurm"};
  std::vector<std::string> procs;
  for (int p : spec.node_procs) procs.push_back(std::to_string(p));
  args.push_back("--node-procs");
  args.push_back(join(procs, ","));
  for (const std::string& d : spec.node_devices) {
    args.push_back("--node-devices");
    args.push_back(d);
  }
  if (!spec.node_hosts.empty()) {
    args.push_back("--node-hosts");
    args.push_back(join(spec.node_hosts, ","));
  }
  return args;
}

WrapperSpec decode_wrapper_args(const std::vector<std::string>& args) {
  CLI::App app{"dsrun --rank-wrapper (internal)"};
  std::string from;
  std::vector<int> procs;
  std::vector<std::string> devices, hosts;
  app.add_option("--from", from)->required()->check(CLI::IsMember({"ompi", "slurm"}));
  app.add_option("--node-procs", procs)->required()->delimiter(',');
  app.add_option("--node-devices", devices);
  app.add_option("--node-hosts", hosts)->delimiter(',');
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes argv reversed
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    throw UsageError(std::string("dsrun --rank-wrapper: ") + e.what());
  }
  WrapperSpec spec;
  spec.source = from == "ompi" ? RankSource::ompi : RankSource::slurm;
  spec.node_procs = procs;
  spec.node_devices = devices;
  spec.node_hosts = hosts;
  for (int p : procs) {
    if (p <= 0) throw UsageError("dsrun --rank-wrapper: --node-procs entries must be >= 1");
  }
  if (!devices.empty() && devices.size() != procs.size()) {
    throw UsageError("dsrun --rank-wrapper: " + std::to_string(devices.size()) + " --node-devices for " +
                     std::to_string(procs.size()) + " nodes");
  }
  if (!hosts.empty() && hosts.size() != procs.size()) {
    throw UsageError("dsrun --rank-wrapper: " + std::to_string(hosts.size()) + " --node-hosts for " +
                     std::to_string(procs.size()) + " nodes");
  }
  return spec;
}

EnvList rank_environment(const WrapperSpec& spec, const std::function<const char*(const char*)>& getenv) {
  const bool ompi = spec.source == RankSource::ompi;
  const char* backend = ompi ? "mpirun" : "srun";
  const int rank = read_int(getenv, ompi ? "OMPI_COMM_WORLD_RANK" : "SLURM_PROCID", backend);
  const int local_rank = read_int(getenv, ompi ? "OMPI_COMM_WORLD_LOCAL_RANK" : "SLURM_LOCALID", backend);
  // The step's own task count; SLURM_NTASKS may be the whole allocation's in older Slurm.
  const char* size_name = ompi ? "OMPI_COMM_WORLD_SIZE"
                               : (getenv("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS");
  const int size = read_int(getenv, size_name, backend);
  int world = 0;
  for (int p : spec.node_procs) world += p;
  if (size != world) {
    throw UsageError(std::string(backend) + " started " + std::to_string(size) + " ranks but dsrun planned " +
                     std::to_string(world) + "; do not change the rank count in --launcher_args");
  }
  if (rank >= world) throw UsageError("rank " + std::to_string(rank) + " outside the world of " + std::to_string(world));

  size_t node = 0;
  if (ompi) {
    // mpirun --map-by slot with -H host:slots fills each host in order, so the rank alone gives
    // the node; the local rank OpenMPI reports must agree.
    int offset = 0;
    while (rank >= offset + spec.node_procs[node]) offset += spec.node_procs[node++];
    if (local_rank != rank - offset) {
      throw UsageError("OpenMPI placed rank " + std::to_string(rank) + " as local rank " + std::to_string(local_rank) +
                       " but dsrun expected local rank " + std::to_string(rank - offset) + " of node " +
                       std::to_string(node) + "; do not override --map-by/--rank-by or the hosts in --launcher_args");
    }
  } else if (spec.node_procs.size() > 1) {
    // Slurm orders nodes its own way, not by the hostfile: find this node by name.
    const char* name = getenv("SLURMD_NODENAME");
    if (name == nullptr) throw UsageError("SLURMD_NODENAME is not set: dsrun --rank-wrapper runs under srun");
    const std::string me(name);
    node = spec.node_hosts.size();
    for (size_t i = 0; i < spec.node_hosts.size(); ++i) {
      if (spec.node_hosts[i] == me || short_name(spec.node_hosts[i]) == short_name(me)) {
        node = i;
        break;
      }
    }
    if (node == spec.node_hosts.size()) {
      throw UsageError("srun ran rank " + std::to_string(rank) + " on node '" + me +
                       "', which is not one of the hostfile's hosts (" + join(spec.node_hosts, ",") + ")");
    }
  }
  if (local_rank >= spec.node_procs[node]) {
    throw UsageError("local rank " + std::to_string(local_rank) + " but node " + std::to_string(node) + " has " +
                     std::to_string(spec.node_procs[node]) + " ranks");
  }

  EnvList env;
  env_set(&env, "RANK", std::to_string(rank));
  env_set(&env, "LOCAL_RANK", std::to_string(local_rank));
  env_set(&env, "WORLD_SIZE", std::to_string(world));
  env_set(&env, "LOCAL_SIZE", std::to_string(spec.node_procs[node]));
  env_set(&env, "CROSS_RANK", std::to_string(node));
  env_set(&env, "CROSS_SIZE", std::to_string(spec.node_procs.size()));
  if (!spec.node_devices.empty()) env_set(&env, "CUDA_VISIBLE_DEVICES", spec.node_devices[node]);
  return env;
}

int wrapper_main(int argc, char** argv) {
  std::vector<std::string> args;
  int program_at = -1;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      program_at = i + 1;
      break;
    }
    args.emplace_back(argv[i]);
  }
  if (program_at < 0 || program_at >= argc) {
    std::cerr << "dsrun --rank-wrapper: no program after '--' (this mode is started by dsrun itself)\n";
    return kUsageExitCode;
  }
  try {
    WrapperSpec spec = decode_wrapper_args(args);
    for (const auto& [name, value] : rank_environment(spec, [](const char* n) { return std::getenv(n); })) {
      ::setenv(name.c_str(), value.c_str(), 1);
    }
  } catch (const UsageError& e) {
    std::cerr << "dsrun --rank-wrapper: error: " << e.what() << "\n";
    return kUsageExitCode;
  }
  ::execvp(argv[program_at], argv + program_at);
  std::cerr << "dsrun: cannot start '" << argv[program_at] << "': " << std::strerror(errno) << "\n";
  return 127;
}

}  // namespace ds::launcher
