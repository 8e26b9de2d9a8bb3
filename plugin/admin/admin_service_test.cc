// AdminCore over a ledger holding one of everything: live snapshots in a
// chain, a pending removal, a stuck one, an adopted object and a missing
// one; live (with a coordinator) and offline (read-only ledger); with and
// without a containerd watcher (a canned dead-container report: the
// tracker that makes real ones is tested in plugin/ownership_test.cc).
#include "plugin/admin/admin_service.h"

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/record/keys.h"
#include "plugin/recovery/recovery.h"
#include "plugin/server/coordinator_repairs.h"
#include "plugin/testing/ledger_fixture.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

const absl::Status kBusy = absl::FailedPreconditionError("in use (busy)");

class AdminCoreTest : public testing::LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    CoordinatorOptions options;
    options.remove_policy = RemovePolicy::kDefer;
    options.queue.retry.max_attempts = 1;
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_, options);
    AdminSources sources;
    sources.ledger = ledger_.get();
    sources.backend = &backend_;
    repairs_ = std::make_unique<CoordinatorRepairs>(coord_.get());
    sources.repairs = repairs_.get();
    sources.remove_policy = "defer";
    core_ = std::make_unique<AdminCore>(sources);

    // default/1/base <- default/2/app (active) ; default/3/busy on base,
    // removed while busy: pending; "stuck" fails its only attempt; an
    // unrecorded object 900 (adopted); "gone" loses its storage (missing).
    Layer("default/1/base", "");
    ASSERT_TRUE(coord_->Prepare("default/2/app", "default/1/base", {}).ok());
    ASSERT_TRUE(coord_->Prepare("default/3/busy", "default/1/base", {}).ok());
    busy_id_ = ledger_->Get("default/3/busy")->backend_id();
    backend_.FailRemoveOf(busy_id_, kBusy);
    ASSERT_TRUE(coord_->Remove("default/3/busy").ok());
    ASSERT_TRUE(coord_->Prepare("stuck", "", {}).ok());
    stuck_id_ = ledger_->Get("stuck")->backend_id();
    backend_.FailRemoveOf(stuck_id_, kBusy);
    ASSERT_TRUE(coord_->Remove("stuck").ok());
    // One attempt allowed: the removal's first failure already makes it
    // stuck only after the queue tries; make it due and run it.
    ASSERT_TRUE(coord_->removal_queue().Retry(stuck_id_).ok());
    coord_->removal_queue().RunDue();
    Layer("gone", "");
    backend_.Put(900, {});
    coord_.reset();  // recovery runs with nothing else touching the ledger
    backend_.Erase(ledger_->Get("gone")->backend_id());
    auto report = ResolveIntents(*ledger_, backend_);
    ASSERT_TRUE(report.ok()) << report.status();
    ASSERT_THAT(report->adopted, ElementsAre(AdoptedKey(900)));
    ASSERT_THAT(report->missing, ElementsAre("gone"));
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_, options);
    repairs_ = std::make_unique<CoordinatorRepairs>(coord_.get());
    sources.repairs = repairs_.get();
    core_ = std::make_unique<AdminCore>(sources);
    sources_ = sources;
  }
  void TearDown() override {
    core_.reset();
    coord_.reset();
    LedgerFixture::TearDown();
  }
  void Layer(const std::string& name, const std::string& parent) {
    ASSERT_TRUE(coord_->Prepare(name + "-active", parent, {}).ok());
    ASSERT_TRUE(coord_->Commit(name, name + "-active", {}).ok());
  }
  std::vector<std::string> Keys(const adminpb::ListResponse& r) {
    std::vector<std::string> keys;
    for (const auto& s : r.snapshots()) keys.push_back(s.key());
    return keys;
  }

  // A core whose watcher reports `dead` (and its status).
  std::unique_ptr<AdminCore> CoreWithWatcher(
      absl::StatusOr<adminpb::DeadResponse> dead) {
    AdminSources sources = sources_;
    sources.dead = [dead] { return dead; };
    if (dead.ok()) {
      sources.watcher_status = [watcher = dead->watcher()] { return watcher; };
    }
    return std::make_unique<AdminCore>(sources);
  }
  // Container default/build-3, its task stopped 2m10s ago, whose rootfs is
  // default/2/app (on default/1/base); the watcher is disconnected.
  static adminpb::DeadResponse OneDeadContainer() {
    adminpb::DeadResponse dead;
    adminpb::WatcherStatus* w = dead.mutable_watcher();
    w->set_enabled(true);
    w->set_address("/run/containerd/containerd.sock");
    w->set_connected(false);
    w->set_last_error("UNAVAILABLE: connection refused");
    w->set_containers(12);
    w->set_leases(3);
    dead.set_grace_seconds(600);
    dead.set_reaped_total(2);
    adminpb::DeadContainer* c = dead.add_containers();
    c->set_namespace_("default");
    c->set_id("build-3");
    c->set_image("docker.io/library/busybox:latest");
    c->set_task("stopped");
    // Half a second of slack, so that "2m10s" holds while the test runs.
    c->set_idle_since_ns(
        absl::ToUnixNanos(absl::Now() - absl::Milliseconds(130500)));
    c->set_snapshot("default/2/app");
    c->add_pinned("default/2/app");
    c->add_pinned("default/1/base");
    c->set_pinned_bytes(5347738);  // 5.1 MiB
    c->set_reaper("dry-run");
    return dead;
  }

  AdminSources sources_;
  std::unique_ptr<Coordinator> coord_;
  std::unique_ptr<CoordinatorRepairs> repairs_;
  std::unique_ptr<AdminCore> core_;
  uint64_t busy_id_ = 0, stuck_id_ = 0;
};

TEST_F(AdminCoreTest, ListShowsUsableSnapshotsAndAllWithAll) {
  auto visible = core_->List({});
  ASSERT_TRUE(visible.ok()) << visible.status();
  EXPECT_THAT(Keys(*visible),
              ElementsAre("default/1/base", "default/2/app", "gone"));
  const adminpb::Snapshot& base = visible->snapshots(0);
  EXPECT_EQ(base.namespace_(), "default");
  EXPECT_EQ(base.containerd_key(), "base");
  EXPECT_EQ(base.size_bytes(), 4096);
  EXPECT_EQ(visible->snapshots(1).size_bytes(), -1);  // active: not measured
  EXPECT_EQ(visible->snapshots(2).namespace_(), "");

  adminpb::ListRequest all;
  all.set_all(true);
  auto everything = core_->List(all);
  ASSERT_TRUE(everything.ok());
  EXPECT_EQ(everything->snapshots_size(), 6);  // + pending, stuck, adopted

  adminpb::ListRequest filtered;
  filtered.set_all(true);
  filtered.add_states(store::v1::REMOVE_PENDING);
  filtered.add_states(store::v1::STUCK);
  EXPECT_THAT(Keys(*core_->List(filtered)),
              ElementsAre("default/3/busy", "stuck"));
  adminpb::ListRequest prefixed;
  prefixed.set_prefix("default/");
  prefixed.add_kinds(store::v1::ACTIVE);
  prefixed.set_measure_usage(true);
  auto measured = core_->List(prefixed);
  ASSERT_THAT(Keys(*measured), ElementsAre("default/2/app"));
  EXPECT_EQ(measured->snapshots(0).size_bytes(), 4096);
}

TEST_F(AdminCoreTest, InspectFindsByKeyLedgerKeyOrFormerKey) {
  adminpb::InspectRequest request;
  request.set_key("default/1/base");
  auto base = core_->Inspect(request);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->children_size(), 2);  // app and the pending busy one
  ASSERT_FALSE(base->history().empty());
  EXPECT_EQ(base->history(0).op(), "commit");

  request.set_key("default/3/busy");
  auto busy = core_->Inspect(request);
  ASSERT_TRUE(busy.ok()) << busy.status();
  EXPECT_EQ(busy->snapshot().record().state(), store::v1::REMOVE_PENDING);
  EXPECT_EQ(busy->snapshot().record().key(), RemovedKey(busy_id_));
  ASSERT_GE(busy->history_size(), 2);
  EXPECT_EQ(busy->history(0).op(), "remove-deferred");
  EXPECT_EQ(busy->history(1).op(), "prepare");

  request.set_key(RemovedKey(stuck_id_));
  EXPECT_EQ(core_->Inspect(request)->snapshot().key(), "stuck");

  request.set_key("nope");
  EXPECT_EQ(core_->Inspect(request).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(AdminCoreTest, PendingOrphansAndStats) {
  auto pending = core_->Pending({});
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->removals_size(), 2);
  EXPECT_EQ(pending->removals(0).key(), "default/3/busy");  // oldest first
  EXPECT_EQ(pending->removals(1).record().state(), store::v1::STUCK);
  EXPECT_THAT(pending->removals(1).record().last_error(), HasSubstr("busy"));

  auto orphans = core_->Orphans({});
  ASSERT_TRUE(orphans.ok());
  ASSERT_EQ(orphans->orphans_size(), 2);
  EXPECT_EQ(orphans->orphans(0).snapshot().key(), "gone");
  EXPECT_EQ(orphans->orphans(0).reason(), "missing");
  EXPECT_EQ(orphans->orphans(1).reason(), "adopted");

  auto stats = core_->Stats({});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->records(), 6u);
  EXPECT_EQ(stats->by_state().at("LIVE"), 2u);
  EXPECT_EQ(stats->by_state().at("MISSING"), 1u);
  EXPECT_EQ(stats->removals_scheduled(), 1u);
  EXPECT_EQ(stats->removals_stuck(), 1u);
  EXPECT_EQ(stats->committed_bytes(), 4096u);  // base; gone lost its storage
  EXPECT_TRUE(stats->live());
  EXPECT_EQ(stats->remove_policy(), "defer");
}

TEST_F(AdminCoreTest, CheckNamesEveryProblemAndRetryClearsStuck) {
  auto check = core_->Check({});
  ASSERT_TRUE(check.ok()) << check.status();
  ASSERT_EQ(check->problems_size(), 3);
  EXPECT_THAT(check->problems(0), HasSubstr("\"gone\" is missing"));
  EXPECT_THAT(check->problems(1), HasSubstr("backend object 900 was adopted"));
  EXPECT_THAT(check->problems(2), HasSubstr("removal of \"stuck\""));

  adminpb::RetryRequest retry;
  retry.set_stuck(true);
  backend_.FailRemoveOf(stuck_id_, absl::OkStatus());
  auto retried = core_->Retry(retry);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_THAT(retried->retried(), ElementsAre("stuck"));
  coord_->removal_queue().RunDue();
  EXPECT_EQ(core_->Check({})->problems_size(), 2);

  adminpb::RetryRequest bad;
  EXPECT_EQ(core_->Retry(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad.set_key("default/1/base");
  EXPECT_EQ(core_->Retry(bad).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(AdminCoreTest, CheckFailsWhileTheDaemonCannotServe) {
  AdminSources sources = sources_;
  std::vector<std::string> problems = {
      "Snapshots socket /run/x.sock does not accept connections",
      "ledger is not writable: IO error: Too many open files"};
  sources.serving_problems = [&] { return problems; };
  AdminCore core(sources);
  absl::StatusOr<adminpb::CheckResponse> check = core.Check({});
  ASSERT_TRUE(check.ok()) << check.status();
  ASSERT_GE(check->problems_size(), 2);
  EXPECT_EQ(check->problems(0), problems[0]);
  EXPECT_EQ(check->problems(1), problems[1]);
}

TEST_F(AdminCoreTest, ReconcileReportsThenApplies) {
  backend_.Put(950, {});  // drift made on purpose, while serving
  const uint64_t app = ledger_->Get("default/2/app")->backend_id();
  backend_.Erase(app);
  auto dry = core_->Reconcile({});
  ASSERT_TRUE(dry.ok()) << dry.status();
  EXPECT_EQ(dry->findings_total(), 2u);
  EXPECT_EQ(dry->adopted(), 0u);
  EXPECT_EQ(ledger_->Get("default/2/app")->state(), store::v1::LIVE);

  adminpb::ReconcileRequest apply;
  apply.set_apply(true);
  auto applied = core_->Reconcile(apply);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->adopted(), 1u);
  EXPECT_EQ(applied->marked_missing(), 1u);
  EXPECT_EQ(ledger_->Get("default/2/app")->state(), store::v1::MISSING);
  EXPECT_TRUE(ledger_->Get(AdoptedKey(950)).ok());
  EXPECT_EQ(core_->Reconcile({})->findings_total(), 0u);
}

TEST_F(AdminCoreTest, OfflineReadsButRefusesChanges) {
  AdminSources sources;
  sources.ledger = ledger_.get();
  sources.backend = &backend_;
  AdminCore offline(sources);
  EXPECT_FALSE(offline.live());
  EXPECT_EQ(offline.List({})->snapshots_size(), 3);
  adminpb::ReconcileRequest apply;
  apply.set_apply(true);
  EXPECT_EQ(offline.Reconcile(apply).status().code(),
            absl::StatusCode::kFailedPrecondition);
  adminpb::RetryRequest retry;
  retry.set_stuck(true);
  EXPECT_THAT(std::string(offline.Retry(retry).status().message()),
              HasSubstr("needs the daemon"));
  EXPECT_FALSE(offline.Stats({})->live());
}

TEST_F(AdminCoreTest, HistoryNewestFirstAndByKey) {
  auto all = core_->History({});
  ASSERT_TRUE(all.ok());
  ASSERT_FALSE(all->events().empty());
  EXPECT_EQ(all->events(0).op(), "adopted");  // recovery's, the newest
  for (int i = 1; i < all->events_size(); ++i) {
    EXPECT_GE(all->events(i - 1).seq(), all->events(i).seq());
  }
  adminpb::HistoryRequest of_stuck;
  of_stuck.set_key("stuck");
  auto stuck = core_->History(of_stuck);
  ASSERT_TRUE(stuck.ok());
  std::vector<std::string> ops;
  for (const auto& e : stuck->events()) ops.push_back(e.op());
  EXPECT_THAT(ops, ElementsAre("stuck", "retry", "remove-deferred", "prepare"));
}

TEST_F(AdminCoreTest, OwnershipComesFromTheRecord) {
  // The watcher's fields, as the ledger keeps them; namespace and
  // containerd key stored apart win over parsing the key.
  Record app = *ledger_->Get("default/2/app");
  app.set_namespace_("k8s.io");
  app.set_containerd_key("app-rootfs");
  app.set_owner("build-3");
  app.add_leases("lease-a");
  app.add_leases("lease-b");
  Ledger::Batch batch;
  batch.Put(app);
  ASSERT_TRUE(ledger_->Write(batch).ok());

  auto list = core_->List({});
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_THAT(Keys(*list),
              ElementsAre("default/1/base", "default/2/app", "gone"));
  const adminpb::Snapshot& listed = list->snapshots(1);
  EXPECT_EQ(listed.namespace_(), "k8s.io");
  EXPECT_EQ(listed.containerd_key(), "app-rootfs");
  EXPECT_EQ(listed.owner(), "build-3");
  EXPECT_THAT(listed.leases(), ElementsAre("lease-a", "lease-b"));
  // Without stored fields, still parsed from the key; no owner.
  EXPECT_EQ(list->snapshots(0).namespace_(), "default");
  EXPECT_EQ(list->snapshots(0).containerd_key(), "base");
  EXPECT_EQ(list->snapshots(0).owner(), "");
  EXPECT_THAT(list->snapshots(0).leases(), IsEmpty());

  adminpb::InspectRequest inspect;
  inspect.set_key("default/2/app");
  auto inspected = core_->Inspect(inspect);
  ASSERT_TRUE(inspected.ok()) << inspected.status();
  EXPECT_EQ(inspected->snapshot().owner(), "build-3");
  EXPECT_THAT(inspected->snapshot().leases(),
              ElementsAre("lease-a", "lease-b"));
}

TEST_F(AdminCoreTest, PendingShowsWhatHoldsARemovalBack) {
  Record busy = *ledger_->Get(RemovedKey(busy_id_));
  busy.set_held_by("default/build-3");
  busy.set_next_attempt_ns(0);
  Ledger::Batch batch;
  batch.Put(busy);
  ASSERT_TRUE(ledger_->Write(batch).ok());
  auto pending = core_->Pending({});
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->removals_size(), 2);
  EXPECT_EQ(pending->removals(0).key(), "default/3/busy");
  EXPECT_EQ(pending->removals(0).record().held_by(), "default/build-3");
}

TEST_F(AdminCoreTest, NewHistoryOpsAreListedLikeTheOthers) {
  Ledger::Batch batch;
  for (const char* op : {"owner", "leases", "reaped"}) {
    HistoryEvent e;
    e.set_op(op);
    e.set_key("default/2/app");
    e.set_detail(absl::StrCat(op, " detail"));
    batch.Note(e);
  }
  ASSERT_TRUE(ledger_->Write(batch).ok());
  adminpb::HistoryRequest request;
  request.set_key("default/2/app");
  auto history = core_->History(request);
  ASSERT_TRUE(history.ok()) << history.status();
  std::vector<std::string> ops;
  for (const auto& e : history->events()) ops.push_back(e.op());
  ASSERT_GE(ops.size(), 4u);
  EXPECT_THAT(std::vector<std::string>(ops.begin(), ops.begin() + 3),
              ::testing::UnorderedElementsAre("owner", "leases", "reaped"));
  EXPECT_EQ(ops[3], "prepare");
}

TEST_F(AdminCoreTest, WithoutAWatcherDeadSaysItIsOff) {
  auto dead = core_->Dead({});
  ASSERT_TRUE(dead.ok()) << dead.status();
  EXPECT_FALSE(dead->watcher().enabled());
  EXPECT_THAT(dead->containers(), IsEmpty());

  auto stats = core_->Stats({});
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(stats->has_watcher());  // present: "off", not "offline"
  EXPECT_FALSE(stats->watcher().enabled());
  EXPECT_EQ(stats->dead_containers(), 0u);
  EXPECT_EQ(stats->reaped_containers(), 0u);

  // Nothing about the watcher among the problems, no dead-owner orphans.
  auto check = core_->Check({});
  ASSERT_TRUE(check.ok());
  for (const auto& p : check->problems()) {
    EXPECT_THAT(p, Not(HasSubstr("watcher")));
    EXPECT_THAT(p, Not(HasSubstr("dead container")));
  }
  auto orphans = core_->Orphans({});
  ASSERT_TRUE(orphans.ok());
  EXPECT_EQ(orphans->orphans_size(), 2);
}

TEST_F(AdminCoreTest, OfflineDeadNeedsTheDaemon) {
  AdminSources sources;
  sources.ledger = ledger_.get();
  sources.backend = &backend_;
  AdminCore offline(sources);
  auto dead = offline.Dead({});
  EXPECT_EQ(dead.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(dead.status().message()),
              HasSubstr("needs the daemon"));
  auto stats = offline.Stats({});
  ASSERT_TRUE(stats.ok());
  EXPECT_FALSE(stats->has_watcher());
}

TEST_F(AdminCoreTest, DeadContainersAreReportedEverywhere) {
  const adminpb::DeadResponse canned = OneDeadContainer();
  std::unique_ptr<AdminCore> core = CoreWithWatcher(canned);

  auto dead = core->Dead({});
  ASSERT_TRUE(dead.ok()) << dead.status();
  EXPECT_EQ(dead->DebugString(), canned.DebugString());

  auto stats = core->Stats({});
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(stats->watcher().enabled());
  EXPECT_EQ(stats->watcher().address(), "/run/containerd/containerd.sock");
  EXPECT_EQ(stats->watcher().containers(), 12u);
  EXPECT_EQ(stats->dead_containers(), 1u);
  EXPECT_EQ(stats->reaped_containers(), 2u);

  auto check = core->Check({});
  ASSERT_TRUE(check.ok()) << check.status();
  ASSERT_EQ(check->problems_size(), 5);  // the three of the ledger, then ...
  EXPECT_EQ(check->problems(3),
            "containerd watcher not connected "
            "(/run/containerd/containerd.sock): UNAVAILABLE: connection "
            "refused");
  EXPECT_EQ(check->problems(4),
            "dead container default/build-3 (task stopped, idle 2m10s) pins 2 "
            "snapshots (5.1 MiB): default/2/app");

  auto orphans = core->Orphans({});
  ASSERT_TRUE(orphans.ok()) << orphans.status();
  ASSERT_EQ(orphans->orphans_size(), 3);
  const adminpb::Orphan& o = orphans->orphans(2);
  EXPECT_EQ(o.reason(), "dead-owner");
  EXPECT_EQ(o.snapshot().key(), "default/2/app");
  EXPECT_EQ(o.snapshot().record().kind(), store::v1::ACTIVE);
  EXPECT_THAT(o.detail(),
              ::testing::MatchesRegex("container default/build-3 \\(task "
                                      "stopped\\) idle since "
                                      "[0-9-]+ [0-9:]+ UTC \\(2m10s\\)"));
}

TEST_F(AdminCoreTest, AConnectedWatcherAndNoDeadContainersAreNoProblem) {
  adminpb::DeadResponse canned;
  canned.mutable_watcher()->set_enabled(true);
  canned.mutable_watcher()->set_connected(true);
  auto check = CoreWithWatcher(canned)->Check({});
  ASSERT_TRUE(check.ok());
  EXPECT_EQ(check->problems_size(), 3);  // the ledger's own
}

TEST_F(AdminCoreTest, ADeadReportThatFailsIsAProblemNotAnAllClear) {
  auto core = CoreWithWatcher(absl::UnavailableError("ledger degraded"));
  auto check = core->Check({});
  ASSERT_TRUE(check.ok());
  ASSERT_EQ(check->problems_size(), 4);
  EXPECT_EQ(check->problems(3),
            "cannot list dead containers: UNAVAILABLE: ledger degraded");
  EXPECT_EQ(core->Dead({}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(core->Orphans({}).status().code(), absl::StatusCode::kUnavailable);
  // Stats still answers, without counts.
  auto stats = core->Stats({});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->dead_containers(), 0u);
}

TEST_F(AdminCoreTest, ADeadContainerWhoseRootfsIsGoneIsNoOrphan) {
  adminpb::DeadResponse canned = OneDeadContainer();
  canned.mutable_containers(0)->set_snapshot("default/9/removed-since");
  auto orphans = CoreWithWatcher(canned)->Orphans({});
  ASSERT_TRUE(orphans.ok()) << orphans.status();
  EXPECT_EQ(orphans->orphans_size(), 2);
}

TEST(DefaultAdminAddressTest, BesideTheMainSocket) {
  EXPECT_EQ(DefaultAdminAddress("/run/snapledger/snapledger.sock"),
            "/run/snapledger/snapledger-admin.sock");
  EXPECT_EQ(DefaultAdminAddress("/tmp/s"), "/tmp/s.admin");
}

TEST(OfflineAdminTest, NoStateIsAClearError) {
  auto admin = OfflineAdmin::Open("/nonexistent/snapledger");
  EXPECT_EQ(admin.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(admin.status().message()),
              HasSubstr("no snapledger state under /nonexistent/snapledger"));
}

}  // namespace
}  // namespace snapledger
