// The directory of objects the local backends (native, overlayfs) keep their
// snapshots in, and the operations on it that make an object appear and
// disappear atomically. What an object holds besides its parent record is
// the backend's; where objects live and how they come and go is here.
//
// Layout under the backend's `root`:
//   snapshots/                 mode 0700
//     <id>/                    one whole object; <id> in canonical decimal
//       parent                 the parent's id in decimal and "\n"; "0\n"
//                              for none
//       ...                    the backend's own entries (fs/, work/, ...)
//     new-XXXXXX/              an object being built (Begin, then Place)
//     rm-<id>/                 an object being removed (Remove)
// Anything else in snapshots/ is left alone: List() warns about it and
// Cleanup() keeps it.
//
// Atomicity. An object is built in a new-XXXXXX directory (Begin), filled by
// the backend, and made whole by Place(): it writes the parent file and
// renames the directory to <id>, never over an existing one. Remove()
// renames <id> to rm-<id>, and the tree is deleted later (below). With
// `sync`, the parent file and the new directory are flushed before the
// rename (the backend flushes what it put inside), snapshots/ after each
// rename, and a failed flush after a rename undoes it. A crash therefore
// leaves each object whole or absent, plus temporaries that List() ignores
// and Cleanup() sweeps. Without `sync` this still holds for a killed process
// (renames are atomic and the page cache survives it), not for a power loss.
//
// Deferred deletion. Remove() answers once the rename to rm-<id> is made
// (and, with `sync`, flushed): from then on the object is gone — Exists()
// is false, List() skips it, and <id> is free — whatever becomes of its
// storage. The tree is deleted off the caller's path, as containerd's own
// overlayfs snapshotter does (it deletes in Cleanup): Remove() queues
// rm-<id> for a background deleter, one thread per ObjectDir, started at the
// first Remove(), which deletes the queued trees one at a time, in order.
// The queue is bounded (kMaxQueuedRemovals): when it is full, Remove()
// deletes the tree itself before answering, so removed objects can never
// hold an unbounded amount of disk. Cleanup() deletes every rm-* there is,
// queued or left over, so it also drains the queue; the deleter and
// Cleanup() never delete the same tree at once (one deletion runs at a
// time). Nothing the deleter does can meet a Create: it touches only rm-*
// names, which no object ever has. On destruction the deleter finishes the
// tree it is deleting and stops; what is still queued stays on disk as rm-*
// (as after a killed daemon) for the next Cleanup(), which containerd calls
// after every GC pass. A failed deletion is logged and left to Cleanup()
// likewise.
//
// Busy objects. Deleting a tree that is some container's rootfs would pull
// its files from under it, and neither rename(2) nor rmdir(2) refuses. So
// Remove() first asks this process's mount table (MountTableCache) which
// mounts use <id>/, or the rm-<id> leftover of an earlier removal, by the
// backend's rule (MountUsers), and touches nothing when one does:
// FailedPrecondition
//   "snapshot object <id> is in use: mounted at <point>[, <point>][ and <n>
//   more] (busy)"
// (or "... cannot be removed: <rm-<id> path>, left by an earlier removal, is
// in use: mounted at ..."); likewise when the rename fails with EBUSY. A
// mount made between the check and the rename is not seen: callers must not
// hand out an object's mounts while removing it. An unreadable mount table
// fails Remove() with Unavailable before anything is touched.
//
// Errors: messages name the object ("snapshot object <id> ...") or the path
// and errno text (fstree::ErrnoError). InvalidArgument for id 0; NotFound for
// a missing object; DataLoss for a damaged one (its <id> entry is not a
// directory, or its parent file is missing or malformed).
//
// Thread-safety: calls on different ids may run concurrently; List() may run
// beside Remove(). Cleanup() must not run beside Begin/Place or Remove (it
// may run beside the deleter). The mutable state — the mount table cache
// and the removal queue — guards itself.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "plugin/backend/backend.h"
#include "plugin/backend/fs/fs_tree.h"
#include "plugin/backend/fs/mount_table.h"

namespace snapledger {

// InvalidArgument for id 0, which means "no parent" and names no object.
[[nodiscard]] absl::Status CheckObjectId(uint64_t id);

// NotFound "snapshot object <id> not found".
[[nodiscard]] absl::Status ObjectNotFound(uint64_t id);

// CheckObjectId, and InvalidArgument for kCommitted, which has no mounts.
[[nodiscard]] absl::Status CheckMountable(uint64_t id, SnapshotKind kind);

// A canonical decimal id: digits only, no leading zero, fits uint64_t.
std::optional<uint64_t> ParseObjectId(absl::string_view text);

class ObjectDir {
 public:
  // The mounts in `table` that use directory `dir` (absolute, resolved) or
  // anything below it; `dev` is the device holding it. MountsUsing is the
  // rule for bind mounts; a backend whose mounts stack layers adds its own.
  using MountUsers = std::function<std::vector<MountEntry>(
      const std::vector<MountEntry>& table, const std::string& dir, dev_t dev)>;

  // Opens (creating if needed, mode 0700, and `root` too) `root`/snapshots.
  // `root` is resolved with realpath(3): every path handed out is absolute.
  // `backend` names the backend in messages and logs ("native").
  // Errors: InvalidArgument for an empty `root`, others for storage.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ObjectDir>> Open(
      const std::string& root, std::string backend, bool sync);

  // How many removed trees may wait for the deleter; Remove() deletes the
  // tree itself beyond that.
  static constexpr size_t kMaxQueuedRemovals = 256;

  ObjectDir(const ObjectDir&) = delete;
  ObjectDir& operator=(const ObjectDir&) = delete;
  // Stops the deleter after the tree it is deleting; the rest of the queue
  // is left to Cleanup() (see the header).
  ~ObjectDir();

  // snapshots/, absolute and resolved, and a descriptor of it.
  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }
  bool sync() const { return sync_; }

  // <path>/<id> and <path>/<id>/<entry>.
  std::string ObjectPath(uint64_t id) const;
  std::string PathIn(uint64_t id, absl::string_view entry) const;

  // Whether object `id` exists. DataLoss if <id> is not a directory.
  [[nodiscard]] absl::StatusOr<bool> Exists(uint64_t id) const;

  // OK if object `id` exists; NotFound if not (ObjectNotFound).
  [[nodiscard]] absl::Status CheckExists(uint64_t id) const;

  // The checks Backend::Create starts with: `id` valid, `kind` not
  // kCommitted, not its own parent (InvalidArgument); no object `id`
  // (AlreadyExists); parent `parent_id` present if not 0 (NotFound).
  [[nodiscard]] absl::Status CheckCreate(uint64_t id, uint64_t parent_id,
                                         SnapshotKind kind) const;

  // An object being built: the new-XXXXXX directory, deleted (best effort;
  // else Cleanup() will) when this goes without Place() having taken it.
  class NewObject {
   public:
    NewObject(NewObject&& other) noexcept;
    NewObject& operator=(NewObject&&) = delete;
    ~NewObject();

    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }
    // <path>/<entry>, for messages.
    std::string PathOf(absl::string_view entry) const;

   private:
    friend class ObjectDir;
    NewObject(const ObjectDir* dir, std::string path, fstree::UniqueFd fd);

    const ObjectDir* dir_;
    std::string path_;  // empty once placed or moved from
    fstree::UniqueFd fd_;
  };

  // Makes an empty new-XXXXXX directory for the caller to fill.
  [[nodiscard]] absl::StatusOr<NewObject> Begin() const;

  // Writes `object`'s parent file, flushes it and the directory (with
  // `sync`), and renames it to <id>; then flushes snapshots/, undoing the
  // rename if that fails. AlreadyExists if object `id` appeared meanwhile.
  // On any failure no object `id` is left and the directory is deleted.
  [[nodiscard]] absl::Status Place(NewObject object, uint64_t id,
                                   uint64_t parent_id) const;

  // Removes object `id` as the header says: refused if `users` finds a mount
  // using it; renames it to rm-<id> (deleting a stale one first), flushes
  // snapshots/ (putting it back if that fails), and queues rm-<id> for the
  // deleter (deleting it here if the queue is full). Storage left by a
  // failed deletion is logged and left to Cleanup(): the object is gone all
  // the same, so the call succeeds.
  [[nodiscard]] absl::Status Remove(uint64_t id, const MountUsers& users);

  // Blocks until the deleter has nothing queued or in hand (for tests and
  // orderly shutdowns). Not while paused.
  void WaitForRemovals();

  // While paused the deleter takes nothing from its queue (as if the
  // daemon died after each Remove's rename). For tests.
  void PauseRemovalsForTesting(bool paused);

  // Object `id`'s parent, from its parent file. DataLoss if it is missing or
  // malformed.
  [[nodiscard]] absl::StatusOr<uint64_t> ReadParent(uint64_t id) const;

  // Every whole object, in ascending id order. Temporaries are skipped;
  // strangers are skipped with a warning.
  [[nodiscard]] absl::StatusOr<std::vector<BackendObject>> List() const;
  // The ids List() would return, without reading the parents.
  [[nodiscard]] absl::StatusOr<std::vector<uint64_t>> ListIds() const;

  // Deletes every temporary (new-*, rm-*, the deleter's queue included). The
  // first error is returned, after trying them all.
  [[nodiscard]] absl::Status Cleanup() const;

 private:
  ObjectDir(std::string path, fstree::UniqueFd fd, std::string backend,
            bool sync);

  // FailedPrecondition (busy) if object `id`'s directory, or the leftover
  // `removing_path` of an earlier removal, has `users`.
  absl::Status CheckNotMounted(uint64_t id, const std::string& removing_path,
                               const MountUsers& users);

  // Hands rm-* entry `name` to the deleter, or deletes it now if the queue
  // is full (or the deleter stopping).
  void DeleteLater(std::string name);
  // Takes `name` out of the queue; whether it was there.
  bool Unqueue(const std::string& name) const;
  // Deletes rm-* entry `name` (absent: OK), one deletion at a time.
  absl::Status DeleteRemoved(const std::string& name) const;
  // The deleter thread's loop.
  void RunDeleter();
  bool DeleterHasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  bool DeleterIdle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);

  const std::string path_;  // absolute, resolved
  const fstree::UniqueFd fd_;
  const std::string backend_;
  const bool sync_;
  // Remove's busy check: re-read only after a mount change.
  MountTableCache mount_table_;

  // Held for each deletion of an rm-* tree (deleter, Remove, Cleanup).
  mutable absl::Mutex delete_mu_;
  mutable absl::Mutex queue_mu_;
  // rm-* entries waiting for the deleter, oldest first.
  mutable std::deque<std::string> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool deleting_ ABSL_GUARDED_BY(queue_mu_) = false;  // one in hand
  bool paused_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  std::thread deleter_ ABSL_GUARDED_BY(queue_mu_);  // started on first use
};

}  // namespace snapledger
