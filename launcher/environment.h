// The environment every rank gets besides its own RANK/LOCAL_RANK: variables forwarded from
// dsrun's environment and the KEY=VALUE lines of `.deepspeed_env` files
// (shared/reference/deepspeed-behaviour.md §4.1 "Multi-node extras").
//
// Pure functions over text and name/value lists; the file reading is in load_env_files().
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ds::launcher {

// Ordered name/value list; env_set() replaces an existing name's value in place.
using EnvList = std::vector<std::pair<std::string, std::string>>;
void env_set(EnvList* env, const std::string& name, const std::string& value);
const std::string* env_get(const EnvList& env, std::string_view name);

// Variables forwarded from dsrun's environment: names starting with NCCL, PYTHON, MV2 or UCX
// (DeepSpeed's EXPORT_ENVS), sorted by name so the command is reproducible.
EnvList forwarded_environment(const EnvList& environ);

// Names dsrun sets itself (per rank or from its flags); env files may not set them.
bool is_reserved_name(std::string_view name);

// One .deepspeed_env file: `KEY=VALUE` per line, value kept verbatim after the first '='
// (DeepSpeed keeps the newline in the value and crashes on blank lines; we strip line ends and
// skip blank and '#' lines). A line without '=' or with a bad name is a UsageError naming
// `source:line`; reserved names give a warning and are skipped.
EnvList parse_env_file(std::string_view text, const std::string& source, std::vector<std::string>* warnings);

// The env files to read, in order (later ones win): DS_ENV_FILE (default ".deepspeed_env") in the
// home directory, then in the current directory, as DeepSpeed does. A DS_ENV_FILE with a '/' is
// one path, read alone. The same file reached twice is listed once.
struct EnvFileSpec {
  std::string path;
  bool required;  // an explicit DS_ENV_FILE path must exist
};
std::vector<EnvFileSpec> env_file_paths(const char* ds_env_file, const std::string& home, const std::string& cwd);

// Reads the files that exist (a required one missing is a UsageError) and merges them.
EnvList load_env_files(const std::vector<EnvFileSpec>& files, std::vector<std::string>* warnings);

}  // namespace ds::launcher
