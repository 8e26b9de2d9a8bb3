// Start-up recovery: resolves every intent a crash left in the ledger by
// asking the backend, so that the daemon serves only from a consistent state.
//
// Every mutation writes its intent synced and its completion deferred
// (Ledger::Durability::kDeferred): a crash may lose a completion whose reply
// already reached the client. So at start-up an intent whose backend work is
// whole is rolled forward — the client may have been told it succeeded —
// and one whose backend work never happened is rolled back (no client can
// have been told). What is rolled forward without its client having been
// told is a snapshot containerd does not know; containerd's garbage
// collector removes those (docs/reliability.md has the argument).
//
//   PREPARING  -> the backend object is whole: rolled forward to LIVE (a
//                 "prepare"/"view" event says it was completed at start-up).
//                 No object: rolled back, the record deleted.
//   COMMITTING -> the backend object is whole: the commit is completed (the
//                 backend's Commit is idempotent and returns the usage) and
//                 the record becomes the committed one, under the commit
//                 name with the commit's labels (a "commit" event says so).
//                 If the backend cannot commit it, or the name is taken,
//                 rolled back to the active snapshot. No object: the active
//                 snapshot, marked MISSING.
//   REMOVING   -> rolled forward: the backend object is removed (if still
//                 there) and the record deleted. If the backend cannot
//                 remove it now (in use, failing), the removal is queued
//                 instead (REMOVE_PENDING, due at once): never lost, and it
//                 does not keep the daemon from starting. The same holds
//                 for a PREPARING object that cannot be removed.
//
// While serving, the coordinator resolves intents of calls whose client was
// told they failed (a backend failure or time-out, a ledger that refused the
// completion) with the same function: then a prepare is rolled back whatever
// the backend holds, and a commit too unless the backend says the object is
// committed (Backend::IsCommitted: a remote snapshotter that committed it
// and died before answering), when it is completed
// (IntentOrigin::kFailedCall).
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

// How the operation that left an intent ended, as far as its client knows.
enum class IntentOrigin {
  // A crash (start-up recovery): the reply may have reached the client, so
  // whole backend work is rolled forward.
  kCrash,
  // The client was told the call failed: a prepare or a commit is rolled
  // back (a removal still goes forward), but a commit the backend did all
  // the same is completed.
  kFailedCall,
};

struct RecoveryReport {
  int prepares_rolled_back = 0;
  int prepares_rolled_forward = 0;
  int commits_rolled_back = 0;
  int commits_rolled_forward = 0;
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
    return prepares_rolled_back + prepares_rolled_forward +
           commits_rolled_back + commits_rolled_forward + removes_completed +
           removals_queued;
  }
  // Intents completed from their backend work (see the header).
  int rolled_forward() const {
    return prepares_rolled_forward + commits_rolled_forward + removes_completed;
  }
};

// Resolves one record as described above; `stored` says whether the backend
// holds its object, `origin` how its operation ended. Records that are not
// intents (and live records whose object is stored) are left alone. Also
// used by the coordinator for intents of calls that failed.
[[nodiscard]] absl::Status ResolveIntent(Ledger& ledger, Backend& backend,
                                         const Record& record, bool stored,
                                         IntentOrigin origin,
                                         RecoveryReport* report);

[[nodiscard]] absl::StatusOr<RecoveryReport> ResolveIntents(Ledger& ledger,
                                                            Backend& backend);

}  // namespace snapledger
