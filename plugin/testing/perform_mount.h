// Performs a backend's Mount at a target directory, the way containerd's
// mount package does, for tests that check that returned mounts work: a
// "bind" mount (then a read-only remount for "ro", which the first mount
// ignores), or an "overlay" mount with the options passed as its data.
// Tests only; it knows just the options the local backends return.
#pragma once

#include <errno.h>
#include <sys/mount.h>

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "plugin/backend/backend.h"

namespace snapledger::testing {

// 0 on success; -1 with errno set on failure (EINVAL for a mount type or
// option it does not know).
inline int PerformMount(const Mount& mount, const std::string& target) {
  if (mount.type == "overlay") {
    std::vector<std::string> data;
    for (const std::string& option : mount.options) {
      if (option == "ro" || option == "rw") continue;  // no flag options here
      data.push_back(option);
    }
    return ::mount(mount.source.c_str(), target.c_str(), "overlay", 0,
                   absl::StrJoin(data, ",").c_str());
  }
  unsigned long flags = 0;
  bool read_only = false;
  for (const std::string& option : mount.options) {
    if (option == "rbind") flags |= MS_BIND | MS_REC;
    if (option == "bind") flags |= MS_BIND;
    if (option == "ro") read_only = true;
  }
  if (mount.type != "bind" || !(flags & MS_BIND)) {
    errno = EINVAL;
    return -1;
  }
  if (::mount(mount.source.c_str(), target.c_str(), nullptr, flags, nullptr) !=
      0) {
    return -1;
  }
  if (read_only && ::mount(nullptr, target.c_str(), nullptr,
                           MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    const int err = errno;
    ::umount2(target.c_str(), MNT_DETACH);
    errno = err;
    return -1;
  }
  return 0;
}

}  // namespace snapledger::testing
