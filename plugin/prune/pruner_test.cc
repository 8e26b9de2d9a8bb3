// The Pruner (plugin/prune/pruner.h) over a coordinator on a fake backend,
// with containerd's view built by hand and a fake containerd whose garbage
// collector removes, through the coordinator, what the deleted containers
// and leases held. A fixed clock and a made-up disk. The selection itself:
// prune_policy_test.cc; the real containerd: tests/integration/prune_test.sh.
#include "plugin/prune/pruner.h"

#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/testing/fake_clock.h"
#include "plugin/testing/ledger_fixture.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// containerd as the pruner sees it. Deleting a container or a lease makes
// what it held garbage; CollectGarbage removes that through the coordinator,
// as containerd's collector calls our Snapshots Remove.
class FakeOps : public ContainerdOps {
 public:
  void set_coordinator(Coordinator* c) { coordinator_ = c; }
  void AddContainer(const std::string& name, TaskStatus task,
                    const std::string& rootfs) {
    absl::MutexLock l(&mu_);
    tasks_[name] = task;
    held_[name] = {rootfs};
  }
  void AddLease(const std::string& name, std::vector<std::string> keys) {
    absl::MutexLock l(&mu_);
    held_["lease:" + name] = std::move(keys);
  }
  // Image `name` in namespace "default", updated `updated_at`, whose layers
  // are `keys`; `users`: containers naming it (any snapshotter).
  void AddImage(const std::string& name, absl::Time updated_at,
                std::vector<std::string> keys,
                std::vector<std::string> users = {}) {
    absl::MutexLock l(&mu_);
    ImageInfo& i = images_[name];
    i.ns = "default";
    i.name = name;
    i.created_at = updated_at - absl::Hours(1);
    i.updated_at = updated_at;
    held_["image:default/" + name] = std::move(keys);
    image_users_[name] = std::move(users);
  }
  // A container that starts using image `name` once the pass has listed it.
  void UseImageAfterListing(const std::string& name, const std::string& id) {
    absl::MutexLock l(&mu_);
    late_users_[name] = id;
  }
  void SetTask(const std::string& name, TaskStatus task) {
    absl::MutexLock l(&mu_);
    tasks_[name] = task;
  }
  std::vector<std::string> TakeCalls() {
    absl::MutexLock l(&mu_);
    return std::exchange(calls_, {});
  }
  int removed() {
    absl::MutexLock l(&mu_);
    return removed_;
  }

  absl::StatusOr<bool> ContainerExists(const std::string& ns,
                                       const std::string& id) override {
    absl::MutexLock l(&mu_);
    return tasks_.contains(ns + "/" + id);
  }
  absl::StatusOr<TaskStatus> GetTask(const std::string& ns,
                                     const std::string& id) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("task " + ns + "/" + id);
    auto it = tasks_.find(ns + "/" + id);
    return it == tasks_.end() ? TaskStatus::kNone : it->second;
  }
  absl::Status DeleteTask(const std::string& ns,
                          const std::string& id) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("delete-task " + ns + "/" + id);
    tasks_[ns + "/" + id] = TaskStatus::kNone;
    return absl::OkStatus();
  }
  absl::Status DeleteContainer(const std::string& ns,
                               const std::string& id) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("delete-container " + ns + "/" + id);
    tasks_.erase(ns + "/" + id);
    Collectable(ns + "/" + id);
    return absl::OkStatus();
  }
  absl::Status DeleteLease(const std::string& ns,
                           const std::string& id) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("delete-lease " + ns + "/" + id);
    Collectable("lease:" + ns + "/" + id);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::string>> ListNamespaces() override {
    return std::vector<std::string>{"default"};
  }
  absl::StatusOr<std::vector<ImageInfo>> ListImages(
      const std::string& ns) override {
    absl::MutexLock l(&mu_);
    std::vector<ImageInfo> out;
    if (ns != "default") return out;
    for (const auto& [name, image] : images_) out.push_back(image);
    return out;
  }
  absl::StatusOr<std::vector<std::string>> ImageUsers(
      const std::string& ns, const std::string& name) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("image-users " + ns + "/" + name);
    std::vector<std::string> users = image_users_[name];
    // The first listing is the candidates'; a late user shows from then on.
    if (auto it = late_users_.find(name); it != late_users_.end()) {
      image_users_[name].push_back(it->second);
      late_users_.erase(it);
    }
    return users;
  }
  absl::Status DeleteImage(const std::string& ns,
                           const std::string& name) override {
    absl::MutexLock l(&mu_);
    calls_.push_back("delete-image " + ns + "/" + name);
    images_.erase(name);
    Collectable("image:" + ns + "/" + name);
    return absl::OkStatus();
  }
  absl::Status CollectGarbage(const std::string& ns) override {
    std::vector<std::string> keys;
    {
      absl::MutexLock l(&mu_);
      calls_.push_back("gc " + ns);
      keys = std::exchange(garbage_, {});
    }
    for (const std::string& k : keys) {
      if (coordinator_->Remove(k).ok()) {
        absl::MutexLock l(&mu_);
        ++removed_;
      }
    }
    return absl::OkStatus();
  }

 private:
  void Collectable(const std::string& holder)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = held_.find(holder);
    if (it == held_.end()) return;
    garbage_.insert(garbage_.end(), it->second.begin(), it->second.end());
    held_.erase(it);
  }

  Coordinator* coordinator_ = nullptr;
  absl::Mutex mu_;
  std::map<std::string, TaskStatus> tasks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::string>> held_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> garbage_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ImageInfo> images_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::string>> image_users_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> late_users_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  int removed_ ABSL_GUARDED_BY(mu_) = 0;
};

constexpr int64_t kObject = 4096;  // FakeBackend's size of every object

class PrunerTest : public testing::LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    CoordinatorOptions options;
    options.remove_policy = RemovePolicy::kDefer;
    options.queue.clock = [this] { return clock_.Now(); };
    // The owner tracker's guard, reduced to one container.
    options.queue.holder =
        [this](const Record& r) -> std::optional<std::string> {
      if (hold_ctr1_ && r.containerd_key() == "ctr1") return "default/c1";
      return std::nullopt;
    };
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_, options);
    ops_.set_coordinator(coord_.get());
    // An image layer, two containers' rootfs on it, and a build cache
    // snapshot a lease holds.
    ASSERT_TRUE(coord_->Prepare("default/1/x1", "", {}).ok());
    ASSERT_TRUE(coord_->Commit("default/1/layer1", "default/1/x1", {}).ok());
    ASSERT_TRUE(coord_->Prepare("default/2/ctr1", "default/1/layer1", {}).ok());
    ASSERT_TRUE(coord_->Prepare("default/3/ctr2", "default/1/layer1", {}).ok());
    ASSERT_TRUE(coord_->Prepare("default/4/x4", "", {}).ok());
    ASSERT_TRUE(coord_->Commit("default/4/cache", "default/4/x4", {}).ok());
    view_.connected = true;
    view_.last_sync = clock_.Now();
  }
  void TearDown() override {
    pruner_.reset();
    coord_.reset();
    LedgerFixture::TearDown();
  }

  // Container `id` whose rootfs is ledger key default/<seq>/<key>.
  void AddContainer(const std::string& id, const std::string& key,
                    TaskStatus task, absl::Duration idle) {
    ContainerInfo& c = view_.containers[{"default", id}];
    c.ns = "default";
    c.id = id;
    c.snapshot_key = key;
    c.task = task;
    c.idle_since =
        TaskIsLive(task) ? absl::InfiniteFuture() : clock_.Now() - idle;
    view_.snapshots[{"default", key}].containers.push_back(id);
    const std::string seq = key == "ctr1" ? "2" : "3";
    ops_.AddContainer("default/" + id, task, "default/" + seq + "/" + key);
  }
  void AddLease(const std::string& id, absl::Duration age,
                std::optional<absl::Time> expire) {
    LeaseInfo& l = view_.leases[{"default", id}];
    l.ns = "default";
    l.id = id;
    l.created_at = clock_.Now() - age;
    if (expire.has_value()) {
      l.labels["containerd.io/gc.expire"] =
          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *expire, absl::UTCTimeZone());
    }
    l.snapshot_keys = {"cache"};
    view_.snapshots[{"default", "cache"}].leases.push_back(id);
    ops_.AddLease("default/" + id, {"default/4/cache"});
  }

  void MakePruner(PrunePolicy policy) {
    PrunerOptions options;
    options.policy = std::move(policy);
    options.view = [this] { return std::make_shared<const Ownership>(view_); };
    // 1 MiB, `free_` free, and each snapshot the collector removed frees
    // `freed_per_removal_`.
    options.disk = [this]() -> absl::StatusOr<DiskFigures> {
      return DiskFigures{1 << 20, free_ + ops_.removed() * freed_per_removal_,
                         -1};
    };
    options.clock = [this] { return clock_.Now(); };
    options.object_usage = [this](uint64_t id) {
      return backend_.DiskUsage(id);
    };
    options.request_relist = [this] { ++relists_; };
    pruner_ = std::make_unique<Pruner>(ledger_.get(), coord_.get(), &ops_,
                                       std::move(options));
  }

  bool Exists(const std::string& key) { return ledger_->Get(key).ok(); }
  std::vector<std::string> Pruned(const std::string& key) {
    absl::StatusOr<std::vector<HistoryEvent>> h = ledger_->History(key, 50, 0);
    EXPECT_TRUE(h.ok()) << h.status();
    std::vector<std::string> out;
    if (!h.ok()) return out;
    for (const HistoryEvent& e : *h) {
      if (e.op() == "pruned") out.push_back(e.detail());
    }
    return out;
  }

  testing::FakeClock clock_;
  std::unique_ptr<Coordinator> coord_;
  FakeOps ops_;
  Ownership view_;
  int64_t free_ = 100 * 1024;
  int64_t freed_per_removal_ = kObject;
  int relists_ = 0;
  bool hold_ctr1_ = false;
  std::unique_ptr<Pruner> pruner_;
};

PrunePolicy Ttl(absl::Duration keep) {
  PrunePolicy p;
  p.keep_duration = keep;
  p.leases = {"ci-*"};
  return p;
}

TEST_F(PrunerTest, DryRunSaysWhatWouldGoAndChangesNothing) {
  AddContainer("c1", "ctr1", TaskStatus::kStopped, absl::Hours(2));
  AddContainer("c2", "ctr2", TaskStatus::kRunning, absl::ZeroDuration());
  AddLease("ci-1", absl::Hours(3), std::nullopt);
  PrunePolicy policy = Ttl(absl::Hours(1));
  policy.dry_run = true;
  MakePruner(policy);
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->dry_run);
  ASSERT_EQ(r->actions.size(), 2u);
  EXPECT_EQ(r->actions[0].choice.candidate.id, "ci-1");  // oldest first
  EXPECT_EQ(r->actions[1].choice.candidate.id, "c1");
  for (const PruneActionReport& a : r->actions) {
    EXPECT_FALSE(a.done);
    EXPECT_EQ(a.choice.candidate.estimated_bytes, kObject);
  }
  EXPECT_EQ(r->bytes_freed, 2 * kObject);
  EXPECT_THAT(ops_.TakeCalls(), IsEmpty());
  EXPECT_TRUE(Exists("default/2/ctr1"));
  EXPECT_TRUE(Exists("default/4/cache"));
  EXPECT_THAT(Pruned("default/2/ctr1"), IsEmpty());
  EXPECT_EQ(pruner_->Stats().bytes_freed, 0);
  EXPECT_EQ(relists_, 0);

  // The request's dry run wins over a configured real run too.
  MakePruner(Ttl(absl::Hours(1)));
  PruneRequest dry;
  dry.dry_run = true;
  ASSERT_TRUE(pruner_->Run(dry).ok());
  EXPECT_THAT(ops_.TakeCalls(), IsEmpty());
  EXPECT_TRUE(Exists("default/2/ctr1"));
}

TEST_F(PrunerTest, ARemovalHeldForTheContainerCountsInItsEstimate) {
  // containerd dropped c1's rootfs already (`ctr snapshots rm`); the
  // removal waits for the container.
  hold_ctr1_ = true;
  ASSERT_TRUE(coord_->Remove("default/2/ctr1").ok());
  ASSERT_FALSE(Exists("default/2/ctr1"));
  AddContainer("c1", "ctr1", TaskStatus::kStopped, absl::Hours(2));
  PrunePolicy policy = Ttl(absl::Hours(1));
  policy.dry_run = true;
  MakePruner(policy);
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->actions.size(), 1u);
  EXPECT_EQ(r->actions[0].choice.candidate.estimated_bytes, kObject);
}

TEST_F(PrunerTest, TtlDeletesThroughContainerdAndNotesTheBytesInHistory) {
  AddContainer("c1", "ctr1", TaskStatus::kStopped, absl::Hours(2));
  AddContainer("c2", "ctr2", TaskStatus::kRunning, absl::ZeroDuration());
  MakePruner(Ttl(absl::Hours(1)));
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->actions.size(), 1u);
  EXPECT_TRUE(r->actions[0].done) << r->actions[0].error;
  EXPECT_EQ(r->actions[0].freed_bytes, kObject);
  EXPECT_THAT(r->actions[0].freed_snapshots, ElementsAre("default/2/ctr1"));
  EXPECT_THAT(ops_.TakeCalls(),
              ElementsAre("task default/c1", "delete-task default/c1",
                          "delete-container default/c1", "gc default"));
  // The rootfs went through the coordinator; the image layer and the
  // running container's rootfs stayed.
  EXPECT_FALSE(Exists("default/2/ctr1"));
  EXPECT_TRUE(Exists("default/1/layer1"));
  EXPECT_TRUE(Exists("default/3/ctr2"));
  EXPECT_THAT(Pruned("default/2/ctr1"),
              ElementsAre(HasSubstr("container default/c1 deleted by the "
                                    "prune (ttl: keep_duration 1h): freed "
                                    "4096 bytes")));
  PruneStats stats = pruner_->Stats();
  EXPECT_EQ(stats.passes, 1u);
  EXPECT_EQ(stats.actions["container"], 1u);
  EXPECT_EQ(stats.bytes_freed, kObject);
  EXPECT_EQ(relists_, 1);
}

TEST_F(PrunerTest, ATaskRunningAgainIsLeftAlone) {
  AddContainer("c1", "ctr1", TaskStatus::kStopped, absl::Hours(2));
  ops_.SetTask("default/c1", TaskStatus::kRunning);  // the view lags
  MakePruner(Ttl(absl::Hours(1)));
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->actions.size(), 1u);
  EXPECT_FALSE(r->actions[0].done);
  EXPECT_THAT(r->actions[0].error, HasSubstr("left alone"));
  EXPECT_THAT(ops_.TakeCalls(), ElementsAre("task default/c1"));
  EXPECT_TRUE(Exists("default/2/ctr1"));
  EXPECT_EQ(pruner_->Stats().failed_actions, 1u);
}

TEST_F(PrunerTest, PressureStopsAsSoonAsTheTargetHolds) {
  AddContainer("c1", "ctr1", TaskStatus::kStopped, absl::Hours(3));
  AddContainer("c2", "ctr2", TaskStatus::kNone, absl::Hours(2));
  PrunePolicy policy;
  policy.min_free = FreeTarget{false, static_cast<double>(free_ + 2 * kObject)};
  MakePruner(policy);
  // Each estimate is one object, two are wanted; but the first removal
  // frees three objects' worth (say, the deleter caught up).
  freed_per_removal_ = 3 * kObject;
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->bytes_needed, 2 * kObject);
  ASSERT_EQ(r->actions.size(), 1u);
  EXPECT_EQ(r->actions[0].choice.candidate.id, "c1");  // the oldest
  EXPECT_EQ(r->actions[0].choice.reason, PruneReason::kPressure);
  EXPECT_TRUE(r->target_met);
  EXPECT_FALSE(Exists("default/2/ctr1"));
  EXPECT_TRUE(Exists("default/3/ctr2"));
}

TEST_F(PrunerTest, PressureReapsAContainerYoungerThanDeadAfter) {
  AddContainer("c1", "ctr1", TaskStatus::kStopped, absl::Minutes(3));
  AddContainer("c2", "ctr2", TaskStatus::kNone, absl::Seconds(5));
  PrunePolicy policy;
  policy.dead_after = absl::Minutes(10);
  policy.pressure_dead_after = absl::Minutes(1);
  MakePruner(policy);
  PruneRequest request;
  request.min_free = *ParseFreeTarget("99%");
  absl::StatusOr<PruneReport> r = pruner_->Run(request);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->actions.size(), 1u);
  EXPECT_EQ(r->actions[0].choice.candidate.id, "c1");
  EXPECT_FALSE(r->target_met);            // nothing else may go
  EXPECT_TRUE(Exists("default/3/ctr2"));  // 5 s idle: maybe a `ctr run`
}

TEST_F(PrunerTest, ExpiredLeasesMatchingAPatternGo) {
  AddLease("ci-1", absl::Hours(30), clock_.Now() - absl::Hours(6));
  PrunePolicy policy;
  policy.leases = {"ci-*"};
  MakePruner(policy);
  PruneRequest request;
  request.min_free = *ParseFreeTarget("99%");
  absl::StatusOr<PruneReport> r = pruner_->Run(request);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->actions.size(), 1u);
  EXPECT_TRUE(r->actions[0].done) << r->actions[0].error;
  EXPECT_THAT(ops_.TakeCalls(),
              ElementsAre("delete-lease default/ci-1", "gc default"));
  EXPECT_FALSE(Exists("default/4/cache"));
  EXPECT_THAT(Pruned("default/4/cache"),
              ElementsAre(HasSubstr("lease default/ci-1 deleted by the prune "
                                    "(pressure: min_free 99%): freed 4096")));
  EXPECT_EQ(pruner_->Stats().actions["lease"], 1u);
}

TEST_F(PrunerTest, ALiveLeaseIsNeverDeleted) {
  // Not expired by its label, younger than the TTL: live.
  AddLease("ci-1", absl::Minutes(30), clock_.Now() + absl::Hours(23));
  MakePruner(Ttl(absl::Hours(1)));
  PruneRequest request;
  request.min_free = *ParseFreeTarget("99%");
  absl::StatusOr<PruneReport> r = pruner_->Run(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->actions, IsEmpty());
  EXPECT_THAT(ops_.TakeCalls(), IsEmpty());
  EXPECT_TRUE(Exists("default/4/cache"));
}

TEST_F(PrunerTest, NothingIsJudgedOnADisconnectedView) {
  AddContainer("c1", "ctr1", TaskStatus::kStopped, absl::Hours(2));
  view_.connected = false;
  MakePruner(Ttl(absl::Hours(1)));
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_THAT(ops_.TakeCalls(), IsEmpty());
  EXPECT_EQ(pruner_->Stats().failed_passes, 1u);
}

// Images: "ci/tool:1" holds the cache layer (a committed snapshot nothing
// else holds).
TEST_F(PrunerTest, AnUnusedImageMatchingAPatternGoes) {
  ops_.AddImage("registry.local/ci/tool:1", clock_.Now() - absl::Hours(5),
                {"default/4/cache"});
  PrunePolicy policy = Ttl(absl::Hours(1));
  policy.images = {"registry.local/ci/*"};
  MakePruner(policy);
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->actions.size(), 1u);
  const PruneActionReport& a = r->actions[0];
  EXPECT_EQ(a.choice.candidate.kind, PruneKind::kImage);
  EXPECT_EQ(a.choice.candidate.unused_since, clock_.Now() - absl::Hours(5));
  EXPECT_TRUE(a.done) << a.error;
  EXPECT_EQ(a.freed_bytes, kObject);
  EXPECT_THAT(a.freed_snapshots, ElementsAre("default/4/cache"));
  // Its users listed for the candidates, and again right before deleting.
  EXPECT_THAT(ops_.TakeCalls(),
              ElementsAre("image-users default/registry.local/ci/tool:1",
                          "image-users default/registry.local/ci/tool:1",
                          "delete-image default/registry.local/ci/tool:1",
                          "gc default"));
  EXPECT_FALSE(Exists("default/4/cache"));
  EXPECT_TRUE(Exists("default/1/layer1"));
  EXPECT_THAT(Pruned("default/4/cache"),
              ElementsAre(HasSubstr("image default/registry.local/ci/tool:1 "
                                    "deleted by the prune (ttl: keep_duration "
                                    "1h): freed 4096 bytes")));
  EXPECT_EQ(pruner_->Stats().actions["image"], 1u);
}

TEST_F(PrunerTest, ImagesInUseOrNotMatchingAreNeverDeleted) {
  ops_.AddImage("registry.local/ci/used:1", clock_.Now() - absl::Hours(5),
                {"default/4/cache"}, {"someones-build"});
  ops_.AddImage("docker.io/library/busybox:latest",
                clock_.Now() - absl::Hours(5), {"default/4/cache"});
  PrunePolicy policy = Ttl(absl::Hours(1));
  policy.images = {"registry.local/ci/*"};
  MakePruner(policy);
  PruneRequest request;
  request.min_free = *ParseFreeTarget("99%");
  absl::StatusOr<PruneReport> r = pruner_->Run(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->actions, IsEmpty());
  // Only the matching one's users were asked for; nothing deleted.
  EXPECT_THAT(ops_.TakeCalls(),
              ElementsAre("image-users default/registry.local/ci/used:1"));
  EXPECT_TRUE(Exists("default/4/cache"));
}

TEST_F(PrunerTest, AnImageUsedSinceTheListingIsLeftAlone) {
  ops_.AddImage("registry.local/ci/tool:1", clock_.Now() - absl::Hours(5),
                {"default/4/cache"});
  ops_.UseImageAfterListing("registry.local/ci/tool:1", "new-run");
  PrunePolicy policy = Ttl(absl::Hours(1));
  policy.images = {"registry.local/ci/*"};
  MakePruner(policy);
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->actions.size(), 1u);
  EXPECT_FALSE(r->actions[0].done);
  EXPECT_THAT(r->actions[0].error,
              HasSubstr("container default/new-run uses it now"));
  EXPECT_THAT(ops_.TakeCalls(),
              ElementsAre("image-users default/registry.local/ci/tool:1",
                          "image-users default/registry.local/ci/tool:1"));
  EXPECT_TRUE(Exists("default/4/cache"));
  EXPECT_EQ(pruner_->Stats().failed_actions, 1u);
}

TEST_F(PrunerTest, ADryRunListsImagesAndDeletesNone) {
  ops_.AddImage("registry.local/ci/tool:1", clock_.Now() - absl::Hours(5),
                {"default/4/cache"});
  PrunePolicy policy;
  policy.images = {"registry.local/ci/*"};
  policy.dry_run = true;
  MakePruner(policy);
  PruneRequest request;
  request.min_free = *ParseFreeTarget("99%");
  absl::StatusOr<PruneReport> r = pruner_->Run(request);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->actions.size(), 1u);
  EXPECT_EQ(r->actions[0].choice.candidate.id, "registry.local/ci/tool:1");
  EXPECT_EQ(r->actions[0].choice.reason, PruneReason::kPressure);
  EXPECT_FALSE(r->actions[0].done);
  EXPECT_THAT(ops_.TakeCalls(),
              ElementsAre("image-users default/registry.local/ci/tool:1"));
  EXPECT_TRUE(Exists("default/4/cache"));
  EXPECT_EQ(PruneResponseProto(*r).actions(0).kind(), "image");
}

TEST_F(PrunerTest, TheResponseCarriesEveryAction) {
  AddContainer("c1", "ctr1", TaskStatus::kStopped, absl::Hours(2));
  MakePruner(Ttl(absl::Hours(1)));
  absl::StatusOr<PruneReport> r = pruner_->Run({});
  ASSERT_TRUE(r.ok()) << r.status();
  ::snapledger::admin::v1::PruneResponse p = PruneResponseProto(*r);
  ASSERT_EQ(p.actions_size(), 1);
  EXPECT_EQ(p.actions(0).kind(), "container");
  EXPECT_EQ(p.actions(0).namespace_(), "default");
  EXPECT_EQ(p.actions(0).id(), "c1");
  EXPECT_EQ(p.actions(0).reason(), "ttl");
  EXPECT_EQ(p.actions(0).freed_bytes(), kObject);
  EXPECT_EQ(p.bytes_freed(), kObject);
  EXPECT_EQ(p.policy(), "keep_duration 1h");
}

}  // namespace
}  // namespace snapledger
