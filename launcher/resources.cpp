#include "launcher/resources.h"

#include <algorithm>
#include <charconv>

#include "launcher/errors.h"

namespace ds::launcher {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  while (true) {
    size_t pos = s.find(sep);
    parts.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos) break;
    s.remove_prefix(pos + 1);
  }
  return parts;
}

std::optional<int> parse_int(std::string_view s) {
  int value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value < 0) return std::nullopt;
  return value;
}

const HostResources* find_host(const ActiveResources& hosts, std::string_view name) {
  for (const HostResources& h : hosts)
    if (h.host == name) return &h;
  return nullptr;
}

void append_unique(std::vector<int>* list, int value) {
  if (std::find(list->begin(), list->end(), value) == list->end()) list->push_back(value);
}

std::string join_ints(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

}  // namespace

int World::world_size() const {
  int n = 0;
  for (const NodePlan& node : nodes) n += node.procs;
  return n;
}

ActiveResources pool_to_resources(const ResourcePool& pool) {
  ActiveResources hosts;
  for (const HostSlots& entry : pool) {
    HostResources h{entry.host, {}};
    for (int s = 0; s < entry.slots; ++s) h.slots.push_back(s);
    hosts.push_back(std::move(h));
  }
  return hosts;
}

ActiveResources parse_resource_filter(const ActiveResources& hosts, std::string_view include,
                                      std::string_view exclude) {
  if (!include.empty() && !exclude.empty()) {
    throw UsageError("include_str and exclude_str are mutually exclusive. (give either --include or --exclude)");
  }
  if (include.empty() && exclude.empty()) return hosts;
  const bool including = !include.empty();
  const std::string_view spec = including ? include : exclude;

  // include: start empty and add; exclude: start from everything and remove.
  std::vector<std::vector<int>> chosen(hosts.size());
  if (!including) {
    for (size_t i = 0; i < hosts.size(); ++i) chosen[i] = hosts[i].slots;
  }
  for (std::string_view node_config : split(spec, '@')) {
    size_t colon = node_config.find(':');
    std::string_view name = node_config.substr(0, colon);
    const HostResources* host = find_host(hosts, name);
    if (host == nullptr) {
      std::string known;
      for (const HostResources& h : hosts) known += (known.empty() ? "" : ", ") + h.host;
      throw UsageError("Hostname '" + std::string(name) + "' not found in hostfile (hosts: " + known +
                       "; syntax NAME[:SLOT[,SLOT...]][@NAME...])");
    }
    std::vector<int>& slots = chosen[static_cast<size_t>(host - hosts.data())];
    if (colon == std::string_view::npos) {
      slots = including ? host->slots : std::vector<int>{};
      continue;
    }
    for (std::string_view token : split(node_config.substr(colon + 1), ',')) {
      std::optional<int> slot = parse_int(token);
      if (!slot) {
        throw UsageError("Bad slot '" + std::string(token) + "' in '" + std::string(node_config) +
                         "': slots are GPU ids, e.g. " + std::string(name) + ":0,2");
      }
      if (std::find(host->slots.begin(), host->slots.end(), *slot) == host->slots.end()) {
        throw UsageError("No slot '" + std::to_string(*slot) + "' specified on host '" + host->host +
                         "' (its slots: " + join_ints(host->slots) + ")");
      }
      if (including) {
        append_unique(&slots, *slot);
      } else {
        slots.erase(std::remove(slots.begin(), slots.end(), *slot), slots.end());
      }
    }
  }
  ActiveResources out;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (!chosen[i].empty()) out.push_back({hosts[i].host, std::move(chosen[i])});
  }
  return out;
}

ActiveResources limit_nodes_and_gpus(ActiveResources hosts, int num_nodes, int num_gpus) {
  if (num_nodes > 0) {
    if (static_cast<size_t>(num_nodes) > hosts.size()) {
      throw UsageError("--num_nodes " + std::to_string(num_nodes) + " but only " +
                       std::to_string(hosts.size()) + " host(s) are available; add hosts to the hostfile or ask for fewer nodes");
    }
    hosts.resize(static_cast<size_t>(num_nodes));
  }
  if (num_gpus > 0) {
    for (HostResources& h : hosts) {
      if (h.slots.size() < static_cast<size_t>(num_gpus)) {
        throw UsageError("--num_gpus " + std::to_string(num_gpus) + " but host '" + h.host + "' has only " +
                         std::to_string(h.slots.size()) + " slot(s); ask for at most " +
                         std::to_string(h.slots.size()) + " or select hosts with --include");
      }
      h.slots.resize(static_cast<size_t>(num_gpus));
    }
  }
  return hosts;
}

std::vector<std::string> visible_device_tokens(const LocalDevices& devices) {
  std::vector<std::string> tokens;
  if (devices.cuda_visible_devices) {
    for (std::string_view t : split(*devices.cuda_visible_devices, ',')) {
      if (static_cast<int>(tokens.size()) == devices.count) break;
      tokens.emplace_back(t);
    }
  }
  for (int i = static_cast<int>(tokens.size()); i < devices.count; ++i) tokens.push_back(std::to_string(i));
  return tokens;
}

World resolve_world(const ResourceRequest& rq, const LocalDevices& devices, std::vector<std::string>* notes) {
  if (!rq.include.empty() && !rq.exclude.empty()) {
    throw UsageError("include_str and exclude_str are mutually exclusive. (give either --include or --exclude)");
  }
  const bool filtered = !rq.include.empty() || !rq.exclude.empty();
  if (filtered && (rq.num_nodes >= 0 || rq.num_gpus >= 0)) {
    throw UsageError("Cannot specify num_nodes/gpus with include/exclude (use one way of choosing GPUs)");
  }
  if (rq.num_nodes == 0 || rq.num_nodes < -1) throw UsageError("--num_nodes must be >= 1, got " + std::to_string(rq.num_nodes));
  if (rq.num_gpus == 0 || rq.num_gpus < -1) throw UsageError("--num_gpus must be >= 1, got " + std::to_string(rq.num_gpus));
  if (rq.num_procs == 0 || rq.num_procs < -1) throw UsageError("--num_procs must be >= 1, got " + std::to_string(rq.num_procs));

  World world;
  if (rq.hostfile) {
    if (rq.num_procs > 0) {
      throw UsageError("--num_procs starts CPU ranks on this machine only; with a hostfile, 'slots=' gives the ranks of each host");
    }
    ActiveResources hosts = parse_resource_filter(pool_to_resources(*rq.hostfile), rq.include, rq.exclude);
    // Hosts with slots=0 (allowed in a hostfile) start nothing and do not count for --num_nodes.
    hosts.erase(std::remove_if(hosts.begin(), hosts.end(), [](const HostResources& h) { return h.slots.empty(); }),
                hosts.end());
    hosts = limit_nodes_and_gpus(std::move(hosts), rq.num_nodes, rq.num_gpus);
    for (HostResources& h : hosts) {
      NodePlan node{h.host, static_cast<int>(h.slots.size()), {}};
      for (int s : h.slots) node.devices.push_back(std::to_string(s));
      world.nodes.push_back(std::move(node));
    }
    world.from_hostfile = true;
  } else {
    if (rq.num_nodes > 1) {
      throw UsageError("Num nodes is >1 but no extra nodes available via hostfile (give one with -H/--hostfile)");
    }
    const bool gpu_flags = filtered || rq.num_gpus > 0;
    if (rq.num_procs > 0 && gpu_flags) {
      throw UsageError("--num_procs starts CPU ranks; it cannot be combined with --include/--exclude/--num_gpus");
    }
    if (rq.num_procs > 0 || devices.count == 0) {
      if (gpu_flags) {
        throw UsageError("Unable to proceed, no GPU resources available (--include/--exclude/--num_gpus select GPUs; "
                         "for CPU ranks use --num_procs N)");
      }
      int procs = rq.num_procs > 0 ? rq.num_procs : 1;
      if (rq.num_procs <= 0 && notes) {
        notes->push_back("no GPU found on this machine: starting 1 CPU rank (use --num_procs N for more)");
      }
      world.nodes.push_back({std::string(kLocalHost), procs, {}});
    } else {
      // Slots are GPU ids when every visible token is numeric (DeepSpeed's meaning of
      // localhost:1,3), else positions in the visible list (UUIDs, MIG instances).
      std::vector<std::string> tokens = visible_device_tokens(devices);
      bool numeric = true;
      for (const std::string& t : tokens) numeric = numeric && parse_int(t).has_value();
      HostResources local{std::string(kLocalHost), {}};
      for (size_t i = 0; i < tokens.size(); ++i)
        local.slots.push_back(numeric ? *parse_int(tokens[i]) : static_cast<int>(i));
      if (devices.cuda_visible_devices && notes) {
        notes->push_back("CUDA_VISIBLE_DEVICES=" + *devices.cuda_visible_devices + ": choosing among GPU(s) " +
                         (numeric ? join_ints(local.slots) : "0.." + std::to_string(tokens.size() - 1) + " of that list"));
      }
      ActiveResources hosts = parse_resource_filter({local}, rq.include, rq.exclude);
      hosts = limit_nodes_and_gpus(std::move(hosts), rq.num_nodes, rq.num_gpus);
      for (HostResources& h : hosts) {
        NodePlan node{h.host, static_cast<int>(h.slots.size()), {}};
        for (int s : h.slots) {
          if (numeric) {
            node.devices.push_back(std::to_string(s));
          } else {
            node.devices.push_back(tokens[static_cast<size_t>(s)]);
          }
        }
        world.nodes.push_back(std::move(node));
      }
    }
  }
  if (world.nodes.empty()) {
    throw UsageError("No resources left to launch on: every host has 0 slots or was excluded (include '" + rq.include +
                     "', exclude '" + rq.exclude + "')");
  }
  return world;
}

}  // namespace ds::launcher
