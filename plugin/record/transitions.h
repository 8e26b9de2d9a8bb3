// Record transitions that more than one component makes: deferring a
// removal to the queue, noting a removal attempt, adopting an unrecorded
// backend object, marking a record's storage missing. Each builds the new
// record and adds it, with its history event, to a ledger batch; the caller
// writes the batch (and does what follows the write: rescheduling, logging).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "plugin/backend/backend.h"
#include "store/ledger.h"

namespace snapledger {

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
// removed_key. A record that already is a removal record keeps its key,
// request time and attempts.
Record ToPendingRemoval(const Record& record, absl::Time now);

// Why a removal waits, and until when.
struct Deferral {
  // What keeps it from being removed now (children, a container, an error).
  std::string cause;
  // Whether this spends one of RetryPolicy::max_attempts (a failed attempt
  // does; waiting for children or a container does not).
  bool counts = false;
  // When it is due; nullopt: no due time (the cascade, or the watcher seeing
  // the container go, makes it due).
  std::optional<absl::Time> due;
  // The container it waits for ("<ns>/<id>"), if any.
  std::string held_by;
  // Extra words before the cause in the history event ("recovery could not
  // remove it: ").
  std::string context;
};

// Defers the removal of `record` (an intent, a visible record or a removal
// record): puts the REMOVE_PENDING record into `batch`, deleting `record`
// when it is stored under another key, with a "remove-deferred" event.
// Returns the pending record.
Record DeferRemoval(const Record& record, const Deferral& deferral,
                    absl::Time now, Ledger::Batch* batch);

// The ADOPTED record of unrecorded backend object `id` (parent object
// `parent_id`, recorded under `parent_key` or "" if unknown), put into
// `batch` with an "adopted" event.
Record AdoptObject(uint64_t id, uint64_t parent_id,
                   const std::string& parent_key, const std::string& reason,
                   Ledger::Batch* batch);

// The committed record that a COMMITTING intent becomes once the backend
// committed its object with `usage`: stored under intent.commit_name(), with
// intent.commit_labels() as its labels (Commit replaces them), created at
// `now`, the intent's fields cleared. The coordinator's completion and
// recovery's roll-forward both build it here, so they cannot differ.
Record CompleteCommit(const Record& intent, const Usage& usage, absl::Time now);

// `record` (LIVE) marked MISSING because `reason`, put into `batch` with a
// "missing" event.
Record MarkMissing(const Record& record, const std::string& reason,
                   absl::Time now, Ledger::Batch* batch);

}  // namespace snapledger
