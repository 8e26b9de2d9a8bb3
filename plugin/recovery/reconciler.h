// Periodic reconciliation: compares what the backend holds with what the
// ledger records, while the daemon serves, without judging anything that was
// created or changed while the comparison ran (the race of
// ../shared/context/002_*).
//
// One pass:
//   1. start = the ledger's latest sequence number;
//   2. list the backend's objects;
//   3. scan the ledger.
// Every backend change is preceded by a durable ledger write (intent first),
// so:
//   - a LIVE record written at or before `start` (record.seq <= start) whose
//     object is absent from the listing has really lost its storage
//     (MISSING_OBJECT): its LIVE state predates the listing, and any removal
//     would have written a REMOVING intent first. Newer records are not
//     judged: a Prepare that finished after the listing is not "missing".
//   - an object in the listing that no record names is confirmed with a
//     second look at the backend after the scan (a Remove that completed in
//     between deletes the object before the record, so a vanished object is
//     not an orphan); what remains is UNRECORDED_OBJECT. Ids are never
//     reused, so no later Prepare can claim it.
//   - a judged LIVE record whose object has another parent is
//     PARENT_MISMATCH.
// A pass only reports (logs, and keeps the latest report for the admin API);
// start-up recovery is what repairs.
//
// Thread-safety: thread-safe; RunOnce may run beside any coordinator call.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "plugin/backend/backend.h"
#include "plugin/worker/worker_thread.h"
#include "store/ledger.h"

namespace snapledger {

using Finding = ::snapledger::store::v1::Finding;

struct ReconcileReport {
  uint64_t start_seq = 0;
  absl::Time started;
  absl::Duration took;
  int records_judged = 0;
  int records_skipped_newer = 0;
  int objects_listed = 0;
  // At most kMaxFindings; `findings_total` counts them all.
  std::vector<Finding> findings;
  int findings_total = 0;
  // All of them (beyond kMaxFindings too), by type.
  std::map<Finding::Type, int> findings_by_type;
};

class Reconciler {
 public:
  static constexpr int kMaxFindings = 1000;

  // Neither pointer is owned; both must outlive the reconciler.
  Reconciler(Ledger* ledger, Backend* backend);
  ~Reconciler();

  // One comparison, as described above.
  [[nodiscard]] absl::StatusOr<ReconcileReport> RunOnce();

  // Runs RunOnce every `interval` on a background thread until Stop(). A
  // no-op while running or for a non-positive interval; Unavailable if the
  // thread cannot start.
  [[nodiscard]] absl::Status Start(absl::Duration interval);
  void Stop();

  // The latest periodic report, if a pass has completed.
  std::optional<ReconcileReport> Latest() const;

 private:
  void Loop(absl::Duration interval) ABSL_LOCKS_EXCLUDED(mu_);

  Ledger* const ledger_;
  Backend* const backend_;
  mutable absl::Mutex mu_;
  std::optional<ReconcileReport> latest_ ABSL_GUARDED_BY(mu_);
  WorkerThread worker_{"the reconciler's thread"};
};

}  // namespace snapledger
