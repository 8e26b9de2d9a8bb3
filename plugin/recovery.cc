#include "plugin/recovery.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

absl::Status RemoveObject(Backend& backend, uint64_t id) {
  absl::Status s = backend.Remove(id);
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

}  // namespace

absl::StatusOr<RecoveryReport> ResolveIntents(Ledger& ledger,
                                              Backend& backend) {
  RecoveryReport report;
  // The backend's temporaries are half-made creates and removes: sweep them
  // first so that List() below sees only whole objects.
  if (absl::Status s = backend.Cleanup(); !s.ok()) return s;

  absl::StatusOr<std::vector<BackendObject>> objects = backend.List();
  if (!objects.ok()) return objects.status();
  std::set<uint64_t> present;
  for (const BackendObject& o : *objects) {
    present.insert(o.id);
    ledger.ReserveIdsUpTo(o.id);
  }

  std::vector<Record> intents;
  std::set<uint64_t> recorded;
  absl::Status scan = ledger.ForEach([&](const Record& r) {
    recorded.insert(r.backend_id());
    if (r.state() != store::v1::LIVE && r.state() != store::v1::MISSING) {
      intents.push_back(r);
    } else if (r.state() == store::v1::LIVE && !present.contains(r.backend_id())) {
      intents.push_back(r);  // a live record without storage: mark missing
    }
    return true;
  });
  if (!scan.ok()) return scan;

  for (const Record& r : intents) {
    Ledger::Batch batch;
    switch (r.state()) {
      case store::v1::PREPARING:
        if (present.contains(r.backend_id())) {
          if (absl::Status s = RemoveObject(backend, r.backend_id()); !s.ok()) {
            return s;
          }
        }
        batch.Delete(r);
        ++report.prepares_rolled_back;
        break;
      case store::v1::REMOVING:
        if (absl::Status s = RemoveObject(backend, r.backend_id()); !s.ok()) {
          return s;
        }
        batch.Delete(r);
        ++report.removes_completed;
        break;
      case store::v1::COMMITTING: {
        Record active = r;
        active.clear_commit_name();
        active.set_state(present.contains(r.backend_id()) ? store::v1::LIVE
                                                          : store::v1::MISSING);
        if (active.state() == store::v1::MISSING) {
          report.missing.push_back(r.key());
        }
        batch.Put(active);
        ++report.commits_rolled_back;
        break;
      }
      case store::v1::LIVE: {
        Record missing = r;
        missing.set_state(store::v1::MISSING);
        missing.set_last_error("backend object not found at start-up");
        batch.Put(missing);
        report.missing.push_back(r.key());
        break;
      }
      default:
        return absl::DataLossError(absl::StrCat(
            "ledger record ", r.key(), " has unknown state ", r.state()));
    }
    if (absl::Status s = ledger.Write(batch); !s.ok()) return s;
  }

  for (uint64_t id : present) {
    if (!recorded.contains(id)) report.unrecorded_objects.push_back(id);
  }
  for (const std::string& key : report.missing) {
    spdlog::error("recovery: snapshot {} has lost its backend storage; marked "
                  "missing",
                  key);
  }
  for (uint64_t id : report.unrecorded_objects) {
    spdlog::warn("recovery: backend object {} has no ledger record", id);
  }
  return report;
}

}  // namespace snapledger
