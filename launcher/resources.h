// Which hosts and GPUs a job runs on: DeepSpeed's --include/--exclude grammar, --num_nodes and
// --num_gpus (shared/reference/deepspeed-behaviour.md §4.1, §4.3), and the local machine's GPUs
// when there is no hostfile. Pure functions; errors are UsageError with DeepSpeed's wording.
//
// Grammar: NODE_SPEC[@NODE_SPEC ...], NODE_SPEC = NAME[:SLOT[,SLOT ...]]; no slot list means
// every slot of that host. `-i "worker-0@worker-1:0,2"`: all of worker-0, GPUs 0 and 2 of
// worker-1. `-e "worker-1:0"`: everything but GPU 0 of worker-1.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "launcher/hostfile.h"

namespace ds::launcher {

// One host's selectable slots, in the order ranks take them.
struct HostResources {
  std::string host;
  std::vector<int> slots;  // GPU ids (from the hostfile: 0..slots-1)
};
using ActiveResources = std::vector<HostResources>;  // hostfile order

ActiveResources pool_to_resources(const ResourcePool& pool);

// DeepSpeed's parse_resource_filter. Differences (DeepSpeed bugs, fixed): a host named twice in
// --include gets the union of its slots (DeepSpeed keeps only the last mention); a slot excluded
// twice is fine (DeepSpeed crashes in list.remove); a non-integer or empty slot is a clear error.
// Slots keep the order given (DeepSpeed HEAD), duplicates removed, hosts left empty dropped, host
// order is the pool's.
ActiveResources parse_resource_filter(const ActiveResources& hosts, std::string_view include,
                                      std::string_view exclude);

// --num_nodes N: the first N hosts; --num_gpus G: the first G slots of every host (-1: not given).
// DeepSpeed silently uses fewer nodes than asked and GPU ids a host does not have; both are
// errors here.
ActiveResources limit_nodes_and_gpus(ActiveResources hosts, int num_nodes, int num_gpus);

// What GPU discovery found on this machine (filled by gpu_discovery.h, or by tests).
struct LocalDevices {
  int count = 0;                                    // devices CUDA reports
  std::optional<std::string> cuda_visible_devices;  // as set in dsrun's environment
};

// The devices CUDA's count refers to, as CUDA_VISIBLE_DEVICES tokens: the first `count` entries
// of CUDA_VISIBLE_DEVICES when it is set (ids, GPU-/MIG- UUIDs), else "0".."count-1".
std::vector<std::string> visible_device_tokens(const LocalDevices& devices);

// The flags that pick resources.
struct ResourceRequest {
  std::optional<ResourcePool> hostfile;  // nullopt: this machine only
  std::string include, exclude;
  int num_nodes = -1;
  int num_gpus = -1;
  int num_procs = -1;  // CPU ranks on this machine
};

// One node of the job: `procs` ranks; `devices` the CUDA_VISIBLE_DEVICES entries its ranks share
// (size == procs), or empty for CPU ranks (CUDA_VISIBLE_DEVICES is then left alone).
struct NodePlan {
  std::string host;
  int procs = 0;
  std::vector<std::string> devices;
};

struct World {
  std::vector<NodePlan> nodes;  // rank order: node 0's ranks first
  bool from_hostfile = false;
  bool uses_gpus() const { return !nodes.empty() && !nodes.front().devices.empty(); }
  int world_size() const;
};

// The host name a job without a hostfile runs on (DeepSpeed's resource pool key).
inline constexpr std::string_view kLocalHost = "localhost";

// Resolves the flags to the nodes and GPUs of the job, DeepSpeed's runner.main rules:
//  - hostfile: its hosts, filtered by --include/--exclude, then --num_nodes/--num_gpus;
//  - no hostfile, GPUs found: `localhost` with the visible GPUs as slots. When
//    CUDA_VISIBLE_DEVICES lists numeric ids those ids are the slots (so `-i localhost:1,3` and
//    CUDA_VISIBLE_DEVICES=1,3 mean the same GPUs, as in DeepSpeed); unlike DeepSpeed, a set
//    CUDA_VISIBLE_DEVICES also bounds --num_gpus and --include instead of being dropped;
//  - no hostfile and no GPU, or --num_procs N: N CPU ranks (default 1) where DeepSpeed stops with
//    "Unable to proceed, no GPU resources available".
// `notes` receives what was decided from the environment (for the user).
World resolve_world(const ResourceRequest& request, const LocalDevices& devices,
                    std::vector<std::string>* notes);

}  // namespace ds::launcher
