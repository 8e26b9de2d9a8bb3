// Owners, the removal guard, dead containers and the reaper
// (plugin/ownership.h), over a coordinator on a fake backend, with views
// built by hand and a fake containerd (ContainerdOps). The watcher that makes
// real views is tested in watcher_test; the real containerd in
// tests/integration/owners_test.sh.
#include "plugin/containerd/ownership.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/core/coordinator.h"
#include "plugin/record/keys.h"
#include "plugin/recovery/recovery.h"
#include "plugin/testing/fake_clock.h"
#include "plugin/testing/ledger_fixture.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// containerd as ContainerdOps sees it: a set of containers with task states;
// every call is logged.
class FakeOps : public ContainerdOps {
 public:
  absl::StatusOr<bool> ContainerExists(const std::string& ns,
                                       const std::string& id) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("exists " + ns + "/" + id);
    if (!down_.ok()) return down_;
    return containers_.contains(ns + "/" + id);
  }
  absl::StatusOr<TaskStatus> GetTask(const std::string& ns,
                                     const std::string& id) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("task " + ns + "/" + id);
    if (!down_.ok()) return down_;
    auto it = containers_.find(ns + "/" + id);
    return it == containers_.end() ? TaskStatus::kNone : it->second;
  }
  absl::Status DeleteTask(const std::string& ns,
                          const std::string& id) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("delete-task " + ns + "/" + id);
    if (!down_.ok()) return down_;
    if (!delete_task_error_.ok()) return delete_task_error_;
    auto it = containers_.find(ns + "/" + id);
    if (it != containers_.end()) it->second = TaskStatus::kNone;
    return absl::OkStatus();
  }
  absl::Status DeleteContainer(const std::string& ns,
                               const std::string& id) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("delete-container " + ns + "/" + id);
    if (!down_.ok()) return down_;
    containers_.erase(ns + "/" + id);
    return absl::OkStatus();
  }
  absl::Status CollectGarbage(const std::string& ns) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("gc " + ns);
    return down_;
  }

  void Add(const std::string& name, TaskStatus task) {
    absl::MutexLock l(&mu_);
    containers_[name] = task;
  }
  void Remove(const std::string& name) {
    absl::MutexLock l(&mu_);
    containers_.erase(name);
  }
  void FailDeleteTask(absl::Status s) {
    absl::MutexLock l(&mu_);
    delete_task_error_ = std::move(s);
  }
  void SetDown(absl::Status s) {
    absl::MutexLock l(&mu_);
    down_ = std::move(s);
  }
  std::vector<std::string> TakeCalls() {
    absl::MutexLock l(&mu_);
    return std::exchange(calls_, {});
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, TaskStatus> containers_;
  absl::Status down_;
  absl::Status delete_task_error_;
  std::vector<std::string> calls_;
};

// A hand-made view: containers with their snapshot keys and tasks, leases.
class ViewBuilder {
 public:
  explicit ViewBuilder(absl::Time now) { view_.last_sync = now; }
  ViewBuilder& Container(const std::string& ns, const std::string& id,
                         const std::string& snapshot_key, TaskStatus task,
                         absl::Time idle_since = absl::InfiniteFuture()) {
    ContainerInfo& c = view_.containers[{ns, id}];
    c.ns = ns;
    c.id = id;
    c.snapshot_key = snapshot_key;
    c.image = "docker.io/library/busybox:latest";
    c.task = task;
    c.created_at = created_at_;
    c.idle_since = TaskIsLive(task) ? absl::InfiniteFuture() : idle_since;
    view_.snapshots[{ns, snapshot_key}].containers.push_back(id);
    return *this;
  }
  ViewBuilder& Lease(const std::string& ns, const std::string& id,
                     const std::vector<std::string>& keys) {
    LeaseInfo& l = view_.leases[{ns, id}];
    l.ns = ns;
    l.id = id;
    l.snapshot_keys = keys;
    for (const std::string& k : keys) {
      view_.snapshots[{ns, k}].leases.push_back(id);
    }
    return *this;
  }
  // containers added next were created at `t`.
  ViewBuilder& CreatedAt(absl::Time t) {
    created_at_ = t;
    return *this;
  }
  ViewBuilder& Disconnected() {
    view_.connected = false;
    return *this;
  }
  std::shared_ptr<const Ownership> Build() {
    return std::make_shared<const Ownership>(view_);
  }

 private:
  absl::Time created_at_ = absl::InfinitePast();
  Ownership view_ = [] {
    Ownership v;
    v.connected = true;
    return v;
  }();
};

class OwnershipTest : public testing::LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    Open(RemovePolicy::kDefer, ReaperOptions{});
  }
  void TearDown() override {
    tracker_.reset();
    coord_.reset();
    LedgerFixture::TearDown();
  }

  void Open(RemovePolicy policy, ReaperOptions reaper) {
    tracker_.reset();
    coord_.reset();
    CoordinatorOptions options;
    options.remove_policy = policy;
    options.queue.clock = [this] { return clock_.Now(); };
    options.queue.holder =
        [this](const Record& r) -> std::optional<std::string> {
      return tracker_ != nullptr ? tracker_->Holder(r) : std::nullopt;
    };
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_, options);
    OwnerTrackerOptions t;
    t.dead_after = absl::Minutes(5);
    t.reaper = std::move(reaper);
    t.containerd_address = "/run/containerd/containerd.sock";
    t.clock = [this] { return clock_.Now(); };
    t.after_first_pass = [this] { ++first_passes_; };
    tracker_ = std::make_unique<OwnerTracker>(ledger_.get(), coord_.get(),
                                              &ops_, std::move(t));
  }

  // default/1/layer1 <- default/2/layer2 (committed) <- default/3/ctr1
  // (active): an image of two layers and a container's rootfs.
  void MakeChain() {
    ASSERT_TRUE(coord_->Prepare("default/1/x1", "", {}).ok());
    ASSERT_TRUE(coord_->Commit("default/1/layer1", "default/1/x1", {}).ok());
    ASSERT_TRUE(coord_->Prepare("default/2/x2", "default/1/layer1", {}).ok());
    ASSERT_TRUE(coord_->Commit("default/2/layer2", "default/2/x2", {}).ok());
    ASSERT_TRUE(coord_->Prepare("default/3/ctr1", "default/2/layer2", {}).ok());
  }

  Record Get(const std::string& key) {
    absl::StatusOr<Record> r = ledger_->Get(key);
    EXPECT_TRUE(r.ok()) << key << ": " << r.status();
    return r.ok() ? *r : Record{};
  }

  std::vector<std::string> Ops(const std::string& key) {
    absl::StatusOr<std::vector<HistoryEvent>> h = ledger_->History(key, 50, 0);
    EXPECT_TRUE(h.ok()) << h.status();
    std::vector<std::string> ops;
    if (h.ok()) {
      for (const HistoryEvent& e : *h)
        ops.push_back(e.op() + ": " + e.detail());
    }
    return ops;
  }

  void Feed(std::shared_ptr<const Ownership> view) {
    tracker_->OnView(std::move(view));
    tracker_->RunOnce();
  }

  // A view of one container, c1, whose rootfs is default/3/ctr1 and whose
  // task has just stopped.
  void FeedStoppedC1() {
    Feed(ViewBuilder(clock_.Now())
             .Container("default", "c1", "ctr1", TaskStatus::kStopped,
                        clock_.Now())
             .Build());
  }

  // The reaper's case: build-1 (rootfs default/3/ctr1), whose task the view
  // has seen stopped for six minutes (past the five-minute grace), while
  // containerd says its task is `task_now`. Returns the calls the pass made.
  std::vector<std::string> PassOverDeadBuild(TaskStatus task_now,
                                             bool connected = true) {
    MakeChain();
    ops_.Add("default/build-1", task_now);
    const absl::Time t0 = clock_.Now();
    clock_.Advance(absl::Minutes(6));
    ops_.TakeCalls();
    ViewBuilder view(clock_.Now());
    view.Container("default", "build-1", "ctr1", TaskStatus::kStopped, t0);
    if (!connected) view.Disconnected();
    Feed(view.Build());
    return ops_.TakeCalls();
  }

  testing::FakeClock clock_;
  FakeOps ops_;
  int first_passes_ = 0;
  std::unique_ptr<Coordinator> coord_;
  std::unique_ptr<OwnerTracker> tracker_;
};

TEST_F(OwnershipTest, RecordsCarryTheirNamespaceAndContainerdKey) {
  ASSERT_TRUE(coord_->Prepare("buildkit/17/sha256:ab/cd", "", {}).ok());
  Record active = Get("buildkit/17/sha256:ab/cd");
  EXPECT_EQ(active.namespace_(), "buildkit");
  EXPECT_EQ(active.containerd_key(), "sha256:ab/cd");
  ASSERT_TRUE(
      coord_->Commit("default/18/layer", "buildkit/17/sha256:ab/cd", {}).ok());
  Record committed = Get("default/18/layer");
  EXPECT_EQ(committed.namespace_(), "default");
  EXPECT_EQ(committed.containerd_key(), "layer");
  // A key of another form (a direct client) has none.
  ASSERT_TRUE(coord_->Prepare("plain-key", "", {}).ok());
  EXPECT_EQ(Get("plain-key").namespace_(), "");
  EXPECT_EQ(Get("plain-key").containerd_key(), "");
}

TEST_F(OwnershipTest, OwnersAndLeasesFollowTheViewWithHistory) {
  MakeChain();
  const absl::Time now = clock_.Now();
  Feed(ViewBuilder(now)
           .Container("default", "c1", "ctr1", TaskStatus::kRunning)
           .Lease("default", "unpack-1", {"layer1", "layer2"})
           .Build());
  EXPECT_EQ(Get("default/3/ctr1").owner(), "c1");
  EXPECT_THAT(Get("default/3/ctr1").leases(), IsEmpty());
  EXPECT_EQ(Get("default/2/layer2").owner(), "");
  EXPECT_THAT(Get("default/2/layer2").leases(), ElementsAre("unpack-1"));
  EXPECT_THAT(Ops("default/3/ctr1"),
              ::testing::Contains("owner: container c1"));
  EXPECT_THAT(Ops("default/1/layer1"),
              ::testing::Contains("leases: leases unpack-1"));

  // The same view again writes nothing.
  const uint64_t seq = ledger_->LastSequence();
  tracker_->RunOnce();
  EXPECT_EQ(ledger_->LastSequence(), seq);

  // A disconnected view changes no owner: absence proves nothing.
  Feed(ViewBuilder(now).Disconnected().Build());
  EXPECT_EQ(Get("default/3/ctr1").owner(), "c1");

  // The container and the lease go.
  Feed(ViewBuilder(now).Build());
  EXPECT_EQ(Get("default/3/ctr1").owner(), "");
  EXPECT_THAT(Get("default/2/layer2").leases(), IsEmpty());
  EXPECT_THAT(Ops("default/3/ctr1"),
              ::testing::Contains("owner: no container (c1 is gone)"));
  EXPECT_THAT(Ops("default/2/layer2"), ::testing::Contains("leases: none"));
}

TEST_F(OwnershipTest, DeferHoldsTheRemovalUntilTheContainerIsGone) {
  MakeChain();
  ops_.Add("default/c1", TaskStatus::kStopped);
  FeedStoppedC1();
  const uint64_t id = Get("default/3/ctr1").backend_id();

  ASSERT_TRUE(coord_->Remove("default/3/ctr1").ok());
  Record held = Get(RemovedKey(id));
  EXPECT_EQ(held.state(), store::v1::REMOVE_PENDING);
  EXPECT_EQ(held.held_by(), "default/c1");
  EXPECT_EQ(held.remove_attempts(), 0);
  EXPECT_EQ(held.next_attempt_ns(), 0);
  EXPECT_TRUE(backend_.objects().contains(id)) << "rootfs deleted under c1";
  // Nothing is due, however long one waits.
  clock_.Advance(absl::Hours(1));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 0);
  EXPECT_TRUE(backend_.objects().contains(id));

  // The container goes; the next pass releases the removal.
  ops_.Remove("default/c1");
  Feed(ViewBuilder(clock_.Now()).Build());
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_FALSE(backend_.objects().contains(id));
  EXPECT_TRUE(absl::IsNotFound(ledger_->Get(RemovedKey(id)).status()));
  EXPECT_THAT(Ops("default/3/ctr1"),
              ::testing::Contains(HasSubstr(
                  "remove-deferred: its container default/c1 still exists")));
}

TEST_F(OwnershipTest, RefuseNamesTheContainerAndCompletesOnceItIsGone) {
  Open(RemovePolicy::kRefuse, ReaperOptions{});
  MakeChain();
  ops_.Add("default/c1", TaskStatus::kStopped);
  FeedStoppedC1();
  const uint64_t id = Get("default/3/ctr1").backend_id();
  absl::Status s = coord_->Remove("default/3/ctr1");
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("container default/c1 still exists"));
  // containerd has already forgotten the snapshot when it asks (its GC asks
  // again only when another snapshot of ours goes), so the removal is kept,
  // held for the container.
  EXPECT_EQ(Get(RemovedKey(id)).held_by(), "default/c1");
  EXPECT_TRUE(backend_.objects().contains(id));
  ops_.Remove("default/c1");
  Feed(ViewBuilder(clock_.Now()).Build());
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_FALSE(backend_.objects().contains(id));
}

TEST_F(OwnershipTest, AViewThatLagsADeletionIsCheckedWithContainerd) {
  MakeChain();
  // The view still lists c1, containerd has deleted it (its GC removes the
  // rootfs right after the deletion, before the event is seen).
  FeedStoppedC1();
  ops_.TakeCalls();
  const uint64_t id = Get("default/3/ctr1").backend_id();
  ASSERT_TRUE(coord_->Remove("default/3/ctr1").ok());
  EXPECT_FALSE(backend_.objects().contains(id));
  EXPECT_THAT(ops_.TakeCalls(), ElementsAre("exists default/c1"));
  // Snapshots nobody owns ask containerd nothing.
  ASSERT_TRUE(coord_->Prepare("default/9/other", "", {}).ok());
  ASSERT_TRUE(coord_->Remove("default/9/other").ok());
  EXPECT_THAT(ops_.TakeCalls(), IsEmpty());
}

TEST_F(OwnershipTest, ContainerdUnreachableHoldsTheRemoval) {
  MakeChain();
  FeedStoppedC1();
  ops_.SetDown(absl::UnavailableError("connection refused"));
  const uint64_t id = Get("default/3/ctr1").backend_id();
  ASSERT_TRUE(coord_->Remove("default/3/ctr1").ok());
  EXPECT_EQ(Get(RemovedKey(id)).held_by(), "default/c1");
  EXPECT_TRUE(backend_.objects().contains(id));
}

TEST_F(OwnershipTest, BeforeTheFirstListingTheLedgersOwnerCounts) {
  MakeChain();
  FeedStoppedC1();
  ASSERT_EQ(Get("default/3/ctr1").owner(), "c1");
  // A restart: a new tracker has no view yet.
  Open(RemovePolicy::kDefer, ReaperOptions{});
  ops_.Add("default/c1", TaskStatus::kStopped);
  const uint64_t id = Get("default/3/ctr1").backend_id();
  ASSERT_TRUE(coord_->Remove("default/3/ctr1").ok());
  EXPECT_EQ(Get(RemovedKey(id)).held_by(), "default/c1");

  // Another restart, the queue reloaded: the held removal is tried at once,
  // asks containerd, and stays held without counting an attempt.
  Open(RemovePolicy::kDefer, ReaperOptions{});
  ASSERT_TRUE(coord_->removal_queue().Load().ok());
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_TRUE(backend_.objects().contains(id));
  EXPECT_EQ(Get(RemovedKey(id)).remove_attempts(), 0);
  EXPECT_EQ(Get(RemovedKey(id)).held_by(), "default/c1");

  // containerd deleted it while we were down: the next load removes it.
  ops_.Remove("default/c1");
  ASSERT_TRUE(coord_->removal_queue().Load().ok());
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_FALSE(backend_.objects().contains(id));
}

TEST_F(OwnershipTest, DeadAfterTheGraceWithTheChainItPins) {
  MakeChain();
  backend_.SetSize(Get("default/1/layer1").backend_id(), 0);
  ASSERT_TRUE(coord_->Prepare("default/4/live", "default/2/layer2", {}).ok());
  ASSERT_TRUE(coord_->Prepare("default/5/fresh", "", {}).ok());
  const absl::Time t0 = clock_.Now();
  auto view = [&] {
    return ViewBuilder(clock_.Now())
        .Container("default", "c1", "ctr1", TaskStatus::kStopped, t0)
        .Container("default", "runner", "live", TaskStatus::kRunning)
        .Container("default", "fresh", "fresh", TaskStatus::kNone,
                   t0 + absl::Minutes(4))
        // Not a snapshot of ours in the ledger: never reported.
        .Container("default", "elsewhere", "unknown", TaskStatus::kStopped, t0)
        .Build();
  };
  clock_.Advance(absl::Minutes(5) - absl::Seconds(1));
  Feed(view());
  EXPECT_THAT(tracker_->DeadContainers(), IsEmpty());

  clock_.Advance(absl::Seconds(1));
  Feed(view());
  std::vector<DeadContainer> dead = tracker_->DeadContainers();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].id, "c1");
  EXPECT_EQ(dead[0].task, TaskStatus::kStopped);
  EXPECT_EQ(dead[0].snapshot, "default/3/ctr1");
  EXPECT_THAT(dead[0].pinned, ElementsAre("default/3/ctr1", "default/2/layer2",
                                          "default/1/layer1"));
  EXPECT_EQ(dead[0].pinned_bytes, Get("default/2/layer2").size_bytes() +
                                      Get("default/1/layer1").size_bytes());
  EXPECT_EQ(dead[0].reaper, ReaperAction::kNone);
  EXPECT_EQ(tracker_->Dead().grace, absl::Seconds(300));
  EXPECT_TRUE(tracker_->Dead().watcher.connected);

  // Its rootfs removed (held back): still dead, still pinning it.
  ops_.Add("default/c1", TaskStatus::kStopped);
  ASSERT_TRUE(coord_->Remove("default/3/ctr1").ok());
  Feed(view());
  dead = tracker_->DeadContainers();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_THAT(dead[0].snapshot, HasSubstr("snapledger.removed/"));

  // Its task runs again: not dead any more.
  Feed(ViewBuilder(clock_.Now())
           .Container("default", "c1", "ctr1", TaskStatus::kRunning)
           .Build());
  EXPECT_THAT(tracker_->DeadContainers(), IsEmpty());
}

TEST_F(OwnershipTest, ReaperDeletesOnlyMatchingDeadContainersThenCollects) {
  Open(RemovePolicy::kDefer, ReaperOptions{true, {"build-*"}, false});
  MakeChain();
  ASSERT_TRUE(coord_->Prepare("default/6/keep", "default/2/layer2", {}).ok());
  ops_.Add("default/build-1", TaskStatus::kStopped);
  ops_.Add("default/keeper", TaskStatus::kStopped);
  const absl::Time t0 = clock_.Now();
  clock_.Advance(absl::Minutes(6));
  ops_.TakeCalls();
  Feed(ViewBuilder(clock_.Now())
           .Container("default", "build-1", "ctr1", TaskStatus::kStopped, t0)
           .Container("default", "keeper", "keep", TaskStatus::kStopped, t0)
           .Build());
  EXPECT_THAT(ops_.TakeCalls(),
              ElementsAre("task default/build-1", "delete-task default/build-1",
                          "delete-container default/build-1", "gc default"));
  EXPECT_EQ(tracker_->reaped_total(), 1u);
  std::vector<DeadContainer> dead = tracker_->DeadContainers();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].id, "keeper");
  EXPECT_THAT(Ops("default/3/ctr1"),
              ::testing::Contains(HasSubstr(
                  "reaped: container default/build-1 deleted by the reaper")));
  EXPECT_EQ(first_passes_, 1);
}

TEST_F(OwnershipTest, ReaperDryRunDeletesNothing) {
  Open(RemovePolicy::kDefer, ReaperOptions{true, {"build-*"}, true});
  EXPECT_THAT(PassOverDeadBuild(TaskStatus::kStopped), IsEmpty());
  std::vector<DeadContainer> dead = tracker_->DeadContainers();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].reaper, ReaperAction::kDryRun);
  EXPECT_EQ(tracker_->reaped_total(), 0u);
}

TEST_F(OwnershipTest, ReaperLeavesATaskThatRunsAgain) {
  Open(RemovePolicy::kDefer, ReaperOptions{true, {"build-*"}, false});
  // The view is behind: containerd says the task is running again.
  EXPECT_THAT(PassOverDeadBuild(TaskStatus::kRunning),
              ElementsAre("task default/build-1"));
  EXPECT_EQ(tracker_->reaped_total(), 0u);
}

TEST_F(OwnershipTest, ReaperWaitsForAConnectedView) {
  Open(RemovePolicy::kDefer, ReaperOptions{true, {"build-*"}, false});
  EXPECT_THAT(PassOverDeadBuild(TaskStatus::kStopped, /*connected=*/false),
              IsEmpty());
  // Reported from the last known state all the same.
  EXPECT_EQ(tracker_->DeadContainers().size(), 1u);
  EXPECT_FALSE(tracker_->Dead().watcher.connected);
}

TEST_F(OwnershipTest, ReaperBacksOffAfterAFailure) {
  Open(RemovePolicy::kDefer, ReaperOptions{true, {"build-*"}, false});
  ops_.FailDeleteTask(absl::UnavailableError("shim gone"));
  EXPECT_THAT(
      PassOverDeadBuild(TaskStatus::kStopped),
      ElementsAre("task default/build-1", "delete-task default/build-1"));
  EXPECT_EQ(tracker_->reaped_total(), 0u);
  // Not again at once: no container deleted, no GC, no retry storm.
  tracker_->RunOnce();
  EXPECT_THAT(ops_.TakeCalls(), IsEmpty());
  // After the back-off, it is tried again and succeeds.
  ops_.FailDeleteTask(absl::OkStatus());
  clock_.Advance(absl::Seconds(11));
  tracker_->RunOnce();
  EXPECT_THAT(ops_.TakeCalls(),
              ElementsAre("task default/build-1", "delete-task default/build-1",
                          "delete-container default/build-1", "gc default"));
  EXPECT_EQ(tracker_->reaped_total(), 1u);
}

TEST_F(OwnershipTest, ADisconnectedViewReleasesNoHold) {
  MakeChain();
  ops_.Add("default/c1", TaskStatus::kStopped);
  FeedStoppedC1();
  const uint64_t id = Get("default/3/ctr1").backend_id();
  ASSERT_TRUE(coord_->Remove("default/3/ctr1").ok());
  // containerd unreachable: the view keeps nothing, proves nothing.
  Feed(ViewBuilder(clock_.Now()).Disconnected().Build());
  EXPECT_EQ(coord_->removal_queue().RunDue(), 0);
  EXPECT_TRUE(backend_.objects().contains(id));
  EXPECT_EQ(Get(RemovedKey(id)).held_by(), "default/c1");
}

TEST_F(OwnershipTest, AContainerIdUsedAgainDoesNotHoldTheOldRootfs) {
  MakeChain();
  ops_.Add("default/c1", TaskStatus::kStopped);
  Feed(ViewBuilder(clock_.Now())
           .CreatedAt(clock_.Now() - absl::Minutes(1))
           .Container("default", "c1", "ctr1", TaskStatus::kStopped,
                      clock_.Now())
           .Build());
  const uint64_t id = Get("default/3/ctr1").backend_id();
  ASSERT_TRUE(coord_->Remove("default/3/ctr1").ok());
  ASSERT_EQ(Get(RemovedKey(id)).held_by(), "default/c1");
  // c1 is deleted and a new c1 created (a CI system reusing its names).
  clock_.Advance(absl::Minutes(1));
  Feed(ViewBuilder(clock_.Now())
           .CreatedAt(clock_.Now())
           .Container("default", "c1", "ctr1", TaskStatus::kRunning)
           .Build());
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_FALSE(backend_.objects().contains(id));
}

TEST_F(OwnershipTest, FirstPassHookRunsOnceAfterAListing) {
  tracker_->RunOnce();  // no listing yet
  EXPECT_EQ(first_passes_, 0);
  Feed(ViewBuilder(clock_.Now()).Build());
  Feed(ViewBuilder(clock_.Now()).Build());
  EXPECT_EQ(first_passes_, 1);
}

TEST(RecordIdentityTest, FieldsFirstThenTheKey) {
  Record r;
  r.set_key("ns1/4/abc");
  EXPECT_EQ(RecordIdentity(r), (ProxyKey{"ns1", "abc"}));
  r.set_namespace_("ns2");
  r.set_containerd_key("def");
  EXPECT_EQ(RecordIdentity(r), (ProxyKey{"ns2", "def"}));
  Record queued;
  queued.set_key("snapledger.removed/5");
  queued.set_state(store::v1::REMOVE_PENDING);
  queued.set_removed_key("ns1/4/abc");
  EXPECT_EQ(RecordIdentity(queued), (ProxyKey{"ns1", "abc"}));
  Record plain;
  plain.set_key("plain");
  EXPECT_FALSE(RecordIdentity(plain).has_value());
}

}  // namespace
}  // namespace snapledger
