#include "plugin/record/states.h"

namespace snapledger {

bool IsIntent(store::v1::State state) {
  return state == store::v1::PREPARING || state == store::v1::COMMITTING ||
         state == store::v1::REMOVING;
}

bool IsQueuedRemoval(store::v1::State state) {
  return state == store::v1::REMOVE_PENDING || state == store::v1::STUCK;
}

bool IsRemovalRecord(const Record& r) {
  return IsQueuedRemoval(r) ||
         (r.state() == store::v1::REMOVING && IsQueuedRemoval(r.prior_state()));
}

bool HasTrackedOwner(const Record& r) {
  return IsVisible(r) || IsQueuedRemoval(r);
}

void CountRemoval(const Record& record, RemovalQueueStats* stats) {
  if (record.state() == store::v1::STUCK) {
    ++stats->stuck;
  } else if (record.state() == store::v1::REMOVE_PENDING) {
    if (record.next_attempt_ns() > 0) {
      ++stats->scheduled;
    } else {
      ++stats->waiting_for_children;
      if (!record.held_by().empty()) ++stats->held;
    }
  }
}

SnapshotKind ToSnapshotKind(RecordKind kind) {
  switch (kind) {
    case store::v1::VIEW:
      return SnapshotKind::kView;
    case store::v1::ACTIVE:
      return SnapshotKind::kActive;
    default:
      return SnapshotKind::kCommitted;
  }
}

RecordKind ToRecordKind(SnapshotKind kind) {
  switch (kind) {
    case SnapshotKind::kView:
      return store::v1::VIEW;
    case SnapshotKind::kActive:
      return store::v1::ACTIVE;
    case SnapshotKind::kCommitted:
      return store::v1::COMMITTED;
  }
  return store::v1::KIND_UNSPECIFIED;
}

}  // namespace snapledger
