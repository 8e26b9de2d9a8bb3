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
// Thread-safety: all methods are thread-safe. Operations on the same key (or
// a key and its parent, or a commit's key and name) are serialised; others
// run in parallel.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "plugin/backend/backend.h"
#include "plugin/filter/filter.h"
#include "plugin/key_locks.h"
#include "store/ledger.h"

namespace snapledger {

using Labels = std::map<std::string, std::string>;

// containerd's limit on one label (key and value together), in bytes.
inline constexpr size_t kMaxLabelBytes = 4096;

// Checks every label against kMaxLabelBytes; InvalidArgument names the key.
[[nodiscard]] absl::Status ValidateLabels(const Labels& labels);

class Coordinator {
 public:
  // Neither pointer is owned; both must outlive the coordinator.
  Coordinator(Ledger* ledger, Backend* backend);

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
  // Removes snapshot `key`, which must have no children.
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
  [[nodiscard]] absl::Status Cleanup();

 private:
  absl::StatusOr<std::vector<Mount>> Create(SnapshotKind kind,
                                            const std::string& key,
                                            const std::string& parent,
                                            const Labels& labels);
  // The visible record of `key`; NotFound otherwise.
  absl::StatusOr<Record> GetVisible(const std::string& key);

  // An intent at `key` could be neither completed nor rolled back because the
  // ledger refused a write. It is resolved exactly as start-up recovery
  // would, by the first mutation after the ledger heals — no restart needed.
  void NotePendingIntent(const std::string& key);
  // Called by every mutation before it takes its own key locks.
  void ResolvePendingIntents();

  Ledger* const ledger_;
  Backend* const backend_;
  KeyLocks locks_;
  // Held shared by every mutation, exclusively (if free) by Cleanup, so that
  // a sweep of backend temporaries never races a Create or Remove in flight.
  absl::Mutex cleanup_gate_;

  absl::Mutex pending_mu_;
  std::set<std::string> pending_ ABSL_GUARDED_BY(pending_mu_);
  std::atomic<bool> has_pending_{false};
};

SnapshotKind ToSnapshotKind(RecordKind kind);
RecordKind ToRecordKind(SnapshotKind kind);

}  // namespace snapledger
