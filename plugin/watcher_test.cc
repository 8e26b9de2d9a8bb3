// The watcher against an in-process fake containerd: a gRPC server on a
// temporary unix socket implementing just what the watcher calls
// (Namespaces/List, Containers/Get|List|ListStream, Tasks/Get|List,
// Leases/List|ListResources, Events/Subscribe), answering as containerd 1.6
// does (namespace header required, Tasks/List fills `id`, not
// `container_id`), with an event stream the test drives.
#include "plugin/watcher.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "containerd/events/container.pb.h"
#include "containerd/events/namespace.pb.h"
#include "containerd/events/snapshot.pb.h"
#include "containerd/events/task.pb.h"
#include "containerd/services/containers/v1/containers.grpc.pb.h"
#include "containerd/services/events/v1/events.grpc.pb.h"
#include "containerd/services/leases/v1/leases.grpc.pb.h"
#include "containerd/services/namespaces/v1/namespace.grpc.pb.h"
#include "containerd/services/tasks/v1/tasks.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/filter/filter.h"

namespace snapledger {
namespace {

namespace containers_v1 = ::containerd::services::containers::v1;
namespace events_v1 = ::containerd::services::events::v1;
namespace leases_v1 = ::containerd::services::leases::v1;
namespace namespaces_v1 = ::containerd::services::namespaces::v1;
namespace tasks_v1 = ::containerd::services::tasks::v1;
namespace types_v1 = ::containerd::v1::types;
namespace cevents = ::containerd::events;

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using NsName = std::pair<std::string, std::string>;

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t ns = absl::ToUnixNanos(t);
  ts.set_seconds(ns / 1000000000);
  ts.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return ts;
}

// Whole seconds, so that a time survives the round trip exactly.
absl::Time HoursAgo(int hours) {
  return absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now())) -
         absl::Hours(hours);
}

// ---------------------------------------------------------------------------
// The fake containerd.

class FakeContainerd {
 public:
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
    containers_v1::Container c;
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
  void RemoveContainer(const std::string& ns, const std::string& id) {
    absl::MutexLock l(&mu_);
    containers_map_.erase({ns, id});
  }
  void PutTask(const std::string& ns, const std::string& id,
               types_v1::Status status, uint32_t pid,
               absl::Time exited_at = absl::InfinitePast()) {
    types_v1::Process p;
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
  }
  void RemoveTask(const std::string& ns, const std::string& id) {
    absl::MutexLock l(&mu_);
    tasks_map_.erase({ns, id});
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

  // --- Behaviour switches and counters.

  // Containers/ListStream answers Unimplemented, as before containerd 1.5.
  void set_list_stream_unimplemented(bool v) { list_stream_unimplemented_ = v; }
  // Namespaces/List hangs until the caller cancels.
  void set_block_namespace_list(bool v) { block_namespace_list_ = v; }
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
    events_v1::Envelope env;
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
  struct Subscriber {
    explicit Subscriber(filter::Filter f) : filter(std::move(f)) {}
    filter::Filter filter;
    std::deque<events_v1::Envelope> queue;
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

  class NamespacesService final : public namespaces_v1::Namespaces::Service {
   public:
    explicit NamespacesService(FakeContainerd* f) : f_(f) {}
    grpc::Status List(grpc::ServerContext* ctx,
                      const namespaces_v1::ListNamespacesRequest*,
                      namespaces_v1::ListNamespacesResponse* resp) override {
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

  class ContainersService final : public containers_v1::Containers::Service {
   public:
    explicit ContainersService(FakeContainerd* f) : f_(f) {}
    grpc::Status Get(grpc::ServerContext* ctx,
                     const containers_v1::GetContainerRequest* req,
                     containers_v1::GetContainerResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      auto it = f_->containers_map_.find({ns, req->id()});
      if (it == f_->containers_map_.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "container \"" + req->id() + "\": not found");
      }
      *resp->mutable_container() = it->second;
      return grpc::Status::OK;
    }
    grpc::Status List(grpc::ServerContext* ctx,
                      const containers_v1::ListContainersRequest*,
                      containers_v1::ListContainersResponse* resp) override {
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
        grpc::ServerContext* ctx, const containers_v1::ListContainersRequest*,
        grpc::ServerWriter<containers_v1::ListContainerMessage>* w) override {
      if (f_->list_stream_unimplemented_) {
        return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown method");
      }
      ++f_->container_stream_calls_;
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      std::vector<containers_v1::ListContainerMessage> msgs;
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

   private:
    FakeContainerd* f_;
  };

  class TasksService final : public tasks_v1::Tasks::Service {
   public:
    explicit TasksService(FakeContainerd* f) : f_(f) {}
    grpc::Status Get(grpc::ServerContext* ctx, const tasks_v1::GetRequest* req,
                     tasks_v1::GetResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      auto it = f_->tasks_map_.find({ns, req->container_id()});
      if (it == f_->tasks_map_.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "no running task found");
      }
      *resp->mutable_process() = it->second;
      return grpc::Status::OK;
    }
    grpc::Status List(grpc::ServerContext* ctx,
                      const tasks_v1::ListTasksRequest*,
                      tasks_v1::ListTasksResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      for (const auto& [key, p] : f_->tasks_map_) {
        if (key.first == ns) *resp->add_tasks() = p;
      }
      return grpc::Status::OK;
    }

   private:
    FakeContainerd* f_;
  };

  class LeasesService final : public leases_v1::Leases::Service {
   public:
    explicit LeasesService(FakeContainerd* f) : f_(f) {}
    grpc::Status List(grpc::ServerContext* ctx, const leases_v1::ListRequest*,
                      leases_v1::ListResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      for (const auto& [key, lease] : f_->leases_map_) {
        if (key.first != ns) continue;
        leases_v1::Lease* out = resp->add_leases();
        out->set_id(key.second);
        *out->mutable_created_at() = ToProto(lease.created_at);
        (*out->mutable_labels())["containerd.io/gc.expire"] =
            "2030-01-01T00:00:00Z";
      }
      return grpc::Status::OK;
    }
    grpc::Status ListResources(
        grpc::ServerContext* ctx, const leases_v1::ListResourcesRequest* req,
        leases_v1::ListResourcesResponse* resp) override {
      std::string ns;
      if (auto st = Namespace(ctx, &ns); !st.ok()) return st;
      absl::MutexLock l(&f_->mu_);
      auto it = f_->leases_map_.find({ns, req->id()});
      if (it == f_->leases_map_.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "lease not found");
      }
      for (const auto& [id, type] : it->second.resources) {
        leases_v1::Resource* r = resp->add_resources();
        r->set_id(id);
        r->set_type(type);
      }
      return grpc::Status::OK;
    }

   private:
    FakeContainerd* f_;
  };

  class EventsService final : public events_v1::Events::Service {
   public:
    explicit EventsService(FakeContainerd* f) : f_(f) {}
    grpc::Status Subscribe(
        grpc::ServerContext* ctx, const events_v1::SubscribeRequest* req,
        grpc::ServerWriter<events_v1::Envelope>* w) override {
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
        std::deque<events_v1::Envelope> batch;
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
  std::map<NsName, containers_v1::Container> containers_map_
      ABSL_GUARDED_BY(mu_);
  std::map<NsName, types_v1::Process> tasks_map_ ABSL_GUARDED_BY(mu_);
  std::map<NsName, Lease> leases_map_ ABSL_GUARDED_BY(mu_);
  std::vector<Subscriber*> subscribers_ ABSL_GUARDED_BY(mu_);

  std::atomic<bool> list_stream_unimplemented_{false};
  std::atomic<bool> block_namespace_list_{false};
  std::atomic<int> namespace_lists_{0};
  std::atomic<int> container_list_calls_{0};
  std::atomic<int> container_stream_calls_{0};
  std::atomic<int> subscribe_calls_{0};

  NamespacesService namespaces_{this};
  ContainersService containers_{this};
  TasksService tasks_{this};
  LeasesService leases_{this};
  EventsService events_{this};
  std::unique_ptr<grpc::Server> server_;
};

// ---------------------------------------------------------------------------
// Fixture.

// Polls `pred` until it holds or a generous deadline passes (CI machines are
// loaded; nothing here depends on how fast the watcher is).
bool Eventually(const std::function<bool()>& pred,
                absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return pred();
}

class WatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/watcher_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/containerd.sock";
    fake_ = std::make_unique<FakeContainerd>();
    fake_->Start(socket_);
  }
  void TearDown() override {
    watcher_.reset();
    fake_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Periodic listings are far away unless a test asks otherwise: what the
  // tests see between connections comes from events.
  WatcherOptions Options() {
    WatcherOptions o;
    o.address = socket_;
    o.relist_interval = absl::Hours(1);
    o.lease_relist_interval = absl::Hours(1);
    o.lease_hint_delay = absl::Milliseconds(50);
    o.rpc_timeout = absl::Seconds(30);
    o.initial_backoff = absl::Milliseconds(50);
    o.max_backoff = absl::Milliseconds(500);
    return o;
  }

  void StartWatcher(WatcherOptions o) {
    watcher_ = std::make_unique<Watcher>(std::move(o));
    watcher_->Start();
  }

  // Connected, listed, and subscribed on the fake's side (the fake registers
  // the subscription when its handler runs, which may trail the listing).
  void WaitConnected() {
    ASSERT_TRUE(Eventually([&] {
      return watcher_->Current()->connected && fake_->active_subscribers() == 1;
    })) << "watcher never connected: "
        << watcher_->Current()->last_error.ToString();
  }

  std::shared_ptr<const Ownership> View() { return watcher_->Current(); }

  void PublishContainerCreate(const std::string& ns, const std::string& id) {
    cevents::ContainerCreate e;
    e.set_id(id);
    fake_->Publish(ns, "/containers/create", e);
  }
  void PublishContainerDelete(const std::string& ns, const std::string& id) {
    cevents::ContainerDelete e;
    e.set_id(id);
    fake_->Publish(ns, "/containers/delete", e);
  }

  std::string dir_;
  std::string socket_;
  std::unique_ptr<FakeContainerd> fake_;
  std::unique_ptr<Watcher> watcher_;
};

// ---------------------------------------------------------------------------
// Tests.

TEST(ParseProxyKeyTest, SplitsNamespaceSequenceAndKey) {
  EXPECT_EQ(ParseProxyKey("default/123/key"), (ProxyKey{"default", "key"}));
  // The key keeps its own slashes, spaces and dots.
  EXPECT_EQ(ParseProxyKey("k8s.io/7/sha256:abc/def"),
            (ProxyKey{"k8s.io", "sha256:abc/def"}));
  EXPECT_EQ(ParseProxyKey("ns/1/a b/../c/"), (ProxyKey{"ns", "a b/../c/"}));
  EXPECT_EQ(ParseProxyKey("ns/18446744073709551615/x"), (ProxyKey{"ns", "x"}));
}

TEST(ParseProxyKeyTest, RejectsWhatContainerdDoesNotProduce) {
  for (const char* bad : {"", "ns", "ns/", "ns/12", "ns/12/", "/12/key",
                          "ns//key", "ns/1x/key", "ns/-1/key", "ns/ 1/key",
                          "snapledger.removed/5", "snapledger.adopted/17"}) {
    EXPECT_EQ(ParseProxyKey(bad), std::nullopt) << bad;
  }
}

TEST(WatcherFiltersTest, ParseAndSelectTheTopicsHandled) {
  auto f = filter::Filter::ParseAll(Watcher::SubscriptionFilters());
  ASSERT_TRUE(f.ok()) << f.status();
  auto matches = [&](const std::string& topic) {
    return f->Match([&](const std::vector<std::string>& path)
                        -> std::optional<std::string> {
      if (path.size() == 1 && path[0] == "topic") return topic;
      return std::nullopt;
    });
  };
  for (const char* topic :
       {"/containers/create", "/containers/update", "/containers/delete",
        "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete",
        "/tasks/paused", "/tasks/resumed", "/namespaces/create",
        "/namespaces/delete", "/snapshot/prepare", "/snapshot/commit",
        "/snapshot/remove"}) {
    EXPECT_TRUE(matches(topic)) << topic;
  }
  for (const char* topic : {"/images/create", "/content/delete",
                            "/x/containers/create", "/snapshots/prepare"}) {
    EXPECT_FALSE(matches(topic)) << topic;
  }
}

TEST_F(WatcherTest, InitialListingKeepsOurContainersTasksAndLeases) {
  const absl::Time exited = HoursAgo(2);
  fake_->PutContainer("default", "web", "snapledger", "web-snap",
                      {{"role", "frontend"}});
  fake_->PutTask("default", "web", types_v1::RUNNING, 42);
  fake_->PutContainer("default", "foreign", "overlayfs", "foreign-snap");
  fake_->PutTask("default", "foreign", types_v1::RUNNING, 43);
  fake_->PutContainer("k8s.io", "idle", "snapledger", "idle-snap");
  fake_->PutContainer("k8s.io", "done", "snapledger", "done-snap");
  fake_->PutTask("k8s.io", "done", types_v1::STOPPED, 0, exited);
  // containerd could not ask the shim: not evidence of a dead container.
  fake_->PutContainer("k8s.io", "unsure", "snapledger", "unsure-snap");
  fake_->PutTask("k8s.io", "unsure", types_v1::UNKNOWN, 0);
  fake_->PutLease("default", "pull-1",
                  {HoursAgo(1),
                   {{"layer-3", "snapshots/snapledger"},
                    {"web-snap", "snapshots/snapledger"},
                    {"sha256:0123", "content"},
                    {"layer-x", "snapshots/overlayfs"}}});
  fake_->PutLease("default", "content-only",
                  {HoursAgo(1), {{"sha256:1", "content"}}});
  fake_->AddNamespace("empty");

  std::atomic<int> changes{0};
  std::atomic<uint64_t> last_version{0};
  std::atomic<bool> versions_increase{true};
  WatcherOptions o = Options();
  std::atomic<bool> current_is_new_view{true};
  // Not watcher_: the last call comes from Stop() inside the destructor,
  // when unique_ptr::reset has already cleared it.
  std::atomic<Watcher*> self{nullptr};
  o.on_change = [&](std::shared_ptr<const Ownership> v) {
    // Runs outside the watcher's lock, after the view is published.
    if (self.load()->Current() != v) current_is_new_view = false;
    if (v->version <= last_version) versions_increase = false;
    last_version = v->version;
    ++changes;
  };
  const absl::Time before = absl::Now();
  watcher_ = std::make_unique<Watcher>(std::move(o));
  self = watcher_.get();
  watcher_->Start();
  WaitConnected();
  const absl::Time after = absl::Now();

  auto v = View();
  EXPECT_TRUE(v->connected);
  EXPECT_GE(v->last_sync, before);
  EXPECT_GE(v->version, 1u);
  EXPECT_GE(changes.load(), 1);
  EXPECT_TRUE(versions_increase);
  EXPECT_TRUE(current_is_new_view);
  EXPECT_EQ(last_version.load(), v->version);

  ASSERT_EQ(v->containers.size(), 4u);
  EXPECT_EQ(v->Container("default", "foreign"), nullptr);
  ASSERT_NE(v->Container("k8s.io", "unsure"), nullptr);
  EXPECT_EQ(v->Container("k8s.io", "unsure")->task, TaskStatus::kUnknown);
  EXPECT_EQ(v->Container("k8s.io", "unsure")->idle_since,
            absl::InfiniteFuture());

  const ContainerInfo* web = v->Container("default", "web");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->ns, "default");
  EXPECT_EQ(web->snapshot_key, "web-snap");
  EXPECT_EQ(web->image, "docker.io/library/busybox:latest");
  EXPECT_EQ(web->labels.at("role"), "frontend");
  EXPECT_EQ(web->created_at, absl::FromUnixSeconds(1700000000));
  EXPECT_EQ(web->task, TaskStatus::kRunning);
  EXPECT_EQ(web->pid, 42u);
  EXPECT_EQ(web->idle_since, absl::InfiniteFuture());

  const ContainerInfo* idle = v->Container("k8s.io", "idle");
  ASSERT_NE(idle, nullptr);
  EXPECT_EQ(idle->task, TaskStatus::kNone);
  EXPECT_GE(idle->idle_since, before);  // first seen idle now
  EXPECT_LE(idle->idle_since, after);

  const ContainerInfo* done = v->Container("k8s.io", "done");
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->task, TaskStatus::kStopped);
  EXPECT_EQ(done->idle_since, exited);  // containerd's exit time

  ASSERT_EQ(v->leases.size(), 1u);
  const LeaseInfo& lease = v->leases.at({"default", "pull-1"});
  EXPECT_THAT(lease.snapshot_keys, ElementsAre("layer-3", "web-snap"));
  EXPECT_EQ(lease.labels.at("containerd.io/gc.expire"), "2030-01-01T00:00:00Z");

  const SnapshotHolders* h = v->Holders("default", "web-snap");
  ASSERT_NE(h, nullptr);
  EXPECT_THAT(h->containers, ElementsAre("web"));
  EXPECT_THAT(h->leases, ElementsAre("pull-1"));
  h = v->HoldersOfBackendKey("default/17/layer-3");
  ASSERT_NE(h, nullptr);
  EXPECT_THAT(h->containers, IsEmpty());
  EXPECT_THAT(h->leases, ElementsAre("pull-1"));
  h = v->HoldersOfBackendKey("k8s.io/3/idle-snap");
  ASSERT_NE(h, nullptr);
  EXPECT_THAT(h->containers, ElementsAre("idle"));
  // Same key, other namespace; a foreign snapshotter's; a reserved key.
  EXPECT_EQ(v->Holders("k8s.io", "web-snap"), nullptr);
  EXPECT_EQ(v->Holders("default", "foreign-snap"), nullptr);
  EXPECT_EQ(v->Holders("default", "layer-x"), nullptr);
  EXPECT_EQ(v->HoldersOfBackendKey("snapledger.removed/4"), nullptr);
  EXPECT_EQ(v->snapshots.size(), 5u);  // web-snap, layer-3, idle, done, unsure

  EXPECT_EQ(fake_->container_stream_calls(), 3);  // default, empty, k8s.io
  EXPECT_EQ(fake_->container_list_calls(), 0);

  // on_change refers to this test's locals and is called from Stop().
  const int before_stop = changes;
  watcher_.reset();
  EXPECT_EQ(changes, before_stop + 1);  // the disconnected view
  EXPECT_TRUE(current_is_new_view);
}

TEST_F(WatcherTest, FallsBackToListWhenListStreamIsUnimplemented) {
  fake_->set_list_stream_unimplemented(true);
  fake_->PutContainer("default", "a", "snapledger", "a-snap");
  fake_->PutContainer("other", "b", "snapledger", "b-snap");
  StartWatcher(Options());
  WaitConnected();
  auto v = View();
  EXPECT_NE(v->Container("default", "a"), nullptr);
  EXPECT_NE(v->Container("other", "b"), nullptr);
  EXPECT_EQ(fake_->container_list_calls(), 2);
}

TEST_F(WatcherTest, ContainerEventsUpdateTheView) {
  fake_->PutContainer("default", "old", "snapledger", "old-snap");
  StartWatcher(Options());
  WaitConnected();
  const uint64_t v0 = View()->version;

  // Created: the event names only the id; the watcher asks for the rest.
  fake_->PutContainer("default", "new", "snapledger", "new-snap");
  PublishContainerCreate("default", "new");
  fake_->PutContainer("default", "foreign", "overlayfs", "f-snap");
  PublishContainerCreate("default", "foreign");
  // A namespace first used by this event (containerd creates it silently).
  fake_->PutContainer("fresh", "n1", "snapledger", "n1-snap");
  PublishContainerCreate("fresh", "n1");
  ASSERT_TRUE(
      Eventually([&] { return View()->Container("fresh", "n1") != nullptr; }));
  auto v = View();
  EXPECT_GT(v->version, v0);
  ASSERT_NE(v->Container("default", "new"), nullptr);
  EXPECT_EQ(v->Container("default", "new")->snapshot_key, "new-snap");
  EXPECT_NE(v->Holders("default", "new-snap"), nullptr);
  EXPECT_EQ(v->Container("default", "foreign"), nullptr);

  // Updated: a label and the snapshot key change.
  fake_->PutContainer("default", "new", "snapledger", "new-snap-2",
                      {{"k", "v"}});
  cevents::ContainerUpdate u;
  u.set_id("new");
  u.set_snapshot_key("new-snap-2");
  fake_->Publish("default", "/containers/update", u);
  ASSERT_TRUE(Eventually([&] {
    const ContainerInfo* c = View()->Container("default", "new");
    return c != nullptr && c->snapshot_key == "new-snap-2";
  }));
  EXPECT_EQ(View()->Container("default", "new")->labels.at("k"), "v");
  EXPECT_EQ(View()->Holders("default", "new-snap"), nullptr);

  // Deleted: gone from the view and from the snapshot index.
  fake_->RemoveContainer("default", "old");
  PublishContainerDelete("default", "old");
  // A create whose container was deleted before the watcher asked.
  PublishContainerCreate("default", "ghost");
  ASSERT_TRUE(Eventually(
      [&] { return View()->Container("default", "old") == nullptr; }));
  v = View();
  EXPECT_EQ(v->Holders("default", "old-snap"), nullptr);
  EXPECT_EQ(v->Container("default", "ghost"), nullptr);
  EXPECT_EQ(v->containers.size(), 2u);
  EXPECT_TRUE(v->connected);

  // The namespace deleted: everything in it goes.
  cevents::NamespaceDelete nd;
  nd.set_name("fresh");
  fake_->RemoveNamespace("fresh");
  fake_->Publish("fresh", "/namespaces/delete", nd);
  ASSERT_TRUE(
      Eventually([&] { return View()->Container("fresh", "n1") == nullptr; }));
  EXPECT_EQ(View()->containers.size(), 1u);
}

TEST_F(WatcherTest, TaskEventsDriveIdleSince) {
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  fake_->PutContainer("default", "marker", "overlayfs", "m");
  StartWatcher(Options());
  WaitConnected();
  const absl::Time first_idle = View()->Container("default", "c")->idle_since;
  EXPECT_NE(first_idle, absl::InfiniteFuture());
  EXPECT_EQ(View()->Container("default", "c")->task, TaskStatus::kNone);

  cevents::TaskCreate tc;
  tc.set_container_id("c");
  tc.set_pid(100);
  fake_->Publish("default", "/tasks/create", tc);
  cevents::TaskStart ts;
  ts.set_container_id("c");
  ts.set_pid(100);
  fake_->Publish("default", "/tasks/start", ts);
  ASSERT_TRUE(Eventually([&] {
    return View()->Container("default", "c")->task == TaskStatus::kRunning;
  }));
  EXPECT_EQ(View()->Container("default", "c")->idle_since,
            absl::InfiniteFuture());
  EXPECT_EQ(View()->Container("default", "c")->pid, 100u);

  // An exec process exiting leaves the task running. Events are applied in
  // order, so once the marker's update is seen the exit has been too.
  cevents::TaskExit exec_exit;
  exec_exit.set_container_id("c");
  exec_exit.set_id("exec-1");
  exec_exit.set_pid(101);
  fake_->Publish("default", "/tasks/exit", exec_exit);
  fake_->PutContainer("default", "marker", "snapledger", "m");
  cevents::ContainerUpdate mu;
  mu.set_id("marker");
  fake_->Publish("default", "/containers/update", mu);
  ASSERT_TRUE(Eventually(
      [&] { return View()->Container("default", "marker") != nullptr; }));
  EXPECT_EQ(View()->Container("default", "c")->task, TaskStatus::kRunning);
  EXPECT_EQ(View()->Container("default", "c")->idle_since,
            absl::InfiniteFuture());

  // Paused still counts as live.
  cevents::TaskPaused tp;
  tp.set_container_id("c");
  fake_->Publish("default", "/tasks/paused", tp);
  ASSERT_TRUE(Eventually([&] {
    return View()->Container("default", "c")->task == TaskStatus::kPaused;
  }));
  EXPECT_EQ(View()->Container("default", "c")->idle_since,
            absl::InfiniteFuture());
  cevents::TaskResumed tr;
  tr.set_container_id("c");
  fake_->Publish("default", "/tasks/resumed", tr);

  // The init process exits: idle since containerd's exit time.
  const absl::Time exited = HoursAgo(3);
  cevents::TaskExit te;
  te.set_container_id("c");
  te.set_id("c");
  te.set_pid(100);
  te.set_exit_status(137);
  *te.mutable_exited_at() = ToProto(exited);
  fake_->Publish("default", "/tasks/exit", te);
  ASSERT_TRUE(Eventually([&] {
    return View()->Container("default", "c")->task == TaskStatus::kStopped;
  }));
  EXPECT_EQ(View()->Container("default", "c")->idle_since, exited);

  // Deleting the task keeps the earliest evidence.
  cevents::TaskDelete td;
  td.set_container_id("c");
  td.set_pid(100);
  *td.mutable_exited_at() = ToProto(exited);
  fake_->Publish("default", "/tasks/delete", td);
  ASSERT_TRUE(Eventually([&] {
    return View()->Container("default", "c")->task == TaskStatus::kNone;
  }));
  EXPECT_EQ(View()->Container("default", "c")->idle_since, exited);
  EXPECT_EQ(View()->Container("default", "c")->pid, 0u);

  // Started again: live again.
  ts.set_pid(200);
  fake_->Publish("default", "/tasks/start", ts);
  ASSERT_TRUE(Eventually([&] {
    return View()->Container("default", "c")->task == TaskStatus::kRunning;
  }));
  EXPECT_EQ(View()->Container("default", "c")->idle_since,
            absl::InfiniteFuture());
}

TEST_F(WatcherTest, ReconnectsAfterRestartAndRelistsWhatItMissed) {
  fake_->PutContainer("default", "stays", "snapledger", "stays-snap");
  fake_->PutContainer("default", "goes", "snapledger", "goes-snap");
  fake_->PutTask("default", "stays", types_v1::RUNNING, 7);
  fake_->PutLease("default", "l1",
                  {HoursAgo(1), {{"goes-snap", "snapshots/snapledger"}}});
  StartWatcher(Options());
  WaitConnected();
  ASSERT_NE(View()->Container("default", "goes"), nullptr);
  const uint64_t subscribes = fake_->subscribe_calls();

  fake_->Stop();
  ASSERT_TRUE(Eventually([&] { return !View()->connected; }));
  auto down = View();
  EXPECT_FALSE(down->last_error.ok());
  EXPECT_NE(down->last_error_at, absl::InfinitePast());
  // The last known state is kept while disconnected.
  EXPECT_NE(down->Container("default", "goes"), nullptr);

  // What changes while the watcher cannot see: no events reach it.
  const absl::Time exited = HoursAgo(1);
  fake_->RemoveContainer("default", "goes");
  fake_->RemoveLease("default", "l1");
  fake_->PutTask("default", "stays", types_v1::STOPPED, 0, exited);
  fake_->PutContainer("k8s.io", "arrived", "snapledger", "arrived-snap");
  fake_->PutLease("k8s.io", "l2",
                  {HoursAgo(1), {{"arrived-snap", "snapshots/snapledger"}}});
  fake_->Start(socket_);

  ASSERT_TRUE(Eventually([&] {
    auto v = View();
    return v->connected && v->Container("k8s.io", "arrived") != nullptr;
  })) << View()->last_error.ToString();
  auto v = View();
  EXPECT_GT(fake_->subscribe_calls(), static_cast<int>(subscribes));
  EXPECT_GT(v->last_sync, down->last_sync);
  EXPECT_EQ(v->Container("default", "goes"), nullptr);
  EXPECT_EQ(v->leases.count({"default", "l1"}), 0u);
  ASSERT_NE(v->Holders("k8s.io", "arrived-snap"), nullptr);
  EXPECT_THAT(v->Holders("k8s.io", "arrived-snap")->leases, ElementsAre("l2"));
  const ContainerInfo* stays = v->Container("default", "stays");
  ASSERT_NE(stays, nullptr);
  EXPECT_EQ(stays->task, TaskStatus::kStopped);
  EXPECT_EQ(stays->idle_since, exited);

  // And it follows events again.
  WaitConnected();
  fake_->PutContainer("default", "later", "snapledger", "later-snap");
  PublishContainerCreate("default", "later");
  EXPECT_TRUE(Eventually(
      [&] { return View()->Container("default", "later") != nullptr; }));
}

TEST_F(WatcherTest, RelistKeepsIdleEvidenceOfKnownContainers) {
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  StartWatcher(Options());
  WaitConnected();
  const absl::Time idle = View()->Container("default", "c")->idle_since;
  const absl::Time synced = View()->last_sync;
  watcher_->RequestRelist();
  ASSERT_TRUE(Eventually([&] { return View()->last_sync > synced; }));
  EXPECT_EQ(View()->Container("default", "c")->idle_since, idle);
}

TEST_F(WatcherTest, LeasesFollowSnapshotHintsAndPeriodicRelisting) {
  WatcherOptions o = Options();
  StartWatcher(o);
  WaitConnected();
  EXPECT_THAT(View()->leases, IsEmpty());

  // No lease event exists: a snapshot event in the namespace is the hint.
  fake_->PutLease("default", "build",
                  {HoursAgo(1), {{"s1", "snapshots/snapledger"}}});
  cevents::SnapshotPrepare sp;
  sp.set_key("s1");
  fake_->Publish("default", "/snapshot/prepare", sp);
  ASSERT_TRUE(
      Eventually([&] { return View()->Holders("default", "s1") != nullptr; }));
  EXPECT_THAT(View()->Holders("default", "s1")->leases, ElementsAre("build"));
  watcher_.reset();

  // A lease deleted (no event at all) goes at the next periodic listing.
  o.lease_relist_interval = absl::Milliseconds(100);
  StartWatcher(o);
  WaitConnected();
  ASSERT_NE(View()->Holders("default", "s1"), nullptr);
  fake_->RemoveLease("default", "build");
  EXPECT_TRUE(Eventually([&] { return View()->leases.empty(); }));
  EXPECT_EQ(View()->Holders("default", "s1"), nullptr);
}

TEST_F(WatcherTest, StopIsPromptWhileTheStreamIsIdle) {
  WatcherOptions o = Options();
  o.rpc_timeout = absl::Minutes(10);
  StartWatcher(o);
  WaitConnected();
  watcher_->Start();  // idempotent
  const absl::Time t0 = absl::Now();
  watcher_->Stop();
  // Generous: a cancelled stream ends in milliseconds; a missed cancel
  // would wait for containerd's next event, i.e. forever.
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  EXPECT_FALSE(View()->connected);
  watcher_->Stop();  // idempotent
  EXPECT_TRUE(Eventually([&] { return fake_->active_subscribers() == 0; }));

  // Started again, it lists and follows again.
  watcher_->Start();
  WaitConnected();
}

TEST_F(WatcherTest, StopCancelsACallInFlight) {
  fake_->set_block_namespace_list(true);
  WatcherOptions o = Options();
  o.rpc_timeout = absl::Minutes(10);
  StartWatcher(o);
  ASSERT_TRUE(Eventually([&] { return fake_->namespace_lists() >= 1; }));
  const absl::Time t0 = absl::Now();
  watcher_->Stop();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  EXPECT_FALSE(View()->connected);
  fake_->set_block_namespace_list(false);
}

TEST_F(WatcherTest, StopIsPromptWhileContainerdIsAway) {
  fake_->Stop();
  WatcherOptions o = Options();
  o.initial_backoff = absl::Minutes(10);
  o.max_backoff = absl::Minutes(10);
  StartWatcher(o);
  ASSERT_TRUE(Eventually([&] { return !View()->last_error.ok(); }));
  EXPECT_FALSE(View()->connected);
  EXPECT_EQ(View()->last_sync, absl::InfinitePast());
  const absl::Time t0 = absl::Now();
  watcher_->Stop();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
}

}  // namespace
}  // namespace snapledger
