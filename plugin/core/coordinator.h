// The coordinator: containerd's snapshotter semantics over a Backend, with
// every mutation recorded in the Ledger, intent first.
//
// Each mutating operation follows the same three durable steps:
//   1. write the record in an intermediate state (PREPARING, COMMITTING,
//      REMOVING) — a synced ledger write;
//   2. call the backend;
//   3. write the final state (or delete the record) — a synced ledger write.
// A crash between two steps leaves an intent that ResolveIntents()
// (plugin/recovery/recovery.h) resolves at the next start. Failure of step 2
// is rolled back before the error is returned; an intent that cannot be
// resolved at once (a backend call past its time limit, a ledger that
// refuses writes) is kept in PendingIntents and resolved by the first
// mutation after the cause goes (coordinator_intents.cc).
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
// aborts its pass on any other); kDefer answers OK and hands the record to
// the RemovalQueue (plugin/removal/removal_queue.h), hidden from containerd,
// its key free at once. A removal held back for a container that still
// exists is queued under either policy.
//
// The class is split by concern over several files: coordinator.cc (the
// snapshot operations), coordinator_intents.cc (rolling back and healing
// intents), coordinator_repairs.cc (reconcile --apply), coordinator_owners.cc
// (ownership kept by the containerd watcher).
//
// Thread-safety: all methods are thread-safe. Operations on the same key, or
// a commit's key and name, are serialised; a Prepare/View holds its parent
// shared, so prepares on one parent run in parallel but never beside a
// Remove of that parent; a Remove holds its parent (and the parent's pending
// removal record) shared, so a child's removal and its parent's are ordered.
// Operations on unrelated keys run in parallel.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "plugin/backend/backend.h"
#include "plugin/filter/filter.h"
#include "plugin/locks/key_locks.h"
#include "plugin/record/history.h"
#include "plugin/record/labels.h"
#include "plugin/recovery/pending_intents.h"
#include "plugin/removal/removal_queue.h"
#include "store/ledger.h"

namespace snapledger {

enum class RemovePolicy { kRefuse, kDefer };

// "refuse" or "defer"; nullopt for anything else.
std::optional<RemovePolicy> ParseRemovePolicy(std::string_view name);
std::string_view RemovePolicyName(RemovePolicy policy);

struct CoordinatorOptions {
  RemovePolicy remove_policy = RemovePolicy::kRefuse;
  // The removal queue's retry policy, clock and holder (see
  // RemovalQueueOptions).
  RemovalQueueOptions queue;
  // Longest time one Cleanup call spends on due removals; the rest stay due
  // for the queue's worker.
  absl::Duration cleanup_budget = absl::Seconds(10);
};

class Coordinator {
 public:
  // Neither pointer is owned; both must outlive the coordinator.
  Coordinator(Ledger* ledger, Backend* backend,
              CoordinatorOptions options = {});
  // Stops the removal queue's worker, if started.
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

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

  // The removal queue (start, stop, retry, stats, hold release).
  RemovalQueue& removal_queue() { return queue_; }
  // Number of calls blocked on a key lock (for tests and stats).
  size_t LockWaiters() const { return locks_.Waiting(); }

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

  // Ownership, kept by the containerd watcher (plugin/containerd/ownership.h).
  // Sets the owner and leases of the record stored under ledger key `key`
  // (a visible record or a queued removal), with a history event for each
  // that changed. Returns whether anything changed; NotFound if there is no
  // such record.
  [[nodiscard]] absl::StatusOr<bool> SetOwnership(
      const std::string& key, const std::string& owner,
      const std::vector<std::string>& leases);
  // Adds a history event `op` with `detail` for the record under ledger key
  // `key` (nothing else changes). NotFound if there is no such record.
  [[nodiscard]] absl::Status NoteEvent(const std::string& key, HistoryOp op,
                                       const std::string& detail);

 private:
  [[nodiscard]] absl::StatusOr<std::vector<Mount>> Create(
      SnapshotKind kind, const std::string& key, const std::string& parent,
      const Labels& labels);
  // The backend answered the Prepare of `intent_record` (PREPARING) by
  // committing the object itself (IsCommittedByBackend): records it as a
  // committed snapshot named `target`, in one write replacing the intent,
  // and answers AlreadyExists as containerd expects.
  [[nodiscard]] absl::StatusOr<std::vector<Mount>> CompleteCommittedByBackend(
      const Record& intent_record, const std::string& target);
  // The parent record of a new snapshot, checked as containerd checks it.
  [[nodiscard]] absl::StatusOr<Record> GetParentForCreate(
      const std::string& parent);
  // The visible record of `key`; NotFound otherwise.
  [[nodiscard]] absl::StatusOr<Record> GetVisible(const std::string& key);
  // Remove() once the key, its parent and its parent's removal record are
  // locked and `record` is the visible record of the key.
  [[nodiscard]] absl::Status RemoveLocked(const Record& record);
  // The backend refused to remove `record` (its REMOVING intent is
  // `intent_record`): refused and rolled back, or queued, as the policy and
  // the cause say. `may_be_gone`: the backend could not tell whether the
  // object is still stored (never rolled back to live then).
  [[nodiscard]] absl::Status RemoveFailed(const Record& record,
                                          const Record& intent_record,
                                          const absl::Status& removed,
                                          bool may_be_gone);

  // Undoes the intent `intent` after the backend failed with `cause`, as
  // recovery would (asking the backend what it holds). After a time-out the
  // backend may still be working: the intent is left for
  // ResolvePendingIntents(). Non-OK if the intent stays unresolved for now.
  [[nodiscard]] absl::Status RollBackIntent(Record intent,
                                            const absl::Status& cause);
  // Resolves the intent at `key` (under its locks) as recovery would.
  [[nodiscard]] absl::Status ResolvePendingIntent(const std::string& key);
  // Called by every mutation before it takes its own key locks.
  void ResolvePendingIntents();

  Ledger* const ledger_;
  Backend* const backend_;
  const CoordinatorOptions options_;
  KeyLocks locks_;
  // Held shared by every mutation, exclusively (if free) by Cleanup, so that
  // a sweep of backend temporaries never races a Create or Remove in flight.
  absl::Mutex cleanup_gate_;
  PendingIntents pending_intents_;
  RemovalQueue queue_;
};

}  // namespace snapledger
