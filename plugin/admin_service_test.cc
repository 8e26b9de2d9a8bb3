// AdminCore over a ledger holding one of everything: live snapshots in a
// chain, a pending removal, a stuck one, an adopted object and a missing
// one; live (with a coordinator) and offline (read-only ledger).
#include "plugin/admin_service.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/recovery.h"
#include "plugin/testing/ledger_fixture.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const absl::Status kBusy = absl::FailedPreconditionError("in use (busy)");

class AdminCoreTest : public testing::LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    CoordinatorOptions options;
    options.remove_policy = RemovePolicy::kDefer;
    options.retry.max_attempts = 1;
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_, options);
    AdminSources sources;
    sources.ledger = ledger_.get();
    sources.backend = &backend_;
    sources.coordinator = coord_.get();
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
    ASSERT_TRUE(coord_->RetryRemoval(stuck_id_).ok());
    coord_->RunDueRemovals();
    Layer("gone", "");
    backend_.Put(900, {});
    coord_.reset();  // recovery runs with nothing else touching the ledger
    backend_.Erase(ledger_->Get("gone")->backend_id());
    auto report = ResolveIntents(*ledger_, backend_);
    ASSERT_TRUE(report.ok()) << report.status();
    ASSERT_THAT(report->adopted, ElementsAre(AdoptedKey(900)));
    ASSERT_THAT(report->missing, ElementsAre("gone"));
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_, options);
    sources.coordinator = coord_.get();
    core_ = std::make_unique<AdminCore>(sources);
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

  std::unique_ptr<Coordinator> coord_;
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
  coord_->RunDueRemovals();
  EXPECT_EQ(core_->Check({})->problems_size(), 2);

  adminpb::RetryRequest bad;
  EXPECT_EQ(core_->Retry(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad.set_key("default/1/base");
  EXPECT_EQ(core_->Retry(bad).status().code(),
            absl::StatusCode::kFailedPrecondition);
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
