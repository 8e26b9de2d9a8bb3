#include "plugin/server/daemon.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/health_check_service_interface.h"
#include "plugin/admin/admin_service.h"
#include "plugin/backend/native/native_backend.h"
#include "plugin/backend/timed/timed_backend.h"
#include "plugin/containerd/containerd_ops.h"
#include "plugin/core/coordinator.h"
#include "plugin/containerd/ownership.h"
#include "plugin/recovery/reconciler.h"
#include "plugin/server/coordinator_repairs.h"
#include "plugin/server/snapshot_service.h"
#include "plugin/containerd/watcher.h"
#include "spdlog/spdlog.h"
#include "store/ledger.h"

namespace snapledger {
namespace {

// Whether some process accepts connections on unix socket `path`.
bool SocketIsServed(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  bool served =
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return served;
}

absl::Status PrepareSocketPath(const std::string& path) {
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::filesystem::create_directories(parent, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the socket's directory ", parent.string(),
                     ": ", ec.message()));
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " exists and is not a socket; refusing to replace it"));
  }
  if (SocketIsServed(path)) {
    return absl::FailedPreconditionError(
        absl::StrCat("another process is already serving on ", path,
                     " (is snapledgerd running?)"));
  }
  spdlog::info("removing stale socket {}", path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot remove stale socket ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

struct Daemon::State {
  Config config;
  std::unique_ptr<Ledger> ledger;
  std::unique_ptr<TimedBackend> backend;
  std::unique_ptr<Coordinator> coordinator;
  // With containerd_address only (else null): see plugin/ownership.h.
  std::unique_ptr<ContainerdOps> containerd_ops;
  std::unique_ptr<OwnerTracker> owners;
  std::unique_ptr<Watcher> watcher;
  std::unique_ptr<Reconciler> reconciler;
  std::unique_ptr<SnapshotService> service;
  std::unique_ptr<grpc::Server> server;
  std::string admin_address;
  std::unique_ptr<CoordinatorRepairs> repairs;
  std::unique_ptr<AdminCore> admin_core;
  std::unique_ptr<AdminService> admin_service;
  std::unique_ptr<grpc::Server> admin_server;
  RecoveryReport recovery;
  bool stopped = false;

  // A start that fails half-way leaves threads running that reach across
  // members (the removal worker asks the owner tracker, the watcher feeds
  // it): stop them before any member goes. Shutdown() does the same.
  ~State() {
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

  std::error_code ec;
  std::filesystem::create_directories(config.root, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create root directory ", config.root, ": ", ec.message()));
  }
  ::chmod(config.root.c_str(), 0700);

  Ledger::Options ledger_options;
  ledger_options.path = config.root + "/ledger";
  ledger_options.sync = config.ledger_sync;
  auto ledger = Ledger::Open(ledger_options);
  if (!ledger.ok()) return ledger.status();
  state->ledger = *std::move(ledger);

  auto backend =
      NewNativeBackend(config.root, NativeBackendOptions{config.native_sync});
  if (!backend.ok()) return backend.status();
  // Every backend call is bounded in time, recovery's included.
  state->backend =
      NewTimedBackend(std::shared_ptr<Backend>(*std::move(backend)),
                      TimedBackendOptions{config.backend_timeout});

  const auto recovery_start = std::chrono::steady_clock::now();
  auto report = ResolveIntents(*state->ledger, *state->backend);
  if (!report.ok()) {
    return absl::Status(
        report.status().code(),
        absl::StrCat("recovery failed: ", report.status().message()));
  }
  state->recovery = *std::move(report);
  spdlog::info(
      "recovery: {} intents resolved ({} prepares rolled back, {} commits "
      "rolled back, {} removes completed, {} removals queued), {} missing, {} "
      "adopted, in {} ms",
      state->recovery.intents_resolved(), state->recovery.prepares_rolled_back,
      state->recovery.commits_rolled_back, state->recovery.removes_completed,
      state->recovery.removals_queued, state->recovery.missing.size(),
      state->recovery.adopted.size(),
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - recovery_start)
          .count());

  CoordinatorOptions coordinator_options;
  coordinator_options.remove_policy = config.remove_policy;
  coordinator_options.queue.retry = config.remove_retry;
  State* st = state.get();
  if (!config.containerd_address.empty()) {
    // Set below, before the removal queue starts: no removal runs unguarded.
    coordinator_options.queue.holder =
        [st](const Record& record) -> std::optional<std::string> {
      return st->owners != nullptr ? st->owners->Holder(record) : std::nullopt;
    };
  }
  state->coordinator = std::make_unique<Coordinator>(
      state->ledger.get(), state->backend.get(), coordinator_options);
  if (!config.containerd_address.empty()) {
    GrpcContainerdOpsOptions ops_options;
    ops_options.address = config.containerd_address;
    state->containerd_ops = MakeGrpcContainerdOps(ops_options);
    OwnerTrackerOptions owner_options;
    owner_options.dead_after = config.dead_after;
    owner_options.reaper.enabled = config.reaper_enabled;
    owner_options.reaper.match = config.reap_match;
    owner_options.reaper.dry_run = config.reap_dry_run;
    owner_options.containerd_address = config.containerd_address;
    // Containers first (the reaper's start-up pass), snapshots second.
    owner_options.after_first_pass = [st] {
      if (st->reconciler == nullptr) return;
      absl::StatusOr<ReconcileReport> report = st->reconciler->RunOnce();
      if (!report.ok()) {
        spdlog::warn("start-up reconciliation failed: {}",
                     report.status().ToString());
      }
    };
    owner_options.request_relist = [st] {
      if (st->watcher != nullptr) st->watcher->RequestRelist();
    };
    state->owners = std::make_unique<OwnerTracker>(
        state->ledger.get(), state->coordinator.get(),
        state->containerd_ops.get(), std::move(owner_options));
  }
  if (absl::Status s = state->coordinator->removal_queue().Start(); !s.ok()) {
    return s;
  }
  if (absl::StatusOr<RemovalQueueStats> queue =
          state->coordinator->removal_queue().Stats();
      queue.ok()) {
    spdlog::info(
        "removal queue: {} pending ({} waiting for children), {} stuck; "
        "policy {}",
        queue->scheduled + queue->waiting_for_children,
        queue->waiting_for_children, queue->stuck,
        RemovePolicyName(config.remove_policy));
  }
  state->service = std::make_unique<SnapshotService>(state->coordinator.get());

  if (absl::Status s = PrepareSocketPath(config.address); !s.ok()) return s;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort("unix:" + config.address,
                           grpc::InsecureServerCredentials(), &bound);
  builder.RegisterService(state->service.get());
  // The socket is created by BuildAndStart: a umask makes it 0660 from its
  // first moment, so no client ever sees it with wider permissions.
  const mode_t old_umask = ::umask(0117);
  state->server = builder.BuildAndStart();
  ::umask(old_umask);
  if (state->server == nullptr || bound == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve on unix socket ", config.address));
  }
  state->reconciler =
      std::make_unique<Reconciler>(state->ledger.get(), state->backend.get());
  state->reconciler->Start(config.reconcile_interval);

  // The admin API, on its own socket, for root only.
  state->admin_address = config.admin_address.empty()
                             ? DefaultAdminAddress(config.address)
                             : config.admin_address;
  AdminSources sources;
  sources.ledger = state->ledger.get();
  sources.backend = state->backend.get();
  state->repairs = std::make_unique<CoordinatorRepairs>(state->coordinator.get());
  sources.repairs = state->repairs.get();
  sources.reconciler = state->reconciler.get();
  TimedBackend* timed = state->backend.get();
  sources.abandoned_calls = [timed] { return timed->abandoned(); };
  sources.remove_policy = std::string(RemovePolicyName(config.remove_policy));
  if (state->owners != nullptr) {
    OwnerTracker* owners = state->owners.get();
    // The watcher's own view for the time of the last listing: the tracker
    // hears of a view only when its content changes.
    auto with_last_sync = [st](adminpb::WatcherStatus status) {
      if (st->watcher != nullptr) {
        const absl::Time synced = st->watcher->Current()->last_sync;
        if (synced != absl::InfinitePast()) {
          status.set_last_sync_ns(absl::ToUnixNanos(synced));
        }
      }
      return status;
    };
    sources.dead = [owners,
                    with_last_sync]() -> absl::StatusOr<adminpb::DeadResponse> {
      adminpb::DeadResponse response = owners->Dead();
      *response.mutable_watcher() = with_last_sync(response.watcher());
      return response;
    };
    sources.watcher_status = [owners, with_last_sync] {
      return with_last_sync(owners->Status());
    };
  }
  state->admin_core = std::make_unique<AdminCore>(std::move(sources));
  state->admin_service =
      std::make_unique<AdminService>(state->admin_core.get());
  if (absl::Status s = PrepareSocketPath(state->admin_address); !s.ok()) {
    return s;
  }
  grpc::ServerBuilder admin_builder;
  int admin_bound = 0;
  admin_builder.AddListeningPort("unix:" + state->admin_address,
                                 grpc::InsecureServerCredentials(),
                                 &admin_bound);
  admin_builder.RegisterService(state->admin_service.get());
  const mode_t admin_umask = ::umask(0177);
  state->admin_server = admin_builder.BuildAndStart();
  ::umask(admin_umask);
  if (state->admin_server == nullptr || admin_bound == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve the admin API on unix socket ", state->admin_address));
  }
  if (state->owners != nullptr) {
    WatcherOptions watcher_options;
    watcher_options.address = config.containerd_address;
    watcher_options.snapshotter = config.containerd_snapshotter;
    OwnerTracker* owners = state->owners.get();
    watcher_options.on_change = [owners](std::shared_ptr<const Ownership> v) {
      owners->OnView(std::move(v));
    };
    state->watcher = std::make_unique<Watcher>(std::move(watcher_options));
    state->watcher->Start();
    state->owners->Start();
    spdlog::info(
        "watching containerd at {} for owners (dead after {}; reaper {})",
        config.containerd_address, absl::FormatDuration(config.dead_after),
        !config.reaper_enabled
            ? std::string("off")
            : absl::StrCat(config.reap_dry_run ? "dry run" : "on", " for ",
                           absl::StrJoin(config.reap_match, ", ")));
  }
  spdlog::info(
      "snapledgerd serving on {} (admin {}; root {}, backend {}{}, ledger {})",
      config.address, state->admin_address, config.root, config.backend,
      config.native_sync ? "" : " without data flushes",
      config.ledger_sync ? "sync" : "async");
  return std::unique_ptr<Daemon>(new Daemon(std::move(state)));
}

void Daemon::Shutdown(absl::Duration grace) {
  if (state_ == nullptr || state_->stopped) return;
  state_->stopped = true;
  // The watcher and the tracker first, while the server still answers the
  // Removes a garbage collection the reaper asked for may send.
  if (state_->watcher != nullptr) state_->watcher->Stop();
  if (state_->owners != nullptr) state_->owners->Stop();
  if (state_->server != nullptr) {
    state_->server->Shutdown(std::chrono::system_clock::now() +
                             absl::ToChronoMilliseconds(grace));
    state_->server->Wait();
  }
  ::unlink(state_->config.address.c_str());
  if (state_->admin_server != nullptr) {
    state_->admin_server->Shutdown(std::chrono::system_clock::now() +
                                   absl::ToChronoMilliseconds(grace));
    state_->admin_server->Wait();
    ::unlink(state_->admin_address.c_str());
  }
  state_->admin_service.reset();
  state_->admin_core.reset();
  state_->reconciler.reset();  // stops its thread
  state_->service.reset();
  state_->watcher.reset();
  state_->coordinator.reset();  // stops the removal worker
  // After the coordinator: its removal worker may ask the holder.
  state_->owners.reset();
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
