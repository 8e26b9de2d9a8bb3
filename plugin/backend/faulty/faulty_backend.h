// A Backend decorator that injects faults, for tests and soaks: from a seeded
// random source and per-call probabilities it makes calls of another backend
// fail as real storage fails, or hang, or run slowly.
//
// Faults, each with its own probability per call:
//   eio     the call fails as an I/O error does (absl::ErrnoToStatus(EIO),
//           what the fs/ helpers answer: Unknown "Input/output error");
//   enospc  a Create or Commit fails as a full disk does (ResourceExhausted
//           "No space left on device");
//   ebusy   a Remove fails as a mounted object does (FailedPrecondition
//           "... (busy)", as ObjectDir::Remove reports it);
//   hang    the call blocks until ReleaseHangs() or `hang_limit` passes, then
//           runs (a stuck filesystem that recovers: with a TimedBackend
//           above, the call is abandoned and finishes in the background);
//   slow    the call sleeps `slow_delay`, then runs.
// A failure (eio, enospc) of a mutation (Create, Commit, Remove, Cleanup)
// comes before the inner call or, with probability `after_inner`, after it:
// the inner call then did its work and the caller is told it failed (a
// Create that made its object but reports an error). ebusy always comes
// before (a busy object is not removed). Queries (Mounts, DiskUsage, Exists,
// List) fail before the call. At most one fault applies to a call; they are
// drawn in the order above. MountsOfNew is never faulted (it does no I/O).
// IsCommitted is faulted as an Exists check is (the same draw sequence);
// CreateWithLabels as a Create, CommitWithLabels as a Commit, ListIds as a
// List (forwarding_backend.h).
//
// Determinism: whether and how call n on object `id` by operation `op` fails
// depends only on (seed, op, id, n) — not on the interleaving of threads —
// so a soak's fault pattern replays for a seed when each object sees the same
// calls.
//
// Thread-safety: as backend.h requires. SetEnabled, ReleaseHangs and stats
// may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "plugin/backend/backend.h"
#include "plugin/backend/backend_call.h"
#include "plugin/backend/forwarding_backend.h"

namespace snapledger {

struct FaultyBackendOptions {
  uint64_t seed = 1;
  // Probabilities per call, each in [0, 1].
  double eio = 0;
  double enospc = 0;
  double ebusy = 0;
  double hang = 0;
  double slow = 0;
  // Share of injected eio/enospc failures of a mutation that come after the
  // inner call did its work.
  double after_inner = 0.5;
  absl::Duration slow_delay = absl::Milliseconds(20);
  // The longest a hung call blocks when nobody calls ReleaseHangs().
  absl::Duration hang_limit = absl::Seconds(30);
};

enum class Fault { kNone, kEio, kEnospc, kEbusy, kHang, kSlow };

struct FaultStats {
  uint64_t calls = 0;
  uint64_t eio = 0;
  uint64_t enospc = 0;
  uint64_t ebusy = 0;
  uint64_t hang = 0;
  uint64_t slow = 0;
  // eio/enospc failures reported after the inner call succeeded.
  uint64_t after_inner = 0;
  uint64_t injected() const { return eio + enospc + ebusy + hang + slow; }
};

class FaultyBackend final : public ForwardingBackend<FaultyBackend> {
 public:
  // `inner` must not be null. Probabilities outside [0, 1] are clamped.
  FaultyBackend(std::shared_ptr<Backend> inner, FaultyBackendOptions options);
  ~FaultyBackend() override;
  FaultyBackend(const FaultyBackend&) = delete;
  FaultyBackend& operator=(const FaultyBackend&) = delete;

  // Turns injection on (the default) or off; calls then go straight through.
  // Turning it off also releases hung calls.
  void SetEnabled(bool enabled);
  // Wakes every hung call now (it then runs), and lets later hangs block
  // again.
  void ReleaseHangs();
  // Calls blocked in a hang right now.
  int hung() const;
  FaultStats stats() const;

  // The calls of this decorator, for Decide() (kIsCommitted is drawn as
  // kExists).
  using Op = BackendOp;
  // The fault for call `n` (0-based) of `op` on object `id` (0 for List and
  // Cleanup) under `options`, and whether a failure comes after the inner
  // call. Pure: what the decorator draws.
  static std::pair<Fault, bool> Decide(const FaultyBackendOptions& options,
                                       Op op, uint64_t id, uint64_t n);

 private:
  friend class ForwardingBackend<FaultyBackend>;

  // Draws the fault of the next call of `op` on `id` and counts it.
  std::pair<Fault, bool> Next(Op op, uint64_t id);
  // Blocks for a hang or sleeps for a slow call; nothing for other faults.
  void Delay(Fault fault);
  // The error an eio, enospc or ebusy fault of `call` reports.
  static absl::Status Failure(Fault fault, const BackendCall& call);
  // Runs `fn` (the inner call, ForwardingBackend) with the fault drawn for
  // `call`.
  template <typename T, typename Fn>
  T Run(const BackendCall& call, Fn fn);

  const FaultyBackendOptions options_;
  std::atomic<bool> enabled_{true};

  mutable absl::Mutex mu_;
  // Calls drawn so far per (op, id).
  std::map<std::pair<Op, uint64_t>, uint64_t> calls_ ABSL_GUARDED_BY(mu_);
  FaultStats stats_ ABSL_GUARDED_BY(mu_);
  // Bumped by ReleaseHangs(); a hung call waits for a change.
  uint64_t release_gen_ ABSL_GUARDED_BY(mu_) = 0;
  int hung_ ABSL_GUARDED_BY(mu_) = 0;
};

extern template class ForwardingBackend<FaultyBackend>;

}  // namespace snapledger
