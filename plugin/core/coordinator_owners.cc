// Coordinator: ownership, as the containerd watcher sees it
// (plugin/containerd/ownership.h), written into the records.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "plugin/core/coordinator.h"
#include "plugin/record/history.h"
#include "plugin/record/keys.h"
#include "plugin/record/states.h"
#include "spdlog/spdlog.h"

namespace snapledger {

absl::StatusOr<bool> Coordinator::SetOwnership(
    const std::string& key, const std::string& owner,
    const std::vector<std::string>& leases) {
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok()) return record.status();
  // Intents are left alone: the operation in flight rewrites the record.
  if (!HasTrackedOwner(*record)) return false;
  const bool owner_changed = record->owner() != owner;
  const bool leases_changed =
      !std::equal(record->leases().begin(), record->leases().end(),
                  leases.begin(), leases.end());
  if (!owner_changed && !leases_changed) return false;
  Record updated = *record;
  updated.set_owner(owner);
  updated.clear_leases();
  for (const std::string& lease : leases) updated.add_leases(lease);
  Ledger::Batch batch;
  batch.Put(updated);
  if (owner_changed) {
    std::string detail =
        owner.empty()
            ? absl::StrCat("no container (", record->owner(), " is gone)")
            : absl::StrCat("container ", owner);
    batch.Note(MakeEvent(HistoryOp::kOwner, updated, std::move(detail)));
  }
  if (leases_changed) {
    batch.Note(MakeEvent(
        HistoryOp::kLeases, updated,
        leases.empty() ? std::string("none")
                       : absl::StrCat("leases ", absl::StrJoin(leases, ", "))));
  }
  if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
  spdlog::debug("ownership of {}: owner \"{}\", leases [{}]",
                ClientKey(updated), owner, absl::StrJoin(leases, ", "));
  return true;
}

absl::Status Coordinator::NoteEvent(const std::string& key, HistoryOp op,
                                    const std::string& detail) {
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok()) return record.status();
  Ledger::Batch batch;
  batch.Note(MakeEvent(op, *record, detail));
  return ledger_->Write(batch);
}

}  // namespace snapledger
