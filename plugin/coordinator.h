// The coordinator: containerd's snapshotter semantics over a Backend, with
// every mutation recorded in the Ledger, intent first.
//
// Each mutating operation follows the same three durable steps:
//   1. write the record in an intermediate state (PREPARING, COMMITTING,
//      REMOVING) — a synced ledger write;
//   2. call the backend;
//   3. write the final state (or delete the record) — a synced ledger write.
// A crash between two steps leaves an intent that ResolveIntents()
// (plugin/recovery.h) resolves at the next start. Failure of step 2 is rolled
// back before the error is returned.
//
// Semantics and error codes follow containerd 1.6's native snapshotter:
// NotFound, AlreadyExists, FailedPrecondition (remove with children, commit of
// a non-active snapshot, mounts of a committed one), InvalidArgument (bad
// request, bad update path, parent not committed, label over 4096 bytes),
// Unavailable (the ledger cannot be written; the backend is then untouched).
//
// Removal (docs/removal.md). When a Remove cannot be done now — children
// remain, the object is in use, the backend fails or times out — the
// RemovePolicy decides: kRefuse answers FailedPrecondition naming the
// children or the cause (never another code: containerd's garbage collector
// aborts its pass on any other); kDefer answers OK and moves the record to
// RemovedKey(id) as REMOVE_PENDING, hidden from containerd, its key free at
// once. The removal queue retries pending removals with exponential backoff
// and jitter; a pending parent is retried at once when its last child goes
// (cascade, leaf first); after RetryPolicy::max_attempts failures a removal
// is STUCK, kept until an operator retries it. The queue lives in the ledger;
// LoadRemovalQueue() rebuilds its schedule after a restart.
//
// Thread-safety: all methods are thread-safe. Operations on the same key, or
// a commit's key and name, are serialised; a Prepare/View holds its parent
// shared, so prepares on one parent run in parallel but never beside a
// Remove of that parent; a Remove holds its parent (and the parent's pending
// removal record) shared, so a child's removal and its parent's are ordered.
// Operations on unrelated keys run in parallel.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "plugin/backend/backend.h"
#include "plugin/filter/filter.h"
#include "plugin/key_locks.h"
#include "plugin/removal_schedule.h"
#include "store/ledger.h"

namespace snapledger {

using Labels = std::map<std::string, std::string>;

// containerd's limit on one label (key and value together), in bytes.
inline constexpr size_t kMaxLabelBytes = 4096;

// Checks every label against kMaxLabelBytes; InvalidArgument names the key.
[[nodiscard]] absl::Status ValidateLabels(const Labels& labels);

enum class RemovePolicy { kRefuse, kDefer };

struct CoordinatorOptions {
  RemovePolicy remove_policy = RemovePolicy::kRefuse;
  RetryPolicy retry;
  // Time source for the removal queue's due times (tests use a fake clock).
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  // Longest time one Cleanup call spends on due removals; the rest stay due
  // for the queue's worker.
  absl::Duration cleanup_budget = absl::Seconds(10);
  // The container that holds `record` back from removal — the container
  // whose rootfs it is, if that container still exists — as "<ns>/<id>";
  // nullopt when none. Empty: no such guard (no containerd watcher). Called
  // under the key's lock by Remove and by the removal queue, so it may ask
  // containerd (read-only calls only: containerd calls Remove from its
  // garbage collector with its metadata write lock held) but must not call
  // back into the coordinator. See plugin/ownership.h.
  std::function<std::optional<std::string>(const Record&)> holder;
};

// The removal queue at a glance.
struct RemovalQueueStats {
  size_t scheduled = 0;             // pending, with a due time
  size_t waiting_for_children = 0;  // pending, due when the last child goes
  size_t stuck = 0;
  std::optional<absl::Time> next_due;
};

// Counts `record` into `stats` if it is a queued removal (pending with a due
// time, pending waiting for children, or stuck).
void CountRemoval(const Record& record, RemovalQueueStats* stats);

class Coordinator {
 public:
  // Neither pointer is owned; both must outlive the coordinator.
  Coordinator(Ledger* ledger, Backend* backend,
              CoordinatorOptions options = {});
  // Stops the removal worker, if started.
  ~Coordinator();

  // Creates an active snapshot `key` on committed `parent` ("" for none).
  [[nodiscard]] absl::StatusOr<std::vector<Mount>> Prepare(
      const std::string& key, const std::string& parent, const Labels& labels);
  // Creates a read-only view `key` of committed `parent` ("" for none).
  [[nodiscard]] absl::StatusOr<std::vector<Mount>> View(
      const std::string& key, const std::string& parent, const Labels& labels);
  // Mounts of an active snapshot or view.
  [[nodiscard]] absl::StatusOr<std::vector<Mount>> Mounts(
      const std::string& key);
  // Commits active snapshot `key` as `name`; `key` ceases to exist. The
  // committed snapshot's labels are `labels` (not inherited from the key).
  [[nodiscard]] absl::Status Commit(const std::string& name,
                                    const std::string& key,
                                    const Labels& labels);
  // Removes snapshot `key`: at once if it can, else as the RemovePolicy says
  // (see the top of this file).
  [[nodiscard]] absl::Status Remove(const std::string& key);
  [[nodiscard]] absl::StatusOr<Record> Stat(const std::string& key);
  // Updates the labels of `key`: `paths` empty or "labels" replaces them
  // all; "labels.<k>" sets label k from `labels` (removing it when absent or
  // empty there). Any other path is InvalidArgument.
  [[nodiscard]] absl::StatusOr<Record> Update(
      const std::string& key, const Labels& labels,
      const std::vector<std::string>& paths);
  // Calls `emit` for each visible snapshot that matches `filter`, in key
  // order, until it returns false.
  [[nodiscard]] absl::Status List(const filter::Filter& filter,
                                  absl::FunctionRef<bool(const Record&)> emit);
  // Usage of a snapshot: measured now for an active one, as frozen at
  // commit for a committed one, zero for a view.
  [[nodiscard]] absl::StatusOr<Usage> GetUsage(const std::string& key);
  // Sweeps backend temporaries — unless mutations are in flight, in which
  // case it returns at once and leaves the sweep to the next call.
  // Then runs the removals that are due (for at most cleanup_budget).
  [[nodiscard]] absl::Status Cleanup();

  // Rebuilds the removal schedule from the ledger: pending removals at their
  // due times, and those waiting for children that have none left, at once.
  [[nodiscard]] absl::Status LoadRemovalQueue();
  // LoadRemovalQueue(), then a worker thread that runs removals when due.
  [[nodiscard]] absl::Status StartRemovalQueue();
  // Stops the worker (waits for the attempt in progress). Idempotent.
  void StopRemovalQueue();
  // Runs up to `max` removals due now, in due order; returns how many were
  // attempted. Used by Cleanup, the worker, and tests with a fake clock.
  int RunDueRemovals(size_t max = SIZE_MAX,
                     absl::Duration budget = absl::InfiniteDuration());
  // An operator's retry of the pending or stuck removal of backend object
  // `backend_id`: made due now (a stuck one becomes pending again, its
  // attempt count kept). NotFound if no such removal is queued.
  [[nodiscard]] absl::Status RetryRemoval(uint64_t backend_id);
  [[nodiscard]] absl::StatusOr<RemovalQueueStats> GetRemovalQueueStats();

  // Repairs for an operator's `reconcile --apply`, each re-checked under the
  // key's lock so that nothing changed since the finding is touched:
  // records backend object `id` (still stored, still unrecorded) as ADOPTED;
  // marks LIVE record `key` MISSING if it is unchanged since ledger sequence
  // `seq` and its object is still absent. Return whether they changed
  // anything.
  [[nodiscard]] absl::StatusOr<bool> AdoptObject(uint64_t id);
  [[nodiscard]] absl::StatusOr<bool> MarkMissing(const std::string& key,
                                                 uint64_t seq);
  const CoordinatorOptions& options() const { return options_; }

  // Ownership, kept by the containerd watcher (plugin/ownership.h).
  // Sets the owner and leases of the record stored under ledger key `key`
  // (a visible record or a queued removal), with a history event for each
  // that changed. Returns whether anything changed; NotFound if there is no
  // such record.
  [[nodiscard]] absl::StatusOr<bool> SetOwnership(
      const std::string& key, const std::string& owner,
      const std::vector<std::string>& leases);
  // The container a queued removal of object `backend_id` was held back for
  // is gone: the removal is due now (not an attempt). No-op if that removal
  // is not held.
  void ReleaseHold(uint64_t backend_id);
  // Adds a history event `op` with `detail` for the record under ledger key
  // `key` (nothing else changes). NotFound if there is no such record.
  [[nodiscard]] absl::Status NoteEvent(const std::string& key,
                                       const std::string& op,
                                       const std::string& detail);

 private:
  // One attempt at the queued removal of object `id` (RemovedKey(id)).
  void AttemptRemoval(uint64_t id);
  // After object `parent_id`'s child went: if the parent is a pending
  // removal with no children left, it is due now (the cascade).
  void CascadeTo(uint64_t parent_id);
  // Schedules the pending record (or unschedules it when it has no due
  // time) and wakes the worker.
  void Reschedule(const Record& pending);
  void WorkerLoop();
  // Human names of the children of object `id` (at most 8, then "...").
  std::string DescribeChildren(const std::vector<std::string>& keys);

  absl::StatusOr<std::vector<Mount>> Create(SnapshotKind kind,
                                            const std::string& key,
                                            const std::string& parent,
                                            const Labels& labels);
  // The visible record of `key`; NotFound otherwise.
  absl::StatusOr<Record> GetVisible(const std::string& key);
  // Undoes the intent `intent` after the backend failed with `cause`, as
  // recovery would (asking the backend what it holds). After a time-out the
  // backend may still be working: the intent is left for
  // ResolvePendingIntents(). Non-OK if the intent stays unresolved for now.
  absl::Status RollBackIntent(Record intent, const absl::Status& cause);
  // Remove() once the key, its parent and its parent's removal record are
  // locked and `record` is the visible record of the key.
  absl::Status RemoveLocked(const Record& record);

  // An intent at `key` could be neither completed nor rolled back because the
  // ledger refused a write. It is resolved exactly as start-up recovery
  // would, by the first mutation after the ledger heals — no restart needed.
  void NotePendingIntent(const std::string& key);
  // Called by every mutation before it takes its own key locks.
  void ResolvePendingIntents();

  Ledger* const ledger_;
  Backend* const backend_;
  const CoordinatorOptions options_;
  KeyLocks locks_;
  // Held shared by every mutation, exclusively (if free) by Cleanup, so that
  // a sweep of backend temporaries never races a Create or Remove in flight.
  absl::Mutex cleanup_gate_;

  absl::Mutex pending_mu_;
  std::set<std::string> pending_ ABSL_GUARDED_BY(pending_mu_);
  std::atomic<bool> has_pending_{false};

  // The removal queue's in-memory schedule; the ledger holds the queue.
  absl::Mutex queue_mu_;
  RemovalSchedule schedule_ ABSL_GUARDED_BY(queue_mu_);
  bool stop_worker_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Bumped by every change to the schedule, to wake the worker.
  uint64_t schedule_version_ ABSL_GUARDED_BY(queue_mu_) = 0;
  std::thread worker_;
};

SnapshotKind ToSnapshotKind(RecordKind kind);
RecordKind ToRecordKind(SnapshotKind kind);

}  // namespace snapledger
