// GrpcAdminApi and the translation of connection failures into messages an
// operator can act on. LocalAdminApi is in local_admin_api.cc (it needs the
// daemon's library; this file only needs the generated stubs).
#include "cli/admin_api.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "plugin/rpc/status.h"

namespace snapledger::cli {
namespace {

absl::Status NotRunning(const std::string& path) {
  return absl::UnavailableError(
      absl::StrCat("snapledgerd is not running (no socket at ", path,
                   "); use --root DIR to read the ledger directly"));
}

absl::Status PermissionDenied(const std::string& path) {
  return absl::PermissionDeniedError(
      absl::StrCat("permission denied on ", path,
                   " (the admin socket is 0600: run as root)"));
}

}  // namespace

std::string SocketPath(const std::string& address) {
  if (absl::StartsWith(address, "unix://")) return address.substr(7);
  if (absl::StartsWith(address, "unix:")) return address.substr(5);
  return address;
}

absl::Status ProbeSocket(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return NotRunning(path);
    // A directory on the way that this user may not search.
    if (err == EACCES) return PermissionDenied(path);
    return absl::UnavailableError(absl::StrCat("cannot reach snapledgerd at ",
                                               path, ": ", std::strerror(err)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is not a socket (--address names snapledgerd's admin socket)"));
  }
  // connect(2) on a unix socket needs write permission on it.
  if (::access(path.c_str(), W_OK) != 0 && errno == EACCES) {
    return PermissionDenied(path);
  }
  return absl::OkStatus();
}

absl::Status DescribeRpcError(absl::StatusCode code, const std::string& message,
                              const std::string& path, absl::Duration timeout) {
  switch (code) {
    case absl::StatusCode::kUnavailable: {
      if (absl::Status probe = ProbeSocket(path); !probe.ok()) return probe;
      if (absl::StrContains(message, "Permission denied")) {
        return PermissionDenied(path);
      }
      std::string text =
          absl::StrCat("cannot reach snapledgerd at ", path, ": ", message);
      if (absl::StrContains(message, "Connection refused")) {
        // The socket outlived its daemon (killed, or crashed).
        absl::StrAppend(&text,
                        " (a stale socket: is snapledgerd running? use --root "
                        "DIR to read the ledger directly)");
      }
      return absl::UnavailableError(text);
    }
    case absl::StatusCode::kDeadlineExceeded:
      return absl::DeadlineExceededError(
          absl::StrCat("snapledgerd at ", path, " did not answer within ",
                       absl::FormatDuration(timeout), " (see --timeout)"));
    case absl::StatusCode::kUnimplemented:
      return absl::UnimplementedError(absl::StrCat(
          path,
          " does not serve snapledger's admin API (the snapshotter's own "
          "socket? the admin socket is beside it, named *-admin.sock)"));
    default:
      if (message.empty()) {
        return absl::Status(code, absl::StrCat("snapledgerd answered ",
                                               absl::StatusCodeToString(code)));
      }
      return absl::Status(code, message);
  }
}

absl::StatusOr<std::unique_ptr<GrpcAdminApi>> GrpcAdminApi::Connect(
    const std::string& address, absl::Duration timeout) {
  std::string path = SocketPath(address);
  if (path.empty()) return absl::InvalidArgumentError("empty --address");
  if (absl::Status probe = ProbeSocket(path); !probe.ok()) return probe;
  return std::unique_ptr<GrpcAdminApi>(
      new GrpcAdminApi(std::move(path), timeout));
}

GrpcAdminApi::GrpcAdminApi(std::string path, absl::Duration timeout)
    : path_(std::move(path)), timeout_(timeout) {
  grpc::ChannelArguments args;
  // A List of a large ledger is bigger than gRPC's default 4 MiB.
  args.SetMaxReceiveMessageSize(-1);
  stub_ = admin::Admin::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("unix:", path_), grpc::InsecureChannelCredentials(), args));
}

template <typename Response, typename Request, typename Method>
absl::StatusOr<Response> GrpcAdminApi::Call(Method method,
                                            const Request& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoNanoseconds(timeout_));
  Response response;
  const grpc::Status status =
      (stub_.get()->*method)(&context, request, &response);
  if (!status.ok()) {
    return DescribeRpcError(CodeOf(status), status.error_message(), path_,
                            timeout_);
  }
  return response;
}

absl::StatusOr<admin::ListResponse> GrpcAdminApi::List(
    const admin::ListRequest& request) {
  return Call<admin::ListResponse>(&admin::Admin::Stub::List, request);
}
absl::StatusOr<admin::InspectResponse> GrpcAdminApi::Inspect(
    const admin::InspectRequest& request) {
  return Call<admin::InspectResponse>(&admin::Admin::Stub::Inspect, request);
}
absl::StatusOr<admin::PendingResponse> GrpcAdminApi::Pending(
    const admin::PendingRequest& request) {
  return Call<admin::PendingResponse>(&admin::Admin::Stub::Pending, request);
}
absl::StatusOr<admin::OrphansResponse> GrpcAdminApi::Orphans(
    const admin::OrphansRequest& request) {
  return Call<admin::OrphansResponse>(&admin::Admin::Stub::Orphans, request);
}
absl::StatusOr<admin::HistoryResponse> GrpcAdminApi::History(
    const admin::HistoryRequest& request) {
  return Call<admin::HistoryResponse>(&admin::Admin::Stub::History, request);
}
absl::StatusOr<admin::StatsResponse> GrpcAdminApi::Stats(
    const admin::StatsRequest& request) {
  return Call<admin::StatsResponse>(&admin::Admin::Stub::Stats, request);
}
absl::StatusOr<admin::ReconcileResponse> GrpcAdminApi::Reconcile(
    const admin::ReconcileRequest& request) {
  return Call<admin::ReconcileResponse>(&admin::Admin::Stub::Reconcile,
                                        request);
}
absl::StatusOr<admin::RetryResponse> GrpcAdminApi::Retry(
    const admin::RetryRequest& request) {
  return Call<admin::RetryResponse>(&admin::Admin::Stub::Retry, request);
}
absl::StatusOr<admin::CheckResponse> GrpcAdminApi::Check(
    const admin::CheckRequest& request) {
  return Call<admin::CheckResponse>(&admin::Admin::Stub::Check, request);
}
absl::StatusOr<admin::DeadResponse> GrpcAdminApi::Dead(
    const admin::DeadRequest& request) {
  return Call<admin::DeadResponse>(&admin::Admin::Stub::Dead, request);
}
absl::StatusOr<admin::PruneResponse> GrpcAdminApi::Prune(
    const admin::PruneRequest& request) {
  return Call<admin::PruneResponse>(&admin::Admin::Stub::Prune, request);
}

}  // namespace snapledger::cli
