// dsrun: DeepSpeed's launcher habits for our C++ programs (see launcher/README.md).
// Pure parts live in ds_launcher_core (cli, hostfile, resources, environment, plan); this file
// gathers what they need from the machine, prints or runs the plan, and maps errors to exit 2.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <iostream>
#include <sys/stat.h>

#include "launcher/cli.h"
#include "launcher/environment.h"
#include "launcher/errors.h"
#include "launcher/hostfile.h"
#include "launcher/process.h"
#include "launcher/rank_wrapper.h"
#include "launcher/resources.h"
#include "launcher/shell.h"

extern char** environ;

namespace ds::launcher {
namespace {

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string this_hostname() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "";
  return buf;
}

std::string current_dir() {
  char buf[PATH_MAX] = {};
  return ::getcwd(buf, sizeof(buf)) ? buf : ".";
}

std::string self_exe() {
  char buf[PATH_MAX] = {};
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) throw UsageError(std::string("cannot find dsrun's own path (/proc/self/exe): ") + std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

EnvList process_environment() {
  EnvList env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    size_t eq = entry.find('=');
    if (eq != std::string::npos) env.emplace_back(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

int run(const std::vector<std::string>& args) {
  CliOptions o = parse_command_line(args);
  if (o.help) {
    std::cout << o.help_text;
    return 0;
  }

  ResourceRequest request;
  request.include = o.include;
  request.exclude = o.exclude;
  request.num_nodes = o.num_nodes;
  request.num_gpus = o.num_gpus;
  request.num_procs = o.num_procs;
  if (o.hostfile_given) {
    // DeepSpeed only warns about a missing hostfile because it cannot tell the default from a
    // given one; a hostfile the user named must exist.
    if (!file_exists(o.hostfile)) {
      throw UsageError("Unable to find hostfile " + o.hostfile + " (check the -H/--hostfile path)");
    }
    request.hostfile = read_hostfile(o.hostfile);
  } else if (file_exists(kDefaultHostfile)) {
    std::cerr << "dsrun: using hostfile " << kDefaultHostfile << " (DeepSpeed's default)\n";
    request.hostfile = read_hostfile(kDefaultHostfile);
  }

  LocalDevices devices;
  if (!request.hostfile && o.num_procs < 0) {
    std::string why_none;
    devices = discover_local_devices(&why_none);
    if (devices.count == 0 && !why_none.empty()) std::cerr << "dsrun: no GPU: " << why_none << "\n";
  }
  std::vector<std::string> notes;
  World world = resolve_world(request, devices, &notes);
  for (const std::string& note : notes) std::cerr << "dsrun: " << note << "\n";

  const char* path_env = std::getenv("PATH");
  if (o.backend != Backend::local && !find_program(backend_program(o.backend), path_env)) {
    std::string msg = std::string("launcher '") + backend_name(o.backend) + "' not installed. (" +
                      backend_program(o.backend) + " not found on PATH)";
    if (!o.dry_run) throw UsageError(msg);
    std::cerr << "dsrun: warning: " << msg << "\n";
  }
  bool any_local = false;
  const std::string hostname = this_hostname();
  for (const NodePlan& node : world.nodes) any_local = any_local || is_this_host(node.host, hostname);
  if (!find_program(o.program.front(), path_env)) {
    std::string msg = "program '" + o.program.front() + "' not found (not an executable file, nor on PATH)";
    // Only remote hosts: the program may exist there and not here.
    if (!o.dry_run && any_local) throw UsageError(msg);
    std::cerr << "dsrun: warning: " << msg << "\n";
  }

  std::vector<std::string> warnings;
  PlanInputs in;
  in.backend = o.backend;
  in.world = world;
  in.this_host = hostname;
  in.master_addr = o.master_addr.empty() ? default_master_addr(world, hostname) : o.master_addr;
  in.master_port = o.master_port;
  in.inherited = forwarded_environment(process_environment());
  const char* home = std::getenv("HOME");
  in.env_files = load_env_files(env_file_paths(std::getenv("DS_ENV_FILE"), home ? home : "", current_dir()), &warnings);
  for (const std::string& w : warnings) std::cerr << "dsrun: warning: " << w << "\n";
  in.launcher_args = shlex_split(o.launcher_args);
  in.program = o.program;
  in.self_exe = self_exe();
  in.as_root = ::geteuid() == 0;
  LaunchPlan plan = build_plan(in);

  if (o.dry_run) {
    std::cout << format_dry_run(plan) << std::flush;
    return 0;
  }
  std::cerr << "dsrun: " << backend_name(plan.backend) << ", " << plan.world_size << " rank(s) on " << plan.num_nodes
            << " node(s)\n";
  for (const std::string& line : plan.summary) std::cerr << "dsrun:   " << line << "\n";
  std::vector<std::string> labels;
  for (size_t i = 0; i < plan.commands.size(); ++i) {
    if (plan.backend == Backend::local) {
      labels.push_back("rank " + std::to_string(i));
    } else {
      labels.push_back(backend_program(plan.backend));
      std::cerr << "dsrun: cmd = " << format_command(plan.commands[i]) << "\n";
    }
  }
  SuperviseOptions sup;
  sup.stop_all_on_failure = plan.backend == Backend::local;
  sup.own_process_groups = plan.backend == Backend::local;
  sup.forward_as = plan.backend == Backend::slurm ? SIGTERM : 0;
  return run_commands(plan.commands, labels, sup);
}

}  // namespace
}  // namespace ds::launcher

int main(int argc, char** argv) {
  using namespace ds::launcher;
  if (argc > 1 && std::strcmp(argv[1], kWrapperFlag) == 0) return wrapper_main(argc, argv);
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const UsageError& e) {
    std::cerr << "dsrun: error: " << e.what() << "\n";
    return kUsageExitCode;
  }
}
