// A Backend decorator that bounds every call in time. containerd holds its
// lock across the whole garbage-collection walk, so a backend that hangs (a
// stuck filesystem, say) must turn into an error, never into a hung RPC.
//
// Each call of a bounded TimedBackend runs on a worker thread of the
// decorator's pool (see below) while the caller waits at most `timeout`. A
// call that does not finish by then is abandoned: the caller gets
// DeadlineExceeded, and the call keeps running in the background until the
// inner backend returns, when its outcome is logged (a warning, once).
//
// An abandoned call still holds its object, so the inner backend never sees
// what backend.h forbids: while it runs, a new call returns Unavailable at
// once, without reaching the inner backend, if it
//   - names the same object id (Create, Commit, Remove, Mounts, DiskUsage,
//     Exists);
//   - is Remove(p) while a Create(_, p) is abandoned, or Create(_, p) while a
//     Remove(p) is abandoned (an object is never removed while another is
//     being created from it);
//   - is Cleanup while a Create, Remove or Cleanup is abandoned, or Create
//     or Remove while a Cleanup is abandoned.
// List is never refused. Calls the caller itself makes concurrently are not
// checked: the caller keeps backend.h's rules for those, as without this
// decorator.
//
// The pool: a call is handed to an idle worker (a condition-variable
// handoff, a few microseconds), or to a newly started one if none is idle.
// A worker whose call returned goes back to the idle set, or ends if
// 8 workers are idle already, so idle threads stay few and busy ones are no
// more than the calls running. An abandoned call keeps its worker busy until
// the inner backend returns, and the worker then goes back to the pool (or
// ends, if the TimedBackend is gone); its bookkeeping entry goes when the
// call returns. Destroying the TimedBackend ends the idle workers; it does
// not wait for busy ones. A zero, negative or infinite timeout turns the
// decorator off: calls are then made directly on the caller's thread.
//
// Ownership: the inner backend is shared. Each running call holds it, and
// the decorator's bookkeeping and pool, alive (an idle worker holds only the
// pool, never the backend), so a TimedBackend may be destroyed while
// abandoned calls run; the last of them to finish then destroys the inner
// backend (on its worker thread) if nobody else holds it.
//
// Thread-safety: as backend.h requires (thread-safe; concurrent calls on
// different ids). WaitIdle() and abandoned() may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plugin/backend/backend.h"
#include "plugin/backend/backend_call.h"
#include "plugin/backend/forwarding_backend.h"

namespace snapledger {
namespace timed_backend_internal {
struct SharedState;  // bookkeeping shared with the running calls
struct WorkerPool;   // the threads that run the calls
}  // namespace timed_backend_internal

// One call, as TimedBackendOptions::on_call hears of it.
struct BackendCallSample {
  // BackendOpName: "create", "commit", "remove", "mounts", "disk_usage",
  // "exists", "is_committed", "list", "cleanup".
  std::string_view op;
  // How long the caller waited (at most the time limit, when bounded).
  absl::Duration took;
  absl::StatusCode code = absl::StatusCode::kOk;
  // The time limit passed: the caller got DeadlineExceeded, and the call
  // goes on in the background.
  bool timed_out = false;
};

struct TimedBackendOptions {
  // The longest a caller waits for one call. Zero, negative or
  // absl::InfiniteDuration(): no bound, calls are made directly.
  absl::Duration timeout = absl::Seconds(60);
  // The most worker threads kept idle between calls (more are started while
  // more calls run at once; those end when their call does). At least 1.
  size_t max_idle_workers = 8;
  // Called after every call (bounded or not; MountsOfNew and ListIds
  // aside), on the caller's thread: the daemon's metrics. Must be cheap.
  // Empty: nothing is timed.
  std::function<void(const BackendCallSample&)> on_call;
};

// The Backend calls (ForwardingBackend) go to the inner backend within the
// time limit; Name, and MountsOfNew (which does no I/O, see
// Backend::MountsOfNew), directly on the caller's thread. Beyond the inner
// backend's errors: DeadlineExceeded when the limit passed (the call
// continues in the background), Unavailable when an abandoned call still
// holds what the call needs (see above), and Unavailable when no worker is
// idle and no thread could be started for the call.
class TimedBackend final : public ForwardingBackend<TimedBackend> {
 public:
  // `inner` must not be null.
  TimedBackend(std::shared_ptr<Backend> inner, TimedBackendOptions options);
  ~TimedBackend() override;

  TimedBackend(const TimedBackend&) = delete;
  TimedBackend& operator=(const TimedBackend&) = delete;

  // Blocks until no abandoned call is running or `timeout` passes; true if
  // idle. For shutdown and tests.
  bool WaitIdle(absl::Duration timeout);

  // Number of calls that outlived their limit and are still running.
  size_t abandoned() const;

 private:
  friend class ForwardingBackend<TimedBackend>;

  // Runs `fn(*inner())` within the time limit and tells on_call; defined in
  // the .cc only.
  template <typename T, typename Fn>
  T Run(const BackendCall& info, Fn fn);
  // Run without on_call; sets *timed_out when the limit passed.
  template <typename T, typename Fn>
  T RunBounded(const BackendCall& info, Fn fn, bool* timed_out);

  const std::function<void(const BackendCallSample&)> on_call_;

  const absl::Duration timeout_;
  const bool bounded_;
  // Name for messages; copied so that running calls need not ask `inner_`.
  const std::string name_;
  // Shared with every running call, which may outlive this object.
  const std::shared_ptr<timed_backend_internal::SharedState> state_;
  // Shared with every worker thread, which may outlive this object.
  const std::shared_ptr<timed_backend_internal::WorkerPool> pool_;
};

extern template class ForwardingBackend<TimedBackend>;

// Wraps `inner` (not null). Shared: a call abandoned after its time limit
// keeps running on its worker thread and keeps the backend alive.
[[nodiscard]] std::unique_ptr<TimedBackend> NewTimedBackend(
    std::shared_ptr<Backend> inner, TimedBackendOptions options);

}  // namespace snapledger
