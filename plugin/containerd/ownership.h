// OwnerTracker: turns the containerd watcher's view (plugin/watcher.h) into
// what snapledger does about owners (docs/owners.md):
//   - ownership in the ledger: each record's owning container and leases,
//     kept current, with an `owner` / `leases` history event per change;
//   - the removal guard: Holder() tells the coordinator whether a snapshot's
//     container still exists, so that its removal is deferred (or refused)
//     instead of deleting a rootfs from under a container; and releases a
//     held removal as soon as the container is gone;
//   - dead containers: a container whose rootfs snapshot is in the ledger and
//     that has had no live task for `dead_after` is dead; each is logged once
//     with the snapshots it pins (its rootfs and every parent it keeps
//     alive) and reported by Dead();
//   - the reaper (opt-in): dead containers whose id matches a glob get their
//     task deleted (forced) and then the container, through containerd; then
//     containerd's garbage collector is run, which removes the snapshots, and
//     the removal queue cascades up the chain. With dry_run it only reports.
//     The first pass after the watcher's first listing is the start-up one:
//     leftovers are reaped first, then `after_first_pass` runs (the daemon's
//     reconciliation) — containers first, snapshots second.
//
// A pass (RunOnce) runs on the tracker's thread after each new view and every
// `tick` (idle clocks keep running). It reads the records through the
// ledger's owned and name indexes, and only when the view or the ledger
// changed since the last pass: an idle tick reads nothing. Nothing here runs
// inside a Snapshots handler except Holder(), which makes at most one read-only
// containerd call per candidate container.
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
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "plugin/containerd/containerd_ops.h"
#include "plugin/containerd/watcher.h"
#include "plugin/core/coordinator.h"
#include "plugin/worker/worker_thread.h"
#include "store/ledger.h"

namespace snapledger {

struct ReaperOptions {
  bool enabled = false;
  // Shell globs (fnmatch) on the container id.
  std::vector<std::string> match;
  bool dry_run = false;
};

// What the reaper does with a dead container. On the wire (admin.proto's
// DeadContainer.reaper) it stays a word: see ReaperWord.
enum class ReaperAction { kNone, kReap, kDryRun };
// "", "reap", "dry-run": the one place the action becomes the proto's string.
std::string_view ReaperWord(ReaperAction action);

// A dead container, as a pass found it. The admin API's DeadContainer is
// made from it on the server side (plugin/server/owner_reports.h).
struct DeadContainer {
  std::string ns;
  std::string id;
  std::string image;
  // What containerd reports of its task (never a live state).
  TaskStatus task = TaskStatus::kNone;
  // Since when it has had no live task.
  absl::Time idle_since = absl::InfinitePast();
  // The ledger key of its rootfs snapshot.
  std::string snapshot;
  // That snapshot and every parent it keeps alive, leaf first (ledger keys).
  std::vector<std::string> pinned;
  // Disk usage of the committed snapshots among them (frozen at commit).
  int64_t pinned_bytes = 0;
  ReaperAction reaper = ReaperAction::kNone;
};

// The tracker's view of the watcher, for the status report.
struct WatcherReport {
  // containerd's address (OwnerTrackerOptions::containerd_address).
  std::string address;
  // Listed and following containerd's events now.
  bool connected = false;
  // End of the last full listing; InfinitePast: never.
  absl::Time last_sync = absl::InfinitePast();
  // The most recent failure (may be from before a reconnection); OK: none.
  absl::Status last_error;
  // Containers using our snapshotter, and leases holding our snapshots.
  uint64_t containers = 0;
  uint64_t leases = 0;
};

// The dead-container report: the latest pass's findings and the watcher's
// status.
struct DeadReport {
  WatcherReport watcher;
  // No live task for this long: dead (OwnerTrackerOptions::dead_after).
  absl::Duration grace = absl::ZeroDuration();
  std::vector<DeadContainer> containers;
  // Containers the reaper deleted since the tracker was made.
  uint64_t reaped_total = 0;
};

struct OwnerTrackerOptions {
  // No live task for this long: dead.
  absl::Duration dead_after = absl::Minutes(10);
  ReaperOptions reaper;
  // containerd's address, for the status report.
  std::string containerd_address;
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  // Longest time between passes when no new view arrives.
  absl::Duration tick = absl::Seconds(2);
  // Runs once, after the first pass that had a full listing (and reaped, if
  // the reaper is on); the daemon reconciles there. On the tracker's thread.
  std::function<void()> after_first_pass;
  // Called after the reaper deleted containers, to have the view catch up.
  std::function<void()> request_relist;
};

// The namespace and containerd-level key of a record: its own fields, or
// parsed from its client key for records written before they existed.
std::optional<ProxyKey> RecordIdentity(const Record& record);

class OwnerTracker {
 public:
  // `ledger` and `coordinator` are required, `ops` may be null (then
  // Holder() trusts the view alone and the reaper cannot act). None is owned;
  // all must outlive the tracker.
  OwnerTracker(Ledger* ledger, Coordinator* coordinator, ContainerdOps* ops,
               OwnerTrackerOptions options);
  // Stops.
  ~OwnerTracker();
  OwnerTracker(const OwnerTracker&) = delete;
  OwnerTracker& operator=(const OwnerTracker&) = delete;

  // A new view from the watcher (its on_change). Returns at once.
  void OnView(std::shared_ptr<const Ownership> view);
  // Starts / stops the tracker's thread (Stop waits for a pass in progress).
  // Start is a no-op while running; Unavailable if the thread cannot start.
  [[nodiscard]] absl::Status Start();
  void Stop();
  // One pass now, on the caller's thread (tests; the thread calls it too).
  void RunOnce();

  // The coordinator's holder (CoordinatorOptions::holder): "<ns>/<id>" of
  // the container that still uses `record` as its rootfs, or nullopt.
  // Containers the view lists are confirmed with containerd (the view lags
  // a deletion by an event); when the view is incomplete (no listing yet,
  // disconnected) the owner the ledger remembers counts too; and when
  // containerd cannot answer, a candidate is assumed to exist — a removal
  // then waits rather than deleting a rootfs that may be in use.
  std::optional<std::string> Holder(const Record& record);

  // The latest pass's dead containers (without the watcher's status).
  std::vector<DeadContainer> DeadContainers() const;
  DeadReport Dead() const;
  WatcherReport Status() const;
  uint64_t reaped_total() const;

 private:
  // The tracker's thread: a pass per new view (or tick) until Stop().
  void Loop();
  std::shared_ptr<const Ownership> View() const;

  // The ledger records with a tracked owner, indexed for one pass. The maps
  // point into `records`; not copyable, so that they cannot dangle.
  struct TrackedRecords {
    TrackedRecords() = default;
    TrackedRecords(const TrackedRecords&) = delete;
    TrackedRecords& operator=(const TrackedRecords&) = delete;

    std::vector<Record> records;
    std::map<uint64_t, const Record*> by_id;
    // (ns, containerd key) -> the record a container with that snapshot key
    // refers to: the visible one if there is one (a removed snapshot's key
    // can be used again at once), else the queued removal.
    std::map<Ownership::NsName, const Record*> by_name;
  };

  // The jobs of a pass (RunOnce), in the order it runs them. The records
  // are read through the ledger's indexes (owned, by name), never a scan.
  [[nodiscard]] absl::Status ReadTrackedRecords(const Ownership& view,
                                                TrackedRecords* out) const;
  // Connected view only: the view's owners and leases into the ledger.
  void RecordOwners(const Ownership& view, const TrackedRecords& tracked);
  // Connected view only: releases removals held back for containers that
  // are gone (or were created again after the removal was asked for).
  void ReleaseHeldRemovals(const Ownership& view,
                           const std::vector<Record>& records);
  // Containers with no live task for dead_after that pin a tracked record,
  // with the chain of snapshots each pins.
  std::vector<DeadContainer> FindDead(const Ownership& view,
                                      const TrackedRecords& tracked,
                                      absl::Time now) const;
  // The parent of `r`: from `tracked`, else from `read` or the ledger (then
  // kept in `read`); nullptr if none is tracked.
  const Record* ParentOf(const Record& r, const TrackedRecords& tracked,
                         std::map<uint64_t, Record>* read) const;
  // Logs containers that became dead, and those that no longer are.
  void LogDeadChanges(const Ownership& view,
                      const std::vector<DeadContainer>& dead, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pass_mu_);
  // The reaper's part of a pass: deletes the dead containers it is to reap
  // (taking them out of `dead`); returns the keys (ns, id) it deleted.
  std::vector<Ownership::NsName> Reap(const Ownership& view,
                                      std::vector<DeadContainer>* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pass_mu_);
  // Deletes one dead container unless it is backing off, runs again, or
  // containerd refuses; returns whether it was deleted.
  bool ReapOne(const Ownership& view, const DeadContainer& d, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pass_mu_);
  // Makes the pass's findings visible (DeadContainers, reaped_total) and
  // runs after_first_pass after the first pass with a full listing.
  void Publish(const Ownership& view, std::vector<DeadContainer> dead,
               size_t reaped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pass_mu_);
  ReaperAction ReaperActionFor(const std::string& id) const;
  bool Matches(const std::string& id) const;

  Ledger* const ledger_;
  Coordinator* const coordinator_;
  ContainerdOps* const ops_;
  const OwnerTrackerOptions options_;

  mutable absl::Mutex mu_;
  // Each new view wakes the thread (worker_.Wake(), under mu_).
  std::shared_ptr<const Ownership> view_ ABSL_GUARDED_BY(mu_);
  std::vector<DeadContainer> dead_ ABSL_GUARDED_BY(mu_);
  uint64_t reaped_total_ ABSL_GUARDED_BY(mu_) = 0;

  // Passes: one at a time, at most one per kMinPassInterval on the thread.
  static constexpr absl::Duration kMinPassInterval = absl::Milliseconds(250);
  absl::Mutex pass_mu_;
  struct ReapFailure {
    std::string last_error;
    absl::Duration delay = absl::ZeroDuration();
    absl::Time next_try = absl::InfinitePast();
  };
  // Containers the reaper failed to delete: when to try again.
  std::map<Ownership::NsName, ReapFailure> reap_failures_
      ABSL_GUARDED_BY(pass_mu_);
  // Dead containers already logged, and dry-run decisions already logged.
  std::map<Ownership::NsName, absl::Time> logged_dead_
      ABSL_GUARDED_BY(pass_mu_);
  bool first_pass_done_ ABSL_GUARDED_BY(pass_mu_) = false;
  // The last pass's records, with the view and ledger sequence they were
  // read at: a pass reads again only when either changed.
  std::unique_ptr<TrackedRecords> tracked_ ABSL_GUARDED_BY(pass_mu_);
  std::shared_ptr<const Ownership> tracked_view_ ABSL_GUARDED_BY(pass_mu_);
  uint64_t tracked_seq_ ABSL_GUARDED_BY(pass_mu_) = 0;

  WorkerThread worker_{"the owner tracker's thread"};
};

}  // namespace snapledger
