// Removing a directory tree without std::filesystem::remove_all.
//
// The pip LibTorch (torch 2.x wheels, the GPU machine's) exports its own copy of
// std::filesystem::remove_all; a program linked to it binds to that copy, which crashes there (a call
// through a null pointer, seen on the H100 in the engine's checkpoint writer). nftw() does the same
// job with nothing to collide with.
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
