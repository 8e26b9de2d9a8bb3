#include "plugin/record/history.h"

#include "plugin/record/keys.h"

namespace snapledger {

std::string_view HistoryOpName(HistoryOp op) {
  switch (op) {
    case HistoryOp::kPrepare:
      return "prepare";
    case HistoryOp::kView:
      return "view";
    case HistoryOp::kCommit:
      return "commit";
    case HistoryOp::kRemove:
      return "remove";
    case HistoryOp::kRemoveDeferred:
      return "remove-deferred";
    case HistoryOp::kRemoveRefused:
      return "remove-refused";
    case HistoryOp::kRemoveFailed:
      return "remove-failed";
    case HistoryOp::kStuck:
      return "stuck";
    case HistoryOp::kRemoved:
      return "removed";
    case HistoryOp::kRetry:
      return "retry";
    case HistoryOp::kLabels:
      return "labels";
    case HistoryOp::kRolledBack:
      return "rolled-back";
    case HistoryOp::kMissing:
      return "missing";
    case HistoryOp::kRestored:
      return "restored";
    case HistoryOp::kAdopted:
      return "adopted";
    case HistoryOp::kOwner:
      return "owner";
    case HistoryOp::kLeases:
      return "leases";
    case HistoryOp::kReaped:
      return "reaped";
    case HistoryOp::kPruned:
      return "pruned";
  }
  return "unknown";
}

HistoryEvent MakeEvent(HistoryOp op, const Record& record, std::string detail) {
  HistoryEvent event;
  event.set_op(std::string(HistoryOpName(op)));
  event.set_key(ClientKey(record));
  event.set_backend_id(record.backend_id());
  event.set_parent(record.parent());
  event.set_detail(std::move(detail));
  return event;
}

}  // namespace snapledger
