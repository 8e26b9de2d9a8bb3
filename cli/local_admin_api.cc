// LocalAdminApi: the admin API over <root>/ledger opened read-only, through
// the daemon's own AdminCore (plugin/admin_service.h), so that offline and
// live answers are computed by the same code.
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "cli/admin_api.h"
#include "plugin/admin/admin_service.h"

namespace snapledger::cli {
namespace {

absl::Status NeedsDaemon(const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what,
                   " needs the running daemon: --root only reads the ledger "
                   "(run without --root, against snapledgerd's admin socket)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalAdminApi>> LocalAdminApi::Open(
    const std::string& root) {
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) {
    const int err = errno;
    const std::string message =
        absl::StrCat("cannot use --root ", root, ": ", std::strerror(err));
    return err == EACCES ? absl::PermissionDeniedError(message)
                         : absl::NotFoundError(message);
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--root ", root, " is not a directory"));
  }
  const std::string ledger = absl::StrCat(root, "/ledger");
  // RocksDB names its current manifest in CURRENT: without it there is no
  // database, and a read-only open must not create one.
  const std::string current = absl::StrCat(ledger, "/CURRENT");
  if (::stat(current.c_str(), &st) != 0) {
    const int err = errno;
    if (err == EACCES) {
      return absl::PermissionDeniedError(
          absl::StrCat("permission denied on ", ledger, " (run as root)"));
    }
    return absl::NotFoundError(absl::StrCat(
        root, " has no ledger (no ", ledger,
        "); --root is the directory given to snapledgerd's --root, e.g. "
        "/var/lib/snapledger"));
  }
  auto admin = OfflineAdmin::Open(root);
  if (!admin.ok()) {
    return absl::Status(
        admin.status().code(),
        absl::StrCat("cannot open the ledger at ", ledger,
                     " read-only: ", std::string(admin.status().message())));
  }
  return std::unique_ptr<LocalAdminApi>(new LocalAdminApi(std::move(*admin)));
}

LocalAdminApi::LocalAdminApi(std::unique_ptr<OfflineAdmin> admin)
    : admin_(std::move(admin)) {}

LocalAdminApi::~LocalAdminApi() = default;

absl::StatusOr<admin::ListResponse> LocalAdminApi::List(
    const admin::ListRequest& request) {
  return admin_->core()->List(request);
}
absl::StatusOr<admin::InspectResponse> LocalAdminApi::Inspect(
    const admin::InspectRequest& request) {
  return admin_->core()->Inspect(request);
}
absl::StatusOr<admin::PendingResponse> LocalAdminApi::Pending(
    const admin::PendingRequest& request) {
  return admin_->core()->Pending(request);
}
absl::StatusOr<admin::OrphansResponse> LocalAdminApi::Orphans(
    const admin::OrphansRequest& request) {
  return admin_->core()->Orphans(request);
}
absl::StatusOr<admin::HistoryResponse> LocalAdminApi::History(
    const admin::HistoryRequest& request) {
  return admin_->core()->History(request);
}
absl::StatusOr<admin::StatsResponse> LocalAdminApi::Stats(
    const admin::StatsRequest& request) {
  return admin_->core()->Stats(request);
}
absl::StatusOr<admin::ReconcileResponse> LocalAdminApi::Reconcile(
    const admin::ReconcileRequest& request) {
  if (request.apply()) return NeedsDaemon("reconcile --apply");
  return admin_->core()->Reconcile(request);
}
absl::StatusOr<admin::RetryResponse> LocalAdminApi::Retry(
    const admin::RetryRequest& request) {
  return NeedsDaemon("retry");
}
absl::StatusOr<admin::CheckResponse> LocalAdminApi::Check(
    const admin::CheckRequest& request) {
  return admin_->core()->Check(request);
}
absl::StatusOr<admin::DeadResponse> LocalAdminApi::Dead(
    const admin::DeadRequest& request) {
  return NeedsDaemon("dead");
}
absl::StatusOr<admin::PruneResponse> LocalAdminApi::Prune(
    const admin::PruneRequest&) {
  return NeedsDaemon("prune");
}

}  // namespace snapledger::cli
