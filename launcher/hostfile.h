// Hostfile parsing, DeepSpeed's format (shared/reference/deepspeed-behaviour.md §4.2).
//
// One host per line, `<hostname> slots=<N>`; the order of the lines is the order of the hosts and
// so of the ranks. Blank lines and lines starting with '#' are ignored. Anything after the slot
// count that is separated by whitespace or starts with '#' is ignored, so OpenMPI hostfiles with
// `max_slots=` and trailing comments work.
//
// Pure: text in, hosts out; bad input throws UsageError with DeepSpeed's wording plus the line.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ds::launcher {

struct HostSlots {
  std::string host;
  int slots = 0;  // GPUs of this host, ids 0..slots-1 (CPU ranks on CPU clusters)
};
using ResourcePool = std::vector<HostSlots>;  // hostfile order

// Throws UsageError on a bad entry, a duplicate host, or no hosts at all.
ResourcePool parse_hostfile(std::string_view text);

// Reads and parses a file; an unreadable file is a UsageError naming the path.
ResourcePool read_hostfile(const std::string& path);

}  // namespace ds::launcher
