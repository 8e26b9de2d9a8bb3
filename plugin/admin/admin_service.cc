#include "plugin/admin/admin_service.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "plugin/backend/factory/backend_factory.h"
#include "plugin/record/keys.h"
#include "plugin/record/states.h"
#include "plugin/recovery/reconciler.h"
#include "plugin/rpc/status.h"
#include "plugin/text/human_units.h"

namespace snapledger {
namespace {

template <typename Response>
grpc::Status Answer(absl::StatusOr<Response> result, Response* out) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *out = *std::move(result);
  return grpc::Status::OK;
}

// Records whose size is not in the record: active snapshots and adopted
// objects whose storage is there.
bool NeedsMeasuring(const Record& r) {
  return r.state() != store::v1::MISSING &&
         (r.kind() == store::v1::ACTIVE || r.state() == store::v1::ADOPTED);
}

// Records that are not usable snapshots but stay shown with --all.
bool IsHidden(const Record& r) { return !IsVisible(r); }

std::string UtcTime(int64_t unix_ns) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixNanos(unix_ns),
                          absl::UTCTimeZone());
}

std::string ContainerName(const adminpb::DeadContainer& c) {
  return absl::StrCat(c.namespace_(), "/", c.id());
}

// "task stopped", "task created"; "no task" for none.
std::string TaskText(const adminpb::DeadContainer& c) {
  if (c.task().empty() || c.task() == "none") return "no task";
  return absl::StrCat("task ", c.task());
}

}  // namespace

std::string DefaultAdminAddress(const std::string& address) {
  constexpr std::string_view kSuffix = ".sock";
  if (address.ends_with(kSuffix)) {
    return absl::StrCat(address.substr(0, address.size() - kSuffix.size()),
                        "-admin.sock");
  }
  return absl::StrCat(address, ".admin");
}

AdminCore::AdminCore(AdminSources sources) : sources_(std::move(sources)) {}

adminpb::Snapshot AdminCore::Describe(const Record& record) {
  adminpb::Snapshot s;
  *s.mutable_record() = record;
  const std::string& key = ClientKey(record);
  s.set_key(key);
  if (!record.namespace_().empty() || !record.containerd_key().empty()) {
    s.set_namespace_(record.namespace_());
    s.set_containerd_key(record.containerd_key());
  } else {
    // Records written before the ledger kept them: containerd's metadata
    // snapshotter names backend keys "<namespace>/<sequence>/<key>".
    std::vector<std::string> parts =
        absl::StrSplit(key, absl::MaxSplits('/', 2));
    if (parts.size() == 3 && !parts[0].empty() && !parts[1].empty() &&
        std::all_of(parts[1].begin(), parts[1].end(),
                    [](char c) { return c >= '0' && c <= '9'; })) {
      s.set_namespace_(parts[0]);
      s.set_containerd_key(parts[2]);
    }
  }
  s.set_owner(record.owner());
  *s.mutable_leases() = record.leases();
  // Frozen at commit for committed snapshots; unknown (-1) for active ones
  // and adopted objects until measured; a view has no storage of its own.
  s.set_size_bytes(-1);
  if (record.kind() == store::v1::COMMITTED &&
      record.state() != store::v1::ADOPTED) {
    s.set_size_bytes(record.size_bytes());
  }
  if (record.kind() == store::v1::VIEW) s.set_size_bytes(0);
  return s;
}

absl::StatusOr<Record> AdminCore::Find(const std::string& key) {
  if (key.empty()) return absl::InvalidArgumentError("a key is required");
  absl::StatusOr<Record> record = sources_.ledger->Get(key);
  if (record.ok() || !absl::IsNotFound(record.status())) return record;
  // The former key of a queued removal (the newest, if several).
  std::optional<Record> found;
  absl::Status scan = sources_.ledger->ForEach([&](const Record& r) {
    if (r.removed_key() == key &&
        (!found.has_value() || r.backend_id() > found->backend_id())) {
      found = r;
    }
    return true;
  });
  if (!scan.ok()) return scan;
  if (found.has_value()) return *found;
  return absl::NotFoundError(
      absl::StrCat("no snapshot \"", key, "\" in the ledger"));
}

std::optional<absl::StatusOr<adminpb::DeadResponse>> AdminCore::DeadReport() {
  if (!sources_.dead) return std::nullopt;
  return sources_.dead();
}

absl::StatusOr<adminpb::ListResponse> AdminCore::List(
    const adminpb::ListRequest& request) {
  adminpb::ListResponse response;
  std::vector<Record> actives;
  absl::Status scan = sources_.ledger->ForEach([&](const Record& r) {
    if (!request.all() && IsHidden(r)) return true;
    if (!request.states().empty() &&
        std::find(request.states().begin(), request.states().end(),
                  r.state()) == request.states().end()) {
      return true;
    }
    if (!request.kinds().empty() &&
        std::find(request.kinds().begin(), request.kinds().end(), r.kind()) ==
            request.kinds().end()) {
      return true;
    }
    const std::string& key = ClientKey(r);
    if (!request.prefix().empty() && !key.starts_with(request.prefix())) {
      return true;
    }
    *response.add_snapshots() = Describe(r);
    return true;
  });
  if (!scan.ok()) return scan;
  if (request.measure_usage()) {
    for (adminpb::Snapshot& s : *response.mutable_snapshots()) {
      const Record& r = s.record();
      if (!NeedsMeasuring(r)) continue;
      absl::StatusOr<Usage> usage = sources_.backend->DiskUsage(r.backend_id());
      if (usage.ok()) s.set_size_bytes(usage->size_bytes);
    }
  }
  return response;
}

absl::StatusOr<adminpb::InspectResponse> AdminCore::Inspect(
    const adminpb::InspectRequest& request) {
  absl::StatusOr<Record> record = Find(request.key());
  if (!record.ok()) return record.status();
  adminpb::InspectResponse response;
  *response.mutable_snapshot() = Describe(*record);
  if (NeedsMeasuring(*record)) {
    absl::StatusOr<Usage> usage =
        sources_.backend->DiskUsage(record->backend_id());
    if (usage.ok())
      response.mutable_snapshot()->set_size_bytes(usage->size_bytes);
  }
  absl::StatusOr<std::vector<std::string>> children =
      sources_.ledger->Children(record->backend_id());
  if (!children.ok()) return children.status();
  for (std::string& c : *children) response.add_children(std::move(c));
  absl::StatusOr<std::vector<HistoryEvent>> history = sources_.ledger->History(
      response.snapshot().key(),
      request.history_limit() == 0 ? 20 : request.history_limit());
  if (!history.ok()) return history.status();
  for (HistoryEvent& e : *history) *response.add_history() = std::move(e);
  return response;
}

absl::StatusOr<adminpb::PendingResponse> AdminCore::Pending(
    const adminpb::PendingRequest&) {
  std::vector<Record> queued;
  absl::Status scan = sources_.ledger->ForEach([&](const Record& r) {
    if (IsQueuedRemoval(r)) queued.push_back(r);
    return true;
  });
  if (!scan.ok()) return scan;
  std::sort(queued.begin(), queued.end(), [](const Record& a, const Record& b) {
    return a.remove_requested_ns() < b.remove_requested_ns();
  });
  adminpb::PendingResponse response;
  for (const Record& r : queued) *response.add_removals() = Describe(r);
  return response;
}

absl::StatusOr<adminpb::OrphansResponse> AdminCore::Orphans(
    const adminpb::OrphansRequest&) {
  adminpb::OrphansResponse response;
  absl::Status scan = sources_.ledger->ForEach([&](const Record& r) {
    const char* reason = r.state() == store::v1::ADOPTED   ? "adopted"
                         : r.state() == store::v1::MISSING ? "missing"
                                                           : nullptr;
    if (reason == nullptr) return true;
    adminpb::Orphan* o = response.add_orphans();
    *o->mutable_snapshot() = Describe(r);
    o->set_reason(reason);
    o->set_detail(r.last_error());
    return true;
  });
  if (!scan.ok()) return scan;
  std::optional<absl::StatusOr<adminpb::DeadResponse>> dead = DeadReport();
  if (!dead.has_value()) return response;
  if (!dead->ok()) return dead->status();
  const absl::Time now = absl::Now();
  for (const adminpb::DeadContainer& c : (*dead)->containers()) {
    absl::StatusOr<Record> rootfs = sources_.ledger->Get(c.snapshot());
    // Removed since the report was made: no longer anybody's orphan.
    if (absl::IsNotFound(rootfs.status())) continue;
    if (!rootfs.ok()) return rootfs.status();
    adminpb::Orphan* o = response.add_orphans();
    *o->mutable_snapshot() = Describe(*rootfs);
    o->set_reason("dead-owner");
    std::string detail =
        absl::StrCat("container ", ContainerName(c), " (", TaskText(c), ")");
    if (c.idle_since_ns() > 0) {
      absl::StrAppend(
          &detail, " idle since ", UtcTime(c.idle_since_ns()), " (",
          CompactDuration(now - absl::FromUnixNanos(c.idle_since_ns())), ")");
    }
    o->set_detail(std::move(detail));
  }
  return response;
}

absl::StatusOr<adminpb::HistoryResponse> AdminCore::History(
    const adminpb::HistoryRequest& request) {
  // Events are kept under the client's key: a ledger key
  // (snapledger.removed/N) means the key its record had.
  std::string key = request.key();
  if (IsReservedKey(key)) {
    absl::StatusOr<Record> record = Find(key);
    if (!record.ok()) return record.status();
    key = ClientKey(*record);
  }
  absl::StatusOr<std::vector<HistoryEvent>> events = sources_.ledger->History(
      key, request.limit() == 0 ? 50 : request.limit(), request.before_seq());
  if (!events.ok()) return events.status();
  adminpb::HistoryResponse response;
  for (HistoryEvent& e : *events) *response.add_events() = std::move(e);
  return response;
}

absl::StatusOr<adminpb::StatsResponse> AdminCore::Stats(
    const adminpb::StatsRequest&) {
  adminpb::StatsResponse response;
  auto& by_state = *response.mutable_by_state();
  auto& by_kind = *response.mutable_by_kind();
  int64_t oldest_pending_ns = 0;
  RemovalQueueStats queue;
  absl::Status scan = sources_.ledger->ForEach([&](const Record& r) {
    ++by_state[store::v1::State_Name(r.state())];
    ++by_kind[store::v1::Kind_Name(r.kind())];
    response.set_records(response.records() + 1);
    if (r.kind() == store::v1::COMMITTED && r.state() == store::v1::LIVE) {
      response.set_committed_bytes(response.committed_bytes() +
                                   static_cast<uint64_t>(r.size_bytes()));
    }
    CountRemoval(r, &queue);
    if (IsQueuedRemoval(r) && (oldest_pending_ns == 0 ||
                               r.remove_requested_ns() < oldest_pending_ns)) {
      oldest_pending_ns = r.remove_requested_ns();
    }
    return true;
  });
  if (!scan.ok()) return scan;
  response.set_removals_scheduled(queue.scheduled);
  response.set_removals_waiting_for_children(queue.waiting_for_children);
  response.set_removals_stuck(queue.stuck);
  if (oldest_pending_ns > 0) {
    response.set_oldest_pending_seconds(absl::ToInt64Seconds(
        absl::Now() - absl::FromUnixNanos(oldest_pending_ns)));
  }
  response.set_ledger_sequence(sources_.ledger->LastSequence());
  if (sources_.abandoned_calls) {
    response.set_backend_calls_abandoned(sources_.abandoned_calls());
  }
  if (sources_.reconciler != nullptr) {
    if (std::optional<ReconcileReport> latest = sources_.reconciler->Latest()) {
      response.set_last_reconcile_unix(absl::ToUnixSeconds(latest->started));
      response.set_last_reconcile_findings(latest->findings_total);
    }
  }
  response.set_live(live());
  response.set_remove_policy(sources_.remove_policy);
  std::optional<absl::StatusOr<adminpb::DeadResponse>> dead = DeadReport();
  if (sources_.watcher_status) {
    *response.mutable_watcher() = sources_.watcher_status();
  } else if (dead.has_value() && dead->ok()) {
    *response.mutable_watcher() = (*dead)->watcher();
  } else if (live()) {
    // Present and disabled: the CLI tells "no watcher" from "offline".
    response.mutable_watcher()->set_enabled(false);
  }
  // A report that fails leaves the counts at 0: Stats must not fail for
  // it (Check and Dead report the failure).
  if (dead.has_value() && dead->ok()) {
    response.set_dead_containers((*dead)->containers_size());
    response.set_reaped_containers((*dead)->reaped_total());
  }
  return response;
}

absl::StatusOr<adminpb::ReconcileResponse> AdminCore::Reconcile(
    const adminpb::ReconcileRequest& request) {
  if (request.apply() && sources_.repairs == nullptr) {
    return absl::FailedPreconditionError(
        "reconcile --apply changes the ledger: it needs the daemon (the "
        "ledger is open read-only)");
  }
  Reconciler reconciler(sources_.ledger, sources_.backend);
  absl::StatusOr<ReconcileReport> report = reconciler.RunOnce();
  if (!report.ok()) return report.status();
  adminpb::ReconcileResponse response;
  for (const Finding& f : report->findings) *response.add_findings() = f;
  response.set_findings_total(report->findings_total);
  response.set_records_judged(report->records_judged);
  response.set_objects_listed(report->objects_listed);
  if (!request.apply()) return response;
  for (const Finding& f : report->findings) {
    absl::StatusOr<bool> changed = false;
    if (f.type() == Finding::UNRECORDED_OBJECT) {
      changed = sources_.repairs->AdoptObject(f.backend_id());
      if (changed.ok() && *changed) {
        response.set_adopted(response.adopted() + 1);
      }
    } else if (f.type() == Finding::MISSING_OBJECT) {
      changed = sources_.repairs->MarkMissing(f.key(), report->start_seq);
      if (changed.ok() && *changed) {
        response.set_marked_missing(response.marked_missing() + 1);
      }
    }
    if (!changed.ok()) return changed.status();
  }
  return response;
}

absl::StatusOr<adminpb::RetryResponse> AdminCore::Retry(
    const adminpb::RetryRequest& request) {
  if (sources_.repairs == nullptr) {
    return absl::FailedPreconditionError(
        "retry needs the daemon (the ledger is open read-only)");
  }
  if (request.stuck() == !request.key().empty()) {
    return absl::InvalidArgumentError(
        "name one key, or ask for every stuck one");
  }
  std::vector<Record> targets;
  if (request.stuck()) {
    absl::Status scan = sources_.ledger->ForEach([&](const Record& r) {
      if (r.state() == store::v1::STUCK) targets.push_back(r);
      return true;
    });
    if (!scan.ok()) return scan;
  } else {
    absl::StatusOr<Record> record = Find(request.key());
    if (!record.ok()) return record.status();
    if (!IsQueuedRemoval(*record)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot \"", request.key(), "\" has no queued removal (it is ",
          absl::AsciiStrToLower(store::v1::State_Name(record->state())), ")"));
    }
    targets.push_back(*record);
  }
  adminpb::RetryResponse response;
  for (const Record& r : targets) {
    if (absl::Status s = sources_.repairs->RetryRemoval(r.backend_id());
        !s.ok()) {
      return s;
    }
    response.add_retried(ClientKey(r));
  }
  return response;
}

absl::StatusOr<adminpb::CheckResponse> AdminCore::Check(
    const adminpb::CheckRequest&) {
  adminpb::CheckResponse response;
  if (sources_.serving_problems) {
    for (std::string& problem : sources_.serving_problems()) {
      response.add_problems(std::move(problem));
    }
  }
  Reconciler reconciler(sources_.ledger, sources_.backend);
  absl::StatusOr<ReconcileReport> report = reconciler.RunOnce();
  if (!report.ok()) return report.status();
  for (const Finding& f : report->findings) {
    switch (f.type()) {
      case Finding::UNRECORDED_OBJECT:
        response.add_problems(absl::StrCat("backend object ", f.backend_id(),
                                           " has no ledger record"));
        break;
      case Finding::MISSING_OBJECT:
        response.add_problems(absl::StrCat("snapshot \"", f.key(),
                                           "\": backend object ",
                                           f.backend_id(), " is gone"));
        break;
      default:
        response.add_problems(
            absl::StrCat("snapshot \"", f.key(), "\": ", f.detail()));
    }
  }
  if (report->findings_total > static_cast<int>(report->findings.size())) {
    response.add_problems(absl::StrCat(
        report->findings_total - report->findings.size(), " more findings"));
  }
  absl::Status scan = sources_.ledger->ForEach([&](const Record& r) {
    const std::string& key = ClientKey(r);
    switch (r.state()) {
      case store::v1::MISSING:
        response.add_problems(absl::StrCat(
            "snapshot \"", key, "\" is missing its storage: ", r.last_error()));
        break;
      case store::v1::ADOPTED:
        response.add_problems(
            absl::StrCat("backend object ", r.backend_id(), " was adopted as ",
                         r.key(), " (no record knew it): ", r.last_error()));
        break;
      case store::v1::STUCK:
        response.add_problems(absl::StrCat(
            "removal of \"", key, "\" (", r.key(), ") is stuck after ",
            r.remove_attempts(), " attempts: ", r.last_error()));
        break;
      default:
        break;
    }
    return true;
  });
  if (!scan.ok()) return scan;

  std::optional<absl::StatusOr<adminpb::DeadResponse>> dead = DeadReport();
  std::optional<adminpb::WatcherStatus> watcher;
  if (sources_.watcher_status) {
    watcher = sources_.watcher_status();
  } else if (dead.has_value() && dead->ok()) {
    watcher = (*dead)->watcher();
  }
  // Owners (and so dead containers) may be stale while disconnected.
  if (watcher.has_value() && watcher->enabled() && !watcher->connected()) {
    std::string line = absl::StrCat("containerd watcher not connected (",
                                    watcher->address(), ")");
    if (!watcher->last_error().empty()) {
      absl::StrAppend(&line, ": ", watcher->last_error());
    }
    response.add_problems(std::move(line));
  }
  if (dead.has_value() && !dead->ok()) {
    response.add_problems(absl::StrCat("cannot list dead containers: ",
                                       dead->status().ToString()));
  } else if (dead.has_value()) {
    const absl::Time now = absl::Now();
    for (const adminpb::DeadContainer& c : (*dead)->containers()) {
      std::string line =
          absl::StrCat("dead container ", ContainerName(c), " (", TaskText(c));
      if (c.idle_since_ns() > 0) {
        absl::StrAppend(
            &line, ", idle ",
            CompactDuration(now - absl::FromUnixNanos(c.idle_since_ns())));
      }
      absl::StrAppend(&line, ") pins ", c.pinned_size(),
                      c.pinned_size() == 1 ? " snapshot (" : " snapshots (",
                      HumanBytes(c.pinned_bytes()), "): ", c.snapshot());
      response.add_problems(std::move(line));
    }
  }
  return response;
}

absl::StatusOr<adminpb::DeadResponse> AdminCore::Dead(
    const adminpb::DeadRequest&) {
  if (sources_.dead) return sources_.dead();
  if (!live()) {
    return absl::FailedPreconditionError(
        "dead needs the daemon (the ledger is open read-only)");
  }
  adminpb::DeadResponse response;
  if (sources_.watcher_status) {
    *response.mutable_watcher() = sources_.watcher_status();
  } else {
    response.mutable_watcher()->set_enabled(false);
  }
  return response;
}

absl::StatusOr<adminpb::PruneResponse> AdminCore::Prune(
    const adminpb::PruneRequest& request) {
  if (sources_.prune) return sources_.prune(request);
  if (!live()) {
    return absl::FailedPreconditionError(
        "prune needs the daemon (the ledger is open read-only)");
  }
  return absl::FailedPreconditionError(
      "prune needs containerd_address: it acts only through containerd's "
      "API");
}

grpc::Status AdminService::List(grpc::ServerContext*,
                                const adminpb::ListRequest* request,
                                adminpb::ListResponse* response) {
  return Answer(core_->List(*request), response);
}
grpc::Status AdminService::Inspect(grpc::ServerContext*,
                                   const adminpb::InspectRequest* request,
                                   adminpb::InspectResponse* response) {
  return Answer(core_->Inspect(*request), response);
}
grpc::Status AdminService::Pending(grpc::ServerContext*,
                                   const adminpb::PendingRequest* request,
                                   adminpb::PendingResponse* response) {
  return Answer(core_->Pending(*request), response);
}
grpc::Status AdminService::Orphans(grpc::ServerContext*,
                                   const adminpb::OrphansRequest* request,
                                   adminpb::OrphansResponse* response) {
  return Answer(core_->Orphans(*request), response);
}
grpc::Status AdminService::History(grpc::ServerContext*,
                                   const adminpb::HistoryRequest* request,
                                   adminpb::HistoryResponse* response) {
  return Answer(core_->History(*request), response);
}
grpc::Status AdminService::Stats(grpc::ServerContext*,
                                 const adminpb::StatsRequest* request,
                                 adminpb::StatsResponse* response) {
  return Answer(core_->Stats(*request), response);
}
grpc::Status AdminService::Reconcile(grpc::ServerContext*,
                                     const adminpb::ReconcileRequest* request,
                                     adminpb::ReconcileResponse* response) {
  return Answer(core_->Reconcile(*request), response);
}
grpc::Status AdminService::Retry(grpc::ServerContext*,
                                 const adminpb::RetryRequest* request,
                                 adminpb::RetryResponse* response) {
  return Answer(core_->Retry(*request), response);
}
grpc::Status AdminService::Check(grpc::ServerContext*,
                                 const adminpb::CheckRequest* request,
                                 adminpb::CheckResponse* response) {
  return Answer(core_->Check(*request), response);
}
grpc::Status AdminService::Dead(grpc::ServerContext*,
                                const adminpb::DeadRequest* request,
                                adminpb::DeadResponse* response) {
  return Answer(core_->Dead(*request), response);
}
grpc::Status AdminService::Prune(grpc::ServerContext*,
                                 const adminpb::PruneRequest* request,
                                 adminpb::PruneResponse* response) {
  return Answer(core_->Prune(*request), response);
}

absl::StatusOr<std::unique_ptr<OfflineAdmin>> OfflineAdmin::Open(
    const std::string& root) {
  std::error_code ec;
  const std::string ledger_path = root + "/ledger";
  if (!std::filesystem::is_directory(ledger_path, ec) ||
      !std::filesystem::is_directory(root + "/snapshots", ec)) {
    return absl::NotFoundError(absl::StrCat("no snapledger state under ", root,
                                            " (expected ", ledger_path, " and ",
                                            root, "/snapshots)"));
  }
  auto admin = std::unique_ptr<OfflineAdmin>(new OfflineAdmin());
  Ledger::Options options;
  options.path = ledger_path;
  options.read_only = true;
  auto ledger = Ledger::Open(options);
  if (!ledger.ok()) return ledger.status();
  admin->ledger_ = *std::move(ledger);
  // The backend the root was created with (roots from before it was
  // recorded are native); read-only use: no start-up mount check.
  BackendSettings settings;
  absl::StatusOr<std::string> recorded = admin->ledger_->GetSetting("backend");
  if (recorded.ok()) {
    settings.name = *recorded;
  } else if (!absl::IsNotFound(recorded.status())) {
    return recorded.status();
  }
  settings.skip_support_check = true;
  auto backend = OpenBackend(root, settings);
  if (!backend.ok()) return backend.status();
  admin->backend_ = *std::move(backend);
  AdminSources sources;
  sources.ledger = admin->ledger_.get();
  sources.backend = admin->backend_.get();
  admin->core_ = std::make_unique<AdminCore>(std::move(sources));
  return admin;
}

}  // namespace snapledger
