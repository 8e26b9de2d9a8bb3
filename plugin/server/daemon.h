// snapledgerd as an object: opens the ledger and the backend under the root,
// runs recovery, and serves the Snapshots API on a unix socket. main() wraps
// it with flags and signals; tests start it in-process.
//
// The socket file appears only once the server is ready to serve (after
// recovery), with mode 0660. Start() refuses to take over a socket another
// live process serves on, and replaces a stale one.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plugin/recovery/recovery.h"
#include "plugin/server/config.h"
#include "store/ledger.h"

namespace snapledger {

// The ledger setting naming the backend a root was created with.
inline constexpr char kBackendSetting[] = "backend";

// A root keeps the backend it was created with: OK (recording the backend
// on first use) when `config.backend` is the root's; FailedPrecondition
// naming both, and what to do, when it is not. A root from before the
// backend was recorded, with records or objects, is native.
[[nodiscard]] absl::Status CheckBackendIdentity(Ledger& ledger,
                                                const Config& config);

class Daemon {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      const Config& config);
  ~Daemon();

  // Stops accepting calls, lets in-flight calls finish for up to `grace`
  // (then cancels them), removes the socket and closes the ledger.
  // Idempotent.
  void Shutdown(absl::Duration grace);

  const RecoveryReport& recovery() const;

  // Whether the daemon is serving, for a service manager's watchdog: both
  // sockets complete a client's gRPC handshake within `timeout` each (the
  // serving loops are alive; a socket the ListenerDoctor is restarting
  // fails this until it serves again), and the ledger answers a read. Not
  // a ledger write: a full disk is healed in place (docs/architecture.md,
  // "Storage failures"), a restart would not help. Unavailable naming what
  // failed; FailedPrecondition after Shutdown. Thread-safe, but not to be
  // called concurrently with Shutdown (stop the caller first).
  [[nodiscard]] absl::Status CheckServing(absl::Duration timeout) const;

 private:
  struct State;
  explicit Daemon(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace snapledger
