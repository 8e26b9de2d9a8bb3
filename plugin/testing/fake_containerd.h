// FakeContainerd: an in-process containerd for tests — a gRPC server on a
// unix socket implementing just what snapledger calls on containerd's own
// socket:
//   Namespaces/List; Containers/Get|List|ListStream|Delete;
//   Tasks/Get|List|Kill|Delete; Leases/Create|Delete|List|ListResources;
//   Images/List|Delete;
//   Events/Subscribe (with an event stream the test drives).
// It answers as containerd 1.6 does: the namespace header is required,
// Tasks/List and Tasks/Get fill `id`, not `container_id`, Tasks/Kill of a
// stopped task is NotFound, Tasks/Delete of a running task is refused, and
// Leases/Delete with `sync` runs (here: counts) a garbage collection.
// Changing its state publishes no event; tests publish what they want seen.
//
// Tasks/Kill with SIGKILL or SIGTERM stops the task `kill_stop_delay` later
// (unless `set_kill_stops_task(false)`): the change is applied lazily, by
// the next call or accessor that looks at the task.
//
// Calls to Containers/Get|Delete, Tasks/Get|Kill|Delete,
// Leases/Create|Delete and Images/Delete are recorded in order (Calls();
// AwaitCalls() waits for them), and each can be made to fail (FailCalls) or to
// hang until the caller gives up (HangCalls).
//
// Thread-safety: thread-safe. Not for production use.
#pragma once

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "containerd/services/containers/v1/containers.grpc.pb.h"
#include "containerd/services/events/v1/events.grpc.pb.h"
#include "containerd/services/images/v1/images.grpc.pb.h"
#include "containerd/services/leases/v1/leases.grpc.pb.h"
#include "containerd/services/namespaces/v1/namespace.grpc.pb.h"
#include "containerd/services/tasks/v1/tasks.grpc.pb.h"
#include "gtest/gtest.h"
#include "plugin/filter/filter.h"

namespace snapledger::testing {

inline google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t ns = absl::ToUnixNanos(t);
  ts.set_seconds(ns / 1000000000);
  ts.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return ts;
}

// Polls `pred` until it holds or a generous deadline passes (CI machines are
// loaded; nothing should depend on how fast the code under test is).
inline bool Eventually(const std::function<bool()>& pred,
                       absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return pred();
}

class FakeContainerd {
 public:
  using NsName = std::pair<std::string, std::string>;
  using Container = ::containerd::services::containers::v1::Container;
  using Process = ::containerd::v1::types::Process;
  using ProcessStatus = ::containerd::v1::types::Status;
  using Image = ::containerd::services::images::v1::Image;

  struct Lease {
    absl::Time created_at;
    std::vector<std::pair<std::string, std::string>> resources;  // id, type
  };

  ~FakeContainerd() { Stop(); }

  void Start(const std::string& socket) {
    std::filesystem::remove(socket);
    {
      absl::MutexLock l(&mu_);
      shutting_down_ = false;
    }
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket,
                             grpc::InsecureServerCredentials());
    builder.RegisterService(&namespaces_);
    builder.RegisterService(&containers_);
    builder.RegisterService(&tasks_);
    builder.RegisterService(&leases_);
    builder.RegisterService(&events_);
    builder.RegisterService(&images_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr) << socket;
  }

  // Ends every stream and call, as a containerd restart does.
  void Stop() {
    if (server_ == nullptr) return;
    {
      absl::MutexLock l(&mu_);
      shutting_down_ = true;
    }
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(10));
    server_.reset();
  }

  // --- State, as containerd's metadata holds it (no events published).

  void AddNamespace(const std::string& ns) {
    absl::MutexLock l(&mu_);
    namespaces_set_.insert(ns);
  }
  void RemoveNamespace(const std::string& ns) {
    absl::MutexLock l(&mu_);
    namespaces_set_.erase(ns);
    std::erase_if(containers_map_,
                  [&](const auto& e) { return e.first.first == ns; });
    std::erase_if(tasks_map_,
                  [&](const auto& e) { return e.first.first == ns; });
    std::erase_if(leases_map_,
                  [&](const auto& e) { return e.first.first == ns; });
  }
  void PutContainer(const std::string& ns, const std::string& id,
                    const std::string& snapshotter, const std::string& key,
                    std::map<std::string, std::string> labels = {}) {
    Container c;
    c.set_id(id);
    c.set_snapshotter(snapshotter);
    c.set_snapshot_key(key);
    c.set_image("docker.io/library/busybox:latest");
    for (const auto& [k, v] : labels) (*c.mutable_labels())[k] = v;
    *c.mutable_created_at() = ToProto(absl::FromUnixSeconds(1700000000));
    absl::MutexLock l(&mu_);
    namespaces_set_.insert(ns);
    containers_map_[{ns, id}] = c;
  }
  // The image a container names (PutContainer: busybox's).
  void SetContainerImage(const std::string& ns, const std::string& id,
                         const std::string& image) {
    absl::MutexLock l(&mu_);
    containers_map_[{ns, id}].set_image(image);
  }
  void PutImage(const std::string& ns, const std::string& name,
                absl::Time updated_at) {
    Image i;
    i.set_name(name);
    i.mutable_target()->set_digest("sha256:0123");
    *i.mutable_created_at() = ToProto(updated_at - absl::Hours(1));
    *i.mutable_updated_at() = ToProto(updated_at);
    absl::MutexLock l(&mu_);
    namespaces_set_.insert(ns);
    images_map_[{ns, name}] = i;
  }
  bool HasImage(const std::string& ns, const std::string& name) const {
    absl::MutexLock l(&mu_);
    return images_map_.contains({ns, name});
  }
  void RemoveContainer(const std::string& ns, const std::string& id) {
    absl::MutexLock l(&mu_);
    containers_map_.erase({ns, id});
  }
  bool HasContainer(const std::string& ns, const std::string& id) const {
    absl::MutexLock l(&mu_);
    return containers_map_.contains({ns, id});
  }
  void PutTask(const std::string& ns, const std::string& id,
               ProcessStatus status, uint32_t pid,
               absl::Time exited_at = absl::InfinitePast()) {
    Process p;
    p.set_id(id);  // containerd leaves container_id empty here
    p.set_pid(pid);
    p.set_status(status);
    if (exited_at != absl::InfinitePast()) {
      *p.mutable_exited_at() = ToProto(exited_at);
    } else {
      // Go's zero time, as containerd sends for a task that has not exited.
      p.mutable_exited_at()->set_seconds(-62135596800);
    }
    absl::MutexLock l(&mu_);
    tasks_map_[{ns, id}] = p;
    stop_at_.erase({ns, id});
  }
  void RemoveTask(const std::string& ns, const std::string& id) {
    absl::MutexLock l(&mu_);
    tasks_map_.erase({ns, id});
    stop_at_.erase({ns, id});
  }
  // The task as containerd would report it now; nullopt when it has none.
  std::optional<Process> Task(const std::string& ns, const std::string& id) {
    absl::MutexLock l(&mu_);
    SettleTasks();
    auto it = tasks_map_.find({ns, id});
    if (it == tasks_map_.end()) return std::nullopt;
    return it->second;
  }
  void PutLease(const std::string& ns, const std::string& id, Lease lease) {
    absl::MutexLock l(&mu_);
    namespaces_set_.insert(ns);
    leases_map_[{ns, id}] = std::move(lease);
  }
  void RemoveLease(const std::string& ns, const std::string& id) {
    absl::MutexLock l(&mu_);
    leases_map_.erase({ns, id});
  }
  // Ids of the leases in `ns`, sorted.
  std::vector<std::string> LeaseIds(const std::string& ns) const {
    absl::MutexLock l(&mu_);
    std::vector<std::string> ids;
    for (const auto& [key, lease] : leases_map_) {
      if (key.first == ns) ids.push_back(key.second);
    }
    return ids;
  }

  // --- Behaviour switches and counters.

  // Containers/ListStream answers Unimplemented, as before containerd 1.5.
  void set_list_stream_unimplemented(bool v) { list_stream_unimplemented_ = v; }
  // Namespaces/List hangs until the caller cancels.
  void set_block_namespace_list(bool v) { block_namespace_list_ = v; }
  // Whether a fatal Tasks/Kill stops the task (default true), and after how
  // long (default at once).
  void set_kill_stops_task(bool v) {
    absl::MutexLock l(&mu_);
    kill_stops_task_ = v;
  }
  void set_kill_stop_delay(absl::Duration d) {
    absl::MutexLock l(&mu_);
    kill_stop_delay_ = d;
  }
  // Calls of `method` ("Tasks/Kill", ...) answer `status` (after being
  // recorded); OK restores normal answers.
  void FailCalls(const std::string& method, grpc::Status status) {
    absl::MutexLock l(&mu_);
    if (status.ok()) {
      failures_.erase(method);
    } else {
      failures_[method] = std::move(status);
    }
  }
  // Calls of `method` hang until the caller cancels or its deadline passes.
  void HangCalls(const std::string& method, bool hang = true) {
    absl::MutexLock l(&mu_);
    if (hang) {
      hangs_.insert(method);
    } else {
      hangs_.erase(method);
    }
  }

  // The recorded calls, oldest first, e.g. "Tasks/Get default/c",
  // "Tasks/Kill default/c signal=9 all=true",
  // "Leases/Delete default/l sync=true".
  std::vector<std::string> Calls() const {
    absl::MutexLock l(&mu_);
    return calls_;
  }
  void ClearCalls() {
    absl::MutexLock l(&mu_);
    calls_.clear();
  }
  // Waits until `method` ("Tasks/Get", ...) has been called at least `n`
  // times since the last ClearCalls(); false if that takes over `timeout`.
  // A call counts once recorded, before it is answered: lets a test act
  // while the code under test is known to be at that call (or past it).
  bool AwaitCalls(const std::string& method, int n,
                  absl::Duration timeout = absl::Seconds(30)) const {
    absl::MutexLock l(&mu_);
    const std::string prefix = method + " ";
    const auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return std::count_if(calls_.begin(), calls_.end(),
                           [&](const std::string& c) {
                             return c.starts_with(prefix);
                           }) >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  // Garbage collections run by Leases/Delete with `sync`.
  int sync_gc_runs() const { return sync_gc_runs_; }
  // Labels of the last lease made by Leases/Create.
  std::map<std::string, std::string> last_created_lease_labels() const {
    absl::MutexLock l(&mu_);
    return last_created_lease_labels_;
  }

  int namespace_lists() const { return namespace_lists_; }
  int container_list_calls() const { return container_list_calls_; }
  int container_stream_calls() const { return container_stream_calls_; }
  int active_subscribers() const {
    absl::MutexLock l(&mu_);
    return static_cast<int>(subscribers_.size());
  }
  int subscribe_calls() const { return subscribe_calls_; }

  // --- Events: to every subscriber whose filters match.

  void Publish(const std::string& ns, const std::string& topic,
               const google::protobuf::Message& event,
               absl::Time when = absl::Now()) {
    ::containerd::services::events::v1::Envelope env;
    *env.mutable_timestamp() = ToProto(when);
    env.set_namespace_(ns);
    env.set_topic(topic);
    env.mutable_event()->PackFrom(event, "types.containerd.io");
    absl::MutexLock l(&mu_);
    for (Subscriber* s : subscribers_) {
      const bool match =
          s->filter.Match([&](const std::vector<std::string>& path)
                              -> std::optional<std::string> {
            if (path.size() != 1) return std::nullopt;
            if (path[0] == "topic") return env.topic();
            if (path[0] == "namespace" && !env.namespace_().empty()) {
              return env.namespace_();
            }
            return std::nullopt;
          });
      if (match) s->queue.push_back(env);
    }
  }

 private:
  using Envelope = ::containerd::services::events::v1::Envelope;

  struct Subscriber {
    explicit Subscriber(filter::Filter f) : filter(std::move(f)) {}
    filter::Filter filter;
    std::deque<Envelope> queue;
  };

  // containerd refuses namespaced calls without the header.
  static grpc::Status Namespace(grpc::ServerContext* ctx, std::string* ns) {
    auto it = ctx->client_metadata().find("containerd-namespace");
    if (it == ctx->client_metadata().end() || it->second.empty()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "namespace is required");
    }
    ns->assign(it->second.data(), it->second.size());
    return grpc::Status::OK;
  }

  // Records a call, then applies what the test injected for its method:
  // non-OK means answer that.
  grpc::Status Enter(grpc::ServerContext* ctx, const std::string& method,
                     const std::string& what) {
    absl::MutexLock l(&mu_);
    calls_.push_back(absl::StrCat(method, " ", what));
    if (hangs_.contains(method)) {
      while (!ctx->IsCancelled() && !shutting_down_) {
        mu_.AwaitWithTimeout(absl::Condition(&shutting_down_),
                             absl::Milliseconds(10));
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    auto it = failures_.find(method);
    if (it != failures_.end()) return it->second;
    return grpc::Status::OK;
  }

  // Applies the stops that killed tasks have due.
  void SettleTasks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time now = absl::Now();
    for (auto it = stop_at_.begin(); it != stop_at_.end();) {
      if (it->second > now) {
        ++it;
        continue;
      }
      auto task = tasks_map_.find(it->first);
      if (task != tasks_map_.end()) {
        task->second.set_status(::containerd::v1::types::STOPPED);
        task->second.set_exit_status(137);
        *task->second.mutable_exited_at() = ToProto(now);
      }
      it = stop_at_.erase(it);
    }
  }

  class NamespacesService final
      : public ::containerd::services::namespaces::v1::Namespaces::Service {
   public:
    explicit NamespacesService(FakeContainerd* f) : f_(f) {}
    grpc::Status List(
        grpc::ServerContext* ctx,
        const ::containerd::services::namespaces::v1::ListNamespacesRequest*,
        ::containerd::services::namespaces::v1::ListNamespacesResponse* resp)
        override {
      ++f_->namespace_lists_;
      while (f_->block_namespace_list_) {
        if (ctx->IsCancelled()) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
        }
        absl::SleepFor(absl::Milliseconds(10));
      }
      absl::MutexLock l(&f_->mu_);
      for (const std::string& ns : f_->namespaces_set_) {
        resp->add_namespaces()->set_name(ns);
      }
      return grpc::Status::OK;
    }

   private:
    FakeContainerd* f_;
  };

  class ContainersService final
      : public ::containerd::services::containers::v1::Containers::Service {
   public:
    using GetContainerRequest =
        ::containerd::services::containers::v1::GetContainerRequest;
    using GetContainerResponse =
        ::containerd::services::containers::v1::GetContainerResponse;
    using ListContainersRequest =
        ::containerd::services::containers::v1::ListContainersRequest;
    using ListContainersResponse =
        ::containerd::services::containers::v1::ListContainersResponse;
    using ListContainerMessage =
        ::containerd::services::containers::v1::ListContainerMessage;
    using DeleteContainerRequest =
        ::containerd::services::containers::v1::DeleteContainerRequest;

    explicit ContainersService(FakeContainerd* f) : f_(f) {}
    grpc::Status Get(grpc::ServerContext* ctx, const GetContainerRequest* req,
                     GetContainerResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      if (auto st = f_->Enter(ctx, "Containers/Get", ns + "/" + req->id());
          !st.ok()) {
        return st;
      }
      absl::MutexLock l(&f_->mu_);
      auto it = f_->containers_map_.find({ns, req->id()});
      if (it == f_->containers_map_.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "container \"" + req->id() + "\": not found");
      }
      *resp->mutable_container() = it->second;
      return grpc::Status::OK;
    }
    grpc::Status List(grpc::ServerContext* ctx, const ListContainersRequest*,
                      ListContainersResponse* resp) override {
      ++f_->container_list_calls_;
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      for (const auto& [key, c] : f_->containers_map_) {
        if (key.first == ns) *resp->add_containers() = c;
      }
      return grpc::Status::OK;
    }
    grpc::Status ListStream(
        grpc::ServerContext* ctx, const ListContainersRequest*,
        grpc::ServerWriter<ListContainerMessage>* w) override {
      if (f_->list_stream_unimplemented_) {
        return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown method");
      }
      ++f_->container_stream_calls_;
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      std::vector<ListContainerMessage> msgs;
      {
        absl::MutexLock l(&f_->mu_);
        for (const auto& [key, c] : f_->containers_map_) {
          if (key.first != ns) continue;
          msgs.emplace_back();
          *msgs.back().mutable_container() = c;
        }
      }
      for (const auto& m : msgs) w->Write(m);
      return grpc::Status::OK;
    }
    // Like containerd's service, it does not look for a task.
    grpc::Status Delete(grpc::ServerContext* ctx,
                        const DeleteContainerRequest* req,
                        google::protobuf::Empty*) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      if (auto st = f_->Enter(ctx, "Containers/Delete", ns + "/" + req->id());
          !st.ok()) {
        return st;
      }
      absl::MutexLock l(&f_->mu_);
      if (f_->containers_map_.erase({ns, req->id()}) == 0) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "container \"" + req->id() + "\": not found");
      }
      return grpc::Status::OK;
    }

   private:
    FakeContainerd* f_;
  };

  class TasksService final
      : public ::containerd::services::tasks::v1::Tasks::Service {
   public:
    using GetRequest = ::containerd::services::tasks::v1::GetRequest;
    using GetResponse = ::containerd::services::tasks::v1::GetResponse;
    using ListTasksRequest =
        ::containerd::services::tasks::v1::ListTasksRequest;
    using ListTasksResponse =
        ::containerd::services::tasks::v1::ListTasksResponse;
    using KillRequest = ::containerd::services::tasks::v1::KillRequest;
    using DeleteTaskRequest =
        ::containerd::services::tasks::v1::DeleteTaskRequest;
    using DeleteResponse = ::containerd::services::tasks::v1::DeleteResponse;

    explicit TasksService(FakeContainerd* f) : f_(f) {}
    grpc::Status Get(grpc::ServerContext* ctx, const GetRequest* req,
                     GetResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      if (auto st = f_->Enter(ctx, "Tasks/Get", ns + "/" + req->container_id());
          !st.ok()) {
        return st;
      }
      absl::MutexLock l(&f_->mu_);
      f_->SettleTasks();
      auto it = f_->tasks_map_.find({ns, req->container_id()});
      if (it == f_->tasks_map_.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "no running task found");
      }
      *resp->mutable_process() = it->second;
      return grpc::Status::OK;
    }
    grpc::Status List(grpc::ServerContext* ctx, const ListTasksRequest*,
                      ListTasksResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      f_->SettleTasks();
      for (const auto& [key, p] : f_->tasks_map_) {
        if (key.first == ns) *resp->add_tasks() = p;
      }
      return grpc::Status::OK;
    }
    grpc::Status Kill(grpc::ServerContext* ctx, const KillRequest* req,
                      google::protobuf::Empty*) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      if (auto st = f_->Enter(ctx, "Tasks/Kill",
                              absl::StrCat(ns, "/", req->container_id(),
                                           " signal=", req->signal(), " all=",
                                           req->all() ? "true" : "false"));
          !st.ok()) {
        return st;
      }
      absl::MutexLock l(&f_->mu_);
      f_->SettleTasks();
      const NsName key(ns, req->container_id());
      auto it = f_->tasks_map_.find(key);
      if (it == f_->tasks_map_.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "task " + req->container_id() + " not found");
      }
      if (it->second.status() == ::containerd::v1::types::STOPPED) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "process already finished: not found");
      }
      const bool fatal = req->signal() == 9 || req->signal() == 15;
      if (fatal && f_->kill_stops_task_ && !f_->stop_at_.contains(key)) {
        f_->stop_at_[key] = absl::Now() + f_->kill_stop_delay_;
      }
      return grpc::Status::OK;
    }
    grpc::Status Delete(grpc::ServerContext* ctx, const DeleteTaskRequest* req,
                        DeleteResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      if (auto st =
              f_->Enter(ctx, "Tasks/Delete", ns + "/" + req->container_id());
          !st.ok()) {
        return st;
      }
      absl::MutexLock l(&f_->mu_);
      f_->SettleTasks();
      auto it = f_->tasks_map_.find({ns, req->container_id()});
      if (it == f_->tasks_map_.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "task " + req->container_id() + " not found");
      }
      switch (it->second.status()) {
        case ::containerd::v1::types::RUNNING:
        case ::containerd::v1::types::PAUSED:
        case ::containerd::v1::types::PAUSING:
          // The shim's plain error, which reaches the client as Unknown.
          return grpc::Status(grpc::StatusCode::UNKNOWN,
                              "cannot delete a running process");
        default:
          break;
      }
      resp->set_id(it->second.id());
      resp->set_pid(it->second.pid());
      resp->set_exit_status(it->second.exit_status());
      *resp->mutable_exited_at() = it->second.exited_at();
      f_->stop_at_.erase(it->first);
      f_->tasks_map_.erase(it);
      return grpc::Status::OK;
    }

   private:
    FakeContainerd* f_;
  };

  class LeasesService final
      : public ::containerd::services::leases::v1::Leases::Service {
   public:
    using CreateRequest = ::containerd::services::leases::v1::CreateRequest;
    using CreateResponse = ::containerd::services::leases::v1::CreateResponse;
    using DeleteRequest = ::containerd::services::leases::v1::DeleteRequest;
    using ListRequest = ::containerd::services::leases::v1::ListRequest;
    using ListResponse = ::containerd::services::leases::v1::ListResponse;
    using ListResourcesRequest =
        ::containerd::services::leases::v1::ListResourcesRequest;
    using ListResourcesResponse =
        ::containerd::services::leases::v1::ListResourcesResponse;

    explicit LeasesService(FakeContainerd* f) : f_(f) {}
    grpc::Status Create(grpc::ServerContext* ctx, const CreateRequest* req,
                        CreateResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      if (auto st = f_->Enter(ctx, "Leases/Create", ns + "/" + req->id());
          !st.ok()) {
        return st;
      }
      if (req->id().empty()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "lease id must not be empty");
      }
      absl::MutexLock l(&f_->mu_);
      const NsName key(ns, req->id());
      if (f_->leases_map_.contains(key)) {
        return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                            "lease \"" + req->id() + "\": already exists");
      }
      const absl::Time now = absl::Now();
      f_->namespaces_set_.insert(ns);  // implicitly, as containerd does
      f_->leases_map_[key] = Lease{now, {}};
      f_->last_created_lease_labels_ = std::map<std::string, std::string>(
          req->labels().begin(), req->labels().end());
      resp->mutable_lease()->set_id(req->id());
      *resp->mutable_lease()->mutable_created_at() = ToProto(now);
      *resp->mutable_lease()->mutable_labels() = req->labels();
      return grpc::Status::OK;
    }
    grpc::Status Delete(grpc::ServerContext* ctx, const DeleteRequest* req,
                        google::protobuf::Empty*) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      if (auto st = f_->Enter(ctx, "Leases/Delete",
                              absl::StrCat(ns, "/", req->id(), " sync=",
                                           req->sync() ? "true" : "false"));
          !st.ok()) {
        return st;
      }
      absl::MutexLock l(&f_->mu_);
      if (f_->leases_map_.erase({ns, req->id()}) == 0) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "lease \"" + req->id() + "\": not found");
      }
      // containerd deletes the lease, then waits for a collection.
      if (req->sync()) ++f_->sync_gc_runs_;
      return grpc::Status::OK;
    }
    grpc::Status List(grpc::ServerContext* ctx, const ListRequest*,
                      ListResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      for (const auto& [key, lease] : f_->leases_map_) {
        if (key.first != ns) continue;
        ::containerd::services::leases::v1::Lease* out = resp->add_leases();
        out->set_id(key.second);
        *out->mutable_created_at() = ToProto(lease.created_at);
        (*out->mutable_labels())["containerd.io/gc.expire"] =
            "2030-01-01T00:00:00Z";
      }
      return grpc::Status::OK;
    }
    grpc::Status ListResources(grpc::ServerContext* ctx,
                               const ListResourcesRequest* req,
                               ListResourcesResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      auto it = f_->leases_map_.find({ns, req->id()});
      if (it == f_->leases_map_.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "lease not found");
      }
      for (const auto& [id, type] : it->second.resources) {
        ::containerd::services::leases::v1::Resource* r = resp->add_resources();
        r->set_id(id);
        r->set_type(type);
      }
      return grpc::Status::OK;
    }

   private:
    FakeContainerd* f_;
  };

  class ImagesService final
      : public ::containerd::services::images::v1::Images::Service {
   public:
    using ListImagesRequest =
        ::containerd::services::images::v1::ListImagesRequest;
    using ListImagesResponse =
        ::containerd::services::images::v1::ListImagesResponse;
    using DeleteImageRequest =
        ::containerd::services::images::v1::DeleteImageRequest;

    explicit ImagesService(FakeContainerd* f) : f_(f) {}
    grpc::Status List(grpc::ServerContext* ctx, const ListImagesRequest*,
                      ListImagesResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      for (const auto& [key, image] : f_->images_map_) {
        if (key.first == ns) *resp->add_images() = image;
      }
      return grpc::Status::OK;
    }
    // Like containerd's service, it does not look for containers using it.
    grpc::Status Delete(grpc::ServerContext* ctx, const DeleteImageRequest* req,
                        google::protobuf::Empty*) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      if (auto st = f_->Enter(ctx, "Images/Delete",
                              absl::StrCat(ns, "/", req->name(), " sync=",
                                           req->sync() ? "true" : "false"));
          !st.ok()) {
        return st;
      }
      absl::MutexLock l(&f_->mu_);
      if (f_->images_map_.erase({ns, req->name()}) == 0) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "image \"" + req->name() + "\": not found");
      }
      return grpc::Status::OK;
    }

   private:
    FakeContainerd* f_;
  };

  class EventsService final
      : public ::containerd::services::events::v1::Events::Service {
   public:
    explicit EventsService(FakeContainerd* f) : f_(f) {}
    grpc::Status Subscribe(
        grpc::ServerContext* ctx,
        const ::containerd::services::events::v1::SubscribeRequest* req,
        grpc::ServerWriter<Envelope>* w) override {
      ++f_->subscribe_calls_;
      auto parsed = filter::Filter::ParseAll(std::vector<std::string>(
          req->filters().begin(), req->filters().end()));
      if (!parsed.ok()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            parsed.status().ToString());
      }
      Subscriber sub(*std::move(parsed));
      {
        absl::MutexLock l(&f_->mu_);
        f_->subscribers_.push_back(&sub);
      }
      absl::Cleanup unsubscribe = [&] {
        absl::MutexLock l(&f_->mu_);
        std::erase(f_->subscribers_, &sub);
      };
      for (;;) {
        std::deque<Envelope> batch;
        {
          absl::MutexLock l(&f_->mu_);
          auto ready = [&] {
            f_->mu_.AssertHeld();
            return !sub.queue.empty() || f_->shutting_down_;
          };
          f_->mu_.AwaitWithTimeout(absl::Condition(&ready),
                                   absl::Milliseconds(20));
          if (f_->shutting_down_) {
            return grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down");
          }
          batch.swap(sub.queue);
        }
        if (ctx->IsCancelled()) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
        }
        for (const auto& env : batch) {
          if (!w->Write(env)) {
            return grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
          }
        }
      }
    }

   private:
    FakeContainerd* f_;
  };

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::set<std::string> namespaces_set_ ABSL_GUARDED_BY(mu_);
  std::map<NsName, Container> containers_map_ ABSL_GUARDED_BY(mu_);
  std::map<NsName, Process> tasks_map_ ABSL_GUARDED_BY(mu_);
  // Killed tasks and when they stop (see SettleTasks).
  std::map<NsName, absl::Time> stop_at_ ABSL_GUARDED_BY(mu_);
  std::map<NsName, Lease> leases_map_ ABSL_GUARDED_BY(mu_);
  std::map<NsName, Image> images_map_ ABSL_GUARDED_BY(mu_);
  // Not owned: each lives on its Subscribe handler's stack.
  std::vector<Subscriber*> subscribers_ ABSL_GUARDED_BY(mu_);
  bool kill_stops_task_ ABSL_GUARDED_BY(mu_) = true;
  absl::Duration kill_stop_delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::map<std::string, grpc::Status> failures_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> hangs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> last_created_lease_labels_
      ABSL_GUARDED_BY(mu_);

  std::atomic<bool> list_stream_unimplemented_{false};
  std::atomic<bool> block_namespace_list_{false};
  std::atomic<int> namespace_lists_{0};
  std::atomic<int> container_list_calls_{0};
  std::atomic<int> container_stream_calls_{0};
  std::atomic<int> subscribe_calls_{0};
  std::atomic<int> sync_gc_runs_{0};

  NamespacesService namespaces_{this};
  ContainersService containers_{this};
  TasksService tasks_{this};
  LeasesService leases_{this};
  EventsService events_{this};
  ImagesService images_{this};
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace snapledger::testing
