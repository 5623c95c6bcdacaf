#include "launcher/hostfile.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "launcher/errors.h"

namespace ds::launcher {
namespace {

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

[[noreturn]] void bad_entry(std::string_view line, int line_no) {
  throw UsageError("Hostfile contains a bad entry: " + std::string(line) +
                   ", unable to proceed with launching (line " + std::to_string(line_no) +
                   "; expected '<hostname> slots=<N>', e.g. 'worker-0 slots=8')");
}

// DeepSpeed matches ^(\S+)\s+slots=(\d+) and ignores the rest of the line, so it also accepts
// `slots=4x` and overflowing counts; we require the count to end at whitespace, '#' or the end.
bool parse_line(std::string_view line, HostSlots* out) {
  size_t host_end = 0;
  while (host_end < line.size() && !is_space(line[host_end])) ++host_end;
  if (host_end == 0 || host_end == line.size()) return false;
  size_t pos = host_end;
  while (pos < line.size() && is_space(line[pos])) ++pos;
  constexpr std::string_view kSlots = "slots=";
  if (line.substr(pos, kSlots.size()) != kSlots) return false;
  pos += kSlots.size();
  size_t digits_begin = pos;
  long long slots = 0;
  while (pos < line.size() && std::isdigit(static_cast<unsigned char>(line[pos]))) {
    slots = slots * 10 + (line[pos] - '0');
    if (slots > 1'000'000) return false;  // no host has a million GPUs; also stops overflow
    ++pos;
  }
  if (pos == digits_begin) return false;
  if (pos < line.size() && !is_space(line[pos]) && line[pos] != '#') return false;
  out->host = std::string(line.substr(0, host_end));
  out->slots = static_cast<int>(slots);
  return true;
}

}  // namespace

ResourcePool parse_hostfile(std::string_view text) {
  ResourcePool pool;
  int line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view raw = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    std::string_view line = trim(raw);
    if (line.empty() || line.front() == '#') continue;
    HostSlots entry;
    if (!parse_line(line, &entry)) bad_entry(line, line_no);
    for (const HostSlots& seen : pool) {
      if (seen.host == entry.host) {
        throw UsageError("Hostfile contains multiple entries for " + entry.host +
                         ", unable to proceed with launching (line " + std::to_string(line_no) +
                         "; give each host one line with its total slots)");
      }
    }
    pool.push_back(std::move(entry));
  }
  if (pool.empty()) {
    throw UsageError(
        "Hostfile is empty or not formatted correctly, unable to proceed with launching. "
        "(expected lines '<hostname> slots=<N>')");
  }
  return pool;
}

ResourcePool read_hostfile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw UsageError("Unable to read hostfile " + path + ": " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return parse_hostfile(text.str());
  } catch (const UsageError& e) {
    throw UsageError(path + ": " + e.what());
  }
}

}  // namespace ds::launcher
