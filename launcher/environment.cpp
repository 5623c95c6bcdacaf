#include "launcher/environment.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "launcher/errors.h"

namespace ds::launcher {
namespace {

bool valid_name(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

void env_set(EnvList* env, const std::string& name, const std::string& value) {
  for (auto& [k, v] : *env) {
    if (k == name) {
      v = value;
      return;
    }
  }
  env->emplace_back(name, value);
}

const std::string* env_get(const EnvList& env, std::string_view name) {
  for (const auto& [k, v] : env)
    if (k == name) return &v;
  return nullptr;
}

EnvList forwarded_environment(const EnvList& environ) {
  static constexpr std::string_view kPrefixes[] = {"NCCL", "PYTHON", "MV2", "UCX"};
  EnvList out;
  for (const auto& [name, value] : environ) {
    for (std::string_view p : kPrefixes) {
      if (name.compare(0, p.size(), p) == 0) {
        env_set(&out, name, value);
        break;
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool is_reserved_name(std::string_view name) {
  static constexpr std::string_view kReserved[] = {"RANK",       "LOCAL_RANK", "WORLD_SIZE",  "LOCAL_SIZE",
                                                   "CROSS_RANK", "CROSS_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                                   "CUDA_VISIBLE_DEVICES"};
  return std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved);
}

EnvList parse_env_file(std::string_view text, const std::string& source, std::vector<std::string>* warnings) {
  EnvList env;
  int line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::string_view content = trim(line);
    if (content.empty() || content.front() == '#') continue;
    const std::string where = source + ":" + std::to_string(line_no);
    size_t eq = line.find('=');
    std::string_view name = eq == std::string_view::npos ? std::string_view{} : trim(line.substr(0, eq));
    if (eq == std::string_view::npos || !valid_name(name)) {
      throw UsageError(where + ": bad entry '" + std::string(line) +
                       "': expected NAME=VALUE with NAME of letters, digits and '_'");
    }
    if (is_reserved_name(name)) {
      if (warnings) {
        warnings->push_back(where + ": " + std::string(name) +
                            " is set by dsrun (per rank or from its flags); entry ignored");
      }
      continue;
    }
    env_set(&env, std::string(name), std::string(line.substr(eq + 1)));
  }
  return env;
}

std::vector<EnvFileSpec> env_file_paths(const char* ds_env_file, const std::string& home, const std::string& cwd) {
  std::string name = ds_env_file && *ds_env_file ? ds_env_file : ".deepspeed_env";
  if (name.find('/') != std::string::npos) return {{name, true}};
  std::vector<EnvFileSpec> files;
  if (!home.empty()) files.push_back({home + "/" + name, false});
  if (cwd != home || home.empty()) files.push_back({cwd + "/" + name, false});
  return files;
}

EnvList load_env_files(const std::vector<EnvFileSpec>& files, std::vector<std::string>* warnings) {
  EnvList env;
  for (const EnvFileSpec& f : files) {
    struct stat st {};
    if (::stat(f.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      if (f.required) throw UsageError("DS_ENV_FILE=" + f.path + ": no such file; create it or unset DS_ENV_FILE");
      continue;
    }
    std::ifstream in(f.path, std::ios::binary);
    if (!in) throw UsageError("Unable to read env file " + f.path + ": " + std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    for (auto& [k, v] : parse_env_file(text.str(), f.path, warnings)) env_set(&env, k, v);
  }
  return env;
}

}  // namespace ds::launcher
