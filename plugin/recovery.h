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
// removal queue owns them (plugin/coordinator.h).
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
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
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

// The ledger key an adopted backend object is recorded under.
std::string AdoptedKey(uint64_t backend_id);
// The ledger key a pending (or stuck) removal is recorded under: derived from
// the never-reused backend id, so the client's key is free at once and the
// record of a parent is found from a child's parent_backend_id.
std::string RemovedKey(uint64_t backend_id);
// Keys snapledger names its own records with ("snapledger." prefix); clients
// may not create snapshots under them.
bool IsReservedKey(std::string_view key);

// The ADOPTED record of unrecorded backend object `id` (parent object
// `parent_id`, recorded under `parent_key` or "" if unknown).
Record MakeAdoptedRecord(uint64_t id, uint64_t parent_id,
                         const std::string& parent_key,
                         const std::string& reason);

// The key the client knows a record by: removed_key for a queued removal
// (stored under RemovedKey()), else the record's own key.
inline const std::string& ClientKey(const Record& record) {
  return record.removed_key().empty() ? record.key() : record.removed_key();
}

// A history event about `record` (its client key: removed_key for a queued
// removal).
HistoryEvent MakeEvent(std::string op, const Record& record,
                       std::string detail = "");

// How many attempts a removal record keeps in its history (the oldest go).
inline constexpr int kMaxRemovalHistory = 32;
// Appends an attempt (error empty: success) to the record's bounded history.
void AppendRemovalAttempt(Record* record, absl::Time at,
                          const std::string& error);
// Notes on a removal record an attempt (or a deferral) at `now` that failed
// with `error`: its history, last_error and updated time; `counts` says
// whether it spends one of RetryPolicy::max_attempts. The caller sets the
// next due time.
void RecordRemovalAttempt(Record* record, absl::Time now,
                          const std::string& error, bool counts);
// The REMOVE_PENDING record that replaces `record` (any state) when its
// removal is deferred: stored under RemovedKey(), the client's key kept in
// removed_key. The caller writes it with a batch that deletes `record`
// (unless `record` is already a removal record).
Record ToPendingRemoval(const Record& record, absl::Time now);
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
