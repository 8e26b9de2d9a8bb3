#include "plugin/backend/fs/fs_tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "spdlog/spdlog.h"

// Older kernel headers lack it; the kernel then never sets it in
// stx_attributes_mask and the st_dev comparison decides alone.
#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

namespace snapledger::fstree {

void UniqueFd::reset(int fd) {
  // close() errors only matter for written files, and writers here check
  // them (or fsync) before letting go.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

// For messages only: never handed to the kernel.
std::string Join(absl::string_view dir, absl::string_view name) {
  return absl::StrCat(dir, "/", name);
}

// Splits `path` into the directory holding it and its last component, which
// must name something ("/", "." and ".." are refused).
// The walks below recurse once per directory level: a bound keeps a tree
// made by an untrusted container from exhausting the stack (about 300 bytes
// a level) or memory (a path string a level).
absl::Status TooDeep(absl::string_view op, const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat(op, " ", path, ": tree deeper than ", kMaxTreeDepth,
                   " directory levels; refusing to walk it"));
}

absl::StatusOr<std::pair<std::string, std::string>> SplitPath(
    const std::string& path) {
  absl::string_view p = path;
  while (p.size() > 1 && p.back() == '/') p.remove_suffix(1);
  const size_t slash = p.rfind('/');
  std::string dir = ".";
  std::string base(p);
  if (slash != absl::string_view::npos) {
    dir = slash == 0 ? "/" : std::string(p.substr(0, slash));
    base = std::string(p.substr(slash + 1));
  }
  if (base.empty() || base == "/" || base == "." || base == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("path \"", path, "\" does not name a directory entry"));
  }
  return std::make_pair(std::move(dir), std::move(base));
}

absl::StatusOr<UniqueFd> OpenDirAt(int dir_fd, const char* name,
                                   const std::string& path) {
  UniqueFd fd(::openat(dir_fd, name, kDirFlags));
  if (!fd.valid()) return ErrnoError(errno, "open", path);
  return fd;
}

struct DirEntry {
  std::string name;
  unsigned char type;  // d_type: DT_UNKNOWN when the filesystem does not say
};

// Reads every entry of open directory `dir_fd` up front, so that callers can
// change the directory while going through them.
absl::StatusOr<std::vector<DirEntry>> ReadDir(int dir_fd,
                                              const std::string& path) {
  // A fresh descriptor: its own read position, and fdopendir() owns it.
  const int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open", path);
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(fd);
    return ErrnoError(err, "opendir", path);
  }
  absl::Cleanup close_dir = [dir] { ::closedir(dir); };
  std::vector<DirEntry> entries;
  for (;;) {
    errno = 0;
    const struct dirent* e = ::readdir(dir);
    if (e == nullptr) {
      if (errno != 0) return ErrnoError(errno, "readdir", path);
      break;
    }
    const absl::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    entries.push_back({std::string(name), e->d_type});
  }
  return entries;
}

// What statx says about a directory entry (not followed).
struct EntryStat {
  mode_t mode = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  int64_t blocks = 0;
  // Whether the entry is the root of a mount; without kernel support for
  // STATX_ATTR_MOUNT_ROOT, whether its device differs from `parent_dev`.
  bool crosses_mount = false;
};

// Returns false with errno set on failure.
bool StatEntry(int dir_fd, const char* name, dev_t parent_dev, EntryStat* out) {
  struct statx stx;
  if (::statx(dir_fd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT,
              STATX_TYPE | STATX_MODE | STATX_INO | STATX_BLOCKS, &stx) != 0) {
    return false;
  }
  out->mode = stx.stx_mode;
  out->dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  out->ino = stx.stx_ino;
  out->blocks = static_cast<int64_t>(stx.stx_blocks);
  // A bind mount of the same filesystem keeps st_dev, and a btrfs subvolume
  // changes it without being a mount: trust the attribute when there is one.
  out->crosses_mount = (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
                           ? (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0
                           : out->dev != parent_dev;
  return true;
}

// ---------------------------------------------------------------------------
// CopyTree

// An inode to read or write metadata of: an open descriptor, or else entry
// `name` of directory `dir_fd` for inodes that cannot be opened (symlinks,
// devices, fifos, sockets).
struct Node {
  int fd = -1;
  int dir_fd = -1;
  const char* name = nullptr;
  const std::string* path = nullptr;  // for messages

  // The l*xattr calls take paths only; this one reaches the entry through the
  // directory's descriptor, whatever the directory's depth, and the final
  // component is not followed.
  std::string ProcPath() const {
    return absl::StrCat("/proc/self/fd/", dir_fd, "/", name);
  }
};

bool IsSecurityXattr(absl::string_view name) {
  return absl::StartsWith(name, "security.");
}

absl::StatusOr<std::vector<std::string>> ListXattrs(const Node& node) {
  const std::string proc = node.fd >= 0 ? "" : node.ProcPath();
  auto list = [&](char* buf, size_t size) {
    return node.fd >= 0 ? ::flistxattr(node.fd, buf, size)
                        : ::llistxattr(proc.c_str(), buf, size);
  };
  std::string buf;
  for (;;) {
    const ssize_t size = list(nullptr, 0);
    if (size < 0) {
      if (errno == ENOTSUP) return std::vector<std::string>();
      return ErrnoError(errno, "listxattr", *node.path);
    }
    if (size == 0) return std::vector<std::string>();
    buf.resize(static_cast<size_t>(size));
    const ssize_t got = list(buf.data(), buf.size());
    if (got >= 0) {
      buf.resize(static_cast<size_t>(got));
      break;
    }
    if (errno != ERANGE) return ErrnoError(errno, "listxattr", *node.path);
    // The list grew between the two calls: size it again.
  }
  std::vector<std::string> names;
  for (absl::string_view name : absl::StrSplit(buf, '\0', absl::SkipEmpty())) {
    names.emplace_back(name);
  }
  return names;
}

// Sets `*found` to false when the attribute vanished since it was listed.
absl::Status GetXattr(const Node& node, const std::string& name,
                      std::string* value, bool* found) {
  const std::string proc = node.fd >= 0 ? "" : node.ProcPath();
  auto get = [&](char* buf, size_t size) {
    return node.fd >= 0 ? ::fgetxattr(node.fd, name.c_str(), buf, size)
                        : ::lgetxattr(proc.c_str(), name.c_str(), buf, size);
  };
  *found = true;
  for (;;) {
    const ssize_t size = get(nullptr, 0);
    if (size >= 0) {
      value->resize(static_cast<size_t>(size));
      const ssize_t got = get(value->data(), value->size());
      if (got >= 0) {
        value->resize(static_cast<size_t>(got));
        return absl::OkStatus();
      }
    }
    if (errno == ERANGE) continue;  // grew between the two calls
    if (errno == ENODATA) {
      *found = false;
      return absl::OkStatus();
    }
    return ErrnoError(errno, absl::StrCat("getxattr ", name, " of"),
                      *node.path);
  }
}

absl::Status SetXattr(const Node& node, const std::string& name,
                      const std::string& value) {
  const int rc =
      node.fd >= 0
          ? ::fsetxattr(node.fd, name.c_str(), value.data(), value.size(), 0)
          : ::lsetxattr(node.ProcPath().c_str(), name.c_str(), value.data(),
                        value.size(), 0);
  if (rc != 0) {
    return ErrnoError(errno, absl::StrCat("setxattr ", name, " on"),
                      *node.path);
  }
  return absl::OkStatus();
}

absl::Status CopyXattrs(const Node& src, const Node& dst) {
  absl::StatusOr<std::vector<std::string>> names = ListXattrs(src);
  if (!names.ok()) return names.status();
  std::string value;
  for (const std::string& name : *names) {
    bool found = false;
    absl::Status s = GetXattr(src, name, &value, &found);
    if (s.ok() && !found) continue;
    if (s.ok()) s = SetXattr(dst, name, value);
    if (!s.ok()) {
      // Labels such as SELinux's belong to the host, and the destination
      // often refuses them: as containerd's native snapshotter, skip them.
      if (!IsSecurityXattr(name)) return s;
      spdlog::debug("copy tree: skipping extended attribute: {}", s.ToString());
    }
  }
  return absl::OkStatus();
}

absl::Status CopyOwner(const struct stat& st, const Node& dst) {
  const int rc = dst.fd >= 0 ? ::fchown(dst.fd, st.st_uid, st.st_gid)
                             : ::fchownat(dst.dir_fd, dst.name, st.st_uid,
                                          st.st_gid, AT_SYMLINK_NOFOLLOW);
  if (rc == 0) return absl::OkStatus();
  const int err = errno;
  if (err == EPERM) {
    // Some filesystems (NFS) refuse even a no-op chown: fine if the owner is
    // already right.
    struct stat now;
    const int src = dst.fd >= 0 ? ::fstat(dst.fd, &now)
                                : ::fstatat(dst.dir_fd, dst.name, &now,
                                            AT_SYMLINK_NOFOLLOW);
    if (src == 0 && now.st_uid == st.st_uid && now.st_gid == st.st_gid) {
      return absl::OkStatus();
    }
  }
  return ErrnoError(err, "chown", *dst.path);
}

absl::Status CopyMode(const struct stat& st, const Node& dst) {
  if (S_ISLNK(st.st_mode)) return absl::OkStatus();  // Linux has no modes
  const mode_t mode = st.st_mode & 07777;
  const int rc = dst.fd >= 0 ? ::fchmod(dst.fd, mode)
                             : ::fchmodat(dst.dir_fd, dst.name, mode, 0);
  if (rc != 0) return ErrnoError(errno, "chmod", *dst.path);
  return absl::OkStatus();
}

absl::Status CopyTimes(const struct stat& st, const Node& dst) {
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  const int rc = dst.fd >= 0 ? ::futimens(dst.fd, times)
                             : ::utimensat(dst.dir_fd, dst.name, times,
                                           AT_SYMLINK_NOFOLLOW);
  if (rc != 0) return ErrnoError(errno, "set times of", *dst.path);
  return absl::OkStatus();
}

// Order matters: chown clears setuid/setgid bits and file capabilities, so
// it goes first; the mode goes after the xattrs so that user.* attributes
// can still be written to a read-only file, and it leaves a copied ACL as it
// was (the ACL and the mode agree in the source); times go last because
// everything before may change them.
absl::Status CopyMetadata(const struct stat& st, const Node& src,
                          const Node& dst) {
  absl::Status s = CopyOwner(st, dst);
  if (s.ok()) s = CopyXattrs(src, dst);
  if (s.ok()) s = CopyMode(st, dst);
  if (s.ok()) s = CopyTimes(st, dst);
  return s;
}

// Copies `len` bytes at `offset` from `src` to the same offset in `dst`.
// Falls back, for good, from copy_file_range to pread/pwrite when the kernel
// or the filesystems cannot do the former.
absl::Status CopyRange(int src, int dst, off_t offset, off_t len,
                       bool* use_copy_file_range, const std::string& src_path,
                       const std::string& dst_path) {
  std::vector<char> buf;
  while (len > 0) {
    if (*use_copy_file_range) {
      loff_t in = offset;
      loff_t out = offset;
      const size_t chunk =
          static_cast<size_t>(std::min<off_t>(len, off_t{1} << 30));
      const ssize_t n = ::copy_file_range(src, &in, dst, &out, chunk, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ENOSYS || errno == EXDEV || errno == EINVAL ||
            errno == EOPNOTSUPP || errno == EPERM) {
          *use_copy_file_range = false;
          continue;
        }
        return ErrnoError(errno, absl::StrCat("copy ", src_path, " to"),
                          dst_path);
      }
      if (n == 0) return absl::OkStatus();  // the source shrank
      offset += n;
      len -= n;
      continue;
    }
    if (buf.empty()) buf.resize(128 << 10);
    const size_t chunk = static_cast<size_t>(
        std::min<off_t>(len, static_cast<off_t>(buf.size())));
    const ssize_t n = ::pread(src, buf.data(), chunk, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read", src_path);
    }
    if (n == 0) return absl::OkStatus();
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = ::pwrite(dst, buf.data() + done,
                                 static_cast<size_t>(n - done), offset + done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, "write", dst_path);
      }
      done += w;
    }
    offset += n;
    len -= n;
  }
  return absl::OkStatus();
}

// Copies the data of `src` (of `size` bytes) into the empty file `dst`,
// leaving holes where the source has them.
absl::Status CopyFileData(int src, int dst, off_t size,
                          const std::string& src_path,
                          const std::string& dst_path) {
  bool use_copy_file_range = true;
  off_t offset = 0;
  while (offset < size) {
    off_t data = ::lseek(src, offset, SEEK_DATA);
    off_t hole = size;
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      if (errno != EINVAL && errno != EOPNOTSUPP) {
        return ErrnoError(errno, "seek", src_path);
      }
      data = offset;  // no SEEK_DATA here: everything is data
    } else {
      hole = ::lseek(src, data, SEEK_HOLE);
      if (hole < 0) return ErrnoError(errno, "seek", src_path);
    }
    if (data >= size) break;
    hole = std::min(hole, size);
    absl::Status s = CopyRange(src, dst, data, hole - data,
                               &use_copy_file_range, src_path, dst_path);
    if (!s.ok()) return s;
    offset = hole;
  }
  // Trailing holes.
  if (::ftruncate(dst, size) != 0) {
    return ErrnoError(errno, "truncate", dst_path);
  }
  return absl::OkStatus();
}

class TreeCopier {
 public:
  TreeCopier(int dst_root_fd, std::string dst_root, dev_t dst_root_dev,
             ino_t dst_root_ino)
      : dst_root_fd_(dst_root_fd),
        dst_root_(std::move(dst_root)),
        dst_root_key_(dst_root_dev, dst_root_ino) {}

  // Copies the contents of `src_fd` into `dst_fd`, then the directory's own
  // metadata (`st`). `rel` is the directory's path relative to the roots.
  absl::Status CopyDirectory(int src_fd, int dst_fd, const struct stat& st,
                             const std::string& rel,
                             const std::string& src_path,
                             const std::string& dst_path, int depth = 0) {
    if (depth > kMaxTreeDepth) return TooDeep("copy", src_path);
    absl::StatusOr<std::vector<DirEntry>> entries = ReadDir(src_fd, src_path);
    if (!entries.ok()) return entries.status();
    for (const DirEntry& e : *entries) {
      absl::Status s =
          CopyEntry(src_fd, dst_fd, e.name.c_str(),
                    rel.empty() ? e.name : absl::StrCat(rel, "/", e.name),
                    Join(src_path, e.name), Join(dst_path, e.name), depth);
      if (!s.ok()) return s;
    }
    const Node src{src_fd, -1, nullptr, &src_path};
    const Node dst{dst_fd, -1, nullptr, &dst_path};
    return CopyMetadata(st, src, dst);
  }

 private:
  using InodeKey = std::pair<dev_t, ino_t>;

  absl::Status CopyEntry(int src_dir_fd, int dst_dir_fd, const char* name,
                         const std::string& rel, const std::string& src_path,
                         const std::string& dst_path, int depth) {
    struct stat st;
    if (::fstatat(src_dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError(errno, "stat", src_path);
    }
    const InodeKey key(st.st_dev, st.st_ino);
    if (S_ISDIR(st.st_mode)) {
      if (key == dst_root_key_) return absl::OkStatus();  // copying into src
      // Refuse before creating the level, so that what was made stays within
      // the bound and RemoveTree can take it back.
      if (depth + 1 > kMaxTreeDepth) return TooDeep("copy", src_path);
      // Owner-only until its contents are in, whatever its final mode.
      if (::mkdirat(dst_dir_fd, name, 0700) != 0) {
        return ErrnoError(errno, "mkdir", dst_path);
      }
      absl::StatusOr<UniqueFd> src = OpenDirAt(src_dir_fd, name, src_path);
      if (!src.ok()) return src.status();
      absl::StatusOr<UniqueFd> dst = OpenDirAt(dst_dir_fd, name, dst_path);
      if (!dst.ok()) return dst.status();
      return CopyDirectory(src->get(), dst->get(), st, rel, src_path, dst_path,
                           depth + 1);
    }
    if (st.st_nlink > 1) {
      auto it = first_links_.find(key);
      if (it != first_links_.end()) {
        return LinkTo(it->second, dst_dir_fd, name, dst_path);
      }
    }
    absl::Status s;
    switch (st.st_mode & S_IFMT) {
      case S_IFREG:
        s = CopyRegularFile(st, src_dir_fd, dst_dir_fd, name, src_path,
                            dst_path);
        break;
      case S_IFLNK:
        s = CopySymlink(st, src_dir_fd, dst_dir_fd, name, src_path, dst_path);
        break;
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
      case S_IFSOCK:
        s = CopySpecial(st, src_dir_fd, dst_dir_fd, name, src_path, dst_path);
        break;
      default:
        return absl::UnimplementedError(absl::StrCat(
            "copy ", src_path, ": unsupported file type ", st.st_mode));
    }
    if (!s.ok()) return s;
    if (st.st_nlink > 1) first_links_.emplace(key, rel);
    return absl::OkStatus();
  }

  absl::Status CopyRegularFile(const struct stat& st, int src_dir_fd,
                               int dst_dir_fd, const char* name,
                               const std::string& src_path,
                               const std::string& dst_path) {
    // O_NOATIME keeps the source's access times as they were; it needs
    // ownership or CAP_FOWNER, so do without it if refused.
    constexpr int kReadFlags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC;
    UniqueFd src(::openat(src_dir_fd, name, kReadFlags | O_NOATIME));
    if (!src.valid() && errno == EPERM) {
      src.reset(::openat(src_dir_fd, name, kReadFlags));
    }
    if (!src.valid()) return ErrnoError(errno, "open", src_path);
    UniqueFd dst(::openat(dst_dir_fd, name,
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          0600));
    if (!dst.valid()) return ErrnoError(errno, "create", dst_path);
    absl::Status s =
        CopyFileData(src.get(), dst.get(), st.st_size, src_path, dst_path);
    if (!s.ok()) return s;
    s = CopyMetadata(st, Node{src.get(), -1, nullptr, &src_path},
                     Node{dst.get(), -1, nullptr, &dst_path});
    if (!s.ok()) return s;
    if (::close(dst.release()) != 0) {
      return ErrnoError(errno, "close", dst_path);
    }
    return absl::OkStatus();
  }

  absl::Status CopySymlink(const struct stat& st, int src_dir_fd,
                           int dst_dir_fd, const char* name,
                           const std::string& src_path,
                           const std::string& dst_path) {
    // st_size is the target's length on most filesystems, 0 on some.
    std::string target(std::max<size_t>(st.st_size + 1, 256), '\0');
    for (;;) {
      const ssize_t n =
          ::readlinkat(src_dir_fd, name, target.data(), target.size());
      if (n < 0) return ErrnoError(errno, "readlink", src_path);
      if (static_cast<size_t>(n) < target.size()) {
        target.resize(static_cast<size_t>(n));
        break;
      }
      target.resize(target.size() * 2);  // possibly truncated: grow
    }
    if (::symlinkat(target.c_str(), dst_dir_fd, name) != 0) {
      return ErrnoError(errno, "symlink", dst_path);
    }
    return CopyMetadata(st, Node{-1, src_dir_fd, name, &src_path},
                        Node{-1, dst_dir_fd, name, &dst_path});
  }

  absl::Status CopySpecial(const struct stat& st, int src_dir_fd,
                           int dst_dir_fd, const char* name,
                           const std::string& src_path,
                           const std::string& dst_path) {
    if (::mknodat(dst_dir_fd, name, (st.st_mode & S_IFMT) | 0600, st.st_rdev) !=
        0) {
      return ErrnoError(errno, "mknod", dst_path);
    }
    return CopyMetadata(st, Node{-1, src_dir_fd, name, &src_path},
                        Node{-1, dst_dir_fd, name, &dst_path});
  }

  // Makes `name` in `dst_dir_fd` a hard link to the copy at `first_rel`
  // (relative to the destination root), walking there one component at a
  // time so that no path length limit applies.
  absl::Status LinkTo(const std::string& first_rel, int dst_dir_fd,
                      const char* name, const std::string& dst_path) {
    const std::vector<std::string> parts = absl::StrSplit(first_rel, '/');
    UniqueFd held;
    int dir = dst_root_fd_;
    std::string dir_path = dst_root_;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      dir_path = Join(dir_path, parts[i]);
      UniqueFd next(::openat(dir, parts[i].c_str(),
                             O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next.valid()) return ErrnoError(errno, "open", dir_path);
      held = std::move(next);
      dir = held.get();
    }
    if (::linkat(dir, parts.back().c_str(), dst_dir_fd, name, 0) != 0) {
      return ErrnoError(
          errno, absl::StrCat("link ", Join(dir_path, parts.back()), " as"),
          dst_path);
    }
    return absl::OkStatus();
  }

  const int dst_root_fd_;
  const std::string dst_root_;
  // The destination's own root, skipped if met inside the source.
  const InodeKey dst_root_key_;
  // Each multiply-linked source inode copied so far -> where its first copy
  // is, relative to the destination root.
  std::map<InodeKey, std::string> first_links_;
};

// ---------------------------------------------------------------------------
// RemoveTree

absl::Status Unlink(int dir_fd, const char* name, int flags,
                    const std::string& path) {
  if (::unlinkat(dir_fd, name, flags) != 0 && errno != ENOENT) {
    return ErrnoError(errno, "remove", path);
  }
  return absl::OkStatus();
}

absl::Status RemoveEntry(int dir_fd, const char* name, unsigned char d_type,
                         const std::string& path, const dev_t* parent_dev,
                         int depth);

// Removes everything in open directory `fd` (on device `dev`), going on past
// failures; returns the first.
absl::Status EmptyDirectory(int fd, dev_t dev, const std::string& path,
                            int depth) {
  if (depth > kMaxTreeDepth) return TooDeep("remove", path);
  absl::StatusOr<std::vector<DirEntry>> entries = ReadDir(fd, path);
  if (!entries.ok()) return entries.status();
  absl::Status first;
  for (const DirEntry& e : *entries) {
    first.Update(RemoveEntry(fd, e.name.c_str(), e.type, Join(path, e.name),
                             &dev, depth + 1));
  }
  return first;
}

// Removes entry `name` of `dir_fd` and all below it. `parent_dev` is null for
// the top of the tree, which may itself be a mount point.
absl::Status RemoveEntry(int dir_fd, const char* name, unsigned char d_type,
                         const std::string& path, const dev_t* parent_dev,
                         int depth) {
  if (d_type != DT_DIR && d_type != DT_UNKNOWN) {
    return Unlink(dir_fd, name, 0, path);
  }
  EntryStat st;
  if (!StatEntry(dir_fd, name, parent_dev ? *parent_dev : 0, &st)) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoError(errno, "stat", path);
  }
  if (!S_ISDIR(st.mode)) return Unlink(dir_fd, name, 0, path);
  if (parent_dev != nullptr && st.crosses_mount) {
    return absl::FailedPreconditionError(absl::StrCat(
        "remove ", path, ": a filesystem is mounted there; not crossing it"));
  }
  if ((st.mode & S_IRWXU) != S_IRWXU) {
    // Read-only or unsearchable for its owner: open it up (best effort;
    // root does not need it).
    ::fchmodat(dir_fd, name, (st.mode & 07777) | S_IRWXU, AT_SYMLINK_NOFOLLOW);
  }
  UniqueFd fd(::openat(dir_fd, name, kDirFlags));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoError(errno, "open", path);
  }
  absl::Status s = EmptyDirectory(fd.get(), st.dev, path, depth);
  fd.reset();
  if (!s.ok()) return s;
  return Unlink(dir_fd, name, AT_REMOVEDIR, path);
}

// ---------------------------------------------------------------------------
// DiskUsage

class UsageCounter {
 public:
  void Add(dev_t dev, ino_t ino, int64_t blocks) {
    if (seen_.emplace(dev, ino).second) {
      usage_.size_bytes += blocks * 512;  // st_blocks is in 512-byte units
      ++usage_.inodes;
    }
  }

  absl::Status Walk(int fd, dev_t dev, const std::string& path, int depth = 0) {
    if (depth > kMaxTreeDepth) return TooDeep("measure", path);
    absl::StatusOr<std::vector<DirEntry>> entries = ReadDir(fd, path);
    if (!entries.ok()) return entries.status();
    for (const DirEntry& e : *entries) {
      const std::string child_path = Join(path, e.name);
      EntryStat st;
      if (!StatEntry(fd, e.name.c_str(), dev, &st)) {
        if (errno == ENOENT) continue;
        return ErrnoError(errno, "stat", child_path);
      }
      if (st.crosses_mount) continue;
      Add(st.dev, st.ino, st.blocks);
      if (!S_ISDIR(st.mode)) continue;
      UniqueFd child(::openat(fd, e.name.c_str(), kDirFlags));
      if (!child.valid()) {
        if (errno == ENOENT) continue;
        return ErrnoError(errno, "open", child_path);
      }
      absl::Status s = Walk(child.get(), st.dev, child_path, depth + 1);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  const Usage& usage() const { return usage_; }

 private:
  std::set<std::pair<dev_t, ino_t>> seen_;
  Usage usage_;
};

}  // namespace

absl::Status CopyTree(const std::string& src_dir, const std::string& dst_dir) {
  UniqueFd src(::open(src_dir.c_str(), kDirFlags));
  if (!src.valid()) return ErrnoError(errno, "open", src_dir);
  struct stat src_st;
  if (::fstat(src.get(), &src_st) != 0) {
    return ErrnoError(errno, "stat", src_dir);
  }
  absl::StatusOr<std::pair<std::string, std::string>> split =
      SplitPath(dst_dir);
  if (!split.ok()) return split.status();
  const auto& [dst_parent, dst_name] = *split;
  UniqueFd parent(
      ::open(dst_parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent.valid()) return ErrnoError(errno, "open", dst_parent);
  if (::mkdirat(parent.get(), dst_name.c_str(), 0700) != 0) {
    return ErrnoError(errno, "mkdir", dst_dir);
  }
  absl::Cleanup discard = [&dst_dir] {
    if (absl::Status s = RemoveTree(dst_dir); !s.ok()) {
      spdlog::warn("copy tree: cannot remove partial copy: {}", s.ToString());
    }
  };
  absl::StatusOr<UniqueFd> dst =
      OpenDirAt(parent.get(), dst_name.c_str(), dst_dir);
  if (!dst.ok()) return dst.status();
  struct stat dst_st;
  if (::fstat(dst->get(), &dst_st) != 0) {
    return ErrnoError(errno, "stat", dst_dir);
  }
  TreeCopier copier(dst->get(), dst_dir, dst_st.st_dev, dst_st.st_ino);
  absl::Status s =
      copier.CopyDirectory(src.get(), dst->get(), src_st, "", src_dir, dst_dir);
  if (!s.ok()) return s;
  std::move(discard).Cancel();
  return absl::OkStatus();
}

absl::Status RemoveTree(const std::string& path) {
  absl::StatusOr<std::pair<std::string, std::string>> split = SplitPath(path);
  if (!split.ok()) return split.status();
  const auto& [parent_path, name] = *split;
  UniqueFd parent(
      ::open(parent_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent.valid()) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoError(errno, "open", parent_path);
  }
  return RemoveEntry(parent.get(), name.c_str(), DT_UNKNOWN, path, nullptr,
                     /*depth=*/0);
}

absl::StatusOr<Usage> DiskUsage(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), kDirFlags));
  if (!fd.valid()) return ErrnoError(errno, "open", dir);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "stat", dir);
  UsageCounter counter;
  counter.Add(st.st_dev, st.st_ino, st.st_blocks);
  absl::Status s = counter.Walk(fd.get(), st.st_dev, dir);
  if (!s.ok()) return s;
  return counter.usage();
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError(errno, "open", dir);
  absl::StatusOr<std::vector<DirEntry>> entries = ReadDir(fd.get(), dir);
  if (!entries.ok()) return entries.status();
  std::vector<std::string> names;
  names.reserve(entries->size());
  for (DirEntry& e : *entries) names.push_back(std::move(e.name));
  return names;
}

absl::StatusOr<std::vector<std::string>> ListSubdirs(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError(errno, "open", dir);
  absl::StatusOr<std::vector<DirEntry>> entries = ReadDir(fd.get(), dir);
  if (!entries.ok()) return entries.status();
  std::vector<std::string> names;
  names.reserve(entries->size());
  for (DirEntry& e : *entries) {
    struct stat st;
    if (e.type == DT_DIR ||
        (e.type == DT_UNKNOWN &&
         ::fstatat(fd.get(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISDIR(st.st_mode))) {
      names.push_back(std::move(e.name));
    }
  }
  return names;
}

absl::Status ErrnoError(int err, absl::string_view op, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(op, " ", path));
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> ReadSmallFile(
    int dir_fd, const std::string& name, const std::string& path,
    size_t limit) {
  UniqueFd fd(
      ::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::optional<std::string>();
    return ErrnoError(errno, "open", path);
  }
  std::string text(limit, '\0');
  size_t len = 0;
  while (len < limit) {
    const ssize_t n = ::read(fd.get(), text.data() + len, limit - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read", path);
    }
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  text.resize(len);
  return std::optional<std::string>(std::move(text));
}

absl::Status MakeDirs(const std::string& path, mode_t mode) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    const std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), mode) == 0) continue;
    const int err = errno;
    struct stat st;
    if (err == EEXIST && ::stat(prefix.c_str(), &st) == 0 &&
        S_ISDIR(st.st_mode)) {
      continue;
    }
    return ErrnoError(err == EEXIST ? ENOTDIR : err, "mkdir", prefix);
  }
  return absl::OkStatus();
}

absl::Status MakeDirAt(int dir_fd, const char* name, mode_t mode,
                       const std::string& path, bool flush,
                       const std::optional<DirOwner>& owner) {
  if (::mkdirat(dir_fd, name, mode) != 0) {
    return ErrnoError(errno, "mkdir", path);
  }
  // With `flush` the directory is opened anyway; else everything goes by
  // name (two calls fewer than open and close).
  UniqueFd fd;
  if (flush) {
    fd.reset(::openat(dir_fd, name, kDirFlags));
    if (!fd.valid()) return ErrnoError(errno, "open", path);
  }
  if (owner.has_value() &&
      (fd.valid() ? ::fchown(fd.get(), owner->uid, owner->gid)
                  : ::fchownat(dir_fd, name, owner->uid, owner->gid,
                               AT_SYMLINK_NOFOLLOW)) != 0) {
    return ErrnoError(errno, "chown", path);
  }
  // A stat only reads the inode; the chmod it saves would write it.
  struct stat st;
  if ((fd.valid() ? ::fstat(fd.get(), &st)
                  : ::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW)) != 0) {
    return ErrnoError(errno, "stat", path);
  }
  if ((st.st_mode & 07777) != (mode & 07777) &&
      (fd.valid() ? ::fchmod(fd.get(), mode)
                  : ::fchmodat(dir_fd, name, mode, 0)) != 0) {
    return ErrnoError(errno, "chmod", path);
  }
  if (flush && ::fsync(fd.get()) != 0) {
    return ErrnoError(errno, "fsync", path);
  }
  return absl::OkStatus();
}

absl::Status FsyncAt(int dir_fd, const char* name, const std::string& path) {
  UniqueFd fd(::openat(dir_fd, name, kDirFlags));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    return ErrnoError(errno, "fsync", path);
  }
  return absl::OkStatus();
}

}  // namespace snapledger::fstree
