// Coordinator: intents that an operation could not finish — rolled back at
// once when the backend failed, or healed later (PendingIntents) when the
// backend call outlived its time limit or the ledger refused a write. Both
// resolve an intent exactly as start-up recovery would (ResolveIntent).
#include "absl/strings/str_cat.h"
#include "plugin/core/coordinator.h"
#include "plugin/record/keys.h"
#include "plugin/record/states.h"
#include "plugin/recovery/recovery.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

// After ResolveIntent(): what the removal queue must learn. A queued
// removal is scheduled; a record that went may free a parent queued behind
// it.
void TellQueue(Ledger& ledger, RemovalQueue& queue, const Record& intent,
               const RecoveryReport& report) {
  if (report.removals_queued > 0) {
    absl::StatusOr<Record> pending =
        ledger.Get(RemovedKey(intent.backend_id()));
    if (pending.ok()) queue.Reschedule(*pending);
  } else if (report.removes_completed > 0 || report.prepares_rolled_back > 0) {
    queue.CascadeTo(intent.parent_backend_id());
  }
}

}  // namespace

absl::Status Coordinator::RollBackIntent(Record intent,
                                         const absl::Status& cause) {
  // The backend may have done part of the work before failing (or may
  // still be doing it, after a time-out): ask it, as recovery would.
  if (absl::IsDeadlineExceeded(cause)) {
    pending_intents_.Note(intent.key());
    return absl::OkStatus();
  }
  absl::StatusOr<bool> stored = backend_->Exists(intent.backend_id());
  if (!stored.ok()) {
    pending_intents_.Note(intent.key());
    return stored.status();
  }
  intent.set_last_error(cause.ToString());
  RecoveryReport report;
  absl::Status s = ResolveIntent(*ledger_, *backend_, intent, *stored,
                                 IntentOrigin::kFailedCall, &report);
  if (!s.ok()) {
    pending_intents_.Note(intent.key());
    return s;
  }
  // A rolled-back prepare frees a parent queued behind it.
  TellQueue(*ledger_, queue_, intent, report);
  return absl::OkStatus();
}

absl::Status Coordinator::ResolvePendingIntent(const std::string& key) {
  absl::StatusOr<Record> seen = ledger_->Get(key);
  KeyLocks::Guard guard = locks_.Lock(
      {key}, {seen.ok() ? seen->parent() : "",
              RemovedKeyOfParent(seen.ok() ? seen->parent_backend_id() : 0)});
  absl::ReaderMutexLock gate(&cleanup_gate_);
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok()) {
    return absl::IsNotFound(record.status()) ? absl::OkStatus()
                                             : record.status();
  }
  if (!IsIntent(*record)) return absl::OkStatus();
  absl::StatusOr<bool> stored = backend_->Exists(record->backend_id());
  if (!stored.ok()) return stored.status();
  RecoveryReport report;
  if (absl::Status s = ResolveIntent(*ledger_, *backend_, *record, *stored,
                                     IntentOrigin::kFailedCall, &report);
      !s.ok()) {
    return s;
  }
  TellQueue(*ledger_, queue_, *record, report);
  return absl::OkStatus();
}

void Coordinator::ResolvePendingIntents() {
  if (!pending_intents_.Any()) return;
  for (const std::string& key : pending_intents_.Keys()) {
    if (absl::Status s = ResolvePendingIntent(key); !s.ok()) {
      // Tried again by the next mutation; other keys may still resolve.
      // While the ledger is known to be unwritable this is expected (and
      // every RPC already fails with the cause): keep the log quiet.
      if (ledger_->degraded()) {
        spdlog::debug("intent at {} still unresolved: {}", key, s.ToString());
      } else {
        spdlog::warn("intent at {} still unresolved: {}", key, s.ToString());
      }
      continue;
    }
    spdlog::info(
        "resolved the intent left at {} while the ledger was not writable",
        key);
    pending_intents_.Resolved(key);
  }
}

}  // namespace snapledger
