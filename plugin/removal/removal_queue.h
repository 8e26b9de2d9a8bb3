// The removal queue: removals that could not be done when asked, kept in the
// ledger and retried until they succeed (docs/removal.md).
//
// A queued removal is a REMOVE_PENDING record under RemovedKey(id), hidden
// from containerd, its client key free at once. RemovalQueue
//   - defers a removal (Defer: the caller holds the record's key locks);
//   - schedules each pending record by its due time (RemovalSchedule) and
//     runs it when due: on its worker thread, from Cleanup (RunDue), or at
//     once when an operator retries it (Retry);
//   - on failure, backs off exponentially with jitter (RetryPolicy); after
//     max_attempts failures the record is STUCK, kept until retried;
//   - cascades: when an object's last child goes, a pending parent is due
//     at once (leaf first);
//   - holds a removal, without a due time, while `holder` names a container
//     that still uses it; ReleaseHold makes it due when the container goes.
// The ledger is the queue; the schedule is an index over it, rebuilt by
// Load() after a restart.
//
// Each attempt is intent first, like every mutation: a REMOVING record, the
// backend's Remove, then the record's deletion. An attempt whose outcome the
// ledger cannot record is handed to PendingIntents, which the coordinator
// resolves (plugin/core/coordinator.h); the worker asks it to, through
// `heal`, when the host is quiet.
//
// Thread-safety: all methods are thread-safe. An attempt locks the removal's
// key and, shared, its parent's keys (KeyLocks), and holds the cleanup gate
// shared, like every other mutation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "plugin/backend/backend.h"
#include "plugin/locks/key_locks.h"
#include "plugin/record/states.h"
#include "plugin/record/transitions.h"
#include "plugin/recovery/pending_intents.h"
#include "plugin/removal/removal_schedule.h"
#include "plugin/worker/worker_thread.h"
#include "store/ledger.h"

namespace snapledger {

// What the queue did, as RemovalQueueOptions::on_event hears it.
enum class RemovalEvent {
  // Outcomes of an attempt at a due removal:
  kRemoved,             // the object and its record are gone
  kFailed,              // the backend failed; backs off and tries again
  kStuck,               // failed max_attempts times: kept for an operator
  kWaitingForChildren,  // not attempted: children remain (the cascade)
  kHeld,                // not attempted: its container still exists
  // Retries:
  kBackoffRetry,   // an attempt after an earlier failed one
  kOperatorRetry,  // Retry(): an operator made it due now
};
// "removed", "failed", "stuck", "waiting_for_children", "held", "backoff",
// "operator": the metrics' label values.
std::string_view RemovalEventName(RemovalEvent event);

struct RemovalQueueOptions {
  RetryPolicy retry;
  // Called for every RemovalEvent once the ledger recorded it, on the
  // thread that made the attempt (the daemon's metrics). Must be cheap and
  // must not call back into the queue. Empty: nobody listens.
  std::function<void(RemovalEvent)> on_event;
  // Time source for due times (tests use a fake clock).
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  // The container that holds `record` back from removal — the container
  // whose rootfs it is, if that container still exists — as "<ns>/<id>";
  // nullopt when none. Empty: no such guard (no containerd watcher). Called
  // under the key's lock, so it may ask containerd (read-only calls only:
  // containerd calls Remove from its garbage collector with its metadata
  // write lock held) but must not call back into the coordinator. See
  // plugin/containerd/ownership.h.
  std::function<std::optional<std::string>(const Record&)> holder;
};

// What the queue shares with the coordinator. None owned; all outlive the
// queue.
struct RemovalQueueDeps {
  Ledger* ledger = nullptr;
  Backend* backend = nullptr;
  KeyLocks* locks = nullptr;
  // Held shared by every mutation, exclusively by a sweep of backend
  // temporaries (see Coordinator::Cleanup).
  absl::Mutex* cleanup_gate = nullptr;
  PendingIntents* pending_intents = nullptr;
  // Resolves the pending intents (called by the worker on a quiet host).
  std::function<void()> heal;
};

class RemovalQueue {
 public:
  RemovalQueue(RemovalQueueDeps deps, RemovalQueueOptions options);
  // Stops the worker, if started.
  ~RemovalQueue();
  RemovalQueue(const RemovalQueue&) = delete;
  RemovalQueue& operator=(const RemovalQueue&) = delete;

  // The container holding `record` back (RemovalQueueOptions::holder), or
  // nullopt.
  std::optional<std::string> Holder(const Record& record) const;

  // Defers the removal of `record` (whose key locks the caller holds): one
  // ledger write of the pending record (see DeferRemoval), then scheduled,
  // and logged (a warning for a failed attempt).
  // Non-OK: the ledger refused the write, and nothing changed.
  [[nodiscard]] absl::StatusOr<Record> Defer(const Record& record,
                                             const Deferral& deferral);

  // Schedules the pending record (or unschedules it when it has no due
  // time) and wakes the worker.
  void Reschedule(const Record& pending);
  // After object `parent_id`'s child went: if the parent is a pending
  // removal with no children left, it is due now (the cascade).
  void CascadeTo(uint64_t parent_id);
  // The container a queued removal of object `backend_id` was held back for
  // is gone: the removal is due now (not an attempt). No-op if that removal
  // is not held.
  void ReleaseHold(uint64_t backend_id);

  // Rebuilds the schedule from the ledger: pending removals at their due
  // times, and those waiting for children that have none left, at once.
  [[nodiscard]] absl::Status Load();
  // Load(), then a worker thread that runs removals when due. Unavailable
  // if the thread cannot be started.
  [[nodiscard]] absl::Status Start();
  // Stops the worker (waits for the attempt in progress). Idempotent.
  void Stop();
  // Runs up to `max` removals due now, in due order; returns how many were
  // attempted. Used by Cleanup, the worker, and tests with a fake clock.
  int RunDue(size_t max = SIZE_MAX,
             absl::Duration budget = absl::InfiniteDuration());
  // An operator's retry of the pending or stuck removal of backend object
  // `backend_id`: made due now (a stuck one becomes pending again, its
  // attempt count kept). NotFound if no such removal is queued.
  [[nodiscard]] absl::Status Retry(uint64_t backend_id);
  [[nodiscard]] absl::StatusOr<RemovalQueueStats> Stats();

  // Human names of the children `keys` (at most 8, then "..."), naming a
  // queued child by its client key and state.
  std::string DescribeChildren(const std::vector<std::string>& keys);

  const RetryPolicy& retry_policy() const { return options_.retry; }
  absl::Time Now() const { return options_.clock(); }

 private:
  // One attempt at the queued removal of object `id` (RemovedKey(id)).
  void Attempt(uint64_t id);
  // Attempt() once the keys are locked and `record` is REMOVE_PENDING.
  void AttemptLocked(const Record& record);
  // The removal of object `id` is due again after a back-off (the ledger
  // could not be read or written: nothing changed).
  void RetryLater(uint64_t id, const absl::Status& error);
  // Notes a failed attempt: backs off, or makes the removal STUCK.
  void NoteFailure(const Record& record, const absl::Status& error);
  // Schedules `id` at `due` and wakes the worker.
  void ScheduleAt(uint64_t id, absl::Time due) ABSL_LOCKS_EXCLUDED(mu_);
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  void Notify(RemovalEvent event) const {
    if (options_.on_event) options_.on_event(event);
  }

  const RemovalQueueDeps deps_;
  const RemovalQueueOptions options_;

  absl::Mutex mu_;
  // Every change to the schedule wakes the worker (worker_.Wake(), under
  // mu_, so that the worker reads the schedule and worker_.wakes() as one).
  RemovalSchedule schedule_ ABSL_GUARDED_BY(mu_);
  WorkerThread worker_{"the removal queue's worker"};
};

}  // namespace snapledger
