// Watcher: a client of containerd's own API that knows who holds every
// snapshot of our snapshotter — the containers whose rootfs it is and the
// leases that name it — and whether each container still has a live task.
// It is the basis of owner reporting and of dead-container detection.
//
// How it learns (all on the watcher's own threads; no caller ever waits on
// the network):
//   - each session connects to containerd's socket, subscribes to the event
//     stream (events.v1.Events/Subscribe), then lists everything: namespaces,
//     and in each namespace containers, tasks, leases and their resources;
//   - between listings it follows events: /containers/*, /tasks/*,
//     /namespaces/*, and /snapshot/* as a hint to re-list that namespace's
//     leases (containerd 1.6 publishes no lease events);
//   - leases are re-listed every `lease_relist_interval`, everything every
//     `relist_interval`, and after every reconnection (containerd persists
//     no events, so whatever happened while disconnected is only seen by
//     listing). A session ends on any stream or RPC failure; the next starts
//     after an exponential backoff with jitter.
// The view is eventually consistent: an event published between the
// subscription being sent and containerd registering it can be missed until
// the next periodic listing.
//
// Only containers whose snapshotter is `options.snapshotter` are kept, and
// only leases holding at least one snapshot of type
// "snapshots/<options.snapshotter>". Deleted containers, leases and
// namespaces are dropped: the view is bounded by what containerd holds.
//
// Errors: none is returned or thrown; a failure ends the session and shows
// in the view (`connected` false, `last_error`) until a listing succeeds.
//
// Thread-safety: all public methods are thread-safe. `on_change` runs on the
// watcher's thread, never under a lock, last from within Stop() (the
// disconnected view) — so also during the watcher's destruction; it must not
// call Start(), Stop() or destroy the watcher (Stop joins that thread).
// Ownership: Current() returns an immutable snapshot shared with the
// watcher; callers may keep it as long as they like.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "containerd/services/events/v1/events.pb.h"
#include "plugin/record/keys.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace snapledger {

// A container's task as containerd reports it (containerd.v1.types.Status),
// plus kNone: the container has no task.
enum class TaskStatus {
  kNone,
  kUnknown,
  kCreated,
  kRunning,
  kStopped,
  kPaused,
  kPausing,
};
std::string_view TaskStatusName(TaskStatus status);
// The TaskStatus of a containerd.v1.types.Status value (a Process's
// `status`); values this build does not know are kUnknown. Never kNone.
TaskStatus TaskStatusFromProto(int status);

// Whether the task may have processes: RUNNING, PAUSED, PAUSING, and
// UNKNOWN (containerd could not ask the shim; a dead shim is reported as an
// exit). The dead-container clock only runs on positive evidence of no
// process: no task, CREATED (never started) or STOPPED.
bool TaskIsLive(TaskStatus status);

struct ContainerInfo {
  std::string ns;
  std::string id;
  // containerd's key of the container's active snapshot (not the backend
  // key; see ParseProxyKey).
  std::string snapshot_key;
  std::string image;
  std::map<std::string, std::string> labels;
  absl::Time created_at = absl::InfinitePast();
  TaskStatus task = TaskStatus::kNone;
  uint32_t pid = 0;
  // InfiniteFuture while the task is live; otherwise the earliest time the
  // watcher has evidence the container has been without a live task: the
  // task's exit time when containerd reports it, else when the watcher
  // first saw it idle (a restart of snapledgerd starts the clock again).
  absl::Time idle_since = absl::InfiniteFuture();

  bool operator==(const ContainerInfo&) const = default;
};

struct LeaseInfo {
  std::string ns;
  std::string id;
  absl::Time created_at = absl::InfinitePast();
  std::map<std::string, std::string> labels;
  // containerd-level keys of our snapshots the lease holds, sorted.
  std::vector<std::string> snapshot_keys;

  bool operator==(const LeaseInfo&) const = default;
};

// Who holds one snapshot. Ids are sorted.
struct SnapshotHolders {
  std::vector<std::string> containers;
  std::vector<std::string> leases;
};

// One consistent view. Keys are (namespace, id) for containers and leases
// and (namespace, containerd snapshot key) for snapshots.
struct Ownership {
  using NsName = std::pair<std::string, std::string>;

  std::map<NsName, ContainerInfo> containers;
  std::map<NsName, LeaseInfo> leases;
  // Derived from the two above: every snapshot some container or lease
  // holds.
  std::map<NsName, SnapshotHolders> snapshots;

  // True between a successful full listing and the end of that session.
  // While false the maps hold the last known state, possibly stale.
  bool connected = false;
  // The end of the last successful full listing; InfinitePast if none.
  absl::Time last_sync = absl::InfinitePast();
  // The most recent failure (kept after recovery; `connected` says whether
  // it still applies) and when it happened.
  absl::Status last_error;
  absl::Time last_error_at = absl::InfinitePast();
  // Bumped whenever anything above but `last_sync` changes.
  uint64_t version = 0;

  // nullptr when nothing known holds the snapshot.
  const SnapshotHolders* Holders(std::string_view ns,
                                 std::string_view key) const;
  // The same for a key as the snapshotter receives it ("ns/seq/key").
  const SnapshotHolders* HoldersOfBackendKey(
      std::string_view backend_key) const;
  const ContainerInfo* Container(std::string_view ns,
                                 std::string_view id) const;
};

struct WatcherOptions {
  // containerd's socket: a path, or a gRPC target starting with "unix:".
  std::string address = "/run/containerd/containerd.sock";
  // Our name in containerd's config ([proxy_plugins.<name>]).
  std::string snapshotter = "snapledger";
  absl::Duration relist_interval = absl::Minutes(5);
  absl::Duration lease_relist_interval = absl::Seconds(30);
  // Delay between a /snapshot/* event and re-listing that namespace's
  // leases; events closer together share one listing.
  absl::Duration lease_hint_delay = absl::Seconds(1);
  // Deadline of each unary call (and of each listing stream).
  absl::Duration rpc_timeout = absl::Seconds(30);
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  // Called with each new version of the view (see the thread-safety note).
  std::function<void(std::shared_ptr<const Ownership>)> on_change;
};

class Watcher {
 public:
  explicit Watcher(WatcherOptions options);
  // Stops (see Stop).
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // Starts the watcher's thread; returns at once. No-op while running; after
  // Stop() it starts again, keeping the last view. Unavailable if the thread
  // cannot start (the watcher is then stopped).
  [[nodiscard]] absl::Status Start() ABSL_LOCKS_EXCLUDED(lifecycle_mu_, mu_);
  // Cancels the event stream and any call in flight, joins the watcher's
  // threads and publishes the view as disconnected. Prompt: it never waits
  // for a deadline. No-op when not running.
  void Stop() ABSL_LOCKS_EXCLUDED(lifecycle_mu_, mu_);

  // The latest view; never null (before the first listing: empty, not
  // connected, version 0).
  std::shared_ptr<const Ownership> Current() const;

  // Asks for a full listing as soon as the watcher is connected; returns at
  // once.
  void RequestRelist();

  // The Events/Subscribe filters the watcher sends (containerd's filter
  // language; ORed).
  static std::vector<std::string> SubscriptionFilters();

 private:
  using Envelope = ::containerd::services::events::v1::Envelope;
  struct Stubs;

  // Events beyond this many, unprocessed, are dropped for a full listing: a
  // stalled worker must not grow memory without bound.
  static constexpr size_t kMaxQueuedEvents = 10000;

  // Worker thread: sessions separated by backoff, until stopping.
  void Run();
  // One connection: subscribe, list, follow events. Returns why it ended;
  // sets `*synced` once the first full listing succeeded.
  [[nodiscard]] absl::Status RunSession(bool* synced);
  // RunSession's part after subscribing.
  [[nodiscard]] absl::Status FollowSession(Stubs& stubs, bool* synced);
  // Called by a session's event-stream reader thread.
  void PushEvent(Envelope env);
  void MarkStreamEnded();

  [[nodiscard]] absl::Status FullSync(Stubs& stubs);
  [[nodiscard]] absl::Status RelistLeases(Stubs& stubs, const std::string& ns);
  [[nodiscard]] absl::Status ApplyEvent(Stubs& stubs, const Envelope& env);
  [[nodiscard]] absl::Status RefreshContainer(Stubs& stubs,
                                              const std::string& ns,
                                              const std::string& id,
                                              absl::Time seen);
  // Sets a known container's task state, keeping idle_since consistent.
  void SetTask(const std::string& ns, const std::string& id, TaskStatus status,
               uint32_t pid, absl::Time idle_evidence);
  void DropNamespace(const std::string& ns);
  void NoteError(const absl::Status& status);
  // Publishes the working state as a new view (version bumped and on_change
  // called only when it differs from the current one).
  void Publish();

  // Runs one call with the namespace header and deadline, cancellable by
  // Stop(). `call` receives the prepared context.
  [[nodiscard]] absl::Status Call(
      const std::string& ns,
      const std::function<absl::Status(grpc::ClientContext*)>& call);

  bool WakeWorker() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Stopping() const;

  const WatcherOptions options_;
  const std::string lease_resource_type_;  // "snapshots/<snapshotter>"

  // Serializes Start/Stop; held across the join, so taken before `mu_`.
  absl::Mutex lifecycle_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::thread worker_ ABSL_GUARDED_BY(lifecycle_mu_);

  mutable absl::Mutex mu_;
  std::shared_ptr<const Ownership> current_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool relist_requested_ ABSL_GUARDED_BY(mu_) = false;
  // Events read from the stream, waiting for the worker. Bounded: past
  // kMaxQueuedEvents they are dropped and a full listing replaces them.
  std::deque<Envelope> events_ ABSL_GUARDED_BY(mu_);
  bool events_overflowed_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_ended_ ABSL_GUARDED_BY(mu_) = false;
  // Not owned: the contexts of the session's event stream and of the call
  // in flight, so that Stop() can cancel them.
  grpc::ClientContext* stream_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ClientContext* call_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;

  // Working state: touched only by the worker thread.
  std::map<Ownership::NsName, ContainerInfo> containers_;
  std::map<Ownership::NsName, LeaseInfo> leases_;
  std::set<std::string> namespaces_;
  // Namespaces whose leases are to be re-listed, and when.
  std::map<std::string, absl::Time> lease_hints_;
  bool connected_ = false;
  absl::Time last_sync_ = absl::InfinitePast();
  absl::Status last_error_;
  absl::Time last_error_at_ = absl::InfinitePast();
  // Whether containerd answered Containers/ListStream (re-probed each
  // session).
  bool list_stream_ok_ = true;
  absl::BitGen rng_;
};

}  // namespace snapledger
