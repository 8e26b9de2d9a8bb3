#include "plugin/backend/native/native_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "plugin/backend/fs/fs_tree.h"
#include "plugin/backend/fs/mount_table.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

using fstree::UniqueFd;

constexpr absl::string_view kTempPrefix = "new-";
constexpr absl::string_view kRemovingPrefix = "rm-";
constexpr char kTreeDir[] = "fs";
constexpr char kParentFile[] = "parent";

absl::Status ErrnoError(int err, absl::string_view op, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(op, " ", path));
}

absl::Status ObjectNotFound(uint64_t id) {
  return absl::NotFoundError(
      absl::StrCat("snapshot object ", id, " not found"));
}

absl::Status CheckId(uint64_t id) {
  if (id == 0) return absl::InvalidArgumentError("object id 0 is reserved");
  return absl::OkStatus();
}

// A canonical decimal id: digits only, no leading zero, fits uint64_t.
std::optional<uint64_t> ParseId(absl::string_view s) {
  if (s.empty() || s.size() > 20 || s[0] == '0') return std::nullopt;
  if (!std::all_of(s.begin(), s.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  uint64_t id = 0;
  if (!absl::SimpleAtoi(s, &id)) return std::nullopt;
  return id;
}

bool IsTemporary(absl::string_view name) {
  return absl::StartsWith(name, kTempPrefix) ||
         absl::StartsWith(name, kRemovingPrefix);
}

// Renames `from` to `to` within `dir_fd`, failing with EEXIST rather than
// replacing an existing `to`.
int RenameNoReplace(int dir_fd, const char* from, const char* to) {
  if (::renameat2(dir_fd, from, dir_fd, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL) return -1;
  // No RENAME_NOREPLACE on this filesystem. Objects are never empty
  // directories, so a plain rename still fails (ENOTEMPTY) over one.
  return ::renameat(dir_fd, from, dir_fd, to);
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

// Creates directory `path` and missing ancestors with `mode` (existing ones
// are left as they are).
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

class NativeBackend final : public Backend {
 public:
  NativeBackend(std::string snapshots_dir, UniqueFd snapshots_fd,
                NativeBackendOptions options)
      : snapshots_dir_(std::move(snapshots_dir)),
        snapshots_fd_(std::move(snapshots_fd)),
        options_(options) {}

  std::string_view Name() const override { return "native"; }

  absl::Status Create(uint64_t id, uint64_t parent_id,
                      SnapshotKind kind) override {
    if (absl::Status s = CheckId(id); !s.ok()) return s;
    if (kind == SnapshotKind::kCommitted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot object ", id, ": objects are created active or as views"));
    }
    if (parent_id == id) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot object ", id, " cannot be its own parent"));
    }
    absl::StatusOr<bool> exists = Exists(id);
    if (!exists.ok()) return exists.status();
    if (*exists) {
      return absl::AlreadyExistsError(
          absl::StrCat("snapshot object ", id, " already exists"));
    }
    const bool copy_parent = parent_id != 0 && kind == SnapshotKind::kActive;
    const bool own_tree = parent_id == 0 || kind == SnapshotKind::kActive;
    if (parent_id != 0) {
      absl::StatusOr<bool> parent_exists = Exists(parent_id);
      if (!parent_exists.ok()) return parent_exists.status();
      if (!*parent_exists) {
        return absl::NotFoundError(
            absl::StrCat("parent snapshot object ", parent_id, " not found"));
      }
    }
    if (copy_parent) {
      absl::StatusOr<bool> has_tree = HasTree(parent_id);
      if (!has_tree.ok()) return has_tree.status();
      if (!*has_tree) {
        return absl::FailedPreconditionError(absl::StrCat(
            "parent snapshot object ", parent_id,
            " is a view of another object and has no tree to copy"));
      }
    }

    std::string temp_path =
        absl::StrCat(snapshots_dir_, "/", kTempPrefix, "XXXXXX");
    if (::mkdtemp(temp_path.data()) == nullptr) {
      return ErrnoError(errno, "mkdtemp", temp_path);
    }
    const std::string temp_name = temp_path.substr(snapshots_dir_.size() + 1);
    absl::Cleanup discard = [&temp_path] {
      if (absl::Status s = fstree::RemoveTree(temp_path); !s.ok()) {
        spdlog::warn("native: cannot remove {} (Cleanup will): {}", temp_path,
                     s.ToString());
      }
    };
    UniqueFd temp(::openat(snapshots_fd_.get(), temp_name.c_str(),
                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!temp.valid()) return ErrnoError(errno, "open", temp_path);

    const std::string tree_path = absl::StrCat(temp_path, "/", kTreeDir);
    if (copy_parent) {
      absl::Status s = fstree::CopyTree(TreePath(parent_id), tree_path);
      if (!s.ok()) return s;
    } else if (own_tree) {
      if (::mkdirat(temp.get(), kTreeDir, 0755) != 0 ||
          ::fchmodat(temp.get(), kTreeDir, 0755, 0) != 0) {  // past umask
        return ErrnoError(errno, "mkdir", tree_path);
      }
    }
    if (absl::Status s =
            WriteParentFile(temp.get(), parent_id, temp_path, options_.sync);
        !s.ok()) {
      return s;
    }
    if (!options_.sync) {
      // Nothing to flush: the rename alone makes the object whole or absent
      // for anything short of a power loss.
    } else if (copy_parent) {
      // One call makes the whole copied tree durable, where an fsync per
      // file and directory would cost one each.
      if (::syncfs(temp.get()) != 0) {
        return ErrnoError(errno, "syncfs", temp_path);
      }
    } else if (own_tree) {
      UniqueFd tree(::openat(temp.get(), kTreeDir,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!tree.valid() || ::fsync(tree.get()) != 0) {
        return ErrnoError(errno, "fsync", tree_path);
      }
    }
    if (options_.sync && ::fsync(temp.get()) != 0) {
      return ErrnoError(errno, "fsync", temp_path);
    }
    temp.reset();

    const std::string name = absl::StrCat(id);
    if (RenameNoReplace(snapshots_fd_.get(), temp_name.c_str(), name.c_str()) !=
        0) {
      if (errno == EEXIST || errno == ENOTEMPTY) {
        return absl::AlreadyExistsError(
            absl::StrCat("snapshot object ", id, " already exists"));
      }
      return ErrnoError(errno, absl::StrCat("rename ", temp_path, " to"),
                        ObjectPath(id));
    }
    std::move(discard).Cancel();
    if (options_.sync && ::fsync(snapshots_fd_.get()) != 0) {
      const int err = errno;
      // Not known durable: take it back, so that a failed Create leaves no
      // object behind.
      if (::renameat(snapshots_fd_.get(), name.c_str(), snapshots_fd_.get(),
                     temp_name.c_str()) == 0) {
        if (absl::Status s = fstree::RemoveTree(temp_path); !s.ok()) {
          spdlog::warn("native: cannot remove {} (Cleanup will): {}", temp_path,
                       s.ToString());
        }
      } else {
        spdlog::error("native: object {} created but not synced: {}", id,
                      ::strerror(errno));
      }
      return ErrnoError(err, "fsync", snapshots_dir_);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Usage> Commit(uint64_t id) override {
    if (absl::Status s = CheckId(id); !s.ok()) return s;
    absl::StatusOr<bool> exists = Exists(id);
    if (!exists.ok()) return exists.status();
    if (!*exists) return ObjectNotFound(id);
    UniqueFd tree(OpenTree(id));
    if (!tree.valid()) {
      if (errno == ENOENT) return Usage{};  // a view with a parent
      return ErrnoError(errno, "open", TreePath(id));
    }
    if (options_.sync && ::syncfs(tree.get()) != 0) {
      return ErrnoError(errno, "syncfs", TreePath(id));
    }
    return fstree::DiskUsage(TreePath(id));
  }

  absl::Status Remove(uint64_t id) override {
    if (absl::Status s = CheckId(id); !s.ok()) return s;
    const std::string name = absl::StrCat(id);
    struct stat st;
    if (::fstatat(snapshots_fd_.get(), name.c_str(), &st,
                  AT_SYMLINK_NOFOLLOW) != 0 &&
        errno == ENOENT) {
      return ObjectNotFound(id);  // without a look at the mount table
    }
    const std::string removing = absl::StrCat(kRemovingPrefix, id);
    const std::string removing_path =
        absl::StrCat(snapshots_dir_, "/", removing);
    // A bind mount of the tree (a container's rootfs) makes neither the
    // rename nor the deletion fail: the files would just vanish from under
    // the container. Ask the mount table first, and touch nothing if busy.
    if (absl::Status s = CheckNotMounted(id, removing_path); !s.ok()) return s;
    int rc =
        RenameNoReplace(snapshots_fd_.get(), name.c_str(), removing.c_str());
    if (rc != 0 && (errno == EEXIST || errno == ENOTEMPTY)) {
      // Left by an interrupted Remove of an earlier object with this id.
      if (absl::Status s = fstree::RemoveTree(removing_path); !s.ok()) {
        // Mounted there since the check?
        absl::Status busy = CheckNotMounted(id, removing_path);
        return busy.ok() ? s : busy;
      }
      rc = RenameNoReplace(snapshots_fd_.get(), name.c_str(), removing.c_str());
    }
    if (rc != 0) {
      if (errno == ENOENT) return ObjectNotFound(id);
      if (errno == EBUSY) {
        return absl::FailedPreconditionError(
            absl::StrCat("snapshot object ", id, " is in use: rename ",
                         ObjectPath(id), ": ", ::strerror(EBUSY), " (busy)"));
      }
      return ErrnoError(errno, absl::StrCat("rename ", ObjectPath(id), " to"),
                        removing_path);
    }
    if (options_.sync && ::fsync(snapshots_fd_.get()) != 0) {
      const int err = errno;
      // Not known durable: put it back, so that a failed Remove leaves the
      // object whole.
      if (::renameat(snapshots_fd_.get(), removing.c_str(), snapshots_fd_.get(),
                     name.c_str()) != 0) {
        spdlog::error("native: cannot restore {}: {}", removing_path,
                      ::strerror(errno));
      }
      return ErrnoError(err, "fsync", snapshots_dir_);
    }
    // The object is gone for good now; leftovers are Cleanup()'s. Even a
    // busy leftover (mounted since the check) is no failure of this call:
    // the caller would keep a record of an object that no longer exists.
    if (absl::Status s = fstree::RemoveTree(removing_path); !s.ok()) {
      spdlog::warn("native: object {} removed, but not all its storage: {}", id,
                   s.ToString());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Mount>> Mounts(uint64_t id, uint64_t parent_id,
                                            SnapshotKind kind) override {
    if (absl::Status s = CheckId(id); !s.ok()) return s;
    if (kind == SnapshotKind::kCommitted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot object ", id, ": committed objects have no mounts"));
    }
    absl::StatusOr<bool> exists = Exists(id);
    if (!exists.ok()) return exists.status();
    if (!*exists) return ObjectNotFound(id);
    return MountsOfNew(id, parent_id, kind);
  }

  // The bind mount follows from the ids: no storage is touched.
  absl::StatusOr<std::vector<Mount>> MountsOfNew(uint64_t id,
                                                 uint64_t parent_id,
                                                 SnapshotKind kind) override {
    if (absl::Status s = CheckId(id); !s.ok()) return s;
    if (kind == SnapshotKind::kCommitted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot object ", id, ": committed objects have no mounts"));
    }
    const bool view = kind == SnapshotKind::kView;
    Mount mount;
    mount.type = "bind";
    mount.source = TreePath(view && parent_id != 0 ? parent_id : id);
    mount.options = {"rbind", view ? "ro" : "rw"};
    return std::vector<Mount>{std::move(mount)};
  }

  absl::StatusOr<Usage> DiskUsage(uint64_t id) override {
    if (absl::Status s = CheckId(id); !s.ok()) return s;
    absl::StatusOr<bool> exists = Exists(id);
    if (!exists.ok()) return exists.status();
    if (!*exists) return ObjectNotFound(id);
    absl::StatusOr<bool> has_tree = HasTree(id);
    if (!has_tree.ok()) return has_tree.status();
    if (!*has_tree) return Usage{};
    return fstree::DiskUsage(TreePath(id));
  }

  absl::StatusOr<bool> Exists(uint64_t id) override {
    if (absl::Status s = CheckId(id); !s.ok()) return s;
    struct stat st;
    if (::fstatat(snapshots_fd_.get(), absl::StrCat(id).c_str(), &st,
                  AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return false;
      return ErrnoError(errno, "stat", ObjectPath(id));
    }
    if (!S_ISDIR(st.st_mode)) {
      return absl::DataLossError(
          absl::StrCat(ObjectPath(id), " is not a directory"));
    }
    return true;
  }

  absl::StatusOr<std::vector<BackendObject>> List() override {
    absl::StatusOr<std::vector<std::string>> names =
        fstree::ListDir(snapshots_dir_);
    if (!names.ok()) return names.status();
    std::vector<BackendObject> objects;
    for (const std::string& name : *names) {
      if (IsTemporary(name)) continue;
      const std::optional<uint64_t> id = ParseId(name);
      struct stat st;
      const bool stated = id && ::fstatat(snapshots_fd_.get(), name.c_str(),
                                          &st, AT_SYMLINK_NOFOLLOW) == 0;
      if (id && !stated && errno == ENOENT) {
        continue;  // removed since the listing (List runs beside Remove)
      }
      if (!stated || !S_ISDIR(st.st_mode)) {
        spdlog::warn("native: ignoring {}/{}: not a snapshot object",
                     snapshots_dir_, name);
        continue;
      }
      absl::StatusOr<uint64_t> parent = ReadParentFile(*id);
      if (!parent.ok()) {
        absl::StatusOr<bool> still = Exists(*id);
        if (still.ok() && !*still) continue;  // removed meanwhile
        return parent.status();
      }
      objects.push_back(BackendObject{*id, *parent});
    }
    std::sort(objects.begin(), objects.end(),
              [](const BackendObject& a, const BackendObject& b) {
                return a.id < b.id;
              });
    return objects;
  }

  absl::Status Cleanup() override {
    absl::StatusOr<std::vector<std::string>> names =
        fstree::ListDir(snapshots_dir_);
    if (!names.ok()) return names.status();
    absl::Status first;
    for (const std::string& name : *names) {
      if (!IsTemporary(name)) continue;
      const std::string path = absl::StrCat(snapshots_dir_, "/", name);
      absl::Status s = fstree::RemoveTree(path);
      if (s.ok()) {
        spdlog::info("native: removed leftover {}", path);
      }
      first.Update(s);
    }
    return first;
  }

 private:
  std::string ObjectPath(uint64_t id) const {
    return absl::StrCat(snapshots_dir_, "/", id);
  }
  std::string TreePath(uint64_t id) const {
    return absl::StrCat(snapshots_dir_, "/", id, "/", kTreeDir);
  }

  // FailedPrecondition (busy) if object `id`'s directory, or the leftover
  // `removing_path` of an earlier removal, is in use as a mount: anything
  // mounted inside it, or a mount of anything in it (see MountsUsing).
  absl::Status CheckNotMounted(uint64_t id, const std::string& removing_path) {
    absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>> table =
        mount_table_.Get();
    if (!table.ok()) {
      // Not NotFound (which would say the object is gone), whatever the
      // cause.
      return absl::UnavailableError(
          absl::StrCat("snapshot object ", id,
                       " not removed: cannot check whether it is mounted: ",
                       table.status().message()));
    }
    struct stat st;
    if (::fstat(snapshots_fd_.get(), &st) != 0) {
      return ErrnoError(errno, "stat", snapshots_dir_);
    }
    std::vector<MountEntry> users =
        MountsUsing(**table, ObjectPath(id), st.st_dev);
    if (!users.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot object ", id, " is in use: ", MountedAt(users)));
    }
    users = MountsUsing(**table, removing_path, st.st_dev);
    if (!users.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot object ", id, " cannot be removed: ", removing_path,
          ", left by an earlier removal, is in use: ", MountedAt(users)));
    }
    return absl::OkStatus();
  }

  // "mounted at A, B and 3 more (busy)": the first two distinct mount points.
  static std::string MountedAt(const std::vector<MountEntry>& users) {
    std::vector<std::string> points;
    for (const MountEntry& e : users) {
      if (std::find(points.begin(), points.end(), e.mount_point) ==
          points.end()) {
        points.push_back(e.mount_point);
      }
    }
    std::string text = absl::StrCat("mounted at ", points[0]);
    if (points.size() > 1) absl::StrAppend(&text, ", ", points[1]);
    if (points.size() > 2) {
      absl::StrAppend(&text, " and ", points.size() - 2, " more");
    }
    absl::StrAppend(&text, " (busy)");
    return text;
  }

  // Opens object `id`'s tree; invalid with errno set on failure.
  UniqueFd OpenTree(uint64_t id) const {
    return UniqueFd(::openat(snapshots_fd_.get(),
                             absl::StrCat(id, "/", kTreeDir).c_str(),
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }

  // Whether existing object `id` has a tree of its own (all but views with
  // a parent do).
  absl::StatusOr<bool> HasTree(uint64_t id) const {
    UniqueFd tree = OpenTree(id);
    if (tree.valid()) return true;
    if (errno == ENOENT) return false;
    return ErrnoError(errno, "open", TreePath(id));
  }

  static absl::Status WriteParentFile(int dir_fd, uint64_t parent_id,
                                      const std::string& dir_path, bool sync) {
    const std::string path = absl::StrCat(dir_path, "/", kParentFile);
    UniqueFd fd(::openat(dir_fd, kParentFile,
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                         0644));
    if (!fd.valid()) return ErrnoError(errno, "create", path);
    if (absl::Status s =
            WriteAll(fd.get(), absl::StrCat(parent_id, "\n"), path);
        !s.ok()) {
      return s;
    }
    if (sync && ::fsync(fd.get()) != 0) return ErrnoError(errno, "fsync", path);
    if (::close(fd.release()) != 0) return ErrnoError(errno, "close", path);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> ReadParentFile(uint64_t id) const {
    const std::string path = absl::StrCat(ObjectPath(id), "/", kParentFile);
    UniqueFd fd(::openat(snapshots_fd_.get(),
                         absl::StrCat(id, "/", kParentFile).c_str(),
                         O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno == ENOENT) {
        return absl::DataLossError(absl::StrCat(
            "snapshot object ", id, " is damaged: ", path, " is missing"));
      }
      return ErrnoError(errno, "open", path);
    }
    char buf[32];
    size_t len = 0;
    while (len < sizeof(buf)) {
      const ssize_t n = ::read(fd.get(), buf + len, sizeof(buf) - len);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, "read", path);
      }
      if (n == 0) break;
      len += static_cast<size_t>(n);
    }
    absl::string_view text(buf, len);
    std::optional<uint64_t> parent;
    if (absl::ConsumeSuffix(&text, "\n")) {
      parent = text == "0" ? std::optional<uint64_t>(0) : ParseId(text);
    }
    if (!parent || *parent == id) {
      return absl::DataLossError(absl::StrCat("snapshot object ", id,
                                              " is damaged: malformed ", path));
    }
    return *parent;
  }

  const std::string snapshots_dir_;  // absolute
  const UniqueFd snapshots_fd_;
  const NativeBackendOptions options_;
  // Remove's busy check: re-read only after a mount change.
  MountTableCache mount_table_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> NewNativeBackend(
    const std::string& root, const NativeBackendOptions& options) {
  if (root.empty()) {
    return absl::InvalidArgumentError("native backend: empty root path");
  }
  if (absl::Status s = MakeDirs(root, 0700); !s.ok()) return s;
  const std::string snapshots = absl::StrCat(root, "/snapshots");
  if (::mkdir(snapshots.c_str(), 0700) == 0) {
    // Make the new directory itself durable, or every object in it could
    // vanish with it after a crash.
    UniqueFd parent(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!parent.valid() || ::fsync(parent.get()) != 0) {
      return ErrnoError(errno, "fsync", root);
    }
  } else if (errno != EEXIST) {
    return ErrnoError(errno, "mkdir", snapshots);
  }
  char resolved[PATH_MAX];
  if (::realpath(snapshots.c_str(), resolved) == nullptr) {
    return ErrnoError(errno, "realpath", snapshots);
  }
  UniqueFd fd(::open(resolved, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError(errno, "open", resolved);
  return std::make_unique<NativeBackend>(resolved, std::move(fd), options);
}

}  // namespace snapledger
