// ContainerdOps: the few calls snapledger makes to containerd besides
// watching it (plugin/watcher.h) — confirming that a container still exists
// before a removal is held back for it, and the reaper's deletions.
//
// Deadlock rule: containerd calls a snapshotter's Remove from its garbage
// collector while holding its own lock on that snapshotter (every containerd
// Snapshots call for it waits meanwhile). Only ContainerExists and GetTask —
// read-only, served from a read transaction — may be made from inside a
// Snapshots handler, never containerd's Snapshots API; the mutating calls
// run on the reaper's own thread, never from a handler.
//
// Errors: the gRPC status of the failed call, as an absl::Status, with the
// call and the container named in the message. NotFound of the thing being
// deleted is success (it is gone either way).
//
// Thread-safety: implementations are thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plugin/containerd/watcher.h"

namespace snapledger {

// An image record as containerd's Images service lists it.
struct ImageInfo {
  std::string ns;
  // The reference, e.g. "docker.io/library/busybox:latest".
  std::string name;
  std::map<std::string, std::string> labels;
  absl::Time created_at = absl::InfinitePast();
  // Last change of the record (a pull or tag); InfinitePast if unset.
  absl::Time updated_at = absl::InfinitePast();

  bool operator==(const ImageInfo&) const = default;
};

class ContainerdOps {
 public:
  virtual ~ContainerdOps() = default;

  // Whether container `id` exists in namespace `ns` now.
  [[nodiscard]] virtual absl::StatusOr<bool> ContainerExists(
      const std::string& ns, const std::string& id) = 0;
  // The status of the container's task now; kNone when it has none.
  [[nodiscard]] virtual absl::StatusOr<TaskStatus> GetTask(
      const std::string& ns, const std::string& id) = 0;
  // Deletes the container's task if it is not live (none, created or
  // stopped; FailedPrecondition if it runs, is paused or unknown: it started
  // again since the caller judged it). Forced: a created task's process is
  // killed with SIGKILL first and waited for (up to kill_wait). OK when
  // there is no task.
  [[nodiscard]] virtual absl::Status DeleteTask(const std::string& ns,
                                                const std::string& id) = 0;
  // Deletes the container record. OK when it is already gone;
  // FailedPrecondition while it still has a task (containerd itself would
  // delete the record under a live task, and its GC the task's rootfs).
  [[nodiscard]] virtual absl::Status DeleteContainer(const std::string& ns,
                                                     const std::string& id) = 0;
  // Runs containerd's garbage collector now and waits for it to finish
  // (containerd 1.6 has no direct call: a throwaway lease is created in `ns`
  // and deleted with `sync`). The collection calls our own Snapshots Remove:
  // the caller must hold nothing a Remove needs (no key lock), or this
  // waits for gc_timeout.
  [[nodiscard]] virtual absl::Status CollectGarbage(const std::string& ns) = 0;
  // Deletes lease `id` in `ns` (not synchronously: the caller runs
  // CollectGarbage after). OK when it is already gone. The prune's
  // (plugin/prune/pruner.h); the default answers Unimplemented.
  [[nodiscard]] virtual absl::Status DeleteLease(const std::string& ns,
                                                 const std::string& id);

  // The prune's images (plugin/prune/pruner.h); the defaults answer
  // Unimplemented.
  //
  // containerd's namespaces.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::string>>
  ListNamespaces();
  // The image records of namespace `ns`.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ImageInfo>> ListImages(
      const std::string& ns);
  // The ids of every container in `ns` (whatever its snapshotter) whose
  // `image` is `name`, listed now; empty when none is.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::string>> ImageUsers(
      const std::string& ns, const std::string& name);
  // Deletes image record `name` in `ns` (not synchronously: the caller runs
  // CollectGarbage after). OK when it is already gone.
  [[nodiscard]] virtual absl::Status DeleteImage(const std::string& ns,
                                                 const std::string& name);
};

struct GrpcContainerdOpsOptions {
  // containerd's socket: a path, or a gRPC target starting with "unix:".
  std::string address = "/run/containerd/containerd.sock";
  // Deadline of each call but the two below and CollectGarbage.
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Deadline of ContainerExists and GetTask: the removal guard asks from
  // inside a Remove, while containerd holds its lock on our snapshotter.
  absl::Duration check_timeout = absl::Seconds(2);
  // How long DeleteTask waits for a killed task to stop.
  absl::Duration kill_wait = absl::Seconds(10);
  // Deadline of CollectGarbage's sync delete: a whole collection, with its
  // removals.
  absl::Duration gc_timeout = absl::Minutes(2);
};

std::unique_ptr<ContainerdOps> MakeGrpcContainerdOps(
    GrpcContainerdOpsOptions options);

}  // namespace snapledger
