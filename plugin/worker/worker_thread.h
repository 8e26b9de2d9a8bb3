// WorkerThread: one background thread and what stops and wakes it — the
// lifecycle the daemon's periodic workers share (the pruner, the owner
// tracker, the removal queue's worker, the reconciler, the watchdog).
//
// Start() runs a body on a new thread; Stop() sets the stop flag, wakes the
// body's waits and joins the thread. The body waits only through this
// class — SleepFor/SleepUntil (until Stop() or the time) or WaitFor/
// WaitUntil (also until a Wake() it has not seen) — and returns once one of
// them says it is stopping (returns false). A stopped worker starts again.
//
// Wakes are counted, not consumed: the body reads wakes() together with the
// state the wakes announce (under the owner's lock, if its Wake() calls are
// made under that lock too), acts on what it read, and waits for a count
// other than the one it read. So a wake between the read and the wait is
// never lost, and one already read does not end a wait a second time.
//
// Thread-safety: all methods are thread-safe. Start() and Stop() are
// serialized, Stop() holding its lock across the join: the body must not
// call them. Waits and wakes take only the worker's own mutex, and take it
// last: an owner may call Wake() or wakes() while it holds its own lock.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace snapledger {

class WorkerThread {
 public:
  // `name` says which thread in Start()'s error: "cannot start <name>: ...".
  explicit WorkerThread(std::string name);
  // Stop().
  ~WorkerThread();
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  // Clears the stop flag and runs `body` on a new thread. OK without doing
  // anything while a thread runs (`body` is dropped); Unavailable if the
  // thread cannot start.
  [[nodiscard]] absl::Status Start(std::function<void()> body)
      ABSL_LOCKS_EXCLUDED(lifecycle_mu_, mu_);
  // Sets the stop flag (which a later Start() clears). If a thread runs:
  // calls `before_join` (what else the body may block on — cancelling a
  // call, dropping a callback), then waits for the body to return.
  // Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(lifecycle_mu_, mu_);
  void Stop(absl::FunctionRef<void()> before_join)
      ABSL_LOCKS_EXCLUDED(lifecycle_mu_, mu_);

  // Whether Stop() was called since the last Start().
  bool stopping() const ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until Stop() or `timeout` / `deadline`. True when the time is up,
  // false when stopping.
  bool SleepFor(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  bool SleepUntil(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // How many times Wake() was called, ever (kept across restarts).
  uint64_t wakes() const ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes the body's WaitFor/WaitUntil: the one in progress, or the next.
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until Stop(), wakes() differs from `seen`, or `timeout` /
  // `deadline`. True unless stopping.
  bool WaitFor(absl::Duration timeout, uint64_t seen) ABSL_LOCKS_EXCLUDED(mu_);
  bool WaitUntil(absl::Time deadline, uint64_t seen) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Waits until Stop(), `deadline`, or (with `seen`) wakes() != *seen.
  // Returns !stopping().
  bool Await(absl::Time deadline, const uint64_t* seen)
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::string name_;

  // Serializes Start/Stop; held across the join, so taken before `mu_`.
  absl::Mutex lifecycle_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::thread thread_ ABSL_GUARDED_BY(lifecycle_mu_);

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t wakes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace snapledger
