#include "plugin/containerd/containerd_ops.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "containerd/services/containers/v1/containers.grpc.pb.h"
#include "containerd/services/images/v1/images.grpc.pb.h"
#include "containerd/services/leases/v1/leases.grpc.pb.h"
#include "containerd/services/namespaces/v1/namespace.grpc.pb.h"
#include "containerd/services/tasks/v1/tasks.grpc.pb.h"
#include "plugin/rpc/status.h"

namespace snapledger {

namespace containers_v1 = ::containerd::services::containers::v1;
namespace images_v1 = ::containerd::services::images::v1;
namespace namespaces_v1 = ::containerd::services::namespaces::v1;
namespace leases_v1 = ::containerd::services::leases::v1;
namespace tasks_v1 = ::containerd::services::tasks::v1;
namespace types_v1 = ::containerd::v1::types;

namespace {

// The header containerd reads the namespace of a call from.
constexpr char kNamespaceHeader[] = "containerd-namespace";
constexpr uint32_t kSigKill = 9;
// containerd's lease label after which its collector drops the lease.
constexpr char kLeaseExpireLabel[] = "containerd.io/gc.expire";
// A GC lease left behind (its delete failed) expires after this long; it
// holds nothing in the meantime.
constexpr absl::Duration kGcLeaseLifetime = absl::Hours(1);

class GrpcContainerdOps final : public ContainerdOps {
 public:
  explicit GrpcContainerdOps(GrpcContainerdOpsOptions options)
      : options_(std::move(options)) {
    const std::string target = absl::StartsWith(options_.address, "unix:")
                                   ? options_.address
                                   : absl::StrCat("unix:", options_.address);
    grpc::ChannelArguments args;
    // Our own connection, and a short reconnect backoff: after a containerd
    // restart the reaper's next call should not fail for minutes. (Not
    // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: it is also the connect timeout, and
    // a small one fails connections to a busy containerd.)
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
        target, grpc::InsecureChannelCredentials(), args);
    containers_ = containers_v1::Containers::NewStub(channel);
    tasks_ = tasks_v1::Tasks::NewStub(channel);
    leases_ = leases_v1::Leases::NewStub(channel);
    images_ = images_v1::Images::NewStub(channel);
    namespaces_ = namespaces_v1::Namespaces::NewStub(channel);
  }

  absl::StatusOr<bool> ContainerExists(const std::string& ns,
                                       const std::string& id) override {
    containers_v1::GetContainerRequest req;
    req.set_id(id);
    containers_v1::GetContainerResponse resp;
    absl::Status st =
        Call("Containers/Get", ns, id, absl::Now() + options_.check_timeout,
             [&](grpc::ClientContext* ctx) {
               return containers_->Get(ctx, req, &resp);
             });
    if (absl::IsNotFound(st)) return false;
    if (!st.ok()) return st;
    return true;
  }

  absl::StatusOr<TaskStatus> GetTask(const std::string& ns,
                                     const std::string& id) override {
    return GetTaskBy(ns, id, absl::Now() + options_.check_timeout);
  }

  absl::Status DeleteTask(const std::string& ns,
                          const std::string& id) override {
    absl::StatusOr<std::optional<types_v1::Process>> task =
        GetProcess(ns, id, Deadline());
    if (!task.ok()) return task.status();
    if (!task->has_value()) return absl::OkStatus();
    const TaskStatus status = TaskStatusFromProto((*task)->status());
    // Only a task that is not live is deleted: one that started again
    // since the caller judged it is left alone.
    if (TaskIsLive(status)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "containerd Tasks/Delete ", ns, "/", id, ": the task is ",
          std::string(TaskStatusName(status)), "; left alone"));
    }

    // A created task is killed too: its pid is runc's init, waiting to exec
    // the entrypoint, and containerd's own client deletes a created task
    // only once it stopped — unless it has no process at all (pid 0).
    const bool has_process =
        status != TaskStatus::kStopped &&
        !(status == TaskStatus::kCreated && (*task)->pid() == 0);
    if (has_process) {
      // `all` also reaches a paused task's processes: runc thaws the
      // container to deliver the signal.
      tasks_v1::KillRequest kill;
      kill.set_container_id(id);
      kill.set_signal(kSigKill);
      kill.set_all(true);
      google::protobuf::Empty empty;
      absl::Status st =
          Call("Tasks/Kill", ns, id, Deadline(), [&](grpc::ClientContext* ctx) {
            return tasks_->Kill(ctx, kill, &empty);
          });
      // NotFound: the task or its process is gone already ("process already
      // finished"); FailedPrecondition: it is not running.
      if (!st.ok() && !absl::IsNotFound(st) &&
          !absl::IsFailedPrecondition(st)) {
        return st;
      }
      absl::Status stopped = WaitStopped(ns, id);
      if (absl::IsNotFound(stopped)) return absl::OkStatus();  // deleted
      if (!stopped.ok()) return stopped;
    }

    tasks_v1::DeleteTaskRequest del;
    del.set_container_id(id);
    tasks_v1::DeleteResponse resp;
    absl::Status st =
        Call("Tasks/Delete", ns, id, Deadline(), [&](grpc::ClientContext* ctx) {
          return tasks_->Delete(ctx, del, &resp);
        });
    if (absl::IsNotFound(st)) return absl::OkStatus();
    return st;
  }

  absl::Status DeleteContainer(const std::string& ns,
                               const std::string& id) override {
    // containerd deletes the record even under a live task, whose rootfs
    // snapshot the collector would then take from under it; its Go client
    // refuses, and so do we.
    absl::StatusOr<TaskStatus> task = GetTask(ns, id);
    if (!task.ok()) return task.status();
    if (*task != TaskStatus::kNone) {
      return absl::FailedPreconditionError(absl::StrCat(
          "containerd Containers/Delete ", ns, "/", id,
          ": FAILED_PRECONDITION: the container still has a task (",
          std::string(TaskStatusName(*task)), "); delete it first"));
    }
    containers_v1::DeleteContainerRequest req;
    req.set_id(id);
    google::protobuf::Empty empty;
    absl::Status st = Call("Containers/Delete", ns, id, Deadline(),
                           [&](grpc::ClientContext* ctx) {
                             return containers_->Delete(ctx, req, &empty);
                           });
    if (absl::IsNotFound(st)) return absl::OkStatus();
    return st;
  }

  absl::Status CollectGarbage(const std::string& ns) override {
    const std::string lease_id = NewLeaseId();
    leases_v1::CreateRequest create;
    create.set_id(lease_id);
    (*create.mutable_labels())[kLeaseExpireLabel] =
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now() + kGcLeaseLifetime,
                         absl::UTCTimeZone());
    leases_v1::CreateResponse created;
    absl::Status st = Call("Leases/Create", ns, lease_id, Deadline(),
                           [&](grpc::ClientContext* ctx) {
                             return leases_->Create(ctx, create, &created);
                           });
    if (!st.ok()) return st;

    // containerd removes the lease, then runs a collection and answers when
    // it is done — including its Remove calls to snapshotters, ours too: the
    // caller must hold nothing our Snapshots handlers wait for.
    leases_v1::DeleteRequest del;
    del.set_id(lease_id);
    del.set_sync(true);
    google::protobuf::Empty empty;
    return Call("Leases/Delete", ns, lease_id,
                absl::Now() + options_.gc_timeout,
                [&](grpc::ClientContext* ctx) {
                  return leases_->Delete(ctx, del, &empty);
                });
  }

  absl::Status DeleteLease(const std::string& ns,
                           const std::string& id) override {
    leases_v1::DeleteRequest del;
    del.set_id(id);
    google::protobuf::Empty empty;
    absl::Status st = Call("Leases/Delete", ns, id, Deadline(),
                           [&](grpc::ClientContext* ctx) {
                             return leases_->Delete(ctx, del, &empty);
                           });
    if (absl::IsNotFound(st)) return absl::OkStatus();
    return st;
  }

  absl::StatusOr<std::vector<std::string>> ListNamespaces() override {
    namespaces_v1::ListNamespacesRequest req;
    namespaces_v1::ListNamespacesResponse resp;
    absl::Status st = Call("Namespaces/List", "", "*", Deadline(),
                           [&](grpc::ClientContext* ctx) {
                             return namespaces_->List(ctx, req, &resp);
                           });
    if (!st.ok()) return st;
    std::vector<std::string> out;
    for (const auto& n : resp.namespaces()) out.push_back(n.name());
    return out;
  }

  absl::StatusOr<std::vector<ImageInfo>> ListImages(
      const std::string& ns) override {
    images_v1::ListImagesRequest req;
    images_v1::ListImagesResponse resp;
    absl::Status st =
        Call("Images/List", ns, "*", Deadline(), [&](grpc::ClientContext* ctx) {
          return images_->List(ctx, req, &resp);
        });
    if (!st.ok()) return st;
    std::vector<ImageInfo> out;
    for (const images_v1::Image& i : resp.images()) {
      ImageInfo info;
      info.ns = ns;
      info.name = i.name();
      info.labels.insert(i.labels().begin(), i.labels().end());
      if (i.has_created_at()) info.created_at = TimeOf(i.created_at());
      if (i.has_updated_at()) info.updated_at = TimeOf(i.updated_at());
      out.push_back(std::move(info));
    }
    return out;
  }

  absl::StatusOr<std::vector<std::string>> ImageUsers(
      const std::string& ns, const std::string& name) override {
    // Every container of the namespace, compared here: a filter would need
    // the reference quoted for containerd's filter syntax.
    containers_v1::ListContainersRequest req;
    containers_v1::ListContainersResponse resp;
    absl::Status st = Call("Containers/List", ns, "*", Deadline(),
                           [&](grpc::ClientContext* ctx) {
                             return containers_->List(ctx, req, &resp);
                           });
    if (!st.ok()) return st;
    std::vector<std::string> users;
    for (const containers_v1::Container& c : resp.containers()) {
      if (c.image() == name) users.push_back(c.id());
    }
    return users;
  }

  absl::Status DeleteImage(const std::string& ns,
                           const std::string& name) override {
    images_v1::DeleteImageRequest req;
    req.set_name(name);
    req.set_sync(false);
    google::protobuf::Empty empty;
    absl::Status st = Call("Images/Delete", ns, name, Deadline(),
                           [&](grpc::ClientContext* ctx) {
                             return images_->Delete(ctx, req, &empty);
                           });
    if (absl::IsNotFound(st)) return absl::OkStatus();
    return st;
  }

 private:
  static absl::Time TimeOf(const google::protobuf::Timestamp& t) {
    return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
  }

  absl::Time Deadline() const { return absl::Now() + options_.rpc_timeout; }

  // Runs one unary call with the namespace header and `deadline`. Errors
  // read "containerd <method> <ns>/<subject>: <CODE>: <containerd's text>".
  absl::Status Call(
      std::string_view method, const std::string& ns,
      const std::string& subject, absl::Time deadline,
      const std::function<grpc::Status(grpc::ClientContext*)>& call) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline));
    if (!ns.empty()) ctx.AddMetadata(kNamespaceHeader, ns);
    const grpc::Status st = call(&ctx);
    return FromGrpcStatus(
        st, absl::StrCat("containerd ", std::string(method), " ", ns, "/",
                         subject, ": ", absl::StatusCodeToString(CodeOf(st))));
  }

  // The task's init process; nullopt when there is no task.
  absl::StatusOr<std::optional<types_v1::Process>> GetProcess(
      const std::string& ns, const std::string& id, absl::Time deadline) {
    tasks_v1::GetRequest req;
    req.set_container_id(id);
    tasks_v1::GetResponse resp;
    absl::Status st = Call(
        "Tasks/Get", ns, id, deadline,
        [&](grpc::ClientContext* ctx) { return tasks_->Get(ctx, req, &resp); });
    if (absl::IsNotFound(st)) return std::nullopt;
    if (!st.ok()) return st;
    return std::optional<types_v1::Process>(std::move(*resp.mutable_process()));
  }

  absl::StatusOr<TaskStatus> GetTaskBy(const std::string& ns,
                                       const std::string& id,
                                       absl::Time deadline) {
    absl::StatusOr<std::optional<types_v1::Process>> task =
        GetProcess(ns, id, deadline);
    if (!task.ok()) return task.status();
    if (!task->has_value()) return TaskStatus::kNone;
    return TaskStatusFromProto((*task)->status());
  }

  // Polls until the task is stopped (OK) or gone (NotFound), for up to
  // kill_wait; DeadlineExceeded after that.
  absl::Status WaitStopped(const std::string& ns, const std::string& id) {
    const absl::Time start = absl::Now();
    const absl::Time give_up = start + options_.kill_wait;
    absl::Duration pause = absl::Milliseconds(10);
    TaskStatus last = TaskStatus::kUnknown;
    for (;;) {
      // No poll outlives the wait.
      absl::StatusOr<TaskStatus> status =
          GetTaskBy(ns, id, std::min(Deadline(), give_up));
      if (!status.ok() && !absl::IsDeadlineExceeded(status.status())) {
        return status.status();
      }
      if (status.ok()) {
        if (*status == TaskStatus::kNone) {
          return absl::NotFoundError("task gone");
        }
        if (*status == TaskStatus::kStopped) return absl::OkStatus();
        last = *status;
      }
      const absl::Time now = absl::Now();
      if (now >= give_up) break;
      absl::SleepFor(std::min(pause, give_up - now));
      pause = std::min(pause * 2, absl::Milliseconds(200));
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "containerd Tasks/Kill ", ns, "/", id,
        ": DEADLINE_EXCEEDED: task not stopped ",
        absl::FormatDuration(options_.kill_wait), " after SIGKILL (",
        std::string(TaskStatusName(last)), "); not deleted"));
  }

  std::string NewLeaseId() {
    absl::MutexLock l(&rng_mu_);
    return absl::StrFormat("snapledger-gc-%016x",
                           absl::Uniform<uint64_t>(rng_));
  }

  const GrpcContainerdOpsOptions options_;
  // Stubs are thread-safe; they share one channel.
  std::unique_ptr<containers_v1::Containers::Stub> containers_;
  std::unique_ptr<tasks_v1::Tasks::Stub> tasks_;
  std::unique_ptr<leases_v1::Leases::Stub> leases_;
  std::unique_ptr<images_v1::Images::Stub> images_;
  std::unique_ptr<namespaces_v1::Namespaces::Stub> namespaces_;

  absl::Mutex rng_mu_;
  absl::BitGen rng_ ABSL_GUARDED_BY(rng_mu_);
};

}  // namespace

absl::Status ContainerdOps::DeleteLease(const std::string& ns,
                                        const std::string& id) {
  return absl::UnimplementedError(
      absl::StrCat("DeleteLease ", ns, "/", id, ": not implemented here"));
}

absl::StatusOr<std::vector<std::string>> ContainerdOps::ListNamespaces() {
  return absl::UnimplementedError("ListNamespaces: not implemented here");
}

absl::StatusOr<std::vector<ImageInfo>> ContainerdOps::ListImages(
    const std::string& ns) {
  return absl::UnimplementedError(
      absl::StrCat("ListImages ", ns, ": not implemented here"));
}

absl::StatusOr<std::vector<std::string>> ContainerdOps::ImageUsers(
    const std::string& ns, const std::string& name) {
  return absl::UnimplementedError(
      absl::StrCat("ImageUsers ", ns, "/", name, ": not implemented here"));
}

absl::Status ContainerdOps::DeleteImage(const std::string& ns,
                                        const std::string& name) {
  return absl::UnimplementedError(
      absl::StrCat("DeleteImage ", ns, "/", name, ": not implemented here"));
}

std::unique_ptr<ContainerdOps> MakeGrpcContainerdOps(
    GrpcContainerdOpsOptions options) {
  return std::make_unique<GrpcContainerdOps>(std::move(options));
}

}  // namespace snapledger
