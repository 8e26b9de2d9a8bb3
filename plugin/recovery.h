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
//                 there) and the record deleted.
// Then backend temporaries are swept, and the id counter is moved past every
// id the backend holds.
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
  // Live records whose backend object is gone, now marked MISSING.
  std::vector<std::string> missing;
  // Backend objects that no record names (ids), left in place and reported.
  std::vector<uint64_t> unrecorded_objects;

  int intents_resolved() const {
    return prepares_rolled_back + commits_rolled_back + removes_completed;
  }
};

[[nodiscard]] absl::StatusOr<RecoveryReport> ResolveIntents(Ledger& ledger,
                                                            Backend& backend);

}  // namespace snapledger
