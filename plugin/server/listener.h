// A socket that keeps accepting: each of snapledgerd's gRPC servers (the
// Snapshots API, the admin API) is a Listener, and one ListenerDoctor
// watches them all.
//
// Why: gRPC 1.51 (Debian 12's) stops accepting on a listening socket for
// good once accept4() fails with anything but EAGAIN/ECONNABORTED/EINTR —
// EMFILE when the process is out of descriptors, say. It logs "Failed
// accept4" and never polls that socket again, while the socket file stays
// and the kernel keeps queueing connections nobody will take. The doctor
// hears that log line (InstallGrpcLogRouting), and also probes every
// listener now and then; a listener that does not complete a client's
// HTTP/2 handshake is restarted: a new server listening under a temporary
// name, renamed over the socket path, while the old one finishes its
// in-flight calls. Until descriptors are free again the restart fails and
// is retried with backoff. The doctor also keeps gRPC's health service
// honest: NOT_SERVING while a listener does not accept or the daemon's own
// health check (the ledger refusing writes) fails.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/impl/codegen/service_type.h"
#include "grpcpp/server.h"
#include "plugin/server/host_paths.h"

namespace snapledger {

// Routes gRPC's own log lines to spdlog (instead of stderr in gRPC's
// format), and tells the ListenerDoctors when gRPC reports a failed accept.
// Idempotent; call before the first server starts.
void InstallGrpcLogRouting();

// How many failed accepts gRPC has reported in this process.
uint64_t GrpcAcceptFailures();

class Listener {
 public:
  // A new instance of the service a (re)started server serves.
  using MakeService = std::function<std::unique_ptr<grpc::Service>()>;

  // Serves a service from `make` on unix socket `path` (see
  // ServeOnUnixSocket for `umask` and `pollers`). `name` is for logs.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Listener>> Start(
      std::string name, std::string path, mode_t umask, SyncPollers pollers,
      MakeService make);
  ~Listener();

  // Whether a client completes gRPC's handshake on the socket within
  // `timeout`.
  bool Accepts(absl::Duration timeout) const;
  // A new server on a new listening socket, renamed over the path; the old
  // server is given `grace` to finish its calls. On failure (no
  // descriptors, say) the old server stays as it was.
  [[nodiscard]] absl::Status Restart(absl::Duration grace);
  // Stops accepting, gives in-flight calls `grace`, removes the socket.
  // Idempotent.
  void Shutdown(absl::Duration grace);

  // What the gRPC health service on this socket answers (SERVING or
  // NOT_SERVING, for every service); kept across restarts.
  void SetServing(bool serving);

  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }
  int restarts() const;

 private:
  Listener(std::string name, std::string path, mode_t umask,
           SyncPollers pollers, MakeService make);

  const std::string name_;
  const std::string path_;
  const mode_t umask_;
  const SyncPollers pollers_;
  const MakeService make_;
  mutable absl::Mutex mu_;
  std::unique_ptr<grpc::Service> service_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<grpc::Server> server_ ABSL_GUARDED_BY(mu_);
  int restarts_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool serving_ ABSL_GUARDED_BY(mu_) = true;
};

struct ListenerDoctorOptions {
  // How often every listener is probed without a reason.
  absl::Duration probe_interval = absl::Seconds(30);
  // How long a probe waits for the handshake.
  absl::Duration probe_timeout = absl::Seconds(5);
  // Bounds of the backoff between failed restarts.
  absl::Duration retry_min = absl::Milliseconds(250);
  absl::Duration retry_max = absl::Seconds(10);
  // What a restarted listener's old server gets to finish its calls.
  absl::Duration grace = absl::Seconds(10);
  // Besides accepting, what the daemon needs to serve (the ledger takes
  // writes, say): OK or the reason it cannot. Asked every health_interval;
  // the health service of every listener answers NOT_SERVING while it, or
  // the last probe of any listener, fails. May be empty.
  std::function<absl::Status()> health;
  absl::Duration health_interval = absl::Seconds(2);
  // How often glibc is asked to give freed heap back to the system
  // (malloc_trim): memory a burst of calls (or a flood) took is returned
  // once it is over. Zero: never.
  absl::Duration trim_interval = absl::Seconds(10);
};

class ListenerDoctor {
 public:
  // The listeners are not owned and must outlive the doctor.
  ListenerDoctor(std::vector<Listener*> listeners,
                 ListenerDoctorOptions options = {});
  ~ListenerDoctor();  // Stop()
  void Start();
  void Stop();

 private:
  void Run();
  // Probes every listener, restarts those that do not accept. Returns
  // whether every listener accepts now.
  bool CheckAll();
  // Sets every listener's health status from the last probe and
  // options_.health, logging a change.
  void UpdateServing(bool accepting);

  const std::vector<Listener*> listeners_;
  const ListenerDoctorOptions options_;
  // Under the mutex that also counts gRPC's failed accepts (listener.cc):
  // the doctor waits for either.
  bool stop_ = false;
  std::thread thread_;
  // The doctor thread's own: the status last set, and why.
  bool serving_ = true;
  std::string not_serving_reason_;
  absl::Time next_trim_ = absl::InfinitePast();
};

}  // namespace snapledger
