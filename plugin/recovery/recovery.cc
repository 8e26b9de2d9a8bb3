#include "plugin/recovery/recovery.h"

#include <map>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "plugin/record/history.h"
#include "plugin/record/keys.h"
#include "plugin/record/states.h"
#include "plugin/record/transitions.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

absl::Status RemoveObject(Backend& backend, uint64_t id) {
  absl::Status s = backend.Remove(id);
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

}  // namespace

namespace {

// The backend could not remove the object of intent `r` now: queue the
// removal, due at once, instead of failing recovery.
absl::Status QueueRemoval(Ledger& ledger, const Record& r,
                          const absl::Status& error, RecoveryReport* report) {
  const absl::Time now = absl::Now();
  Ledger::Batch batch;
  Record pending = DeferRemoval(r,
                                {.cause = error.ToString(),
                                 .counts = true,
                                 .due = now,
                                 .context = "recovery could not remove it: "},
                                now, &batch);
  if (absl::Status s = ledger.Write(batch); !s.ok()) return s;
  spdlog::warn(
      "recovery: cannot remove the storage of {} now ({}); queued as {}",
      r.key(), error.ToString(), pending.key());
  ++report->removals_queued;
  return absl::OkStatus();
}

}  // namespace

namespace {

// The rolled-back commit: the active snapshot again, MISSING if its object is
// gone.
void RollBackCommit(const Record& r, bool stored, const std::string& why,
                    Ledger::Batch* batch, RecoveryReport* report) {
  Record active = r;
  active.clear_commit_name();
  active.clear_commit_labels();
  active.set_state(stored ? store::v1::LIVE : store::v1::MISSING);
  if (!why.empty()) active.set_last_error(why);
  if (!stored) report->missing.push_back(r.key());
  batch->Put(active);
  batch->Note(
      MakeEvent(HistoryOp::kRolledBack, r,
                absl::StrCat("commit as ", r.commit_name(), " interrupted",
                             stored ? "" : "; storage missing",
                             why.empty() ? "" : "; ", why)));
  ++report->commits_rolled_back;
}

// A COMMITTING intent whose object is whole, after a crash: completes the
// commit (its reply may have reached the client). Rolls back instead when
// the backend cannot commit the object or the name is taken.
absl::Status RollForwardCommit(Ledger& ledger, Backend& backend,
                               const Record& r, Ledger::Batch* batch,
                               RecoveryReport* report) {
  absl::StatusOr<Record> taken = ledger.Get(r.commit_name());
  if (taken.ok()) {
    RollBackCommit(r, /*stored=*/true,
                   absl::StrCat("the name ", r.commit_name(), " is taken"),
                   batch, report);
    return absl::OkStatus();
  }
  if (!absl::IsNotFound(taken.status())) return taken.status();
  absl::StatusOr<Usage> usage = backend.Commit(r.backend_id());
  if (!usage.ok()) {
    RollBackCommit(r, /*stored=*/true,
                   absl::StrCat("the backend cannot commit it: ",
                                usage.status().ToString()),
                   batch, report);
    return absl::OkStatus();
  }
  Record committed = CompleteCommit(r, *usage, absl::Now());
  batch->Delete(r);
  batch->Put(committed);
  batch->Note(MakeEvent(
      HistoryOp::kCommit, committed,
      absl::StrCat("from ", r.key(),
                   "; completed at start-up (the crash came after the intent; "
                   "its object is whole)")));
  ++report->commits_rolled_forward;
  return absl::OkStatus();
}

}  // namespace

absl::Status ResolveIntent(Ledger& ledger, Backend& backend, const Record& r,
                           bool stored, IntentOrigin origin,
                           RecoveryReport* report) {
  Ledger::Batch batch;
  switch (r.state()) {
    case store::v1::PREPARING:
      if (stored && origin == IntentOrigin::kCrash) {
        Record live = r;
        live.set_state(store::v1::LIVE);
        batch.Put(live);
        batch.Note(MakeEvent(
            r.kind() == store::v1::VIEW ? HistoryOp::kView
                                        : HistoryOp::kPrepare,
            live,
            absl::StrCat("backend object ", r.backend_id(),
                         "; completed at start-up (the crash came after the "
                         "intent; its object is whole)")));
        ++report->prepares_rolled_forward;
        break;
      }
      if (stored) {
        if (absl::Status s = RemoveObject(backend, r.backend_id()); !s.ok()) {
          return QueueRemoval(ledger, r, s, report);
        }
      }
      batch.Delete(r);
      batch.Note(MakeEvent(HistoryOp::kRolledBack, r, "prepare interrupted"));
      ++report->prepares_rolled_back;
      break;
    case store::v1::REMOVING:
      if (absl::Status s = RemoveObject(backend, r.backend_id()); !s.ok()) {
        return QueueRemoval(ledger, r, s, report);
      }
      batch.Delete(r);
      batch.Note(
          MakeEvent(HistoryOp::kRemoved, r, "interrupted removal completed"));
      ++report->removes_completed;
      break;
    case store::v1::COMMITTING: {
      bool forward = stored && origin == IntentOrigin::kCrash;
      if (stored && !forward) {
        // The call failed, but the backend may have committed the object
        // all the same (a remote snapshotter that died before answering):
        // then the commit happened, and is completed here.
        absl::StatusOr<bool> committed = backend.IsCommitted(r.backend_id());
        if (!committed.ok()) return committed.status();
        forward = *committed;
      }
      if (forward) {
        if (absl::Status s =
                RollForwardCommit(ledger, backend, r, &batch, report);
            !s.ok()) {
          return s;
        }
        break;
      }
      RollBackCommit(r, stored, "", &batch, report);
      break;
    }
    case store::v1::LIVE: {
      if (stored) return absl::OkStatus();
      MarkMissing(r, "backend object not found at start-up", absl::Now(),
                  &batch);
      report->missing.push_back(r.key());
      break;
    }
    case store::v1::MISSING: {
      // Storage that was only unreachable (a mount not there yet) is back.
      if (!stored) return absl::OkStatus();
      Record live = r;
      live.set_state(store::v1::LIVE);
      live.set_last_error("backend object found again at start-up");
      batch.Put(live);
      batch.Note(MakeEvent(HistoryOp::kRestored, r, live.last_error()));
      ++report->missing_restored;
      break;
    }
    case store::v1::ADOPTED:
    case store::v1::REMOVE_PENDING:
    case store::v1::STUCK:
      return absl::OkStatus();
    default:
      return absl::DataLossError(absl::StrCat(
          "ledger record ", r.key(), " has unknown state ", r.state()));
  }
  return ledger.Write(batch);
}

namespace {

// Adopts backend objects `unrecorded` (ascending ids), parents before
// children so that a child can name its parent. Rare (storage copied in from
// outside, a lost ledger): the parents are read (List) and the records'
// keys by id (a scan) only then.
absl::Status AdoptUnrecorded(Ledger& ledger, Backend& backend,
                             const std::vector<uint64_t>& unrecorded,
                             RecoveryReport* report) {
  absl::StatusOr<std::vector<BackendObject>> objects = backend.List();
  if (!objects.ok()) return objects.status();
  std::map<uint64_t, uint64_t> parent_of;  // id -> parent id
  for (const BackendObject& o : *objects) parent_of[o.id] = o.parent_id;
  std::map<uint64_t, std::string> recorded;  // id -> key
  absl::Status scan = ledger.ForEach([&](const Record& r) {
    recorded[r.backend_id()] = ClientKey(r);
    return true;
  });
  if (!scan.ok()) return scan;
  for (uint64_t id : unrecorded) {
    auto object = parent_of.find(id);
    if (object == parent_of.end()) continue;  // removed meanwhile
    const uint64_t parent_id = object->second;
    auto parent = recorded.find(parent_id);
    Ledger::Batch batch;
    Record adopted = AdoptObject(
        id, parent_id,
        parent_id != 0 && parent != recorded.end() ? parent->second : "",
        "backend object had no ledger record at start-up", &batch);
    if (absl::Status s = ledger.Write(batch); !s.ok()) return s;
    recorded[id] = adopted.key();
    report->adopted.push_back(adopted.key());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RecoveryReport> ResolveIntents(Ledger& ledger,
                                              Backend& backend) {
  RecoveryReport report;
  // The backend's temporaries are half-made creates and removes: sweep them
  // first so that List() below sees only whole objects.
  // A leftover that cannot be deleted (an immutable file, say) must not keep
  // the daemon from starting: List() ignores temporaries, and the next
  // Cleanup tries again.
  if (absl::Status s = backend.Cleanup(); !s.ok()) {
    spdlog::warn("recovery: cannot sweep every backend temporary: {}",
                 s.ToString());
  }

  // The ids only (a directory listing): reading 100,000 objects' parents
  // would dominate the start-up. Parents are read only if some object has
  // no record (below).
  absl::StatusOr<std::vector<uint64_t>> ids = backend.ListIds();
  if (!ids.ok()) return ids.status();
  absl::flat_hash_set<uint64_t> present(ids->begin(), ids->end());
  if (!ids->empty()) ledger.ReserveIdsUpTo(ids->back());

  std::vector<Record> intents;
  absl::flat_hash_set<uint64_t> recorded;
  recorded.reserve(present.size());
  absl::Status scan = ledger.ForEach([&](const Record& r) {
    recorded.insert(r.backend_id());
    const bool stored = present.contains(r.backend_id());
    // Intents; live records without storage (to mark missing); missing
    // records whose storage is back (to make live again).
    if ((r.state() != store::v1::LIVE && r.state() != store::v1::MISSING &&
         r.state() != store::v1::ADOPTED && !IsQueuedRemoval(r)) ||
        (r.state() == store::v1::LIVE && !stored) ||
        (r.state() == store::v1::MISSING && stored)) {
      intents.push_back(r);
    }
    return true;
  });
  if (!scan.ok()) return scan;

  for (const Record& r : intents) {
    const bool stored = present.contains(r.backend_id());
    if (absl::Status s = ResolveIntent(ledger, backend, r, stored,
                                       IntentOrigin::kCrash, &report);
        !s.ok()) {
      return s;
    }
  }

  std::vector<uint64_t> unrecorded;
  for (uint64_t id : *ids) {
    if (!recorded.contains(id)) unrecorded.push_back(id);
  }
  if (!unrecorded.empty()) {
    if (absl::Status s = AdoptUnrecorded(ledger, backend, unrecorded, &report);
        !s.ok()) {
      return s;
    }
  }
  for (const std::string& key : report.missing) {
    spdlog::error(
        "recovery: snapshot {} has lost its backend storage; marked "
        "missing",
        key);
  }
  for (const std::string& key : report.adopted) {
    spdlog::warn(
        "recovery: adopted a backend object that had no ledger "
        "record as {} (hidden from containerd; see the admin CLI)",
        key);
  }
  return report;
}

}  // namespace snapledger
