#include "plugin/transport/unix_transport.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

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

class Unix final : public Transport {
 public:
  std::string_view Scheme() const override { return "unix"; }

  absl::Status PrepareListen(const Address& address) const override {
    const std::string& path = address.path;
    std::error_code ec;
    std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
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

  std::string GrpcTarget(const Address& address) const override {
    return absl::StrCat("unix:", address.path);
  }
};

}  // namespace

const Transport& UnixTransport() {
  static const Unix kUnix;
  return kUnix;
}

}  // namespace snapledger
