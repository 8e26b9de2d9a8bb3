#include "plugin/backend/fs/mount_table.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace snapledger {
namespace {

bool IsOctal(char c) { return c >= '0' && c <= '7'; }

// Undoes the kernel's escaping of " \t\n\\" as a backslash and three octal
// digits; any other backslash stays as it is.
std::string Unescape(absl::string_view field) {
  std::string out;
  out.reserve(field.size());
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && IsOctal(field[i + 1]) &&
        IsOctal(field[i + 2]) && IsOctal(field[i + 3])) {
      out.push_back(static_cast<char>(((field[i + 1] - '0') << 6) |
                                      ((field[i + 2] - '0') << 3) |
                                      (field[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}

bool ParseDev(absl::string_view field, dev_t* dev) {
  std::vector<absl::string_view> parts = absl::StrSplit(field, ':');
  unsigned int major = 0, minor = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &major) ||
      !absl::SimpleAtoi(parts[1], &minor)) {
    return false;
  }
  *dev = makedev(major, minor);
  return true;
}

// Whether `path` is `dir` or lies below it (by whole components).
bool Within(absl::string_view path, absl::string_view dir) {
  if (!absl::StartsWith(path, dir)) return false;
  return path.size() == dir.size() || dir == "/" || path[dir.size()] == '/';
}

// `path` (Within `mount_point`) as seen from the mount's root directory:
// "" for the mount point itself, else "/..." .
absl::string_view BelowMountPoint(absl::string_view path,
                                  absl::string_view mount_point) {
  if (path.size() == mount_point.size()) return "";
  if (mount_point == "/") return path;
  return path.substr(mount_point.size());
}

// Path `rest` ("" or "/...") below `root`, a path within a filesystem.
std::string JoinRoot(absl::string_view root, absl::string_view rest) {
  if (rest.empty()) return std::string(root);
  if (root == "/") return std::string(rest);
  return absl::StrCat(root, rest);
}

// Appends the layers of a lowerdir value (already unescaped) to `dirs`:
// ':' separates them ("::" marks data-only layers, which are layers too),
// and a backslash makes the next character part of the path.
void AppendLowerDirs(absl::string_view value, std::vector<std::string>* dirs) {
  std::string dir;
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '\\' && i + 1 < value.size()) {
      dir.push_back(value[++i]);
    } else if (value[i] == ':') {
      if (!dir.empty()) dirs->push_back(std::move(dir));
      dir.clear();
    } else {
      dir.push_back(value[i]);
    }
  }
  if (!dir.empty()) dirs->push_back(std::move(dir));
}

// `path` without empty, "." and ".." components (".." taking the one before
// it away); absolute if `path` is. Lexical only: no symlink is looked at.
std::string LexicallyNormal(absl::string_view path) {
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  const bool absolute = absl::StartsWith(path, "/");
  std::string out = absolute ? "/" : "";
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.push_back('/');
    absl::StrAppend(&out, parts[i]);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<MountEntry>> ParseMountInfo(absl::string_view text) {
  std::vector<MountEntry> table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (line.empty()) continue;
    // Single spaces separate the fields; paths have theirs escaped.
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    size_t separator = 6;  // optional fields come before it
    while (separator < fields.size() && fields[separator] != "-") ++separator;
    MountEntry entry;
    if (separator + 2 >= fields.size() ||
        !absl::SimpleAtoi(fields[0], &entry.mount_id) ||
        !absl::SimpleAtoi(fields[1], &entry.parent_id) ||
        !ParseDev(fields[2], &entry.dev) || fields[3].empty() ||
        fields[4].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("mountinfo line ", line_number, ": malformed: ", line));
    }
    entry.root = Unescape(fields[3]);
    entry.mount_point = Unescape(fields[4]);
    entry.fs_type = Unescape(fields[separator + 1]);
    entry.source = Unescape(fields[separator + 2]);
    if (separator + 3 < fields.size()) {
      entry.super_options = std::string(fields[separator + 3]);
    }
    table.push_back(std::move(entry));
  }
  return table;
}

namespace {

// Reads and parses the whole of `fd` (opened on `path`), from its current
// offset.
absl::StatusOr<std::vector<MountEntry>> ReadMountInfoFd(
    int fd, const std::string& path) {
  std::string text;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return ParseMountInfo(text);
}

}  // namespace

absl::StatusOr<std::vector<MountEntry>> ReadMountInfo(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  absl::StatusOr<std::vector<MountEntry>> table = ReadMountInfoFd(fd, path);
  ::close(fd);
  return table;
}

MountTableCache::MountTableCache(std::string path) : path_(std::move(path)) {}

MountTableCache::~MountTableCache() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>>
MountTableCache::Get() {
  absl::MutexLock l(&mu_);
  if (table_ != nullptr) {
    struct pollfd p = {fd_, POLLPRI, 0};
    int rc;
    do {
      rc = ::poll(&p, 1, 0);
    } while (rc < 0 && errno == EINTR);
    // Unflagged: no change since the file was opened or last polled.
    if (rc >= 0 && (p.revents & (POLLPRI | POLLERR | POLLNVAL)) == 0) {
      return table_;
    }
  }
  // Opened before it is read: any change the read may miss flags it.
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    table_ = nullptr;
    return absl::ErrnoToStatus(err, absl::StrCat("open ", path_));
  }
  absl::StatusOr<std::vector<MountEntry>> table = ReadMountInfoFd(fd, path_);
  ++reads_;
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  if (!table.ok()) {
    table_ = nullptr;
    return table.status();
  }
  table_ = std::make_shared<const std::vector<MountEntry>>(*std::move(table));
  return table_;
}

int MountTableCache::reads() const {
  absl::MutexLock l(&mu_);
  return reads_;
}

std::vector<MountEntry> MountsUsing(const std::vector<MountEntry>& table,
                                    const std::string& dir, dev_t dev) {
  // The mount that `dir` is reached through, and so where it lies within
  // its filesystem.
  const MountEntry* home = nullptr;
  for (const MountEntry& e : table) {
    if (e.mount_point == dir || !Within(dir, e.mount_point)) continue;
    const bool better =
        home == nullptr || (e.dev == dev && home->dev != dev) ||
        ((e.dev == dev) == (home->dev == dev) &&
         e.mount_point.size() >= home->mount_point.size());  // last on ties
    if (better) home = &e;
  }
  std::string dir_in_fs;
  if (home != nullptr) {
    dir_in_fs = JoinRoot(home->root, BelowMountPoint(dir, home->mount_point));
  }
  // Whether `path` on filesystem `path_dev` is the directory or below it.
  auto in_tree = [&](dev_t path_dev, absl::string_view path) {
    return home != nullptr && path_dev == home->dev && Within(path, dir_in_fs);
  };

  std::unordered_map<int, const MountEntry*> by_id;
  for (const MountEntry& e : table) by_id.emplace(e.mount_id, &e);
  std::vector<MountEntry> users;
  for (const MountEntry& e : table) {
    bool used = Within(e.mount_point, dir) || in_tree(e.dev, e.root);
    if (!used) {
      // Its mount point as a path of the filesystem it is mounted on: finds
      // mounts made inside the tree through another path to it.
      auto parent = by_id.find(e.parent_id);
      if (parent != by_id.end() && parent->second != &e &&
          Within(e.mount_point, parent->second->mount_point)) {
        const MountEntry& p = *parent->second;
        used = in_tree(p.dev, JoinRoot(p.root, BelowMountPoint(e.mount_point,
                                                               p.mount_point)));
      }
    }
    if (used) users.push_back(e);
  }
  return users;
}

OverlayLayers ParseOverlayLayers(absl::string_view super_options) {
  OverlayLayers layers;
  for (absl::string_view option : absl::StrSplit(super_options, ',')) {
    if (absl::ConsumePrefix(&option, "lowerdir=")) {
      AppendLowerDirs(Unescape(option), &layers.lower_dirs);
    } else if (absl::ConsumePrefix(&option, "lowerdir+=") ||
               absl::ConsumePrefix(&option, "datadir+=")) {
      // One layer each (the new mount API's way); no ':' splitting.
      if (!option.empty()) layers.lower_dirs.push_back(Unescape(option));
    } else if (absl::ConsumePrefix(&option, "upperdir=")) {
      layers.upper_dir = Unescape(option);
    } else if (absl::ConsumePrefix(&option, "workdir=")) {
      layers.work_dir = Unescape(option);
    }
  }
  return layers;
}

std::vector<MountEntry> OverlayMountsUsing(
    const std::vector<MountEntry>& table, const std::string& dir,
    const std::string& relative_base,
    const std::function<bool(const OverlayLayers&)>& owns_relative) {
  bool relative_ours = false;  // for the mount being looked at
  auto uses = [&](const std::string& layer) {
    if (layer.empty()) return false;
    if (layer.front() != '/') {
      if (relative_base.empty() || !relative_ours) return false;
      return Within(LexicallyNormal(absl::StrCat(relative_base, "/", layer)),
                    dir);
    }
    return Within(LexicallyNormal(layer), dir);
  };
  std::vector<MountEntry> users;
  for (const MountEntry& e : table) {
    if (e.fs_type != "overlay") continue;
    const OverlayLayers layers = ParseOverlayLayers(e.super_options);
    relative_ours = !owns_relative || owns_relative(layers);
    bool used = uses(layers.upper_dir) || uses(layers.work_dir);
    for (size_t i = 0; !used && i < layers.lower_dirs.size(); ++i) {
      used = uses(layers.lower_dirs[i]);
    }
    if (used) users.push_back(e);
  }
  return users;
}

}  // namespace snapledger
