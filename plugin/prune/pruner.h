// Pruner: the ledger-driven prune (docs/prune.md). Every `interval` (when
// `[prune] enabled`) and on demand (the admin API's Prune, `snapledger
// prune`), a pass:
//   1. reads containerd's view (the watcher's; a pass needs a connected one)
//      and the disk (statvfs of the root; with max_used, the bytes the
//      ledger's snapshots hold);
//   2. gathers the candidates — containers using our snapshotter whose task
//      is not live, and leases holding our snapshots — each with the bytes
//      the ledger says deleting it would free; with `[prune] images`, the
//      image records (every namespace) those globs match, each marked in
//      use when a container of its namespace (fresh Containers/List) names
//      it;
//   3. selects (prune_policy.h: TTL first, then pressure, oldest-unused
//      first, dead containers before expired leases);
//   4. acts, one candidate at a time, only through containerd's API: a
//      container's task is read again (a live task: left alone), deleted
//      forced, then the container; a lease is deleted; an image's users are
//      listed again (one found: left alone) and its record deleted (not
//      synchronously); then containerd's
//      garbage collector runs, which removes through our Snapshots service
//      what nothing references any more (and the removal queue cascades up
//      the chain, leaf first). Pressure actions stop as soon as the target
//      holds (the disk is measured again after each);
//   5. notes each action in the ledger's history (`pruned`, on the
//      snapshot the container or lease held), with the bytes freed: the
//      usage of the snapshots it held that left the ledger (for an image:
//      the namespace's committed snapshots that left it during the action).
// Nothing is ever removed from the backend or the ledger directly: a
// snapshot a container or a live lease still references is never garbage
// to containerd, and the coordinator's holder guard refuses a rootfs whose
// container exists.
//
// Thread-safety: all public methods are thread-safe; passes never overlap.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "plugin/containerd/containerd_ops.h"
#include "plugin/containerd/watcher.h"
#include "plugin/core/coordinator.h"
#include "plugin/prune/prune_policy.h"
#include "plugin/worker/worker_thread.h"
#include "snapledger/admin/v1/admin.pb.h"
#include "store/ledger.h"

namespace snapledger {

// One pass's overrides of the configured policy (the CLI's flags).
struct PruneRequest {
  std::optional<bool> dry_run;
  std::optional<absl::Duration> keep_duration;
  std::optional<FreeTarget> min_free;
};

struct PruneActionReport {
  PruneChoice choice;
  bool done = false;
  // Why it was not done; empty when done or in a dry run.
  std::string error;
  int64_t freed_bytes = 0;
  std::vector<std::string> freed_snapshots;
};

struct PruneReport {
  bool dry_run = false;
  std::string policy;
  DiskFigures before;
  DiskFigures after;
  int64_t bytes_needed = 0;
  bool target_met = true;
  std::vector<PruneActionReport> actions;
  // Done actions' freed bytes, or the dry run's estimates.
  int64_t bytes_freed = 0;
};

// Counters since the pruner was made, for metrics (no Prometheus here).
struct PruneStats {
  uint64_t passes = 0;
  uint64_t failed_passes = 0;
  // Done actions by kind ("container", "lease", "image"), and failed ones.
  std::map<std::string, uint64_t> actions;
  uint64_t failed_actions = 0;
  int64_t bytes_freed = 0;
  absl::Time last_pass = absl::InfinitePast();
};

struct PrunerOptions {
  PrunePolicy policy;
  // The filesystem the pressure policies measure (the root).
  std::string root;
  // containerd's view (the watcher's Current()). Required.
  std::function<std::shared_ptr<const Ownership>()> view;
  // The root's filesystem: total and free bytes (used_bytes is filled by
  // the pruner). Default: statvfs(root).
  std::function<absl::StatusOr<DiskFigures>()> disk;
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  // The usage of backend object `id` (Backend::DiskUsage): for an active
  // snapshot whose removal is queued (the coordinator measures only
  // visible ones). Empty: such snapshots count 0 bytes.
  std::function<absl::StatusOr<Usage>(uint64_t id)> object_usage;
  // Called after a pass that deleted something, to have the view catch up.
  std::function<void()> request_relist;
  // Called for each action done (not for a dry run): its kind
  // (PruneKindName) and the bytes it freed. How the metrics learn of it.
  std::function<void(std::string_view kind, int64_t bytes_freed)> on_action;
};

class Pruner {
 public:
  // None is owned; all must outlive the pruner.
  Pruner(Ledger* ledger, Coordinator* coordinator, ContainerdOps* ops,
         PrunerOptions options);
  ~Pruner();
  Pruner(const Pruner&) = delete;
  Pruner& operator=(const Pruner&) = delete;

  // Starts the thread that runs a pass every interval (no-op unless the
  // policy is enabled, or while running). Unavailable if it cannot start.
  [[nodiscard]] absl::Status Start();
  void Stop();

  // One pass now. FailedPrecondition when containerd's view is not
  // connected (nothing is judged on a stale view); InvalidArgument for a
  // bad override.
  [[nodiscard]] absl::StatusOr<PruneReport> Run(const PruneRequest& request)
      ABSL_LOCKS_EXCLUDED(pass_mu_, mu_);

  PruneStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);
  const PrunePolicy& policy() const { return options_.policy; }

 private:
  // A snapshot an action may free, captured before acting.
  struct Held {
    Record record;
    int64_t bytes = 0;
  };
  void Loop();
  [[nodiscard]] absl::StatusOr<DiskFigures> MeasureDisk(
      const PrunePolicy& policy) const;
  // Bytes held by the visible snapshots (committed: frozen usage; active:
  // measured).
  [[nodiscard]] absl::StatusOr<int64_t> UsedBytes() const;
  int64_t UsageOf(const Record& record) const;
  // The visible record of containerd key `key` in `ns`; else, with a
  // `holder` ("<ns>/<id>"), the queued removal held for that container.
  std::optional<Record> Visible(const std::string& ns, const std::string& key,
                                const std::string& holder) const;
  // The snapshots the candidate holds: a container's rootfs, a lease's
  // snapshots, each with its ancestors (which go only when nothing else
  // holds them).
  std::vector<Held> HeldBy(const Ownership& view, PruneKind kind,
                           const std::string& ns, const std::string& id) const;
  // The namespace's visible committed snapshots: what an image's deletion
  // may free (containerd alone knows which are the image's layers).
  std::vector<Held> CommittedIn(const std::string& ns) const;
  std::vector<PruneCandidate> Candidates(const Ownership& view) const;
  // `[prune] images`: the image records the globs match, in every
  // namespace; failures are logged and leave images out of the pass.
  void ImageCandidates(std::vector<PruneCandidate>* out) const;
  // Deletes one candidate through containerd and measures what it freed.
  void Act(const Ownership& view, const std::string& policy,
           PruneActionReport* action) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pass_mu_);

  Ledger* const ledger_;
  Coordinator* const coordinator_;
  ContainerdOps* const ops_;
  const PrunerOptions options_;

  absl::Mutex pass_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  mutable absl::Mutex mu_;
  PruneStats stats_ ABSL_GUARDED_BY(mu_);

  WorkerThread worker_{"the prune's thread"};
};

// The admin API's answer (admin.proto's PruneResponse).
::snapledger::admin::v1::PruneResponse PruneResponseProto(
    const PruneReport& report);

}  // namespace snapledger
