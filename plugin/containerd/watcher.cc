#include "plugin/containerd/watcher.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "containerd/events/container.pb.h"
#include "containerd/events/namespace.pb.h"
#include "containerd/events/task.pb.h"
#include "containerd/services/containers/v1/containers.grpc.pb.h"
#include "containerd/services/events/v1/events.grpc.pb.h"
#include "containerd/services/leases/v1/leases.grpc.pb.h"
#include "containerd/services/namespaces/v1/namespace.grpc.pb.h"
#include "containerd/services/tasks/v1/tasks.grpc.pb.h"
#include "plugin/rpc/status.h"
#include "spdlog/spdlog.h"

namespace snapledger {

namespace containers_v1 = ::containerd::services::containers::v1;
namespace events_v1 = ::containerd::services::events::v1;
namespace leases_v1 = ::containerd::services::leases::v1;
namespace namespaces_v1 = ::containerd::services::namespaces::v1;
namespace tasks_v1 = ::containerd::services::tasks::v1;
namespace types_v1 = ::containerd::v1::types;
namespace cevents = ::containerd::events;

namespace {

// The header containerd reads the namespace of a call from.
constexpr char kNamespaceHeader[] = "containerd-namespace";

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// containerd encodes an unset time (Go's zero time) as year 1: anything not
// after the epoch is "unknown".
std::optional<absl::Time> KnownTime(const google::protobuf::Timestamp& ts) {
  const absl::Time t = FromProto(ts);
  if (t <= absl::UnixEpoch()) return std::nullopt;
  return t;
}

ContainerInfo FromProto(const std::string& ns,
                        const containers_v1::Container& c) {
  ContainerInfo info;
  info.ns = ns;
  info.id = c.id();
  info.snapshot_key = c.snapshot_key();
  info.image = c.image();
  info.labels.insert(c.labels().begin(), c.labels().end());
  if (c.has_created_at()) info.created_at = FromProto(c.created_at());
  return info;
}

// Sets `c`'s task fields from a listing or a Get (`p` null: no task). `seen`
// is when that state was observed; `old` is what the watcher knew of the
// container before, if anything. Idle evidence only ever moves earlier for
// the same container (same creation time): re-listing must not restart the
// dead-container clock.
void SetTaskFromProcess(ContainerInfo& c, const types_v1::Process* p,
                        const ContainerInfo* old, absl::Time seen) {
  absl::Time evidence = seen;
  bool exit_known = false;
  if (p == nullptr) {
    c.task = TaskStatus::kNone;
    c.pid = 0;
  } else {
    c.task = TaskStatusFromProto(p->status());
    c.pid = p->pid();
    if (c.task == TaskStatus::kStopped && p->has_exited_at()) {
      if (auto exited = KnownTime(p->exited_at())) {
        evidence = std::min(*exited, seen);
        exit_known = true;
      }
    }
  }
  if (TaskIsLive(c.task)) {
    c.idle_since = absl::InfiniteFuture();
    return;
  }
  c.idle_since = evidence;
  // The task's own exit time is the best evidence: the task may have run
  // again (unseen, while disconnected) since an older idle time.
  if (exit_known) return;
  if (old != nullptr && old->created_at == c.created_at &&
      old->idle_since != absl::InfiniteFuture()) {
    c.idle_since = std::min(c.idle_since, old->idle_since);
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Free functions and the view.

std::string_view TaskStatusName(TaskStatus status) {
  switch (status) {
    case TaskStatus::kNone:
      return "none";
    case TaskStatus::kUnknown:
      return "unknown";
    case TaskStatus::kCreated:
      return "created";
    case TaskStatus::kRunning:
      return "running";
    case TaskStatus::kStopped:
      return "stopped";
    case TaskStatus::kPaused:
      return "paused";
    case TaskStatus::kPausing:
      return "pausing";
  }
  return "invalid";
}

TaskStatus TaskStatusFromProto(int status) {
  switch (status) {
    case types_v1::CREATED:
      return TaskStatus::kCreated;
    case types_v1::RUNNING:
      return TaskStatus::kRunning;
    case types_v1::STOPPED:
      return TaskStatus::kStopped;
    case types_v1::PAUSED:
      return TaskStatus::kPaused;
    case types_v1::PAUSING:
      return TaskStatus::kPausing;
    default:
      return TaskStatus::kUnknown;
  }
}

bool TaskIsLive(TaskStatus status) {
  return status == TaskStatus::kRunning || status == TaskStatus::kPaused ||
         status == TaskStatus::kPausing || status == TaskStatus::kUnknown;
}

const SnapshotHolders* Ownership::Holders(std::string_view ns,
                                          std::string_view key) const {
  auto it = snapshots.find(NsName(ns, key));
  return it == snapshots.end() ? nullptr : &it->second;
}

const SnapshotHolders* Ownership::HoldersOfBackendKey(
    std::string_view backend_key) const {
  std::optional<ProxyKey> k = ParseProxyKey(backend_key);
  return k ? Holders(k->ns, k->key) : nullptr;
}

const ContainerInfo* Ownership::Container(std::string_view ns,
                                          std::string_view id) const {
  auto it = containers.find(NsName(ns, id));
  return it == containers.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------
// Watcher: lifecycle.

struct Watcher::Stubs {
  std::unique_ptr<namespaces_v1::Namespaces::Stub> namespaces;
  std::unique_ptr<containers_v1::Containers::Stub> containers;
  std::unique_ptr<tasks_v1::Tasks::Stub> tasks;
  std::unique_ptr<leases_v1::Leases::Stub> leases;
  std::unique_ptr<events_v1::Events::Stub> events;
};

Watcher::Watcher(WatcherOptions options)
    : options_(std::move(options)),
      lease_resource_type_(absl::StrCat("snapshots/", options_.snapshotter)),
      current_(std::make_shared<const Ownership>()) {}

Watcher::~Watcher() { Stop(); }

absl::Status Watcher::Start() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  if (worker_.joinable()) return absl::OkStatus();
  {
    absl::MutexLock l(&mu_);
    stopping_ = false;
  }
  try {
    worker_ = std::thread([this] { Run(); });
  } catch (const std::system_error& e) {
    return absl::UnavailableError(absl::StrCat(
        "cannot start the containerd watcher's thread: ", e.what()));
  }
  return absl::OkStatus();
}

void Watcher::Stop() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  if (!worker_.joinable()) return;
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    // Both contexts stay alive while registered, and their owner needs mu_
    // to unregister them.
    if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
    if (call_ctx_ != nullptr) call_ctx_->TryCancel();
  }
  worker_.join();
}

std::shared_ptr<const Ownership> Watcher::Current() const {
  absl::MutexLock l(&mu_);
  return current_;
}

void Watcher::RequestRelist() {
  absl::MutexLock l(&mu_);
  relist_requested_ = true;
}

std::vector<std::string> Watcher::SubscriptionFilters() {
  // Several filters are ORed by containerd. Leases publish nothing (1.6);
  // /snapshot/* (singular) hints that a namespace's leases changed.
  return {R"(topic~="^/containers/")", R"(topic~="^/tasks/")",
          R"(topic~="^/namespaces/")", R"(topic~="^/snapshot/")"};
}

bool Watcher::WakeWorker() const {
  return stopping_ || !events_.empty() || events_overflowed_ || stream_ended_ ||
         relist_requested_;
}

bool Watcher::Stopping() const {
  absl::MutexLock l(&mu_);
  return stopping_;
}

void Watcher::Run() {
  absl::Duration backoff = options_.initial_backoff;
  int failures_in_a_row = 0;
  while (!Stopping()) {
    bool synced = false;
    const absl::Status st = RunSession(&synced);
    if (Stopping()) break;
    if (synced) {
      backoff = options_.initial_backoff;
      failures_in_a_row = 0;
      spdlog::warn("watcher: lost containerd at {}: {}", options_.address,
                   st.ToString());
    } else if (failures_in_a_row++ == 0) {
      spdlog::warn("watcher: cannot follow containerd at {}: {} (retrying)",
                   options_.address, st.ToString());
    } else {
      spdlog::debug("watcher: containerd still unreachable: {}", st.ToString());
    }
    connected_ = false;
    NoteError(st);
    Publish();
    // Jitter keeps many daemons restarted together from reconnecting in step.
    const absl::Duration wait =
        backoff / 2 + absl::Uniform(rng_, 0.0, 1.0) * backoff;
    {
      absl::MutexLock l(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait);
    }
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  connected_ = false;
  Publish();
}

// ---------------------------------------------------------------------------
// Sessions.

absl::Status Watcher::RunSession(bool* synced) {
  const std::string target = absl::StartsWith(options_.address, "unix:")
                                 ? options_.address
                                 : absl::StrCat("unix:", options_.address);
  grpc::ChannelArguments args;
  // A fresh connection per session: no reconnect backoff inherited from a
  // channel shared with anyone else.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Tasks/List and Containers/List (the fallback) carry a whole namespace.
  args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      target, grpc::InsecureChannelCredentials(), args);
  Stubs stubs{namespaces_v1::Namespaces::NewStub(channel),
              containers_v1::Containers::NewStub(channel),
              tasks_v1::Tasks::NewStub(channel),
              leases_v1::Leases::NewStub(channel),
              events_v1::Events::NewStub(channel)};

  grpc::ClientContext stream_ctx;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return absl::CancelledError("watcher stopping");
    events_.clear();
    events_overflowed_ = false;
    stream_ended_ = false;
    relist_requested_ = false;  // every session starts with a full listing
    stream_ctx_ = &stream_ctx;
  }
  list_stream_ok_ = true;

  // Subscribe before listing, so that changes made during the listing
  // arrive as events afterwards. No deadline: the stream lives as long as
  // the session.
  events_v1::SubscribeRequest req;
  for (const std::string& f : SubscriptionFilters()) req.add_filters(f);
  std::unique_ptr<grpc::ClientReader<Envelope>> reader =
      stubs.events->Subscribe(&stream_ctx, req);
  std::thread reader_thread;
  try {
    reader_thread = std::thread([this, r = reader.get()] {
      for (;;) {
        Envelope env;
        if (!r->Read(&env)) break;
        PushEvent(std::move(env));
      }
      MarkStreamEnded();
    });
  } catch (const std::system_error& e) {
    // A failed session like any other: Run() backs off and tries again.
    stream_ctx.TryCancel();
    (void)reader->Finish();  // cancelled by us: its status says nothing new
    absl::MutexLock l(&mu_);
    stream_ctx_ = nullptr;
    return absl::UnavailableError(absl::StrCat(
        "cannot start the watcher's event reader thread: ", e.what()));
  }

  const absl::Status followed = FollowSession(stubs, synced);

  bool ended_by_server;
  {
    absl::MutexLock l(&mu_);
    ended_by_server = stream_ended_;
  }
  if (!ended_by_server) stream_ctx.TryCancel();
  reader_thread.join();
  const grpc::Status finished = reader->Finish();
  {
    absl::MutexLock l(&mu_);
    stream_ctx_ = nullptr;
  }
  if (ended_by_server && followed.code() == absl::StatusCode::kAborted) {
    // The stream's own status says why containerd went away.
    if (!finished.ok()) return FromGrpcStatus(finished, "event stream");
    return absl::UnavailableError("event stream ended by containerd");
  }
  return followed;
}

void Watcher::PushEvent(Envelope env) {
  absl::MutexLock l(&mu_);
  if (events_.size() >= kMaxQueuedEvents) {
    events_overflowed_ = true;
    return;
  }
  events_.push_back(std::move(env));
}

void Watcher::MarkStreamEnded() {
  absl::MutexLock l(&mu_);
  stream_ended_ = true;
}

// Returns Aborted when the event stream ended (RunSession replaces it with
// the stream's status), Cancelled when stopping, or the failure that ended
// the session.
absl::Status Watcher::FollowSession(Stubs& stubs, bool* synced) {
  absl::Status st = FullSync(stubs);
  if (!st.ok()) return st;
  *synced = true;
  spdlog::info(
      "watcher: following containerd at {}: {} namespaces, {} containers "
      "and {} leases of snapshotter {}",
      options_.address, namespaces_.size(), containers_.size(), leases_.size(),
      options_.snapshotter);

  absl::Time next_full = absl::Now() + options_.relist_interval;
  absl::Time next_leases = absl::Now() + options_.lease_relist_interval;
  for (;;) {
    absl::Time deadline = std::min(next_full, next_leases);
    for (const auto& [ns, due] : lease_hints_) {
      deadline = std::min(deadline, due);
    }

    std::deque<Envelope> batch;
    bool overflowed, ended, relist;
    {
      absl::MutexLock l(&mu_);
      mu_.AwaitWithDeadline(absl::Condition(this, &Watcher::WakeWorker),
                            deadline);
      if (stopping_) return absl::CancelledError("watcher stopping");
      batch.swap(events_);
      overflowed = std::exchange(events_overflowed_, false);
      relist = std::exchange(relist_requested_, false);
      ended = stream_ended_;
    }

    for (const Envelope& env : batch) {
      st = ApplyEvent(stubs, env);
      if (!st.ok()) return st;
    }
    if (ended) return absl::AbortedError("event stream ended");

    const absl::Time now = absl::Now();
    if (overflowed || relist || now >= next_full) {
      if (overflowed) {
        spdlog::warn("watcher: more than {} events queued; re-listing",
                     kMaxQueuedEvents);
      }
      st = FullSync(stubs);
      if (!st.ok()) return st;
      next_full = absl::Now() + options_.relist_interval;
      next_leases = absl::Now() + options_.lease_relist_interval;
      continue;  // FullSync published
    }
    if (now >= next_leases) {
      for (const std::string& ns :
           std::vector<std::string>(namespaces_.begin(), namespaces_.end())) {
        st = RelistLeases(stubs, ns);
        if (!st.ok()) return st;
      }
      lease_hints_.clear();
      next_leases = absl::Now() + options_.lease_relist_interval;
    }
    for (auto it = lease_hints_.begin(); it != lease_hints_.end();) {
      if (it->second > now) {
        ++it;
        continue;
      }
      st = RelistLeases(stubs, it->first);
      if (!st.ok()) return st;
      it = lease_hints_.erase(it);
    }
    Publish();
  }
}

absl::Status Watcher::Call(
    const std::string& ns,
    const std::function<absl::Status(grpc::ClientContext*)>& call) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
  if (!ns.empty()) ctx.AddMetadata(kNamespaceHeader, ns);
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return absl::CancelledError("watcher stopping");
    call_ctx_ = &ctx;
  }
  absl::Status st = call(&ctx);
  absl::MutexLock l(&mu_);
  call_ctx_ = nullptr;
  return st;
}

// ---------------------------------------------------------------------------
// Listing.

absl::Status Watcher::FullSync(Stubs& stubs) {
  std::vector<std::string> names;
  absl::Status st = Call("", [&](grpc::ClientContext* ctx) {
    namespaces_v1::ListNamespacesResponse resp;
    absl::Status s =
        FromGrpcStatus(stubs.namespaces->List(
                           ctx, namespaces_v1::ListNamespacesRequest(), &resp),
                       "list namespaces");
    for (const auto& n : resp.namespaces()) names.push_back(n.name());
    return s;
  });
  if (!st.ok()) return st;

  std::map<Ownership::NsName, ContainerInfo> containers;
  for (const std::string& ns : names) {
    // containerd's container filters know no "snapshotter" field (1.6), so
    // every container is listed and ours are picked here.
    std::vector<containers_v1::Container> listed;
    auto keep = [&](const containers_v1::Container& c) {
      if (c.snapshotter() == options_.snapshotter) listed.push_back(c);
    };
    if (list_stream_ok_) {
      st = Call(ns, [&](grpc::ClientContext* ctx) {
        auto stream = stubs.containers->ListStream(
            ctx, containers_v1::ListContainersRequest());
        containers_v1::ListContainerMessage msg;
        while (stream->Read(&msg)) keep(msg.container());
        return FromGrpcStatus(stream->Finish(), "list containers");
      });
      if (st.code() == absl::StatusCode::kUnimplemented) {
        // Older containerd: fall back to List for the rest of the session.
        list_stream_ok_ = false;
        listed.clear();
      }
    }
    if (!list_stream_ok_) {
      st = Call(ns, [&](grpc::ClientContext* ctx) {
        containers_v1::ListContainersResponse resp;
        absl::Status s = FromGrpcStatus(
            stubs.containers->List(ctx, containers_v1::ListContainersRequest(),
                                   &resp),
            "list containers");
        for (const auto& c : resp.containers()) keep(c);
        return s;
      });
    }
    if (!st.ok()) return st;

    // Keyed by task id: Tasks/List leaves container_id empty and puts the
    // container's id in `id`.
    std::map<std::string, types_v1::Process> tasks;
    st = Call(ns, [&](grpc::ClientContext* ctx) {
      tasks_v1::ListTasksResponse resp;
      absl::Status s = FromGrpcStatus(
          stubs.tasks->List(ctx, tasks_v1::ListTasksRequest(), &resp),
          "list tasks");
      for (const auto& p : resp.tasks()) {
        tasks[p.id().empty() ? p.container_id() : p.id()] = p;
      }
      return s;
    });
    if (!st.ok()) return st;

    const absl::Time now = absl::Now();
    for (const containers_v1::Container& c : listed) {
      ContainerInfo info = FromProto(ns, c);
      auto t = tasks.find(c.id());
      auto old = containers_.find({ns, c.id()});
      SetTaskFromProcess(info, t == tasks.end() ? nullptr : &t->second,
                         old == containers_.end() ? nullptr : &old->second,
                         now);
      containers.emplace(Ownership::NsName(ns, c.id()), std::move(info));
    }
  }

  // Leases last: RelistLeases replaces one namespace's leases in leases_.
  containers_ = std::move(containers);
  namespaces_ = std::set<std::string>(names.begin(), names.end());
  std::erase_if(leases_, [&](const auto& e) {
    return !namespaces_.contains(e.first.first);
  });
  for (const std::string& ns : names) {
    st = RelistLeases(stubs, ns);
    if (!st.ok()) return st;
  }
  lease_hints_.clear();
  connected_ = true;
  last_sync_ = absl::Now();
  Publish();
  return absl::OkStatus();
}

absl::Status Watcher::RelistLeases(Stubs& stubs, const std::string& ns) {
  std::vector<leases_v1::Lease> listed;
  absl::Status st = Call(ns, [&](grpc::ClientContext* ctx) {
    leases_v1::ListResponse resp;
    absl::Status s =
        FromGrpcStatus(stubs.leases->List(ctx, leases_v1::ListRequest(), &resp),
                       "list leases");
    listed.assign(resp.leases().begin(), resp.leases().end());
    return s;
  });
  if (!st.ok()) return st;

  std::vector<LeaseInfo> ours;
  for (const leases_v1::Lease& lease : listed) {
    LeaseInfo info;
    st = Call(ns, [&](grpc::ClientContext* ctx) {
      leases_v1::ListResourcesRequest req;
      req.set_id(lease.id());
      leases_v1::ListResourcesResponse resp;
      absl::Status s = FromGrpcStatus(
          stubs.leases->ListResources(ctx, req, &resp), "list lease resources");
      for (const auto& r : resp.resources()) {
        if (r.type() == lease_resource_type_)
          info.snapshot_keys.push_back(r.id());
      }
      return s;
    });
    if (st.code() == absl::StatusCode::kNotFound) continue;  // deleted since
    if (!st.ok()) return st;
    if (info.snapshot_keys.empty()) continue;
    std::sort(info.snapshot_keys.begin(), info.snapshot_keys.end());
    info.ns = ns;
    info.id = lease.id();
    if (lease.has_created_at()) info.created_at = FromProto(lease.created_at());
    info.labels.insert(lease.labels().begin(), lease.labels().end());
    ours.push_back(std::move(info));
  }
  std::erase_if(leases_, [&](const auto& e) { return e.first.first == ns; });
  for (LeaseInfo& info : ours) {
    Ownership::NsName key(ns, info.id);
    leases_.emplace(std::move(key), std::move(info));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Events.

// Over 80 lines on purpose: one flat dispatch on the topic, a few lines per
// topic; split, the table of topics would only be scattered.
absl::Status Watcher::ApplyEvent(Stubs& stubs, const Envelope& env) {
  const std::string& topic = env.topic();
  const std::string& ns = env.namespace_();
  const absl::Time now = absl::Now();
  const absl::Time seen =
      env.has_timestamp() ? std::min(FromProto(env.timestamp()), now) : now;
  const std::string& payload = env.event().value();
  spdlog::debug("watcher: event {} in namespace {}", topic, ns);

  // Payloads are decoded by topic, whatever the Any's type URL prefix.
  auto parse = [&](google::protobuf::Message& m) {
    if (m.ParseFromString(payload)) return true;
    spdlog::warn("watcher: cannot decode event {}; re-listing", topic);
    absl::MutexLock l(&mu_);
    relist_requested_ = true;
    return false;
  };

  if (topic == "/namespaces/delete") {
    cevents::NamespaceDelete e;
    if (parse(e)) DropNamespace(e.name());
    return absl::OkStatus();
  }
  if (topic == "/namespaces/create") {
    // The envelope carries the creator's namespace, not the new one.
    cevents::NamespaceCreate e;
    if (parse(e) && !e.name().empty()) namespaces_.insert(e.name());
    return absl::OkStatus();
  }
  if (ns.empty()) return absl::OkStatus();
  // containerd creates namespaces implicitly on first use, without an event.
  namespaces_.insert(ns);

  if (topic == "/containers/create") {
    cevents::ContainerCreate e;
    if (!parse(e)) return absl::OkStatus();
    return RefreshContainer(stubs, ns, e.id(), seen);
  }
  if (topic == "/containers/update") {
    // The event lacks the snapshotter, which an update may change.
    cevents::ContainerUpdate e;
    if (!parse(e)) return absl::OkStatus();
    return RefreshContainer(stubs, ns, e.id(), seen);
  }
  if (topic == "/containers/delete") {
    cevents::ContainerDelete e;
    if (parse(e)) containers_.erase({ns, e.id()});
    return absl::OkStatus();
  }
  if (topic == "/tasks/create") {
    cevents::TaskCreate e;
    if (parse(e))
      SetTask(ns, e.container_id(), TaskStatus::kCreated, e.pid(), seen);
    return absl::OkStatus();
  }
  if (topic == "/tasks/start") {
    cevents::TaskStart e;
    if (parse(e))
      SetTask(ns, e.container_id(), TaskStatus::kRunning, e.pid(), seen);
    return absl::OkStatus();
  }
  if (topic == "/tasks/exit") {
    cevents::TaskExit e;
    if (!parse(e)) return absl::OkStatus();
    // Exec processes exit too; only the init process ends the task.
    if (!e.id().empty() && e.id() != e.container_id()) return absl::OkStatus();
    absl::Time evidence = seen;
    if (e.has_exited_at()) {
      if (auto t = KnownTime(e.exited_at())) evidence = std::min(*t, seen);
    }
    SetTask(ns, e.container_id(), TaskStatus::kStopped, e.pid(), evidence);
    return absl::OkStatus();
  }
  if (topic == "/tasks/delete") {
    cevents::TaskDelete e;
    if (!parse(e)) return absl::OkStatus();
    if (!e.id().empty() && e.id() != e.container_id()) return absl::OkStatus();
    absl::Time evidence = seen;
    if (e.has_exited_at()) {
      if (auto t = KnownTime(e.exited_at())) evidence = std::min(*t, seen);
    }
    SetTask(ns, e.container_id(), TaskStatus::kNone, 0, evidence);
    return absl::OkStatus();
  }
  if (topic == "/tasks/paused") {
    cevents::TaskPaused e;
    if (parse(e)) SetTask(ns, e.container_id(), TaskStatus::kPaused, 0, seen);
    return absl::OkStatus();
  }
  if (topic == "/tasks/resumed") {
    cevents::TaskResumed e;
    if (parse(e)) SetTask(ns, e.container_id(), TaskStatus::kRunning, 0, seen);
    return absl::OkStatus();
  }
  if (absl::StartsWith(topic, "/snapshot/")) {
    // A snapshot prepared under a lease joins it without a lease event.
    lease_hints_.try_emplace(ns, now + options_.lease_hint_delay);
    return absl::OkStatus();
  }
  return absl::OkStatus();  // /tasks/oom, /tasks/exec-*, ...: nothing held
}

absl::Status Watcher::RefreshContainer(Stubs& stubs, const std::string& ns,
                                       const std::string& id, absl::Time seen) {
  containers_v1::GetContainerResponse got;
  absl::Status st = Call(ns, [&](grpc::ClientContext* ctx) {
    containers_v1::GetContainerRequest req;
    req.set_id(id);
    return FromGrpcStatus(stubs.containers->Get(ctx, req, &got),
                          "get container");
  });
  if (st.code() == absl::StatusCode::kNotFound ||
      (st.ok() && got.container().snapshotter() != options_.snapshotter)) {
    containers_.erase({ns, id});  // gone since, or (no longer) ours
    return absl::OkStatus();
  }
  if (!st.ok()) return st;

  std::optional<types_v1::Process> task;
  st = Call(ns, [&](grpc::ClientContext* ctx) {
    tasks_v1::GetRequest req;
    req.set_container_id(id);
    tasks_v1::GetResponse resp;
    absl::Status s =
        FromGrpcStatus(stubs.tasks->Get(ctx, req, &resp), "get task");
    if (s.ok()) task = resp.process();
    return s;
  });
  if (!st.ok() && st.code() != absl::StatusCode::kNotFound) return st;

  ContainerInfo info = FromProto(ns, got.container());
  auto old = containers_.find({ns, id});
  SetTaskFromProcess(info, task ? &*task : nullptr,
                     old == containers_.end() ? nullptr : &old->second, seen);
  containers_[{ns, id}] = std::move(info);
  return absl::OkStatus();
}

void Watcher::SetTask(const std::string& ns, const std::string& id,
                      TaskStatus status, uint32_t pid,
                      absl::Time idle_evidence) {
  auto it = containers_.find({ns, id});
  if (it == containers_.end()) return;  // not ours, or not yet known
  ContainerInfo& c = it->second;
  c.task = status;
  c.pid = pid;
  if (TaskIsLive(status)) {
    c.idle_since = absl::InfiniteFuture();
  } else {
    c.idle_since = std::min(c.idle_since, idle_evidence);
  }
}

void Watcher::DropNamespace(const std::string& ns) {
  namespaces_.erase(ns);
  lease_hints_.erase(ns);
  std::erase_if(containers_,
                [&](const auto& e) { return e.first.first == ns; });
  std::erase_if(leases_, [&](const auto& e) { return e.first.first == ns; });
}

void Watcher::NoteError(const absl::Status& status) {
  last_error_ = status;
  last_error_at_ = absl::Now();
}

void Watcher::Publish() {
  const std::shared_ptr<const Ownership> prev = Current();
  const bool changed =
      prev->containers != containers_ || prev->leases != leases_ ||
      prev->connected != connected_ || prev->last_error != last_error_ ||
      prev->last_error_at != last_error_at_;
  if (!changed && prev->last_sync == last_sync_) return;

  auto next = std::make_shared<Ownership>();
  next->containers = containers_;
  next->leases = leases_;
  // Map order makes each holder list sorted by id.
  for (const auto& [key, c] : containers_) {
    if (c.snapshot_key.empty()) continue;
    next->snapshots[{c.ns, c.snapshot_key}].containers.push_back(c.id);
  }
  for (const auto& [key, lease] : leases_) {
    for (const std::string& k : lease.snapshot_keys) {
      next->snapshots[{lease.ns, k}].leases.push_back(lease.id);
    }
  }
  next->connected = connected_;
  next->last_sync = last_sync_;
  next->last_error = last_error_;
  next->last_error_at = last_error_at_;
  next->version = prev->version + (changed ? 1 : 0);
  {
    absl::MutexLock l(&mu_);
    current_ = next;
  }
  if (changed && options_.on_change) options_.on_change(std::move(next));
}

}  // namespace snapledger
