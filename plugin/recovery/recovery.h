// Start-up recovery: resolves every intent a crash left in the ledger by
// asking the backend, so that the daemon serves only from a consistent state.
//
//   PREPARING  -> rolled back: the backend object (if made) is removed and
//                 the record deleted. No client was told the snapshot exists,
//                 and containerd dropped its own record when the call failed.
//   COMMITTING -> rolled back to the active snapshot: containerd's Commit
//                 runs in a metadata transaction that aborted with the call,
//                 so containerd still knows the active key, not the name.
//                 Marked MISSING if the backend object is gone.
//   REMOVING   -> rolled forward: the backend object is removed (if still
//                 there) and the record deleted. If the backend cannot
//                 remove it now (in use, failing), the removal is queued
//                 instead (REMOVE_PENDING, due at once): never lost, and it
//                 does not keep the daemon from starting. The same holds
//                 for a PREPARING object that cannot be removed.
// REMOVE_PENDING and STUCK records are not intents: the coordinator's
// removal queue owns them (plugin/removal/removal_queue.h).
// Backend objects that no record names (storage copied in from outside, a
// lost ledger) are adopted: recorded as ADOPTED under the key
// AdoptedKey(id), with their parent linked when the ledger knows it — kept
// and flagged for an operator, hidden from containerd. Backend temporaries
// are swept first, and the id counter is moved past every id the backend
// holds.
//
// Must run before the daemon serves, with no other user of the ledger or the
// backend. Idempotent: a crash during recovery is resolved by the next one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "plugin/backend/backend.h"
#include "store/ledger.h"

namespace snapledger {

struct RecoveryReport {
  int prepares_rolled_back = 0;
  int commits_rolled_back = 0;
  int removes_completed = 0;
  // Intents whose backend object could not be removed now: queued.
  int removals_queued = 0;
  // Live records whose backend object is gone, now marked MISSING.
  std::vector<std::string> missing;
  // MISSING records whose backend object is there again, now LIVE.
  int missing_restored = 0;
  // Keys given to backend objects that no record named (now ADOPTED).
  std::vector<std::string> adopted;

  int intents_resolved() const {
    return prepares_rolled_back + commits_rolled_back + removes_completed +
           removals_queued;
  }
};

// Resolves one record as described above; `stored` says whether the backend
// holds its object. Records that are not intents (and live records whose
// object is stored) are left alone. Also used by the coordinator for intents
// it could not complete while the ledger was not writable.
[[nodiscard]] absl::Status ResolveIntent(Ledger& ledger, Backend& backend,
                                         const Record& record, bool stored,
                                         RecoveryReport* report);

[[nodiscard]] absl::StatusOr<RecoveryReport> ResolveIntents(Ledger& ledger,
                                                            Backend& backend);

}  // namespace snapledger
