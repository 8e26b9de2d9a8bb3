#include "plugin/backend/fs/object_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

using fstree::ErrnoError;
using fstree::UniqueFd;

constexpr absl::string_view kTempPrefix = "new-";
constexpr absl::string_view kRemovingPrefix = "rm-";
constexpr char kParentFile[] = "parent";
constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

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

absl::Status WriteParentFile(int dir_fd, uint64_t parent_id,
                             const std::string& dir_path, bool sync) {
  const std::string path = absl::StrCat(dir_path, "/", kParentFile);
  UniqueFd fd(::openat(dir_fd, kParentFile,
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0644));
  if (!fd.valid()) return ErrnoError(errno, "create", path);
  if (absl::Status s =
          fstree::WriteAll(fd.get(), absl::StrCat(parent_id, "\n"), path);
      !s.ok()) {
    return s;
  }
  if (sync && ::fsync(fd.get()) != 0) return ErrnoError(errno, "fsync", path);
  if (::close(fd.release()) != 0) return ErrnoError(errno, "close", path);
  return absl::OkStatus();
}

// "mounted at A, B and 3 more (busy)": the first two distinct mount points.
std::string MountedAt(const std::vector<MountEntry>& users) {
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

}  // namespace

absl::Status CheckObjectId(uint64_t id) {
  if (id == 0) return absl::InvalidArgumentError("object id 0 is reserved");
  return absl::OkStatus();
}

absl::Status ObjectNotFound(uint64_t id) {
  return absl::NotFoundError(
      absl::StrCat("snapshot object ", id, " not found"));
}

absl::Status CheckMountable(uint64_t id, SnapshotKind kind) {
  if (absl::Status s = CheckObjectId(id); !s.ok()) return s;
  if (kind == SnapshotKind::kCommitted) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot object ", id, ": committed objects have no mounts"));
  }
  return absl::OkStatus();
}

std::optional<uint64_t> ParseObjectId(absl::string_view text) {
  if (text.empty() || text.size() > 20 || text[0] == '0') return std::nullopt;
  if (!std::all_of(text.begin(), text.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  uint64_t id = 0;
  if (!absl::SimpleAtoi(text, &id)) return std::nullopt;
  return id;
}

absl::StatusOr<std::unique_ptr<ObjectDir>> ObjectDir::Open(
    const std::string& root, std::string backend, bool sync) {
  if (root.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(backend, " backend: empty root path"));
  }
  if (absl::Status s = fstree::MakeDirs(root, 0700); !s.ok()) return s;
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
  return std::unique_ptr<ObjectDir>(
      new ObjectDir(resolved, std::move(fd), std::move(backend), sync));
}

ObjectDir::ObjectDir(std::string path, UniqueFd fd, std::string backend,
                     bool sync)
    : path_(std::move(path)),
      fd_(std::move(fd)),
      backend_(std::move(backend)),
      sync_(sync) {}

std::string ObjectDir::ObjectPath(uint64_t id) const {
  return absl::StrCat(path_, "/", id);
}

std::string ObjectDir::PathIn(uint64_t id, absl::string_view entry) const {
  return absl::StrCat(path_, "/", id, "/", entry);
}

absl::StatusOr<bool> ObjectDir::Exists(uint64_t id) const {
  if (absl::Status s = CheckObjectId(id); !s.ok()) return s;
  struct stat st;
  if (::fstatat(fd_.get(), absl::StrCat(id).c_str(), &st,
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

absl::Status ObjectDir::CheckExists(uint64_t id) const {
  absl::StatusOr<bool> exists = Exists(id);
  if (!exists.ok()) return exists.status();
  if (!*exists) return ObjectNotFound(id);
  return absl::OkStatus();
}

absl::Status ObjectDir::CheckCreate(uint64_t id, uint64_t parent_id,
                                    SnapshotKind kind) const {
  if (absl::Status s = CheckObjectId(id); !s.ok()) return s;
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
  if (parent_id != 0) {
    absl::StatusOr<bool> parent_exists = Exists(parent_id);
    if (!parent_exists.ok()) return parent_exists.status();
    if (!*parent_exists) {
      return absl::NotFoundError(
          absl::StrCat("parent snapshot object ", parent_id, " not found"));
    }
  }
  return absl::OkStatus();
}

ObjectDir::NewObject::NewObject(const ObjectDir* dir, std::string path,
                                UniqueFd fd)
    : dir_(dir), path_(std::move(path)), fd_(std::move(fd)) {}

ObjectDir::NewObject::NewObject(NewObject&& other) noexcept
    : dir_(other.dir_),
      path_(std::exchange(other.path_, std::string())),
      fd_(std::move(other.fd_)) {}

ObjectDir::NewObject::~NewObject() {
  fd_.reset();
  if (path_.empty()) return;
  if (absl::Status s = fstree::RemoveTree(path_); !s.ok()) {
    spdlog::warn("{}: cannot remove {} (Cleanup will): {}", dir_->backend_,
                 path_, s.ToString());
  }
}

std::string ObjectDir::NewObject::PathOf(absl::string_view entry) const {
  return absl::StrCat(path_, "/", entry);
}

absl::StatusOr<ObjectDir::NewObject> ObjectDir::Begin() const {
  std::string path = absl::StrCat(path_, "/", kTempPrefix, "XXXXXX");
  if (::mkdtemp(path.data()) == nullptr) {
    return ErrnoError(errno, "mkdtemp", path);
  }
  // Owned from here on: a failed open below deletes it again.
  NewObject object(this, std::move(path), UniqueFd());
  object.fd_.reset(::openat(
      fd_.get(), object.path_.substr(path_.size() + 1).c_str(), kDirFlags));
  if (!object.fd_.valid()) return ErrnoError(errno, "open", object.path_);
  return object;
}

absl::Status ObjectDir::Place(NewObject object, uint64_t id,
                              uint64_t parent_id) const {
  const std::string& temp_path = object.path_;
  if (absl::Status s =
          WriteParentFile(object.fd(), parent_id, temp_path, sync_);
      !s.ok()) {
    return s;
  }
  if (sync_ && ::fsync(object.fd()) != 0) {
    return ErrnoError(errno, "fsync", temp_path);
  }
  object.fd_.reset();

  const std::string temp_name = temp_path.substr(path_.size() + 1);
  const std::string name = absl::StrCat(id);
  if (RenameNoReplace(fd_.get(), temp_name.c_str(), name.c_str()) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) {
      return absl::AlreadyExistsError(
          absl::StrCat("snapshot object ", id, " already exists"));
    }
    return ErrnoError(errno, absl::StrCat("rename ", temp_path, " to"),
                      ObjectPath(id));
  }
  if (sync_ && ::fsync(fd_.get()) != 0) {
    const int err = errno;
    // Not known durable: take it back, so that a failed Create leaves no
    // object behind (`object` deletes it).
    if (::renameat(fd_.get(), name.c_str(), fd_.get(), temp_name.c_str()) !=
        0) {
      spdlog::error("{}: object {} created but not synced: {}", backend_, id,
                    ::strerror(errno));
      object.path_.clear();  // it is object `id` now: keep it
    }
    return ErrnoError(err, "fsync", path_);
  }
  object.path_.clear();  // placed
  return absl::OkStatus();
}

absl::Status ObjectDir::Remove(uint64_t id, const MountUsers& users) {
  if (absl::Status s = CheckObjectId(id); !s.ok()) return s;
  const std::string name = absl::StrCat(id);
  struct stat st;
  if (::fstatat(fd_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 &&
      errno == ENOENT) {
    return ObjectNotFound(id);  // without a look at the mount table
  }
  std::string removing = absl::StrCat(kRemovingPrefix, id);
  const std::string removing_path = absl::StrCat(path_, "/", removing);
  if (absl::Status s = CheckNotMounted(id, removing_path, users); !s.ok()) {
    return s;
  }
  int rc = RenameNoReplace(fd_.get(), name.c_str(), removing.c_str());
  if (rc != 0 && (errno == EEXIST || errno == ENOTEMPTY)) {
    // Left by an earlier object with this id, removed but not yet deleted
    // (ids are not reused in service: tests, or a ledger rebuilt from
    // scratch). Deleted first, whether queued, in hand or left over.
    Unqueue(removing);
    if (absl::Status s = DeleteRemoved(removing); !s.ok()) {
      // Mounted there since the check?
      absl::Status busy = CheckNotMounted(id, removing_path, users);
      return busy.ok() ? s : busy;
    }
    rc = RenameNoReplace(fd_.get(), name.c_str(), removing.c_str());
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
  if (sync_ && ::fsync(fd_.get()) != 0) {
    const int err = errno;
    // Not known durable: put it back, so that a failed Remove leaves the
    // object whole.
    if (::renameat(fd_.get(), removing.c_str(), fd_.get(), name.c_str()) != 0) {
      spdlog::error("{}: cannot restore {}: {}", backend_, removing_path,
                    ::strerror(errno));
    }
    return ErrnoError(err, "fsync", path_);
  }
  // The object is gone for good now; its storage is the deleter's, and
  // leftovers Cleanup()'s. Even a busy leftover (mounted since the check)
  // is no failure of this call: the caller would keep a record of an
  // object that no longer exists.
  DeleteLater(std::move(removing));
  return absl::OkStatus();
}

ObjectDir::~ObjectDir() {
  std::thread deleter;
  {
    absl::MutexLock l(&queue_mu_);
    stopping_ = true;
    deleter = std::move(deleter_);
  }
  if (deleter.joinable()) deleter.join();
}

void ObjectDir::DeleteLater(std::string name) {
  {
    absl::MutexLock l(&queue_mu_);
    if (!stopping_ && queue_.size() < kMaxQueuedRemovals) {
      queue_.push_back(std::move(name));
      if (!deleter_.joinable())
        deleter_ = std::thread([this] { RunDeleter(); });
      return;
    }
  }
  // The deleter is behind by a whole queue: delete on the caller's time,
  // which bounds the disk that removed objects hold.
  if (absl::Status s = DeleteRemoved(name); !s.ok()) {
    spdlog::warn("{}: {}/{} (removed) not deleted, left to Cleanup: {}",
                 backend_, path_, name, s.ToString());
  }
}

bool ObjectDir::Unqueue(const std::string& name) const {
  absl::MutexLock l(&queue_mu_);
  auto it = std::find(queue_.begin(), queue_.end(), name);
  if (it == queue_.end()) return false;
  queue_.erase(it);
  return true;
}

absl::Status ObjectDir::DeleteRemoved(const std::string& name) const {
  absl::MutexLock l(&delete_mu_);
  return fstree::RemoveTree(absl::StrCat(path_, "/", name));
}

bool ObjectDir::DeleterHasWork() const {
  return stopping_ || (!paused_ && !queue_.empty());
}

bool ObjectDir::DeleterIdle() const { return queue_.empty() && !deleting_; }

void ObjectDir::RunDeleter() {
  for (;;) {
    std::string name;
    {
      absl::MutexLock l(&queue_mu_);
      queue_mu_.Await(absl::Condition(this, &ObjectDir::DeleterHasWork));
      if (stopping_) return;  // the queue stays on disk, for Cleanup()
      name = std::move(queue_.front());
      queue_.pop_front();
      deleting_ = true;
    }
    if (absl::Status s = DeleteRemoved(name); !s.ok()) {
      spdlog::warn("{}: {}/{} (removed) not deleted, left to Cleanup: {}",
                   backend_, path_, name, s.ToString());
    }
    absl::MutexLock l(&queue_mu_);
    deleting_ = false;
  }
}

void ObjectDir::WaitForRemovals() {
  absl::MutexLock l(&queue_mu_);
  queue_mu_.Await(absl::Condition(this, &ObjectDir::DeleterIdle));
}

void ObjectDir::PauseRemovalsForTesting(bool paused) {
  absl::MutexLock l(&queue_mu_);
  paused_ = paused;
}

absl::Status ObjectDir::CheckNotMounted(uint64_t id,
                                        const std::string& removing_path,
                                        const MountUsers& users) {
  absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>> table =
      mount_table_.Get();
  if (!table.ok()) {
    // Not NotFound (which would say the object is gone), whatever the cause.
    return absl::UnavailableError(
        absl::StrCat("snapshot object ", id,
                     " not removed: cannot check whether it is mounted: ",
                     table.status().message()));
  }
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return ErrnoError(errno, "stat", path_);
  std::vector<MountEntry> found = users(**table, ObjectPath(id), st.st_dev);
  if (!found.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot object ", id, " is in use: ", MountedAt(found)));
  }
  found = users(**table, removing_path, st.st_dev);
  if (!found.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot object ", id, " cannot be removed: ", removing_path,
        ", left by an earlier removal, is in use: ", MountedAt(found)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ObjectDir::ReadParent(uint64_t id) const {
  const std::string path = PathIn(id, kParentFile);
  absl::StatusOr<std::optional<std::string>> text = fstree::ReadSmallFile(
      fd_.get(), absl::StrCat(id, "/", kParentFile), path, 32);
  if (!text.ok()) return text.status();
  if (!text->has_value()) {
    return absl::DataLossError(absl::StrCat(
        "snapshot object ", id, " is damaged: ", path, " is missing"));
  }
  absl::string_view line = **text;
  std::optional<uint64_t> parent;
  if (absl::ConsumeSuffix(&line, "\n")) {
    parent = line == "0" ? std::optional<uint64_t>(0) : ParseObjectId(line);
  }
  if (!parent || *parent == id) {
    return absl::DataLossError(
        absl::StrCat("snapshot object ", id, " is damaged: malformed ", path));
  }
  return *parent;
}

absl::StatusOr<std::vector<BackendObject>> ObjectDir::List() const {
  absl::StatusOr<std::vector<std::string>> names = fstree::ListDir(path_);
  if (!names.ok()) return names.status();
  std::vector<BackendObject> objects;
  for (const std::string& name : *names) {
    if (IsTemporary(name)) continue;
    const std::optional<uint64_t> id = ParseObjectId(name);
    struct stat st;
    const bool stated =
        id && ::fstatat(fd_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (id && !stated && errno == ENOENT) {
      continue;  // removed since the listing (List runs beside Remove)
    }
    if (!stated || !S_ISDIR(st.st_mode)) {
      spdlog::warn("{}: ignoring {}/{}: not a snapshot object", backend_, path_,
                   name);
      continue;
    }
    absl::StatusOr<uint64_t> parent = ReadParent(*id);
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

absl::StatusOr<std::vector<uint64_t>> ObjectDir::ListIds() const {
  // As List(): only directories named by an id (List warns about the rest).
  absl::StatusOr<std::vector<std::string>> names = fstree::ListSubdirs(path_);
  if (!names.ok()) return names.status();
  std::vector<uint64_t> ids;
  ids.reserve(names->size());
  for (const std::string& name : *names) {
    if (IsTemporary(name)) continue;
    if (const std::optional<uint64_t> id = ParseObjectId(name)) {
      ids.push_back(*id);
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::Status ObjectDir::Cleanup() const {
  absl::StatusOr<std::vector<std::string>> names = fstree::ListDir(path_);
  if (!names.ok()) return names.status();
  absl::Status first;
  for (const std::string& name : *names) {
    if (!IsTemporary(name)) continue;
    const std::string path = absl::StrCat(path_, "/", name);
    if (absl::StartsWith(name, kRemovingPrefix)) {
      // Queued ones are no leftovers: taken from the deleter, quietly.
      const bool queued = Unqueue(name);
      absl::Status s = DeleteRemoved(name);
      if (s.ok() && !queued) {
        spdlog::info("{}: removed leftover {}", backend_, path);
      }
      first.Update(s);
      continue;
    }
    absl::Status s = fstree::RemoveTree(path);
    if (s.ok()) spdlog::info("{}: removed leftover {}", backend_, path);
    first.Update(s);
  }
  return first;
}

}  // namespace snapledger
