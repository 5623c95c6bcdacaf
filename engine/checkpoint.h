// Checkpoint files: DeepSpeed's layout, written atomically, readable by Python's torch.load.
//
//   <dir>/<tag>/mp_rank_00_model_states.pt   module weights, schedule, loss scaler, counters, RNG,
//                                            the config as JSON text, client state (Engine writes it)
//   <dir>/<tag>/mp_rank_00_optim_states.pt   optimizer state and fp32 master weights
//   <dir>/latest                             text file holding <tag>
//
// Each .pt file is torch::pickle_save output: the zip archive torch.save writes, so
// torch.load(path) in Python returns the dict (see engine/README.md).
//
// Atomicity: the tag's files are written and fsync'ed in a hidden temporary directory
// <dir>/.<tag>.tmp-<pid>-<n>, which is then renamed to <dir>/<tag> (swapped in with
// renameat2(RENAME_EXCHANGE) when <tag> already exists, so an existing checkpoint of that tag is
// replaced in one step); `latest` is replaced through a temporary file and rename(). A crash at any
// point leaves either the old or the new checkpoint complete, and `latest` naming a complete one.
#pragma once

#include <ATen/core/ivalue.h>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ds {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace checkpoint {

inline constexpr const char* kModelStatesFile = "mp_rank_00_model_states.pt";
inline constexpr const char* kOptimStatesFile = "mp_rank_00_optim_states.pt";
inline constexpr const char* kLatestFile = "latest";

// Throws CheckpointError for tags that are not a single plain path component.
void check_tag(const std::string& tag);

// Writes every (file name, value) into <dir>/<tag>/ atomically, then <dir>/latest when save_latest.
// Returns the checkpoint directory.
std::string write_atomic(const std::string& dir, const std::string& tag,
                         const std::vector<std::pair<std::string, at::IValue>>& files, bool save_latest);

// The tag to load: `tag` when given, else the contents of <dir>/latest. Throws CheckpointError
// naming the missing path and the tags that do exist.
std::string resolve_tag(const std::string& dir, const std::optional<std::string>& tag);

// Reads one .pt file; throws CheckpointError naming the path when it is missing or unreadable.
at::IValue read_file(const std::string& path);

// The tags under dir (sub-directories holding a model states file), sorted.
std::vector<std::string> list_tags(const std::string& dir);

// Test hook: called with "temp_written" (all files in the temporary directory, before the rename)
// and "renamed" (tag directory in place, before `latest` is replaced). A hook that throws simulates
// a crash at that point. Pass nullptr to remove.
void set_fault_hook(std::function<void(const std::string& stage)> hook);

}  // namespace checkpoint
}  // namespace ds
