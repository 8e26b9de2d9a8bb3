// The daemon's footprint on the host: its root directory and its unix
// sockets. Both are made so that nothing else on the host is changed, and so
// that a client never sees a half-ready socket.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace snapledger {

// Makes `root` ready to hold a ledger and snapshots. A root that does not
// exist is created with mode 0700 (its missing parents with 0755). An
// existing directory is used as it is — never chmodded, never chowned — if
// it is empty or already a snapledger root (it holds `ledger/CURRENT`);
// anything else is refused with FailedPrecondition naming the path, so that
// a mistyped --root (say /etc) is never filled with snapledger's
// directories. A root readable or writable by others is only logged.
[[nodiscard]] absl::Status PrepareRoot(const std::string& root);

// The sync server's idle threads: it keeps at least `min` threads waiting
// for calls and ends a thread that finds `max` others waiting. Zero: gRPC's
// defaults (1 and 2).
struct SyncPollers {
  int min = 0;
  int max = 0;
};

// Limits of every server ServeOnUnixSocket builds (issue 15): concurrent
// streams on one connection, bytes of one request's header list, threads
// (sync calls beyond answer ResourceExhausted) and memory gRPC may use.
inline constexpr int kMaxStreamsPerConnection = 128;
inline constexpr int kMaxMetadataBytes = 16 << 10;
inline constexpr int kMaxServerThreads = 256;
inline constexpr size_t kServerMemoryBytes = size_t{256} << 20;

// Serves `service` on unix socket `path` with `umask` in force (so that no
// client ever sees the socket with wider permissions). The socket is bound
// and listening under a temporary name beside `path` and only then renamed
// to `path`: a client that sees the file can connect at once. A stale
// socket at `path` (nobody accepting) is replaced; a live one, or a file that
// is not a socket, is refused with FailedPrecondition.
//
// With `replace_live`, a socket at `path` is replaced whoever serves it:
// how a Listener (plugin/server/listener.h) takes over from a server of its
// own that stopped accepting.
[[nodiscard]] absl::StatusOr<std::unique_ptr<grpc::Server>> ServeOnUnixSocket(
    const std::string& path, mode_t umask, grpc::Service* service,
    SyncPollers pollers = {}, bool replace_live = false);

}  // namespace snapledger
