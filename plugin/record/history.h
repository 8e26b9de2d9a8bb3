// History events: what happened to which snapshot, and why. Every event is
// written in the same ledger batch as the change it describes, so history
// and state never disagree. The op names are part of the admin API and the
// CLI's output (`snapledger history`): they are written once, here.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "store/ledger.h"

namespace snapledger {

enum class HistoryOp {
  kPrepare,         // an active snapshot was made
  kView,            // a view was made
  kCommit,          // an active snapshot was committed under a name
  kRemove,          // removed at once
  kRemoveDeferred,  // queued for removal (children, holder, failure)
  kRemoveRefused,   // refused: the backend could not remove it now
  kRemoveFailed,    // a queued attempt failed; retried later
  kStuck,           // out of attempts; kept until an operator retries it
  kRemoved,         // a queued (or interrupted) removal completed
  kRetry,           // an operator asked for a retry
  kLabels,          // labels updated
  kRolledBack,      // an interrupted prepare or commit was undone
  kMissing,         // the backend object is gone
  kRestored,        // the backend object is back
  kAdopted,         // a backend object without a record was recorded
  kOwner,           // the owning container changed
  kLeases,          // the leases holding it changed
  kReaped,          // the reaper deleted its dead container
  kPruned,          // the prune deleted what held it (docs/prune.md)
};

// The op's name in the ledger and the admin API ("remove-deferred", ...).
std::string_view HistoryOpName(HistoryOp op);

// A history event about `record` (its client key: removed_key for a queued
// removal).
HistoryEvent MakeEvent(HistoryOp op, const Record& record,
                       std::string detail = "");

}  // namespace snapledger
