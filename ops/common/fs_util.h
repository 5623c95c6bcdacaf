// Removing a directory tree without std::filesystem::remove_all.
//
// On the GPU machine std::filesystem::remove_all crashed in the engine's checkpoint writer (a call
// through a null pointer). The cause was found later: that machine's g++ (/opt/gcc) has only a
// static libstdc++, so every binary carried a private, partly initialised copy of it; the build now
// links the system's libstdc++.so.6 instead (cmake/DsOptions.cmake). nftw() is kept: it does the
// same job with no dependence on which libstdc++ a binary ends up with.
#pragma once

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace ds {

namespace detail {
inline int remove_tree_entry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path); }
}  // namespace detail

// Removes `path` and everything below it (symbolic links are removed, not followed). True when
// nothing is left at `path` (also when nothing was there).
inline bool remove_tree(const std::filesystem::path& path) {
  const std::string p = path.string();
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return true;
  if (!S_ISDIR(st.st_mode)) return std::remove(p.c_str()) == 0;
  return ::nftw(p.c_str(), detail::remove_tree_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

}  // namespace ds
