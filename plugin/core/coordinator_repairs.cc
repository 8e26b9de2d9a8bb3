// Coordinator: the repairs of an operator's `reconcile --apply`, each
// re-checked under the key's lock so that nothing that changed since the
// reconciler's finding is touched.
#include <algorithm>

#include "absl/time/clock.h"
#include "plugin/core/coordinator.h"
#include "plugin/record/keys.h"
#include "plugin/record/transitions.h"
#include "spdlog/spdlog.h"

namespace snapledger {

absl::StatusOr<bool> Coordinator::AdoptObject(uint64_t id) {
  const std::string key = AdoptedKey(id);
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::ReaderMutexLock gate(&cleanup_gate_);
  if (ledger_->Get(key).ok()) return false;
  absl::StatusOr<std::vector<BackendObject>> objects = backend_->List();
  if (!objects.ok()) return objects.status();
  auto object =
      std::find_if(objects->begin(), objects->end(),
                   [&](const BackendObject& o) { return o.id == id; });
  if (object == objects->end()) return false;
  const uint64_t parent_id = object->parent_id;
  bool recorded = false;
  std::string parent_key;
  absl::Status scan = ledger_->ForEach([&](const Record& r) {
    if (r.backend_id() == id) recorded = true;
    if (parent_id != 0 && r.backend_id() == parent_id) {
      parent_key = ClientKey(r);
    }
    return !recorded;
  });
  if (!scan.ok()) return scan;
  if (recorded) return false;
  Ledger::Batch batch;
  snapledger::AdoptObject(
      id, parent_id, parent_key,
      "backend object without a ledger record, adopted by reconcile --apply",
      &batch);
  if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
  ledger_->ReserveIdsUpTo(id);
  spdlog::warn("reconcile: adopted backend object {} as {}", id, key);
  return true;
}

absl::StatusOr<bool> Coordinator::MarkMissing(const std::string& key,
                                              uint64_t seq) {
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::ReaderMutexLock gate(&cleanup_gate_);
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok()) {
    return absl::IsNotFound(record.status()) ? absl::StatusOr<bool>(false)
                                             : record.status();
  }
  if (record->state() != store::v1::LIVE || record->seq() > seq) return false;
  absl::StatusOr<bool> stored = backend_->Exists(record->backend_id());
  if (!stored.ok()) return stored.status();
  if (*stored) return false;
  Ledger::Batch batch;
  snapledger::MarkMissing(*record,
                          "backend object not found by reconcile --apply",
                          absl::Now(), &batch);
  if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
  spdlog::error(
      "reconcile: snapshot {} has lost its backend storage; marked missing",
      key);
  return true;
}

}  // namespace snapledger
