// Small filesystem helpers for tests that build and inspect trees. They
// report failures through GoogleTest assertions; not for production use.
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace snapledger::testing {

inline bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// The mode (type and permissions) of `path`, not following a final symlink.
inline mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

// The names in directory `dir`, sorted.
inline std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Writes `data` to a new (or truncated) file with exactly `mode`.
inline void WriteFile(const std::string& path, const std::string& data,
                      mode_t mode = 0644) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
  ASSERT_EQ(::write(fd, data.data(), data.size()),
            static_cast<ssize_t>(data.size()));
  ASSERT_EQ(::close(fd), 0);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);  // past umask
}

inline std::string ReadFile(const std::string& path) {
  std::string data;
  const int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path << ": " << strerror(errno);
  if (fd < 0) return data;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) data.append(buf, n);
  ::close(fd);
  return data;
}

// An RLIMIT_NOFILE value that leaves exactly `free` descriptors unused.
inline rlim_t LimitLeavingFreeFds(int free) {
  std::set<int> open;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    open.insert(std::stoi(e.path().filename().string()));
  }
  int limit = 0;
  for (int left = free; left > 0; ++limit) {
    if (open.count(limit) == 0) --left;
  }
  return static_cast<rlim_t>(limit);
}

}  // namespace snapledger::testing
