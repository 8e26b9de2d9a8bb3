#include "plugin/server/daemon.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/health_check_service_interface.h"
#include "plugin/admin/admin_service.h"
#include "plugin/backend/factory/backend_factory.h"
#include "plugin/backend/timed/timed_backend.h"
#include "plugin/containerd/containerd_ops.h"
#include "plugin/containerd/ownership.h"
#include "plugin/containerd/watcher.h"
#include "plugin/core/coordinator.h"
#include "plugin/metrics/metrics.h"
#include "plugin/prune/pruner.h"
#include "plugin/recovery/reconciler.h"
#include "plugin/server/coordinator_repairs.h"
#include "plugin/server/host_paths.h"
#include "plugin/server/listener.h"
#include "plugin/server/owner_reports.h"
#include "plugin/server/snapshot_service.h"
#include "spdlog/spdlog.h"
#include "store/ledger.h"

namespace snapledger {
namespace {

// The Snapshots socket's idle threads: gRPC's default of at most 2 idle
// threads makes a server under 4 concurrent clients start and end a thread
// for about every third call (some 1,000 per `snapbench --clients 4
// --chains 40`); keeping up to 10 idle costs their stacks only, and no call
// waits for a thread to start (docs/benchmarks.md, Session 5).
constexpr SyncPollers kSnapshotsPollers{4, 10};

BackendSettings BackendSettingsOf(const Config& config) {
  BackendSettings settings;
  settings.name = config.backend;
  settings.sync =
      config.backend == "overlayfs" ? config.overlay_sync : config.native_sync;
  settings.overlay_mount_options = config.overlay_mount_options;
  settings.remote_address = config.remote_address;
  settings.remote_call_timeout = config.remote_call_timeout;
  return settings;
}

}  // namespace

absl::Status CheckBackendIdentity(Ledger& ledger, const Config& config) {
  absl::StatusOr<std::string> recorded = ledger.GetSetting(kBackendSetting);
  if (recorded.ok()) {
    if (*recorded == config.backend) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "root ", config.root, " holds snapshots of backend \"", *recorded,
        "\" and cannot be served with backend \"", config.backend,
        "\": set backend = \"", *recorded,
        "\" (or --backend), or use a new root for ", config.backend));
  }
  if (!absl::IsNotFound(recorded.status())) return recorded.status();
  // Roots made before the backend was recorded held only native objects.
  bool has_records = false;
  if (absl::Status s = ledger.ForEach([&](const Record&) {
        has_records = true;
        return false;
      });
      !s.ok()) {
    return s;
  }
  std::error_code ec;
  const bool has_objects =
      !std::filesystem::is_empty(config.root + "/snapshots", ec) && !ec;
  if ((has_records || has_objects) && config.backend != "native") {
    return absl::FailedPreconditionError(absl::StrCat(
        "root ", config.root,
        " holds snapshots of backend \"native\" "
        "(made before the backend was recorded) and cannot be served with "
        "backend \"",
        config.backend,
        "\": set backend = \"native\", or use a "
        "new root for ",
        config.backend));
  }
  return ledger.PutSetting(kBackendSetting, config.backend);
}

struct Daemon::State {
  Config config;
  // With metrics_address only (else null). First, so that it goes last: the
  // ledger, the backend and the removal queue report to it until they go.
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<Ledger> ledger;
  std::unique_ptr<TimedBackend> backend;
  std::unique_ptr<Coordinator> coordinator;
  // With containerd_address only (else null): see
  // plugin/containerd/ownership.h.
  std::unique_ptr<ContainerdOps> containerd_ops;
  std::unique_ptr<OwnerTracker> owners;
  std::unique_ptr<Watcher> watcher;
  // With containerd_address only: the prune (plugin/prune/pruner.h).
  std::unique_ptr<Pruner> pruner;
  std::unique_ptr<Reconciler> reconciler;
  std::unique_ptr<Listener> snapshots_listener;
  std::string admin_address;
  std::unique_ptr<CoordinatorRepairs> repairs;
  std::unique_ptr<AdminCore> admin_core;
  std::unique_ptr<Listener> admin_listener;
  // Restarts a listener that stops accepting (plugin/server/listener.h).
  std::unique_ptr<ListenerDoctor> doctor;
  RecoveryReport recovery;
  bool stopped = false;

  // The steps of Daemon::Start, in order.
  absl::Status OpenStorage();
  absl::Status Recover();
  absl::Status StartCoordinator();
  void MakeOwnerTracker();
  void MakePruner();
  absl::Status ServeSnapshots();
  absl::Status ServeAdmin();
  absl::Status StartWatcher();
  absl::Status ServeMetrics();
  // What the metrics read at scrape time (plugin/metrics/metrics.h).
  MetricsSources MetricsSourcesOf();

  // A start that fails half-way leaves threads running that reach across
  // members (the removal worker asks the owner tracker, the watcher feeds
  // it): stop them before any member goes. Shutdown() does the same.
  ~State() {
    if (metrics != nullptr) metrics->StopServing();
    if (doctor != nullptr) doctor->Stop();
    if (pruner != nullptr) pruner->Stop();
    if (watcher != nullptr) watcher->Stop();
    if (owners != nullptr) owners->Stop();
    if (coordinator != nullptr) coordinator->removal_queue().Stop();
  }
};

Daemon::Daemon(std::unique_ptr<State> state) : state_(std::move(state)) {}

Daemon::~Daemon() { Shutdown(absl::ZeroDuration()); }

const RecoveryReport& Daemon::recovery() const { return state_->recovery; }

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const Config& config) {
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  auto state = std::make_unique<State>();
  state->config = config;
  // In this order: nothing is served before recovery, no removal runs
  // unguarded by the owner tracker, and the socket appears last.
  for (absl::Status (State::*step)() :
       {&State::OpenStorage, &State::Recover, &State::StartCoordinator,
        &State::ServeSnapshots, &State::ServeAdmin, &State::StartWatcher,
        &State::ServeMetrics}) {
    if (absl::Status s = (state.get()->*step)(); !s.ok()) return s;
  }
  spdlog::info(
      "snapledgerd serving on {} (admin {}; root {}, backend {}{}, ledger {})",
      config.address, state->admin_address, config.root, config.backend,
      config.backend == "remote" ? absl::StrCat(" at ", config.remote_address)
      : BackendSettingsOf(config).sync ? std::string()
                                       : std::string(" without data flushes"),
      config.ledger_sync ? "sync" : "async");
  return std::unique_ptr<Daemon>(new Daemon(std::move(state)));
}

absl::Status Daemon::State::OpenStorage() {
  if (absl::Status s = PrepareRoot(config.root); !s.ok()) return s;

  Ledger::Options ledger_options;
  ledger_options.path = config.root + "/ledger";
  ledger_options.sync = config.ledger_sync;
  TimedBackendOptions timed_options{config.backend_timeout};
  if (!config.metrics_address.empty()) {
    // Made now, served last (ServeMetrics): the ledger and the backend
    // report to it from their first call.
    metrics = std::make_unique<Metrics>(MetricsSourcesOf());
    Metrics* m = metrics.get();
    ledger_options.on_write = [m](const Ledger::WriteSample& w) {
      m->ObserveLedgerWrite(w.synced, w.took, w.ok);
    };
    timed_options.on_call = [m](const BackendCallSample& c) {
      m->ObserveBackendCall(c.op, c.took, c.code, c.timed_out);
    };
  }
  auto opened = Ledger::Open(ledger_options);
  if (!opened.ok()) return opened.status();
  ledger = *std::move(opened);

  if (absl::Status s = CheckBackendIdentity(*ledger, config); !s.ok()) {
    return s;
  }
  auto inner = OpenBackend(config.root, BackendSettingsOf(config));
  if (!inner.ok()) return inner.status();
  // Every backend call is bounded in time, recovery's included.
  backend = NewTimedBackend(std::shared_ptr<Backend>(*std::move(inner)),
                            std::move(timed_options));
  return absl::OkStatus();
}

absl::Status Daemon::State::Recover() {
  const auto start = std::chrono::steady_clock::now();
  auto report = ResolveIntents(*ledger, *backend);
  if (!report.ok()) {
    return absl::Status(
        report.status().code(),
        absl::StrCat("recovery failed: ", report.status().message()));
  }
  recovery = *std::move(report);
  spdlog::info(
      "recovery: {} intents resolved ({} prepares rolled forward, {} rolled "
      "back; {} commits rolled forward, {} rolled back; {} removes completed, "
      "{} removals queued), {} missing, {} adopted, in {} ms",
      recovery.intents_resolved(), recovery.prepares_rolled_forward,
      recovery.prepares_rolled_back, recovery.commits_rolled_forward,
      recovery.commits_rolled_back, recovery.removes_completed,
      recovery.removals_queued, recovery.missing.size(),
      recovery.adopted.size(),
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start)
          .count());
  return absl::OkStatus();
}

absl::Status Daemon::State::StartCoordinator() {
  CoordinatorOptions options;
  options.remove_policy = config.remove_policy;
  options.queue.retry = config.remove_retry;
  if (metrics != nullptr) {
    Metrics* m = metrics.get();
    options.queue.on_event = [m](RemovalEvent e) { m->CountRemoval(e); };
  }
  if (!config.containerd_address.empty()) {
    // `owners` is set below, before the removal queue starts: no removal
    // runs unguarded.
    options.queue.holder =
        [this](const Record& record) -> std::optional<std::string> {
      return owners != nullptr ? owners->Holder(record) : std::nullopt;
    };
  }
  coordinator =
      std::make_unique<Coordinator>(ledger.get(), backend.get(), options);
  if (!config.containerd_address.empty()) {
    MakeOwnerTracker();
    MakePruner();
  }
  RemovalQueue& queue = coordinator->removal_queue();
  if (absl::Status s = queue.Start(); !s.ok()) return s;
  if (absl::StatusOr<RemovalQueueStats> stats = queue.Stats(); stats.ok()) {
    spdlog::info(
        "removal queue: {} pending ({} waiting for children), {} stuck; "
        "policy {}",
        stats->scheduled + stats->waiting_for_children,
        stats->waiting_for_children, stats->stuck,
        RemovePolicyName(config.remove_policy));
  }
  return absl::OkStatus();
}

void Daemon::State::MakeOwnerTracker() {
  GrpcContainerdOpsOptions ops_options;
  ops_options.address = config.containerd_address;
  containerd_ops = MakeGrpcContainerdOps(ops_options);
  OwnerTrackerOptions options;
  options.dead_after = config.dead_after;
  options.reaper.enabled = config.reaper_enabled;
  options.reaper.match = config.reap_match;
  options.reaper.dry_run = config.reap_dry_run;
  options.containerd_address = config.containerd_address;
  // Containers first (the reaper's start-up pass), snapshots second.
  options.after_first_pass = [this] {
    if (reconciler == nullptr) return;
    absl::StatusOr<ReconcileReport> report = reconciler->RunOnce();
    if (!report.ok()) {
      spdlog::warn("start-up reconciliation failed: {}",
                   report.status().ToString());
    }
  };
  options.request_relist = [this] {
    if (watcher != nullptr) watcher->RequestRelist();
  };
  owners =
      std::make_unique<OwnerTracker>(ledger.get(), coordinator.get(),
                                     containerd_ops.get(), std::move(options));
}

void Daemon::State::MakePruner() {
  PrunerOptions options;
  options.policy = config.prune;
  options.policy.dead_after = config.dead_after;
  options.root = config.root;
  // The watcher is made later (StartWatcher); until then there is no view
  // and a pass answers FailedPrecondition.
  options.view = [this]() -> std::shared_ptr<const Ownership> {
    return watcher != nullptr ? watcher->Current() : nullptr;
  };
  options.request_relist = [this] {
    if (watcher != nullptr) watcher->RequestRelist();
  };
  TimedBackend* timed = backend.get();
  options.object_usage = [timed](uint64_t id) { return timed->DiskUsage(id); };
  if (metrics != nullptr) {
    Metrics* m = metrics.get();
    options.on_action = [m](std::string_view kind, int64_t bytes_freed) {
      m->CountPruneAction(
          kind, static_cast<uint64_t>(std::max<int64_t>(bytes_freed, 0)));
    };
  }
  pruner = std::make_unique<Pruner>(ledger.get(), coordinator.get(),
                                    containerd_ops.get(), std::move(options));
}

absl::Status Daemon::State::ServeSnapshots() {
  InstallGrpcLogRouting();
  grpc::EnableDefaultHealthCheckService(true);
  // 0660: containerd (root) and a group an operator may grant.
  Coordinator* served = coordinator.get();
  RpcObserver observer;
  if (metrics != nullptr) {
    Metrics* m = metrics.get();
    observer = [m](std::string_view method, absl::StatusCode code,
                   absl::Duration took) { m->ObserveRpc(method, code, took); };
  }
  absl::StatusOr<std::unique_ptr<Listener>> started = Listener::Start(
      "Snapshots", config.address, 0117, kSnapshotsPollers, [served, observer] {
        return std::make_unique<SnapshotService>(served, observer);
      });
  if (!started.ok()) return started.status();
  snapshots_listener = *std::move(started);
  reconciler = std::make_unique<Reconciler>(ledger.get(), backend.get());
  return reconciler->Start(config.reconcile_interval);
}

absl::Status Daemon::State::ServeAdmin() {
  admin_address = config.admin_address.empty()
                      ? DefaultAdminAddress(config.address)
                      : config.admin_address;
  AdminSources sources;
  sources.ledger = ledger.get();
  sources.backend = backend.get();
  repairs = std::make_unique<CoordinatorRepairs>(coordinator.get());
  sources.repairs = repairs.get();
  sources.reconciler = reconciler.get();
  TimedBackend* timed = backend.get();
  sources.abandoned_calls = [timed] { return timed->abandoned(); };
  sources.remove_policy = std::string(RemovePolicyName(config.remove_policy));
  if (owners != nullptr) {
    // The watcher's own view for the time of the last listing: the tracker
    // hears of a view only when its content changes.
    auto with_last_sync = [this](WatcherReport status) {
      if (watcher != nullptr) {
        const absl::Time synced = watcher->Current()->last_sync;
        if (synced != absl::InfinitePast()) status.last_sync = synced;
      }
      return status;
    };
    OwnerTracker* tracker = owners.get();
    sources.dead = [tracker,
                    with_last_sync]() -> absl::StatusOr<adminpb::DeadResponse> {
      DeadReport report = tracker->Dead();
      report.watcher = with_last_sync(std::move(report.watcher));
      return DeadResponseProto(report);
    };
    sources.watcher_status = [tracker, with_last_sync] {
      return WatcherStatusProto(with_last_sync(tracker->Status()));
    };
  }
  if (pruner != nullptr) {
    Pruner* p = pruner.get();
    sources.prune = [p](const adminpb::PruneRequest& request)
        -> absl::StatusOr<adminpb::PruneResponse> {
      PruneRequest r;
      if (request.dry_run()) r.dry_run = true;
      if (!request.until().empty()) {
        absl::Duration until;
        if (!absl::ParseDuration(request.until(), &until) ||
            until <= absl::ZeroDuration()) {
          return absl::InvalidArgumentError(
              absl::StrCat("--until: \"", request.until(),
                           "\" is not a positive duration (e.g. \"72h\")"));
        }
        r.keep_duration = until;
      }
      if (!request.free().empty()) {
        absl::StatusOr<FreeTarget> free = ParseFreeTarget(request.free());
        if (!free.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("--free: ", free.status().message()));
        }
        r.min_free = *free;
      }
      absl::StatusOr<PruneReport> report = p->Run(r);
      if (!report.ok()) return report.status();
      return PruneResponseProto(*report);
    };
  }
  // Honest health (issue 15): `snapledger check` fails while the daemon
  // cannot serve.
  sources.serving_problems = [this] {
    std::vector<std::string> problems;
    if (!snapshots_listener->Accepts(absl::Seconds(2))) {
      problems.push_back(absl::StrCat("Snapshots socket ",
                                      snapshots_listener->path(),
                                      " does not accept connections"));
    }
    if (absl::Status s = ledger->CheckWritable(); !s.ok()) {
      problems.emplace_back(s.message());
    }
    return problems;
  };
  admin_core = std::make_unique<AdminCore>(std::move(sources));
  // 0600: the admin API is for root only.
  AdminCore* core = admin_core.get();
  absl::StatusOr<std::unique_ptr<Listener>> started =
      Listener::Start("admin", admin_address, 0177, SyncPollers{},
                      [core] { return std::make_unique<AdminService>(core); });
  if (!started.ok()) {
    return absl::Status(
        started.status().code(),
        absl::StrCat("admin API: ", started.status().message()));
  }
  admin_listener = *std::move(started);
  // The gRPC health service answers NOT_SERVING while the ledger refuses
  // writes or a socket does not accept (plugin/server/listener.h).
  ListenerDoctorOptions doctor_options;
  Ledger* health_ledger = ledger.get();
  doctor_options.health = [health_ledger] {
    return health_ledger->CheckWritable();
  };
  doctor = std::make_unique<ListenerDoctor>(
      std::vector<Listener*>{snapshots_listener.get(), admin_listener.get()},
      doctor_options);
  doctor->Start();
  return absl::OkStatus();
}

absl::Status Daemon::State::StartWatcher() {
  if (owners == nullptr) return absl::OkStatus();
  WatcherOptions options;
  options.address = config.containerd_address;
  options.snapshotter = config.containerd_snapshotter;
  OwnerTracker* tracker = owners.get();
  options.on_change = [tracker](std::shared_ptr<const Ownership> v) {
    tracker->OnView(std::move(v));
  };
  watcher = std::make_unique<Watcher>(std::move(options));
  if (absl::Status s = watcher->Start(); !s.ok()) return s;
  if (absl::Status s = owners->Start(); !s.ok()) return s;
  if (pruner != nullptr) {
    if (absl::Status s = pruner->Start(); !s.ok()) return s;
    if (config.prune.enabled) {
      spdlog::info("prune: a pass every {} ({}){}",
                   absl::FormatDuration(config.prune.interval),
                   DescribePrunePolicy(config.prune),
                   config.prune.dry_run ? ", dry run" : "");
    }
  }
  spdlog::info(
      "watching containerd at {} for owners (dead after {}; reaper {})",
      config.containerd_address, absl::FormatDuration(config.dead_after),
      !config.reaper_enabled
          ? std::string("off")
          : absl::StrCat(config.reap_dry_run ? "dry run" : "on", " for ",
                         absl::StrJoin(config.reap_match, ", ")));
  return absl::OkStatus();
}

absl::Status Daemon::CheckServing(absl::Duration timeout) const {
  if (state_ == nullptr || state_->stopped) {
    return absl::FailedPreconditionError("the daemon is shut down");
  }
  for (const Listener* listener :
       {state_->snapshots_listener.get(), state_->admin_listener.get()}) {
    if (listener != nullptr && !listener->Accepts(timeout)) {
      return absl::UnavailableError(
          absl::StrCat(listener->name(), " socket ", listener->path(),
                       " does not complete a handshake within ",
                       absl::FormatDuration(timeout)));
    }
  }
  if (absl::StatusOr<std::string> backend =
          state_->ledger->GetSetting(kBackendSetting);
      !backend.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "the ledger does not answer a read: ", backend.status().ToString()));
  }
  return absl::OkStatus();
}

absl::Status Daemon::State::ServeMetrics() {
  if (metrics == nullptr) return absl::OkStatus();
  if (absl::Status s = metrics->Serve(config.metrics_address,
                                      config.metrics_allow_non_loopback);
      !s.ok()) {
    return s;
  }
  // The bound port: an address with port 0 gets one from the kernel.
  spdlog::info("metrics on {}", metrics->url());
  return absl::OkStatus();
}

// Called at scrape time on the metrics server's thread, which runs only once
// Start has finished (ServeMetrics is its last step) and stops first in
// Shutdown: the members it reads are set and stay.
MetricsSources Daemon::State::MetricsSourcesOf() {
  MetricsSources sources;
  sources.counts = [this] { return ledger->CountRecords(); };
  sources.oldest_pending = [this] {
    return ledger->OldestRemovalRequest(store::v1::REMOVE_PENDING);
  };
  sources.ledger_disk_bytes = [this] { return ledger->DiskBytes(); };
  sources.ledger_degraded = [this] { return ledger->degraded(); };
  sources.backend_calls_running_late = [this] {
    return static_cast<uint64_t>(backend->abandoned());
  };
  sources.drift = [this]() -> std::optional<DriftSample> {
    if (reconciler == nullptr) return std::nullopt;
    std::optional<ReconcileReport> report = reconciler->Latest();
    if (!report.has_value()) return std::nullopt;
    DriftSample drift;
    drift.finished = report->started + report->took;
    const auto n = [&](Finding::Type t) -> int64_t {
      auto it = report->findings_by_type.find(t);
      return it == report->findings_by_type.end() ? 0 : it->second;
    };
    drift.unrecorded = n(Finding::UNRECORDED_OBJECT);
    drift.missing = n(Finding::MISSING_OBJECT);
    drift.parent_mismatch = n(Finding::PARENT_MISMATCH);
    return drift;
  };
  if (!config.containerd_address.empty()) {
    sources.owners = [this]() -> std::optional<OwnersSample> {
      if (owners == nullptr) return std::nullopt;
      DeadReport report = owners->Dead();
      OwnersSample sample;
      sample.connected = report.watcher.connected;
      sample.last_sync = report.watcher.last_sync;
      if (watcher != nullptr) {
        // The watcher's own view: the tracker hears of a view only when its
        // content changes.
        const absl::Time synced = watcher->Current()->last_sync;
        if (synced != absl::InfinitePast()) sample.last_sync = synced;
      }
      sample.dead_containers = report.containers.size();
      for (const DeadContainer& d : report.containers) {
        sample.dead_pinned_bytes += d.pinned_bytes;
      }
      sample.reaped_total = report.reaped_total;
      return sample;
    };
  }
  return sources;
}

void Daemon::Shutdown(absl::Duration grace) {
  if (state_ == nullptr || state_->stopped) return;
  state_->stopped = true;
  // No scrape from here on: the members its sources read go below.
  if (state_->metrics != nullptr) state_->metrics->StopServing();
  // The prune, the watcher and the tracker first, while the server still
  // answers the Removes a garbage collection they asked for may send.
  if (state_->pruner != nullptr) state_->pruner->Stop();
  if (state_->watcher != nullptr) state_->watcher->Stop();
  if (state_->owners != nullptr) state_->owners->Stop();
  // The doctor first: nothing restarts a listener that is going.
  if (state_->doctor != nullptr) state_->doctor->Stop();
  if (state_->snapshots_listener != nullptr) {
    state_->snapshots_listener->Shutdown(grace);
  }
  if (state_->admin_listener != nullptr) {
    state_->admin_listener->Shutdown(grace);
  }
  state_->admin_core.reset();
  state_->reconciler.reset();  // stops its thread
  state_->snapshots_listener.reset();
  state_->admin_listener.reset();
  state_->watcher.reset();
  state_->coordinator.reset();  // stops the removal worker
  // After the coordinator: its removal worker may ask the holder.
  state_->owners.reset();
  state_->pruner.reset();  // after the admin core, which calls it
  state_->containerd_ops.reset();
  // A backend call that outlived its limit keeps the backend alive by
  // itself; waiting a little lets it finish and log its outcome.
  if (state_->backend != nullptr && !state_->backend->WaitIdle(grace)) {
    spdlog::warn("{} backend calls still running at shutdown",
                 state_->backend->abandoned());
  }
  state_->backend.reset();
  state_->ledger.reset();  // flushes and closes RocksDB
  spdlog::info("snapledgerd stopped");
}

}  // namespace snapledger
