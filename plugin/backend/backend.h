// The storage seam: what snapledger asks of the snapshotter that really holds
// the data. The coordinator (plugin/coordinator.h) owns all naming, parent
// resolution and bookkeeping; a backend only stores objects named by numeric
// ids that the ledger allocates. A client's key never reaches a backend, so a
// key holding "..", "/" or spaces can never become a path.
//
// Thread-safety: implementations must allow concurrent calls on different ids.
// The coordinator never issues two calls on the same id at once, and never
// removes an object while another object is being created from it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"

namespace snapledger {

enum class SnapshotKind { kView, kActive, kCommitted };

// A mount the client performs to use a snapshot, as containerd's Mount.
struct Mount {
  std::string type;
  std::string source;
  std::vector<std::string> options;
  friend bool operator==(const Mount&, const Mount&) = default;
};

struct Usage {
  int64_t size_bytes = 0;
  int64_t inodes = 0;
};

// An object found in backend storage.
struct BackendObject {
  uint64_t id = 0;
  uint64_t parent_id = 0;  // 0: no parent
};

// A refusal because an earlier call on the same object outlived its time
// limit and is still running (see TimedBackend): not a failure of the call
// itself, so callers may wait and try again without counting it.
inline constexpr char kStillRunningPayload[] =
    "snapledger.dev/backend-call-still-running";
[[nodiscard]] inline absl::Status MarkStillRunningElsewhere(
    absl::Status status) {
  status.SetPayload(kStillRunningPayload, absl::Cord("1"));
  return status;
}
inline bool IsStillRunningElsewhere(const absl::Status& status) {
  return status.GetPayload(kStillRunningPayload).has_value();
}

// Labels containerd forwards to a snapshotter with a Prepare, View or Commit:
// those under "containerd.io/snapshot/" and "containerd.io/snapshot.ref"
// (containerd's FilterInheritedLabels). Local backends ignore them; a backend
// that proxies another snapshotter (remote/) passes them on.
using BackendLabels = std::map<std::string, std::string>;
inline constexpr char kSnapshotRefLabel[] = "containerd.io/snapshot.ref";
inline constexpr char kForwardedLabelPrefix[] = "containerd.io/snapshot/";

// The remote-snapshot protocol (stargz, nydus, soci ...): a Create carrying
// kSnapshotRefLabel may be answered by the backend committing the new object
// itself, because the layer is available without unpacking. The backend then
// returns AlreadyExists marked with this payload; object `id` exists,
// committed, and the caller records it as committed under the label's name.
inline constexpr char kCommittedByBackendPayload[] =
    "snapledger.dev/backend-committed-object";
[[nodiscard]] inline absl::Status MarkCommittedByBackend(absl::Status status) {
  status.SetPayload(kCommittedByBackendPayload, absl::Cord("1"));
  return status;
}
inline bool IsCommittedByBackend(const absl::Status& status) {
  return absl::IsAlreadyExists(status) &&
         status.GetPayload(kCommittedByBackendPayload).has_value();
}

class Backend {
 public:
  virtual ~Backend() = default;

  // Short name for logs and config ("native").
  virtual std::string_view Name() const = 0;

  // Creates object `id` (> 0) of `kind` (kActive or kView) on top of object
  // `parent_id` (0: none). An active object starts as a writable copy of the
  // parent's tree (empty without a parent); a view is a read-only view of the
  // parent. Atomic: after a failure or a crash at any point, either no object
  // `id` exists or a whole one does; half-made temporaries are swept by
  // Cleanup(). Errors: AlreadyExists if `id` exists, NotFound if the parent
  // does not, others for storage failures.
  [[nodiscard]] virtual absl::Status Create(uint64_t id, uint64_t parent_id,
                                            SnapshotKind kind) = 0;

  // Create with the labels containerd forwarded for the snapshot. The
  // default ignores them. A backend that honours kSnapshotRefLabel may
  // answer IsCommittedByBackend(): object `id` then exists, committed
  // (see kCommittedByBackendPayload).
  [[nodiscard]] virtual absl::Status CreateWithLabels(
      uint64_t id, uint64_t parent_id, SnapshotKind kind,
      const BackendLabels& labels) {
    (void)labels;
    return Create(id, parent_id, kind);
  }

  // Freezes active object `id` as committed and returns its usage.
  // Idempotent: committing a committed object succeeds again.
  [[nodiscard]] virtual absl::StatusOr<Usage> Commit(uint64_t id) = 0;

  // Commit with the labels containerd forwarded; the default ignores them.
  [[nodiscard]] virtual absl::StatusOr<Usage> CommitWithLabels(
      uint64_t id, const BackendLabels& labels) {
    (void)labels;
    return Commit(id);
  }

  // Removes object `id` and all its storage. NotFound if it does not exist.
  // Atomic like Create: after a crash the object is whole or gone.
  // FailedPrecondition when the object is in use (busy: mounted, or refused
  // as busy by the snapshotter behind); the removal queue retries it.
  [[nodiscard]] virtual absl::Status Remove(uint64_t id) = 0;

  // The mounts that expose object `id` of `kind` (read-write for kActive,
  // read-only for kView). `parent_id` is the object's parent as recorded.
  [[nodiscard]] virtual absl::StatusOr<std::vector<Mount>> Mounts(
      uint64_t id, uint64_t parent_id, SnapshotKind kind) = 0;

  // Mounts() of an object the caller has just created (Create returned OK
  // and nothing can have removed it since). Backends whose mounts follow
  // from the ids alone compute them without touching storage; such an
  // override must do no I/O, because it is not bounded in time
  // (TimedBackend calls it directly, saving a hand-off to a worker per
  // Prepare). The default asks Mounts().
  [[nodiscard]] virtual absl::StatusOr<std::vector<Mount>> MountsOfNew(
      uint64_t id, uint64_t parent_id, SnapshotKind kind) {
    return Mounts(id, parent_id, kind);
  }

  // Current disk usage of object `id` (its own storage, not its parents').
  [[nodiscard]] virtual absl::StatusOr<Usage> DiskUsage(uint64_t id) = 0;

  // Whether object `id` exists (whole).
  [[nodiscard]] virtual absl::StatusOr<bool> Exists(uint64_t id) = 0;

  // Whether object `id` exists and is committed. Asked before a commit whose
  // call failed is rolled back: a backend whose Commit can take effect
  // although the call reports a failure (a remote snapshotter that dies
  // before it answers) must say. A local backend's failed Commit leaves the
  // object as it was, active, which is what this default answers.
  [[nodiscard]] virtual absl::StatusOr<bool> IsCommitted(uint64_t id) {
    return false;
  }

  // Every whole object in storage, in ascending id order. Temporaries are not
  // listed.
  [[nodiscard]] virtual absl::StatusOr<std::vector<BackendObject>> List() = 0;

  // The ids of List(), in ascending order, without reading each object's
  // parent: what start-up recovery needs of 100,000 objects. Backends that
  // store the parent apart from the name override it.
  [[nodiscard]] virtual absl::StatusOr<std::vector<uint64_t>> ListIds() {
    absl::StatusOr<std::vector<BackendObject>> objects = List();
    if (!objects.ok()) return objects.status();
    std::vector<uint64_t> ids;
    ids.reserve(objects->size());
    for (const BackendObject& o : *objects) ids.push_back(o.id);
    return ids;
  }

  // Removes temporaries left by interrupted Create/Remove calls. Must not be
  // called while a Create or Remove is in flight.
  [[nodiscard]] virtual absl::Status Cleanup() = 0;
};

}  // namespace snapledger
