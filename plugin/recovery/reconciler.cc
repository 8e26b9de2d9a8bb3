#include "plugin/recovery/reconciler.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

void Add(ReconcileReport* report, Finding::Type type, const std::string& key,
         uint64_t id, std::string detail) {
  ++report->findings_total;
  ++report->findings_by_type[type];
  if (report->findings.size() >= Reconciler::kMaxFindings) return;
  Finding f;
  f.set_type(type);
  f.set_key(key);
  f.set_backend_id(id);
  f.set_detail(std::move(detail));
  report->findings.push_back(std::move(f));
}

}  // namespace

Reconciler::Reconciler(Ledger* ledger, Backend* backend)
    : ledger_(ledger), backend_(backend) {}

Reconciler::~Reconciler() { Stop(); }

absl::StatusOr<ReconcileReport> Reconciler::RunOnce() {
  ReconcileReport report;
  report.started = absl::Now();
  report.start_seq = ledger_->LastSequence();

  absl::StatusOr<std::vector<BackendObject>> objects = backend_->List();
  if (!objects.ok()) return objects.status();
  report.objects_listed = static_cast<int>(objects->size());
  std::map<uint64_t, uint64_t> listed;  // id -> parent id
  for (const BackendObject& o : *objects) listed[o.id] = o.parent_id;

  std::map<uint64_t, bool> named;  // ids some record names
  absl::Status scan = ledger_->ForEach([&](const Record& r) {
    named[r.backend_id()] = true;
    if (r.state() != store::v1::LIVE) return true;
    if (r.seq() > report.start_seq) {
      ++report.records_skipped_newer;
      return true;
    }
    ++report.records_judged;
    auto it = listed.find(r.backend_id());
    if (it == listed.end()) {
      Add(&report, Finding::MISSING_OBJECT, r.key(), r.backend_id(),
          absl::StrCat("backend object ", r.backend_id(), " is gone"));
    } else if (it->second != r.parent_backend_id()) {
      Add(&report, Finding::PARENT_MISMATCH, r.key(), r.backend_id(),
          absl::StrCat("ledger parent object ", r.parent_backend_id(),
                       ", backend parent object ", it->second));
    }
    return true;
  });
  if (!scan.ok()) return scan;

  for (const auto& [id, parent_id] : listed) {
    if (named.contains(id)) continue;
    absl::StatusOr<bool> still = backend_->Exists(id);
    if (!still.ok()) return still.status();
    if (!*still) continue;  // removed while we looked: not an orphan
    Add(&report, Finding::UNRECORDED_OBJECT, "", id,
        absl::StrCat("backend object ", id, " (parent object ", parent_id,
                     ") has no ledger record"));
  }
  report.took = absl::Now() - report.started;
  return report;
}

absl::Status Reconciler::Start(absl::Duration interval) {
  if (interval <= absl::ZeroDuration()) return absl::OkStatus();
  return worker_.Start([this, interval] { Loop(interval); });
}

void Reconciler::Stop() { worker_.Stop(); }

std::optional<ReconcileReport> Reconciler::Latest() const {
  absl::MutexLock lock(&mu_);
  return latest_;
}

void Reconciler::Loop(absl::Duration interval) {
  while (worker_.SleepFor(interval)) {
    absl::StatusOr<ReconcileReport> report = RunOnce();
    if (!report.ok()) {
      spdlog::warn("reconcile: pass failed: {}", report.status().ToString());
      continue;
    }
    if (report->findings_total > 0) {
      spdlog::warn(
          "reconcile: {} findings ({} records judged, {} newer "
          "skipped, {} backend objects)",
          report->findings_total, report->records_judged,
          report->records_skipped_newer, report->objects_listed);
      for (const Finding& f : report->findings) {
        spdlog::warn("reconcile: {} {}: {}", Finding::Type_Name(f.type()),
                     f.key(), f.detail());
      }
    } else {
      spdlog::debug(
          "reconcile: ledger and backend agree ({} records, {} "
          "objects, {} ms)",
          report->records_judged, report->objects_listed,
          absl::ToInt64Milliseconds(report->took));
    }
    absl::MutexLock lock(&mu_);
    latest_ = *std::move(report);
  }
}

}  // namespace snapledger
