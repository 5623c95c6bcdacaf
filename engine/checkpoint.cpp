#include "engine/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <torch/csrc/jit/serialization/pickle.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include "ops/common/fs_util.h"

namespace ds::checkpoint {
namespace fs = std::filesystem;
namespace {

std::function<void(const std::string&)>& fault_hook() {
  static std::function<void(const std::string&)> hook;
  return hook;
}

void fault_point(const std::string& stage) {
  if (fault_hook()) fault_hook()(stage);
}

std::string errno_text() { return std::strerror(errno); }

// Writes bytes to path and fsyncs them, so the rename that publishes the file cannot expose a
// partially written one after a power loss.
void write_durable(const fs::path& path, const char* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError("cannot create '" + path.string() + "': " + errno_text());
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = errno_text();
      ::close(fd);
      throw CheckpointError("cannot write '" + path.string() + "': " + why);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    throw CheckpointError("cannot flush '" + path.string() + "': " + errno_text());
  }
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some file systems refuse directory fds
  ::fsync(fd);
  ::close(fd);
}

// Puts `from` at `to`. When `to` exists it is swapped atomically and the old one ends at `from`
// (the caller removes it); returns whether a swap happened.
bool publish_dir(const fs::path& from, const fs::path& to) {
  if (!fs::exists(to)) {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      throw CheckpointError("cannot rename '" + from.string() + "' to '" + to.string() + "': " + errno_text());
    }
    return false;
  }
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) return true;
  if (errno != EINVAL && errno != ENOSYS) {
    throw CheckpointError("cannot swap '" + from.string() + "' into '" + to.string() + "': " + errno_text());
  }
#endif
  // No atomic exchange on this file system: move the old one aside first (a crash between the two
  // renames leaves the old checkpoint under the aside name, still complete).
  const fs::path aside = from.string() + ".old";
  if (::rename(to.c_str(), aside.c_str()) != 0 || ::rename(from.c_str(), to.c_str()) != 0) {
    throw CheckpointError("cannot replace '" + to.string() + "': " + errno_text());
  }
  fs::rename(aside, from);
  return true;
}

}  // namespace

void set_fault_hook(std::function<void(const std::string& stage)> hook) { fault_hook() = std::move(hook); }

void check_tag(const std::string& tag) {
  if (tag.empty() || tag == "." || tag == ".." || tag.front() == '.' || tag.find('/') != std::string::npos ||
      tag.find('\0') != std::string::npos || tag.find('\n') != std::string::npos) {
    throw CheckpointError("checkpoint tag '" + tag +
                          "' is not usable: it must be one plain directory name, not empty, without '/' or a "
                          "leading '.' (for example global_step100)");
  }
}

std::string write_atomic(const std::string& dir, const std::string& tag,
                         const std::vector<std::pair<std::string, at::IValue>>& files, bool save_latest) {
  check_tag(tag);
  static std::atomic<int> counter{0};
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw CheckpointError("cannot create checkpoint directory '" + dir + "': " + ec.message());
  const fs::path root(dir);
  // Leftovers of an interrupted save of this tag by an earlier process are garbage.
  const std::string prefix = "." + tag + ".tmp-";
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) stale.push_back(e.path());
  }
  for (const auto& p : stale) ds::remove_tree(p);
  const fs::path tmp = root / (prefix + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::create_directory(tmp, ec);
  if (ec) throw CheckpointError("cannot create '" + tmp.string() + "': " + ec.message());
  for (const auto& [name, value] : files) {
    const std::vector<char> bytes = torch::pickle_save(value);
    write_durable(tmp / name, bytes.data(), bytes.size());
  }
  fsync_dir(tmp);
  fault_point("temp_written");
  const fs::path final_dir = root / tag;
  if (publish_dir(tmp, final_dir)) ds::remove_tree(tmp);
  fsync_dir(root);
  fault_point("renamed");
  if (save_latest) {
    const fs::path latest_tmp = root / (".latest.tmp-" + std::to_string(::getpid()));
    write_durable(latest_tmp, tag.data(), tag.size());
    if (::rename(latest_tmp.c_str(), (root / kLatestFile).c_str()) != 0) {
      throw CheckpointError("cannot update '" + (root / kLatestFile).string() + "': " + errno_text());
    }
    fsync_dir(root);
  }
  return final_dir.string();
}

std::vector<std::string> list_tags(const std::string& dir) {
  std::vector<std::string> tags;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.front() == '.') continue;
    if (e.is_directory(ec) && fs::exists(e.path() / kModelStatesFile, ec)) tags.push_back(name);
  }
  std::sort(tags.begin(), tags.end());
  return tags;
}

namespace {
std::string available(const std::string& dir) {
  const auto tags = list_tags(dir);
  if (tags.empty()) return "no checkpoints exist under '" + dir + "'";
  std::string s = "tags present under '" + dir + "':";
  for (size_t i = 0; i < tags.size() && i < 20; ++i) s += " " + tags[i];
  if (tags.size() > 20) s += " ... (" + std::to_string(tags.size()) + " in all)";
  return s;
}
}  // namespace

std::string resolve_tag(const std::string& dir, const std::optional<std::string>& tag) {
  std::string t;
  if (tag) {
    t = *tag;
  } else {
    const fs::path latest = fs::path(dir) / kLatestFile;
    std::ifstream in(latest);
    if (!in) {
      throw CheckpointError("cannot load a checkpoint from '" + dir + "': no tag given and '" + latest.string() +
                            "' does not exist; pass a tag explicitly (" + available(dir) + ")");
    }
    t.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  }
  check_tag(t);
  const fs::path model = fs::path(dir) / t / kModelStatesFile;
  std::error_code ec;
  if (!fs::exists(model, ec)) {
    throw CheckpointError("checkpoint tag '" + t + "' not found: '" + model.string() + "' does not exist (" +
                          available(dir) + ")");
  }
  return t;
}

at::IValue read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("cannot open checkpoint file '" + path + "'");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw CheckpointError("cannot read checkpoint file '" + path + "' (corrupt or not a torch.save archive): " +
                          e.what());
  }
}

}  // namespace ds::checkpoint
