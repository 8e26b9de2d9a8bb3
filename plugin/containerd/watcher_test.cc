// The watcher against an in-process fake containerd
// (plugin/testing/fake_containerd.h) on a temporary unix socket, with an
// event stream the test drives.
#include "plugin/containerd/watcher.h"

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "containerd/events/container.pb.h"
#include "containerd/events/namespace.pb.h"
#include "containerd/events/snapshot.pb.h"
#include "containerd/events/task.pb.h"
#include "containerd/types/task/task.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/filter/filter.h"
#include "plugin/testing/fake_containerd.h"

namespace snapledger {
namespace {

namespace types_v1 = ::containerd::v1::types;
namespace cevents = ::containerd::events;

using ::snapledger::testing::Eventually;
using ::snapledger::testing::FakeContainerd;
using ::snapledger::testing::ToProto;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Whole seconds, so that a time survives the round trip exactly.
absl::Time HoursAgo(int hours) {
  return absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now())) -
         absl::Hours(hours);
}

// ---------------------------------------------------------------------------
// Fixture.

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
    ASSERT_TRUE(watcher_->Start().ok());
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
  ASSERT_TRUE(watcher_->Start().ok());
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

TEST_F(WatcherTest, ANewerExitSeenByARelistRestartsTheIdleClock) {
  // Stopped an hour ago, as the watcher first sees it.
  const absl::Time old_exit = HoursAgo(1);
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  fake_->PutTask("default", "c", types_v1::STOPPED, 0, old_exit);
  StartWatcher(Options());
  WaitConnected();
  ASSERT_EQ(View()->Container("default", "c")->idle_since, old_exit);
  // The task ran again and exited a moment ago, unseen (no event): the next
  // listing must not keep the hour-old idle time, or a container that just
  // worked would count as dead (and be reaped).
  const absl::Time new_exit = absl::Now() - absl::Seconds(1);
  fake_->PutTask("default", "c", types_v1::STOPPED, 0, new_exit);
  const absl::Time synced = View()->last_sync;
  watcher_->RequestRelist();
  ASSERT_TRUE(Eventually([&] { return View()->last_sync > synced; }));
  EXPECT_EQ(View()->Container("default", "c")->idle_since, new_exit);
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
  ASSERT_TRUE(watcher_->Start().ok());  // idempotent
  const absl::Time t0 = absl::Now();
  watcher_->Stop();
  // Generous: a cancelled stream ends in milliseconds; a missed cancel
  // would wait for containerd's next event, i.e. forever.
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  EXPECT_FALSE(View()->connected);
  watcher_->Stop();  // idempotent
  EXPECT_TRUE(Eventually([&] { return fake_->active_subscribers() == 0; }));

  // Started again, it lists and follows again.
  ASSERT_TRUE(watcher_->Start().ok());
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
