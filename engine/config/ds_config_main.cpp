// ds_config FILE [--world-size N]: validates a DeepSpeed JSON config and prints it resolved (every
// default filled in, the batch triple resolved against N) on stdout. Problems go to stderr, one a
// line: "error: <json.path>: <message>" / "warning: <json.path>: <message>". Exit 0 when valid,
// 2 on any error (including a missing file, invalid JSON or bad arguments).
//
// Plain argv handling: two options do not need a parser library, and this tool also builds in the
// Torch-free sanitizer tree (DS_CONFIG_ONLY), where CLI11 is not looked for.
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <string>

#include "engine/config/ds_config.h"

namespace {

const char* kUsage =
    "usage: ds_config FILE [--world-size N]\n"
    "  Validates a DeepSpeed JSON config and prints the resolved config as JSON.\n"
    "  --world-size N  data-parallel world size used to resolve train_batch_size,\n"
    "                  train_micro_batch_size_per_gpu and gradient_accumulation_steps (default 1)\n"
    "  exit status: 0 valid, 2 invalid (problems on stderr, one per line)\n";

int usage_error(const std::string& msg) {
  std::cerr << "error: " << msg << "\n" << kUsage;
  return 2;
}

bool parse_world_size(const std::string& s, int& out) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  out = std::atoi(s.c_str());
  return out >= 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file;
  int world_size = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    }
    std::string value;
    if (a == "--world-size") {
      if (i + 1 >= argc) return usage_error("--world-size needs a value");
      value = argv[++i];
    } else if (a.rfind("--world-size=", 0) == 0) {
      value = a.substr(std::strlen("--world-size="));
    } else if (!a.empty() && a[0] == '-' && a != "-") {
      return usage_error("unknown option " + a);
    } else if (file.empty()) {
      file = a;
      continue;
    } else {
      return usage_error("one config file expected, got " + file + " and " + a);
    }
    if (!parse_world_size(value, world_size)) {
      return usage_error("--world-size: got \"" + value + "\", expected a positive integer");
    }
  }
  if (file.empty()) return usage_error("no config file given");

  ds::ConfigParseResult r =
      file == "-" ? ds::parse_config_text(std::string(std::istreambuf_iterator<char>(std::cin), {}), world_size)
                  : ds::parse_config_file(file, world_size);
  // A problem with the whole file carries the file name where the JSON path would be.
  auto where = [&](const ds::ConfigIssue& i) { return i.path.empty() ? file : i.path; };
  for (const ds::ConfigIssue& w : r.warnings) std::cerr << "warning: " << where(w) << ": " << w.message << "\n";
  for (const ds::ConfigIssue& e : r.errors) std::cerr << "error: " << where(e) << ": " << e.message << "\n";
  if (!r.ok()) return 2;
  std::cout << ds::to_json_text(r.config, 2) << "\n";
  return 0;
}
