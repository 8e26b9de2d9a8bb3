// What a record's state means, written once: which records containerd sees,
// which are intents, which are queued removals, which carry an owner.
// (IsVisible lives in store/ledger.h: the ledger's own counters use it.)
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>

#include "absl/time/time.h"
#include "plugin/backend/backend.h"
#include "store/ledger.h"

namespace snapledger {

// PREPARING, COMMITTING or REMOVING: an operation began and has not ended;
// recovery (or the coordinator's intent healing) resolves it.
bool IsIntent(store::v1::State state);
inline bool IsIntent(const Record& r) { return IsIntent(r.state()); }

// REMOVE_PENDING or STUCK: a removal the queue owns.
bool IsQueuedRemoval(store::v1::State state);
inline bool IsQueuedRemoval(const Record& r) {
  return IsQueuedRemoval(r.state());
}
// A REMOVING intent made by the removal queue (from REMOVE_PENDING or
// STUCK), or a queued removal: a record already under RemovedKey().
bool IsRemovalRecord(const Record& r);

// Records whose owner is worth tracking: visible ones and queued removals
// (intents are rewritten by the operation in flight).
bool HasTrackedOwner(const Record& r);

// The removal queue at a glance, counted from its records.
struct RemovalQueueStats {
  size_t scheduled = 0;             // pending, with a due time
  size_t waiting_for_children = 0;  // pending, due when the last child goes
  // Of the waiting ones, those held for a container that still exists (due
  // when it goes; see RemovalQueueOptions::holder).
  size_t held = 0;
  size_t stuck = 0;
  std::optional<absl::Time> next_due;
};
// Counts `record` into `stats` if it is a queued removal (pending with a due
// time, pending waiting for children, or stuck).
void CountRemoval(const Record& record, RemovalQueueStats* stats);

SnapshotKind ToSnapshotKind(RecordKind kind);
RecordKind ToRecordKind(SnapshotKind kind);

}  // namespace snapledger
