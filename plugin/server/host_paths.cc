#include "plugin/server/host_paths.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "grpcpp/resource_quota.h"
#include "plugin/transport/transport.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

// The longest socket path served: sun_path holds 107 bytes and a NUL, and
// the temporary name is kTempSuffix longer.
constexpr char kTempSuffix[] = ".new";
constexpr size_t kMaxSocketPath =
    sizeof(sockaddr_un{}.sun_path) - 1 - (sizeof(kTempSuffix) - 1);

absl::Status Refuse(const std::string& what) {
  return absl::FailedPreconditionError(what);
}

}  // namespace

absl::Status PrepareRoot(const std::string& root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(root, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Refuse(absl::StrCat("cannot inspect root directory ", root, ": ",
                               ec.message()));
  }
  if (!fs::exists(st)) {
    const fs::path parent = fs::path(root).parent_path();
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (!ec && ::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) {
      ec = std::error_code(errno, std::generic_category());
    }
    if (ec) {
      return Refuse(absl::StrCat("cannot create root directory ", root, ": ",
                                 ec.message()));
    }
    // mkdir's mode is cut by the umask; a new root is 0700 whatever it is.
    if (::chmod(root.c_str(), 0700) != 0) {
      return Refuse(absl::StrCat("cannot set mode 0700 on new root directory ",
                                 root, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  // An existing path: a directory (or a symlink to one) used as it is.
  if (!fs::is_directory(root, ec)) {
    return Refuse(
        absl::StrCat("root ", root, " exists and is not a directory"));
  }
  const bool is_root = fs::exists(fs::path(root) / "ledger" / "CURRENT", ec);
  if (!is_root) {
    const bool empty = fs::is_empty(root, ec);
    if (ec) {
      return Refuse(absl::StrCat("cannot read root directory ", root, ": ",
                                 ec.message()));
    }
    if (!empty) {
      return Refuse(absl::StrCat(
          "root ", root,
          " is not empty and holds no snapledger ledger (no ledger/CURRENT): "
          "refusing to put snapshots in it; give a new or empty directory "
          "(--root, or root in the config file)"));
    }
  }
  struct stat mode;
  if (::stat(root.c_str(), &mode) == 0 && (mode.st_mode & 0077) != 0) {
    spdlog::warn(
        "root {} has mode {:04o}: other users can reach snapshot data; "
        "snapledgerd leaves an existing directory as it is (chmod 0700 it "
        "yourself if that is not intended)",
        root, mode.st_mode & 07777);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<grpc::Server>> ServeOnUnixSocket(
    const std::string& path, mode_t umask, grpc::Service* service,
    SyncPollers pollers, bool replace_live) {
  if (path.size() > kMaxSocketPath) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path ", path, " is ", path.size(),
                     " bytes long; at most ", kMaxSocketPath,
                     " are supported (unix socket paths hold 107 bytes, and ",
                     "the socket is first bound under a name ",
                     sizeof(kTempSuffix) - 1, " bytes longer)"));
  }
  // Through the transport seam (plugin/transport): it makes the socket's
  // directory, refuses a live or foreign endpoint and replaces a stale one.
  absl::StatusOr<Address> final_address = ParseAddress(path);
  if (!final_address.ok()) return final_address.status();
  if (!replace_live) {
    if (absl::Status s =
            TransportFor(*final_address).PrepareListen(*final_address);
        !s.ok()) {
      return s;
    }
  }
  // A socket file exists from bind(), but connections are refused until
  // listen(): bind under a temporary name, rename once listening.
  const std::string temp = absl::StrCat(path, kTempSuffix);
  absl::StatusOr<Address> temp_address = ParseAddress(temp);
  if (!temp_address.ok()) return temp_address.status();

  grpc::ServerBuilder builder;
  int bound = 0;
  if (absl::Status s = AddListener(*temp_address, &builder, &bound); !s.ok()) {
    return s;
  }
  builder.RegisterService(service);
  // Bounds under hostile clients (issue 15). gRPC 1.51 offers no cap on
  // connections per listener; it bounds streams per connection, header
  // lists, and the threads and memory of a server (ResourceQuota; a sync
  // call beyond the threads answers ResourceExhausted).
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             kMaxStreamsPerConnection);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, kMaxMetadataBytes);
  grpc::ResourceQuota quota(absl::StrCat("snapledger:", path));
  quota.SetMaxThreads(kMaxServerThreads);
  quota.Resize(kServerMemoryBytes);
  builder.SetResourceQuota(quota);
  if (pollers.min > 0) {
    builder.SetSyncServerOption(
        grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, pollers.min);
    builder.SetSyncServerOption(
        grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, pollers.max);
  }
  const mode_t old_umask = ::umask(umask);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old_umask);
  if (server == nullptr || bound == 0) {
    ::unlink(temp.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot serve on unix socket ", path));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    server->Shutdown();
    ::unlink(temp.c_str());
    return absl::UnavailableError(absl::StrCat(
        "cannot move socket ", temp, " to ", path, ": ", std::strerror(err)));
  }
  return server;
}

}  // namespace snapledger
