#include "plugin/record/transitions.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "plugin/record/history.h"
#include "plugin/record/keys.h"
#include "plugin/record/states.h"

namespace snapledger {

void AppendRemovalAttempt(Record* record, absl::Time at,
                          const std::string& error) {
  auto* history = record->mutable_remove_history();
  if (history->size() >= kMaxRemovalHistory) {
    history->DeleteSubrange(0, history->size() - kMaxRemovalHistory + 1);
  }
  store::v1::RemovalAttempt* attempt = history->Add();
  attempt->set_at_ns(absl::ToUnixNanos(at));
  attempt->set_error(error);
}

void RecordRemovalAttempt(Record* record, absl::Time now,
                          const std::string& error, bool counts) {
  if (counts) record->set_remove_attempts(record->remove_attempts() + 1);
  record->set_last_error(error);
  record->set_updated_ns(absl::ToUnixNanos(now));
  AppendRemovalAttempt(record, now, error);
}

Record ToPendingRemoval(const Record& record, absl::Time now) {
  Record pending = record;
  if (!IsRemovalRecord(record)) {
    pending.set_key(RemovedKey(record.backend_id()));
    pending.set_removed_key(record.key());
    pending.set_remove_requested_ns(absl::ToUnixNanos(now));
    pending.set_remove_attempts(0);
    pending.clear_remove_history();
  }
  pending.set_state(store::v1::REMOVE_PENDING);
  pending.clear_prior_state();
  pending.clear_commit_name();
  pending.set_updated_ns(absl::ToUnixNanos(now));
  return pending;
}

Record DeferRemoval(const Record& record, const Deferral& deferral,
                    absl::Time now, Ledger::Batch* batch) {
  Record pending = ToPendingRemoval(record, now);
  RecordRemovalAttempt(&pending, now, deferral.cause, deferral.counts);
  pending.set_next_attempt_ns(
      deferral.due.has_value() ? absl::ToUnixNanos(*deferral.due) : 0);
  if (deferral.held_by.empty()) {
    pending.clear_held_by();
  } else {
    pending.set_held_by(deferral.held_by);
  }
  if (pending.key() != record.key()) batch->Delete(record);
  batch->Put(pending);
  batch->Note(MakeEvent(HistoryOp::kRemoveDeferred, pending,
                        absl::StrCat(deferral.context, deferral.cause,
                                     "; queued as ", pending.key())));
  return pending;
}

Record AdoptObject(uint64_t id, uint64_t parent_id,
                   const std::string& parent_key, const std::string& reason,
                   Ledger::Batch* batch) {
  Record adopted;
  adopted.set_key(AdoptedKey(id));
  adopted.set_kind(store::v1::COMMITTED);
  adopted.set_state(store::v1::ADOPTED);
  adopted.set_backend_id(id);
  adopted.set_parent_backend_id(parent_id);
  adopted.set_parent(parent_key);
  const int64_t now = absl::ToUnixNanos(absl::Now());
  adopted.set_created_ns(now);
  adopted.set_updated_ns(now);
  adopted.set_last_error(reason);
  batch->Put(adopted);
  batch->Note(MakeEvent(HistoryOp::kAdopted, adopted, reason));
  return adopted;
}

Record CompleteCommit(const Record& intent, const Usage& usage,
                      absl::Time now) {
  Record committed = intent;
  committed.set_key(intent.commit_name());
  committed.set_kind(store::v1::COMMITTED);
  committed.set_state(store::v1::LIVE);
  committed.set_created_ns(absl::ToUnixNanos(now));
  committed.set_updated_ns(absl::ToUnixNanos(now));
  committed.set_size_bytes(usage.size_bytes);
  committed.set_inodes(usage.inodes);
  committed.clear_last_error();
  committed.clear_commit_name();
  committed.clear_prior_state();
  *committed.mutable_labels() = intent.commit_labels();
  committed.clear_commit_labels();
  SetIdentity(&committed);
  return committed;
}

Record MarkMissing(const Record& record, const std::string& reason,
                   absl::Time now, Ledger::Batch* batch) {
  Record missing = record;
  missing.set_state(store::v1::MISSING);
  missing.set_last_error(reason);
  missing.set_updated_ns(absl::ToUnixNanos(now));
  batch->Put(missing);
  batch->Note(MakeEvent(HistoryOp::kMissing, missing, reason));
  return missing;
}

}  // namespace snapledger
