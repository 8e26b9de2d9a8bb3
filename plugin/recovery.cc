#include "plugin/recovery.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

absl::Status RemoveObject(Backend& backend, uint64_t id) {
  absl::Status s = backend.Remove(id);
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

}  // namespace

std::string AdoptedKey(uint64_t backend_id) {
  return absl::StrCat("snapledger.adopted/", backend_id);
}

std::string RemovedKey(uint64_t backend_id) {
  return absl::StrCat("snapledger.removed/", backend_id);
}

bool IsReservedKey(std::string_view key) {
  return key.starts_with("snapledger.");
}

Record MakeAdoptedRecord(uint64_t id, uint64_t parent_id,
                         const std::string& parent_key,
                         const std::string& reason) {
  Record adopted;
  adopted.set_key(AdoptedKey(id));
  adopted.set_kind(store::v1::COMMITTED);
  adopted.set_state(store::v1::ADOPTED);
  adopted.set_backend_id(id);
  adopted.set_parent_backend_id(parent_id);
  adopted.set_parent(parent_key);
  const int64_t now = absl::ToUnixNanos(absl::Now());
  adopted.set_created_ns(now);
  adopted.set_updated_ns(now);
  adopted.set_last_error(reason);
  return adopted;
}

HistoryEvent MakeEvent(std::string op, const Record& record,
                       std::string detail) {
  HistoryEvent event;
  event.set_op(std::move(op));
  event.set_key(ClientKey(record));
  event.set_backend_id(record.backend_id());
  event.set_parent(record.parent());
  event.set_detail(std::move(detail));
  return event;
}

void AppendRemovalAttempt(Record* record, absl::Time at,
                          const std::string& error) {
  auto* history = record->mutable_remove_history();
  if (history->size() >= kMaxRemovalHistory) {
    history->DeleteSubrange(0, history->size() - kMaxRemovalHistory + 1);
  }
  store::v1::RemovalAttempt* attempt = history->Add();
  attempt->set_at_ns(absl::ToUnixNanos(at));
  attempt->set_error(error);
}

void RecordRemovalAttempt(Record* record, absl::Time now,
                          const std::string& error, bool counts) {
  if (counts) record->set_remove_attempts(record->remove_attempts() + 1);
  record->set_last_error(error);
  record->set_updated_ns(absl::ToUnixNanos(now));
  AppendRemovalAttempt(record, now, error);
}

Record ToPendingRemoval(const Record& record, absl::Time now) {
  Record pending = record;
  const bool already = record.state() == store::v1::REMOVE_PENDING ||
                       record.state() == store::v1::STUCK ||
                       (record.state() == store::v1::REMOVING &&
                        (record.prior_state() == store::v1::REMOVE_PENDING ||
                         record.prior_state() == store::v1::STUCK));
  if (!already) {
    pending.set_key(RemovedKey(record.backend_id()));
    pending.set_removed_key(record.key());
    pending.set_remove_requested_ns(absl::ToUnixNanos(now));
    pending.set_remove_attempts(0);
    pending.clear_remove_history();
  }
  pending.set_state(store::v1::REMOVE_PENDING);
  pending.clear_prior_state();
  pending.clear_commit_name();
  pending.set_updated_ns(absl::ToUnixNanos(now));
  return pending;
}

namespace {

// The backend could not remove the object of intent `r` now: queue the
// removal, due at once, instead of failing recovery.
absl::Status QueueRemoval(Ledger& ledger, const Record& r,
                          const absl::Status& error, RecoveryReport* report) {
  const absl::Time now = absl::Now();
  Record pending = ToPendingRemoval(r, now);
  RecordRemovalAttempt(&pending, now, error.ToString(), /*counts=*/true);
  pending.set_next_attempt_ns(absl::ToUnixNanos(now));
  Ledger::Batch batch;
  if (pending.key() != r.key()) batch.Delete(r);
  batch.Put(pending);
  batch.Note(
      MakeEvent("remove-deferred", pending,
                absl::StrCat("recovery could not remove it: ", error.ToString(),
                             "; queued as ", pending.key())));
  if (absl::Status s = ledger.Write(batch); !s.ok()) return s;
  spdlog::warn(
      "recovery: cannot remove the storage of {} now ({}); queued as {}",
      r.key(), error.ToString(), pending.key());
  ++report->removals_queued;
  return absl::OkStatus();
}

}  // namespace

absl::Status ResolveIntent(Ledger& ledger, Backend& backend, const Record& r,
                           bool stored, RecoveryReport* report) {
  Ledger::Batch batch;
  switch (r.state()) {
    case store::v1::PREPARING:
      if (stored) {
        if (absl::Status s = RemoveObject(backend, r.backend_id()); !s.ok()) {
          return QueueRemoval(ledger, r, s, report);
        }
      }
      batch.Delete(r);
      batch.Note(MakeEvent("rolled-back", r, "prepare interrupted"));
      ++report->prepares_rolled_back;
      break;
    case store::v1::REMOVING:
      if (absl::Status s = RemoveObject(backend, r.backend_id()); !s.ok()) {
        return QueueRemoval(ledger, r, s, report);
      }
      batch.Delete(r);
      batch.Note(MakeEvent("removed", r, "interrupted removal completed"));
      ++report->removes_completed;
      break;
    case store::v1::COMMITTING: {
      Record active = r;
      active.clear_commit_name();
      active.set_state(stored ? store::v1::LIVE : store::v1::MISSING);
      if (!stored) report->missing.push_back(r.key());
      batch.Put(active);
      batch.Note(
          MakeEvent("rolled-back", r,
                    absl::StrCat("commit as ", r.commit_name(), " interrupted",
                                 stored ? "" : "; storage missing")));
      ++report->commits_rolled_back;
      break;
    }
    case store::v1::LIVE: {
      if (stored) return absl::OkStatus();
      Record missing = r;
      missing.set_state(store::v1::MISSING);
      missing.set_last_error("backend object not found at start-up");
      batch.Put(missing);
      batch.Note(MakeEvent("missing", r, missing.last_error()));
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
      batch.Note(MakeEvent("restored", r, live.last_error()));
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

  absl::StatusOr<std::vector<BackendObject>> objects = backend.List();
  if (!objects.ok()) return objects.status();
  std::map<uint64_t, uint64_t> present;  // id -> parent id
  for (const BackendObject& o : *objects) {
    present[o.id] = o.parent_id;
    ledger.ReserveIdsUpTo(o.id);
  }

  std::vector<Record> intents;
  std::map<uint64_t, std::string> recorded;  // id -> key
  absl::Status scan = ledger.ForEach([&](const Record& r) {
    recorded[r.backend_id()] = ClientKey(r);
    const bool stored = present.contains(r.backend_id());
    // Intents; live records without storage (to mark missing); missing
    // records whose storage is back (to make live again).
    if ((r.state() != store::v1::LIVE && r.state() != store::v1::MISSING &&
         r.state() != store::v1::ADOPTED &&
         r.state() != store::v1::REMOVE_PENDING &&
         r.state() != store::v1::STUCK) ||
        (r.state() == store::v1::LIVE && !stored) ||
        (r.state() == store::v1::MISSING && stored)) {
      intents.push_back(r);
    }
    return true;
  });
  if (!scan.ok()) return scan;

  for (const Record& r : intents) {
    const bool stored = present.contains(r.backend_id());
    if (absl::Status s = ResolveIntent(ledger, backend, r, stored, &report);
        !s.ok()) {
      return s;
    }
  }

  // Adopt parents before children so that a child can name its parent.
  for (const auto& [id, parent_id] : present) {
    if (recorded.contains(id)) continue;
    auto parent = recorded.find(parent_id);
    Record adopted = MakeAdoptedRecord(
        id, parent_id,
        parent_id != 0 && parent != recorded.end() ? parent->second : "",
        "backend object had no ledger record at start-up");
    Ledger::Batch batch;
    batch.Put(adopted);
    batch.Note(MakeEvent("adopted", adopted, adopted.last_error()));
    if (absl::Status s = ledger.Write(batch); !s.ok()) return s;
    recorded[id] = adopted.key();
    report.adopted.push_back(adopted.key());
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
