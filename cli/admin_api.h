// How the `snapledger` CLI reaches the admin API
// (proto/snapledger/admin/v1/admin.proto): through snapledgerd's admin socket
// (GrpcAdminApi) or, with --root, straight from a ledger opened read-only
// (LocalAdminApi). Commands are written against AdminApi and cannot tell the
// two apart except by offline().
//
// Errors are absl::Status with a message meant for the operator, one line,
// already saying what to do where there is something to do (the daemon is
// not running, the socket needs root, ...). The server's NotFound and
// FailedPrecondition messages are passed through as they are.
//
// Thread-safety: an AdminApi is used from one thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "snapledger/admin/v1/admin.grpc.pb.h"

namespace snapledger {
class OfflineAdmin;
}  // namespace snapledger

namespace snapledger::cli {

namespace admin = ::snapledger::admin::v1;

class AdminApi {
 public:
  virtual ~AdminApi() = default;

  [[nodiscard]] virtual absl::StatusOr<admin::ListResponse> List(
      const admin::ListRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::InspectResponse> Inspect(
      const admin::InspectRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::PendingResponse> Pending(
      const admin::PendingRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::OrphansResponse> Orphans(
      const admin::OrphansRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::HistoryResponse> History(
      const admin::HistoryRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::StatsResponse> Stats(
      const admin::StatsRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::ReconcileResponse> Reconcile(
      const admin::ReconcileRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::RetryResponse> Retry(
      const admin::RetryRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::CheckResponse> Check(
      const admin::CheckRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::DeadResponse> Dead(
      const admin::DeadRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<admin::PruneResponse> Prune(
      const admin::PruneRequest& request) = 0;

  // True when reading a ledger directly (no daemon: nothing can be changed).
  virtual bool offline() const = 0;
};

// The admin service of a running snapledgerd, on a unix socket.
class GrpcAdminApi final : public AdminApi {
 public:
  // `address` is the socket's path ("unix:" prefix optional). Looks at the
  // socket before dialing so that the likely failures get a precise message:
  // no socket (Unavailable: the daemon is not running), a socket this user
  // may not open (PermissionDenied), not a socket (FailedPrecondition). Each
  // call then has `timeout` to answer (DeadlineExceeded).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<GrpcAdminApi>> Connect(
      const std::string& address, absl::Duration timeout);

  [[nodiscard]] absl::StatusOr<admin::ListResponse> List(
      const admin::ListRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::InspectResponse> Inspect(
      const admin::InspectRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::PendingResponse> Pending(
      const admin::PendingRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::OrphansResponse> Orphans(
      const admin::OrphansRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::HistoryResponse> History(
      const admin::HistoryRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::StatsResponse> Stats(
      const admin::StatsRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::ReconcileResponse> Reconcile(
      const admin::ReconcileRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::RetryResponse> Retry(
      const admin::RetryRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::CheckResponse> Check(
      const admin::CheckRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::DeadResponse> Dead(
      const admin::DeadRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::PruneResponse> Prune(
      const admin::PruneRequest& request) override;
  bool offline() const override { return false; }

 private:
  GrpcAdminApi(std::string path, absl::Duration timeout);

  template <typename Response, typename Request, typename Method>
  [[nodiscard]] absl::StatusOr<Response> Call(Method method,
                                              const Request& request);

  const std::string path_;
  const absl::Duration timeout_;
  std::unique_ptr<admin::Admin::Stub> stub_;
};

// The admin API answered from <root>/ledger opened read-only, without the
// daemon (safe beside a running one). Retry, Reconcile{apply}, Dead and
// Prune (the containerd watcher lives in the daemon) need the daemon and
// answer FailedPrecondition.
class LocalAdminApi final : public AdminApi {
 public:
  // NotFound when `root` does not exist or holds no ledger (naming what was
  // expected); the ledger's own error when it cannot be opened.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LocalAdminApi>> Open(
      const std::string& root);
  ~LocalAdminApi() override;

  [[nodiscard]] absl::StatusOr<admin::ListResponse> List(
      const admin::ListRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::InspectResponse> Inspect(
      const admin::InspectRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::PendingResponse> Pending(
      const admin::PendingRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::OrphansResponse> Orphans(
      const admin::OrphansRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::HistoryResponse> History(
      const admin::HistoryRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::StatsResponse> Stats(
      const admin::StatsRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::ReconcileResponse> Reconcile(
      const admin::ReconcileRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::RetryResponse> Retry(
      const admin::RetryRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::CheckResponse> Check(
      const admin::CheckRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::DeadResponse> Dead(
      const admin::DeadRequest& request) override;
  [[nodiscard]] absl::StatusOr<admin::PruneResponse> Prune(
      const admin::PruneRequest& request) override;
  bool offline() const override { return true; }

 private:
  explicit LocalAdminApi(std::unique_ptr<OfflineAdmin> admin);

  std::unique_ptr<OfflineAdmin> admin_;
};

// The path of a socket address: "unix:/run/x.sock" and "/run/x.sock" are
// both "/run/x.sock".
std::string SocketPath(const std::string& address);

// Why `path` cannot be dialed, judged from the file system: Unavailable when
// there is no socket ("snapledgerd is not running ..."), PermissionDenied
// when this user may not open it, FailedPrecondition when it is not a
// socket; OK when it looks dialable.
[[nodiscard]] absl::Status ProbeSocket(const std::string& path);

// An RPC failure as the operator should read it. Connection failures
// (Unavailable) are judged again with ProbeSocket, since the daemon may have
// gone between the probe and the call; server answers (NotFound, ...) keep
// their code and message.
[[nodiscard]] absl::Status DescribeRpcError(absl::StatusCode code,
                                            const std::string& message,
                                            const std::string& path,
                                            absl::Duration timeout);

}  // namespace snapledger::cli
