#include "launcher/resources.h"

#include "test_helpers.h"

namespace ds::launcher {
namespace {

using Slots = std::vector<int>;

ActiveResources two_workers() { return pool_to_resources({{"worker-0", 4}, {"worker-1", 4}}); }

// DeepSpeed's docstring examples (runner.py parse_resource_filter).
TEST(ResourceFilter, DeepSpeedIncludeExample) {
  ActiveResources r = parse_resource_filter(two_workers(), "worker-0@worker-1:0,2", "");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].host, "worker-0");
  EXPECT_EQ(r[0].slots, (Slots{0, 1, 2, 3}));
  EXPECT_EQ(r[1].slots, (Slots{0, 2}));
}

TEST(ResourceFilter, DeepSpeedExcludeExample) {
  ActiveResources r = parse_resource_filter(two_workers(), "", "worker-1:0");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].slots, (Slots{0, 1, 2, 3}));
  EXPECT_EQ(r[1].slots, (Slots{1, 2, 3}));
}

TEST(ResourceFilter, NoFilterIsEverything) {
  ActiveResources r = parse_resource_filter(two_workers(), "", "");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].slots, (Slots{0, 1, 2, 3}));
}

TEST(ResourceFilter, ExcludingAWholeHostOrAllItsSlotsDropsIt) {
  ActiveResources r = parse_resource_filter(two_workers(), "", "worker-0");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].host, "worker-1");
  r = parse_resource_filter(two_workers(), "", "worker-1:0,1,2,3");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].host, "worker-0");
}

TEST(ResourceFilter, HostOrderIsTheHostfilesAndSlotOrderTheUsers) {
  ActiveResources r = parse_resource_filter(two_workers(), "worker-1:3,1@worker-0:2", "");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].host, "worker-0");
  EXPECT_EQ(r[0].slots, (Slots{2}));
  EXPECT_EQ(r[1].slots, (Slots{3, 1}));
}

TEST(ResourceFilter, DuplicatesAreMergedNotLost) {
  // DeepSpeed keeps only the last mention of a host in --include; the union is what was asked.
  ActiveResources r = parse_resource_filter(two_workers(), "worker-1:0@worker-1:2,0", "");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].slots, (Slots{0, 2}));
  // DeepSpeed crashes in list.remove on a slot excluded twice.
  r = parse_resource_filter(two_workers(), "", "worker-1:0@worker-1:0,1");
  EXPECT_EQ(r[1].slots, (Slots{2, 3}));
}

TEST(ResourceFilter, Errors) {
  EXPECT_USAGE_ERROR(parse_resource_filter(two_workers(), "worker-0", "worker-1"),
                     "include_str and exclude_str are mutually exclusive.");
  EXPECT_USAGE_ERROR(parse_resource_filter(two_workers(), "jupiter:1", ""), "Hostname 'jupiter' not found in hostfile");
  EXPECT_USAGE_ERROR(parse_resource_filter(two_workers(), "", "worker-0@"), "Hostname '' not found in hostfile");
  EXPECT_USAGE_ERROR(parse_resource_filter(two_workers(), "worker-0:4", ""), "No slot '4' specified on host 'worker-0'");
  EXPECT_USAGE_ERROR(parse_resource_filter(two_workers(), "", "worker-1:0,9"), "No slot '9' specified on host 'worker-1'");
  EXPECT_USAGE_ERROR(parse_resource_filter(two_workers(), "worker-0:a", ""), "Bad slot 'a' in 'worker-0:a'");
  EXPECT_USAGE_ERROR(parse_resource_filter(two_workers(), "worker-0:", ""), "Bad slot ''");
  EXPECT_USAGE_ERROR(parse_resource_filter(two_workers(), "worker-0:1:2", ""), "Bad slot '1:2'");
}

TEST(LimitNodesAndGpus, FirstNodesAndFirstGpus) {
  ActiveResources r = limit_nodes_and_gpus(two_workers(), 1, -1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].host, "worker-0");
  r = limit_nodes_and_gpus(two_workers(), -1, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].slots, (Slots{0, 1}));
  EXPECT_USAGE_ERROR(limit_nodes_and_gpus(two_workers(), 3, -1), "--num_nodes 3 but only 2 host(s) are available");
  EXPECT_USAGE_ERROR(limit_nodes_and_gpus(two_workers(), -1, 5), "--num_gpus 5 but host 'worker-0' has only 4 slot(s)");
}

ResourceRequest with_hostfile(ResourcePool pool) {
  ResourceRequest rq;
  rq.hostfile = std::move(pool);
  return rq;
}

TEST(ResolveWorld, HostfileWithIncludeGivesDevicesPerNode) {
  ResourceRequest rq = with_hostfile({{"worker-0", 4}, {"worker-1", 4}});
  rq.include = "worker-0:1,3@worker-1";
  World w = resolve_world(rq, {}, nullptr);
  ASSERT_EQ(w.nodes.size(), 2u);
  EXPECT_TRUE(w.from_hostfile);
  EXPECT_TRUE(w.uses_gpus());
  EXPECT_EQ(w.world_size(), 6);
  EXPECT_EQ(w.nodes[0].procs, 2);
  EXPECT_EQ(w.nodes[0].devices, (std::vector<std::string>{"1", "3"}));
  EXPECT_EQ(w.nodes[1].devices, (std::vector<std::string>{"0", "1", "2", "3"}));
}

TEST(ResolveWorld, HostfileNumNodesAndGpusAndZeroSlotHosts) {
  // The 0-slot host starts nothing and does not count as one of the --num_nodes.
  ResourceRequest rq = with_hostfile({{"a", 8}, {"empty", 0}, {"b", 8}, {"c", 8}});
  rq.num_nodes = 2;
  rq.num_gpus = 2;
  World w = resolve_world(rq, {}, nullptr);
  ASSERT_EQ(w.nodes.size(), 2u);
  EXPECT_EQ(w.nodes[1].host, "b");
  EXPECT_EQ(w.world_size(), 4);
  EXPECT_EQ(w.nodes[1].devices, (std::vector<std::string>{"0", "1"}));
}

TEST(ResolveWorld, FlagErrors) {
  ResourceRequest rq = with_hostfile({{"a", 2}});
  rq.include = "a";
  rq.num_gpus = 1;
  EXPECT_USAGE_ERROR(resolve_world(rq, {}, nullptr), "Cannot specify num_nodes/gpus with include/exclude");
  rq = with_hostfile({{"a", 2}});
  rq.num_procs = 2;
  EXPECT_USAGE_ERROR(resolve_world(rq, {}, nullptr), "--num_procs starts CPU ranks on this machine only");
  rq = with_hostfile({{"a", 2}});
  rq.exclude = "a";
  EXPECT_USAGE_ERROR(resolve_world(rq, {}, nullptr), "No resources left to launch on");
  ResourceRequest local;
  local.num_nodes = 2;
  EXPECT_USAGE_ERROR(resolve_world(local, {4, {}}, nullptr), "Num nodes is >1 but no extra nodes available via hostfile");
  local = {};
  local.num_gpus = 0;
  EXPECT_USAGE_ERROR(resolve_world(local, {4, {}}, nullptr), "--num_gpus must be >= 1");
  local = {};
  local.num_procs = 2;
  local.num_gpus = 1;
  EXPECT_USAGE_ERROR(resolve_world(local, {4, {}}, nullptr), "cannot be combined with --include/--exclude/--num_gpus");
}

TEST(ResolveWorld, NoGpuGivesCpuRanks) {
  std::vector<std::string> notes;
  World w = resolve_world({}, {}, &notes);
  ASSERT_EQ(w.nodes.size(), 1u);
  EXPECT_EQ(w.nodes[0].host, "localhost");
  EXPECT_EQ(w.nodes[0].procs, 1);
  EXPECT_FALSE(w.uses_gpus());
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("--num_procs"), std::string::npos);

  ResourceRequest rq;
  rq.num_procs = 3;
  w = resolve_world(rq, {}, nullptr);
  EXPECT_EQ(w.world_size(), 3);
  // --num_procs asks for CPU ranks even where GPUs exist.
  w = resolve_world(rq, {8, {}}, nullptr);
  EXPECT_EQ(w.world_size(), 3);
  EXPECT_FALSE(w.uses_gpus());

  rq = {};
  rq.num_gpus = 2;
  EXPECT_USAGE_ERROR(resolve_world(rq, {}, nullptr), "Unable to proceed, no GPU resources available");
}

TEST(ResolveWorld, LocalGpus) {
  World w = resolve_world({}, {4, {}}, nullptr);
  ASSERT_EQ(w.nodes.size(), 1u);
  EXPECT_FALSE(w.from_hostfile);
  EXPECT_EQ(w.nodes[0].devices, (std::vector<std::string>{"0", "1", "2", "3"}));
  ResourceRequest rq;
  rq.num_gpus = 2;
  EXPECT_EQ(resolve_world(rq, {4, {}}, nullptr).nodes[0].devices, (std::vector<std::string>{"0", "1"}));
  rq = {};
  rq.include = "localhost:1,3";
  EXPECT_EQ(resolve_world(rq, {4, {}}, nullptr).nodes[0].devices, (std::vector<std::string>{"1", "3"}));
  rq = {};
  rq.exclude = "localhost:0";
  EXPECT_EQ(resolve_world(rq, {4, {}}, nullptr).nodes[0].devices, (std::vector<std::string>{"1", "2", "3"}));
}

TEST(ResolveWorld, CudaVisibleDevicesBoundsTheChoice) {
  LocalDevices cvd{2, std::string("2,3")};
  std::vector<std::string> notes;
  World w = resolve_world({}, cvd, &notes);
  EXPECT_EQ(w.nodes[0].devices, (std::vector<std::string>{"2", "3"}));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("CUDA_VISIBLE_DEVICES=2,3"), std::string::npos);
  ResourceRequest rq;
  rq.include = "localhost:3";  // physical ids, as DeepSpeed reads localhost:N
  EXPECT_EQ(resolve_world(rq, cvd, nullptr).nodes[0].devices, (std::vector<std::string>{"3"}));
  rq.include = "localhost:0";
  EXPECT_USAGE_ERROR(resolve_world(rq, cvd, nullptr), "No slot '0' specified on host 'localhost' (its slots: 2,3)");
  rq = {};
  rq.num_gpus = 1;
  EXPECT_EQ(resolve_world(rq, cvd, nullptr).nodes[0].devices, (std::vector<std::string>{"2"}));
  // CUDA stops at the first id it does not have: only the first entry counts.
  EXPECT_EQ(resolve_world({}, {1, std::string("1,7")}, nullptr).nodes[0].devices, (std::vector<std::string>{"1"}));
  // Empty: no GPU visible.
  EXPECT_FALSE(resolve_world({}, {0, std::string("")}, nullptr).uses_gpus());
}

TEST(ResolveWorld, CudaVisibleDevicesUuidsAreSelectedByPosition) {
  LocalDevices uuids{2, std::string("GPU-aaaa,MIG-bbbb")};
  EXPECT_EQ(visible_device_tokens(uuids), (std::vector<std::string>{"GPU-aaaa", "MIG-bbbb"}));
  ResourceRequest rq;
  rq.include = "localhost:1";
  EXPECT_EQ(resolve_world(rq, uuids, nullptr).nodes[0].devices, (std::vector<std::string>{"MIG-bbbb"}));
}

}  // namespace
}  // namespace ds::launcher
