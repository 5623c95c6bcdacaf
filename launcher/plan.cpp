#include "launcher/plan.h"

#include <algorithm>
#include <cctype>

#include "launcher/errors.h"
#include "launcher/rank_wrapper.h"
#include "launcher/shell.h"

namespace ds::launcher {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

bool is_loopback(std::string_view host) {
  return host == "localhost" || host == "::1" || host.substr(0, 4) == "127.";
}

// True when the user already gave one of `flags` (with or without a value after '=') in
// --launcher_args, so our default of that kind must not be added twice.
bool user_gave(const std::vector<std::string>& args, std::initializer_list<std::string_view> flags) {
  for (const std::string& a : args) {
    for (std::string_view f : flags) {
      if (a == f || (a.size() > f.size() && a.compare(0, f.size(), f) == 0 && a[f.size()] == '=')) return true;
    }
  }
  return false;
}

// `--mca btl ...` (or -mca / --mca=) in the user's launcher args.
bool user_gave_mca(const std::vector<std::string>& args, std::string_view param) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if ((args[i] == "--mca" || args[i] == "-mca") && args[i + 1] == param) return true;
  }
  return false;
}

EnvList rank_independent_env(const PlanInputs& in, int world_size, bool with_inherited) {
  EnvList env;
  env_set(&env, "MASTER_ADDR", in.master_addr);
  env_set(&env, "MASTER_PORT", std::to_string(in.master_port));
  env_set(&env, "WORLD_SIZE", std::to_string(world_size));
  if (with_inherited) {
    for (const auto& [k, v] : in.inherited) env_set(&env, k, v);
  }
  for (const auto& [k, v] : in.env_files) env_set(&env, k, v);
  return env;
}

WrapperSpec wrapper_spec(const World& world, RankSource source) {
  WrapperSpec spec;
  spec.source = source;
  for (const NodePlan& node : world.nodes) {
    spec.node_procs.push_back(node.procs);
    if (world.uses_gpus()) spec.node_devices.push_back(join(node.devices, ","));
  }
  return spec;
}

void append_wrapped_program(const PlanInputs& in, const WrapperSpec& spec, std::vector<std::string>* argv) {
  argv->push_back(in.self_exe);
  argv->push_back(kWrapperFlag);
  for (std::string& a : encode_wrapper_args(spec)) argv->push_back(std::move(a));
  argv->push_back("--");
  argv->insert(argv->end(), in.program.begin(), in.program.end());
}

Command openmpi_command(const PlanInputs& in, int world_size) {
  std::vector<std::string> hosts;
  for (const NodePlan& node : in.world.nodes) hosts.push_back(node.host + ":" + std::to_string(node.procs));
  Command cmd;
  std::vector<std::string>& a = cmd.argv;
  a = {"mpirun", "-n", std::to_string(world_size)};
  if (in.as_root) a.push_back("--allow-run-as-root");
  a.push_back("-H");
  a.push_back(join(hosts, ","));
  // Fill each host's slots in order (the wrapper relies on it), and leave threads unbound: OpenMPI
  // binds each rank to one core by default, which starves LibTorch's intra-op threads.
  if (!user_gave(in.launcher_args, {"--map-by", "-map-by", "--rank-by", "-rank-by"})) {
    a.insert(a.end(), {"--map-by", "slot"});
  }
  if (!user_gave(in.launcher_args, {"--bind-to", "-bind-to"})) a.insert(a.end(), {"--bind-to", "none"});
  // As DeepSpeed: keep the deprecated openib BTL (and its warnings) out.
  if (!user_gave_mca(in.launcher_args, "btl")) a.insert(a.end(), {"--mca", "btl", "^openib"});
  a.insert(a.end(), in.launcher_args.begin(), in.launcher_args.end());
  for (const auto& [k, v] : rank_independent_env(in, world_size, true)) {
    a.push_back("-x");
    a.push_back(k + "=" + v);
  }
  append_wrapped_program(in, wrapper_spec(in.world, RankSource::ompi), &a);
  return cmd;
}

Command slurm_command(const PlanInputs& in, int world_size) {
  const std::vector<NodePlan>& nodes = in.world.nodes;
  for (const NodePlan& node : nodes) {
    if (node.procs != nodes.front().procs) {
      std::string layout;
      for (const NodePlan& n : nodes) layout += (layout.empty() ? "" : ", ") + n.host + ":" + std::to_string(n.procs);
      throw UsageError("the slurm launcher needs the same number of ranks on every node (srun --ntasks-per-node), got " +
                       layout + "; select equal GPU counts (--num_gpus, --include) or use --launcher openmpi");
    }
  }
  Command cmd;
  std::vector<std::string>& a = cmd.argv;
  a = {"srun", "-n", std::to_string(world_size), "--nodes=" + std::to_string(nodes.size()),
       "--ntasks-per-node=" + std::to_string(nodes.front().procs)};
  WrapperSpec spec = wrapper_spec(in.world, RankSource::slurm);
  if (in.world.from_hostfile) {
    std::vector<std::string> hosts;
    for (const NodePlan& node : nodes) hosts.push_back(node.host);
    a.push_back("--nodelist=" + join(hosts, ","));
    if (nodes.size() > 1) spec.node_hosts = hosts;
  }
  a.insert(a.end(), in.launcher_args.begin(), in.launcher_args.end());
  // srun splits --export at commas; values holding one travel in srun's own environment, which
  // ALL passes on.
  std::string exports = "--export=ALL";
  for (const auto& [k, v] : rank_independent_env(in, world_size, true)) {
    if (v.find(',') == std::string::npos) {
      exports += "," + k + "=" + v;
    } else {
      env_set(&cmd.env, k, v);
    }
  }
  a.push_back(exports);
  append_wrapped_program(in, spec, &a);
  return cmd;
}

std::vector<Command> local_commands(const PlanInputs& in, int world_size) {
  if (in.world.nodes.size() != 1 || !is_this_host(in.world.nodes.front().host, in.this_host)) {
    std::string hosts;
    for (const NodePlan& n : in.world.nodes) hosts += (hosts.empty() ? "" : ", ") + n.host;
    throw UsageError("the local launcher starts ranks on this machine only, but the job uses " + hosts +
                     "; use --launcher openmpi or slurm");
  }
  const NodePlan& node = in.world.nodes.front();
  std::vector<Command> cmds;
  for (int r = 0; r < node.procs; ++r) {
    Command cmd;
    cmd.argv = in.program;
    cmd.env = rank_independent_env(in, world_size, false);
    env_set(&cmd.env, "RANK", std::to_string(r));
    env_set(&cmd.env, "LOCAL_RANK", std::to_string(r));
    env_set(&cmd.env, "LOCAL_SIZE", std::to_string(node.procs));
    env_set(&cmd.env, "CROSS_RANK", "0");
    env_set(&cmd.env, "CROSS_SIZE", "1");
    if (!node.devices.empty()) env_set(&cmd.env, "CUDA_VISIBLE_DEVICES", join(node.devices, ","));
    cmds.push_back(std::move(cmd));
  }
  return cmds;
}

}  // namespace

Backend parse_backend(std::string_view name) {
  std::string n = lower(name);
  if (n == "openmpi") return Backend::openmpi;
  if (n == "slurm") return Backend::slurm;
  if (n == "local") return Backend::local;
  throw UsageError("Unknown launcher " + std::string(name) + " (dsrun supports openmpi, slurm and local)");
}

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::openmpi: return "openmpi";
    case Backend::slurm: return "slurm";
    case Backend::local: return "local";
  }
  return "?";
}

const char* backend_program(Backend backend) {
  switch (backend) {
    case Backend::openmpi: return "mpirun";
    case Backend::slurm: return "srun";
    case Backend::local: return "";
  }
  return "";
}

bool is_this_host(std::string_view host, std::string_view this_host) {
  if (is_loopback(host)) return true;
  if (this_host.empty()) return false;
  auto short_of = [](std::string_view h) { return h.substr(0, h.find('.')); };
  return host == this_host || short_of(host) == short_of(this_host);
}

std::string default_master_addr(const World& world, const std::string& this_host) {
  const std::string& first = world.nodes.front().host;
  if (!world.from_hostfile) return "127.0.0.1";
  if (world.nodes.size() == 1 && is_this_host(first, this_host)) return "127.0.0.1";
  if (is_loopback(first) && !this_host.empty()) return this_host;
  return first;
}

LaunchPlan build_plan(const PlanInputs& in) {
  if (in.program.empty()) throw UsageError("the following arguments are required: PROGRAM");
  LaunchPlan plan;
  plan.backend = in.backend;
  plan.world_size = in.world.world_size();
  plan.num_nodes = static_cast<int>(in.world.nodes.size());
  plan.uses_gpus = in.world.uses_gpus();
  int first_rank = 0;
  for (size_t i = 0; i < in.world.nodes.size(); ++i) {
    const NodePlan& node = in.world.nodes[i];
    std::string line = "node " + std::to_string(i) + " " + node.host + ": rank" + (node.procs > 1 ? "s " : " ") +
                       std::to_string(first_rank);
    if (node.procs > 1) line += "-" + std::to_string(first_rank + node.procs - 1);
    line += node.devices.empty() ? ", CPU" : ", CUDA_VISIBLE_DEVICES=" + join(node.devices, ",");
    plan.summary.push_back(line);
    first_rank += node.procs;
  }
  switch (in.backend) {
    case Backend::openmpi: plan.commands.push_back(openmpi_command(in, plan.world_size)); break;
    case Backend::slurm: plan.commands.push_back(slurm_command(in, plan.world_size)); break;
    case Backend::local: plan.commands = local_commands(in, plan.world_size); break;
  }
  return plan;
}

std::string format_command(const Command& command) {
  std::string line;
  for (const auto& [k, v] : command.env) line += k + "=" + shell_quote(v) + " ";
  return line + shell_join(command.argv);
}

std::string format_dry_run(const LaunchPlan& plan) {
  std::string out = "# dsrun --dry-run: " + std::string(backend_name(plan.backend)) + ", " +
                    std::to_string(plan.world_size) + " rank(s) on " + std::to_string(plan.num_nodes) +
                    " node(s); nothing was started\n";
  for (const std::string& line : plan.summary) out += "# " + line + "\n";
  if (plan.backend != Backend::local) {
    out += "# per rank, dsrun --rank-wrapper sets RANK, LOCAL_RANK, LOCAL_SIZE, CROSS_RANK, CROSS_SIZE";
    out += plan.uses_gpus ? ", CUDA_VISIBLE_DEVICES\n" : "\n";
  }
  for (const Command& cmd : plan.commands) out += format_command(cmd) + "\n";
  return out;
}

}  // namespace ds::launcher
