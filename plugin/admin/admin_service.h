// The admin API (proto/snapledger/admin/v1/admin.proto): AdminCore answers
// each call from the ledger, the backend and (when the daemon runs) its
// repairs and reconciler; AdminService serves it over gRPC on the admin
// socket. The `snapledger` CLI uses AdminService through the socket, or an
// AdminCore over a read-only ledger (OfflineAdmin::Open) when the daemon is
// down or for a post-mortem beside it. This library knows nothing of the
// daemon's coordinator: what only the running daemon can do reaches it
// through LiveRepairs, so the CLI links it without the daemon.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "plugin/backend/backend.h"
#include "plugin/recovery/reconciler.h"
#include "snapledger/admin/v1/admin.grpc.pb.h"
#include "store/ledger.h"

namespace snapledger {

namespace adminpb = ::snapledger::admin::v1;

// What only the running daemon can do (the coordinator does it, under its
// key locks); absent offline.
class LiveRepairs {
 public:
  virtual ~LiveRepairs() = default;
  // Makes the queued removal of `backend_id` due now (NotFound if none).
  [[nodiscard]] virtual absl::Status RetryRemoval(uint64_t backend_id) = 0;
  // See Coordinator::AdoptObject and Coordinator::MarkMissing.
  [[nodiscard]] virtual absl::StatusOr<bool> AdoptObject(uint64_t id) = 0;
  [[nodiscard]] virtual absl::StatusOr<bool> MarkMissing(const std::string& key,
                                                         uint64_t seq) = 0;
};

struct AdminSources {
  // Required; not owned.
  Ledger* ledger = nullptr;
  Backend* backend = nullptr;
  // Null when offline: Retry and Reconcile{apply} then answer
  // FailedPrecondition ("needs the daemon").
  LiveRepairs* repairs = nullptr;
  // Null when offline: Stats reports no periodic reconciliation.
  Reconciler* reconciler = nullptr;
  // Backend calls still running after their time limit (Stats); may be
  // empty.
  std::function<size_t()> abandoned_calls;
  std::string remove_policy;
  // With the containerd watcher configured (both empty without it): the
  // dead-container report and the watcher's status. Called from any RPC
  // thread, concurrently; Stats, Check and Orphans call them too.
  std::function<absl::StatusOr<adminpb::DeadResponse>()> dead;
  std::function<adminpb::WatcherStatus()> watcher_status;
  // With the containerd watcher: one prune pass (plugin/prune/pruner.h),
  // from any RPC thread. Empty: Prune answers FailedPrecondition.
  std::function<absl::StatusOr<adminpb::PruneResponse>(
      const adminpb::PruneRequest&)>
      prune;
  // Live: what keeps the daemon from serving now (its Snapshots socket does
  // not accept, the ledger refuses writes), one line each; Check reports
  // them first. May be empty (offline).
  std::function<std::vector<std::string>()> serving_problems;
};

class AdminCore {
 public:
  explicit AdminCore(AdminSources sources);

  [[nodiscard]] absl::StatusOr<adminpb::ListResponse> List(
      const adminpb::ListRequest& request);
  // NotFound names the key.
  [[nodiscard]] absl::StatusOr<adminpb::InspectResponse> Inspect(
      const adminpb::InspectRequest& request);
  [[nodiscard]] absl::StatusOr<adminpb::PendingResponse> Pending(
      const adminpb::PendingRequest& request);
  // Adopted and missing records, then (with the watcher) the rootfs
  // snapshot of each dead container, reason "dead-owner".
  [[nodiscard]] absl::StatusOr<adminpb::OrphansResponse> Orphans(
      const adminpb::OrphansRequest& request);
  [[nodiscard]] absl::StatusOr<adminpb::HistoryResponse> History(
      const adminpb::HistoryRequest& request);
  // Live, `watcher` is always set (enabled false without a watcher); with
  // one, also the dead and reaped container counts. Offline, none of them.
  [[nodiscard]] absl::StatusOr<adminpb::StatsResponse> Stats(
      const adminpb::StatsRequest& request);
  [[nodiscard]] absl::StatusOr<adminpb::ReconcileResponse> Reconcile(
      const adminpb::ReconcileRequest& request);
  // NotFound when the key names no queued removal.
  [[nodiscard]] absl::StatusOr<adminpb::RetryResponse> Retry(
      const adminpb::RetryRequest& request);
  // What keeps the daemon from serving (AdminSources::serving_problems),
  // reconciliation findings, missing, adopted and stuck records, and (with
  // the watcher) every dead container and a watcher that is not connected
  // (owners may then be stale).
  [[nodiscard]] absl::StatusOr<adminpb::CheckResponse> Check(
      const adminpb::CheckRequest& request);
  // The watcher's report. Live without a watcher: watcher.enabled false and
  // no containers. Offline: FailedPrecondition ("needs the daemon").
  [[nodiscard]] absl::StatusOr<adminpb::DeadResponse> Dead(
      const adminpb::DeadRequest& request);

  // One prune pass (docs/prune.md). FailedPrecondition offline and without
  // containerd_address: the prune acts only through containerd.
  [[nodiscard]] absl::StatusOr<adminpb::PruneResponse> Prune(
      const adminpb::PruneRequest& request);

  bool live() const { return sources_.repairs != nullptr; }

 private:
  adminpb::Snapshot Describe(const Record& record);
  // The record a user means by `key`: the client's key, a ledger key, or
  // the former key of a queued removal.
  [[nodiscard]] absl::StatusOr<Record> Find(const std::string& key);
  // The dead-container report when a watcher is configured; nullopt
  // without one (or offline).
  std::optional<absl::StatusOr<adminpb::DeadResponse>> DeadReport();

  AdminSources sources_;
};

// Serves AdminCore over gRPC. Not owned: the core must outlive it.
class AdminService final : public adminpb::Admin::Service {
 public:
  explicit AdminService(AdminCore* core) : core_(core) {}

  grpc::Status List(grpc::ServerContext*, const adminpb::ListRequest*,
                    adminpb::ListResponse*) override;
  grpc::Status Inspect(grpc::ServerContext*, const adminpb::InspectRequest*,
                       adminpb::InspectResponse*) override;
  grpc::Status Pending(grpc::ServerContext*, const adminpb::PendingRequest*,
                       adminpb::PendingResponse*) override;
  grpc::Status Orphans(grpc::ServerContext*, const adminpb::OrphansRequest*,
                       adminpb::OrphansResponse*) override;
  grpc::Status History(grpc::ServerContext*, const adminpb::HistoryRequest*,
                       adminpb::HistoryResponse*) override;
  grpc::Status Stats(grpc::ServerContext*, const adminpb::StatsRequest*,
                     adminpb::StatsResponse*) override;
  grpc::Status Reconcile(grpc::ServerContext*, const adminpb::ReconcileRequest*,
                         adminpb::ReconcileResponse*) override;
  grpc::Status Retry(grpc::ServerContext*, const adminpb::RetryRequest*,
                     adminpb::RetryResponse*) override;
  grpc::Status Check(grpc::ServerContext*, const adminpb::CheckRequest*,
                     adminpb::CheckResponse*) override;
  grpc::Status Dead(grpc::ServerContext*, const adminpb::DeadRequest*,
                    adminpb::DeadResponse*) override;
  grpc::Status Prune(grpc::ServerContext*, const adminpb::PruneRequest*,
                     adminpb::PruneResponse*) override;

 private:
  AdminCore* const core_;
};

// The ledger at <root>/ledger opened read-only (no lock taken: safe beside a
// running daemon) and the native backend at <root>, behind an AdminCore.
class OfflineAdmin {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<OfflineAdmin>> Open(
      const std::string& root);
  AdminCore* core() { return core_.get(); }

 private:
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<AdminCore> core_;
};

// The admin socket's default path, beside the main one: a ".sock" suffix
// becomes "-admin.sock" ("/run/snapledger/snapledger.sock" ->
// "/run/snapledger/snapledger-admin.sock"), anything else gets ".admin".
std::string DefaultAdminAddress(const std::string& address);

}  // namespace snapledger
