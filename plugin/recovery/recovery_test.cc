#include "plugin/recovery/recovery.h"

#include <stdlib.h>

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/record/keys.h"
#include "plugin/testing/ledger_fixture.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class RecoveryTest : public testing::LedgerFixture {
 protected:
  void Put(const std::string& key, uint64_t id, RecordState state,
           RecordKind kind = store::v1::ACTIVE, std::string parent = "") {
    Record r;
    r.set_key(key);
    r.set_backend_id(id);
    r.set_state(state);
    r.set_kind(kind);
    if (!parent.empty()) {
      r.set_parent_backend_id(ledger_->Get(parent)->backend_id());
    }
    r.set_parent(std::move(parent));
    Ledger::Batch b;
    b.Put(r);
    ASSERT_TRUE(ledger_->Write(b).ok());
  }
};

TEST_F(RecoveryTest, NothingToDoOnACleanLedger) {
  Put("a", 1, store::v1::LIVE);
  backend_.Put(1, {});
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->intents_resolved(), 0);
  EXPECT_THAT(report->missing, IsEmpty());
  EXPECT_THAT(report->adopted, IsEmpty());
  EXPECT_EQ(backend_.cleanups(), 1);
}

TEST_F(RecoveryTest, PrepareIntentsAreRolledBack) {
  Put("made", 1, store::v1::PREPARING);      // crash after backend create
  Put("not-made", 2, store::v1::PREPARING);  // crash before it
  backend_.Put(1, {});
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->prepares_rolled_back, 2);
  EXPECT_TRUE(backend_.objects().empty());
  EXPECT_EQ(ledger_->Get("made").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ledger_->Get("not-made").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RecoveryTest, CommitIntentsAreRolledBackToActive) {
  Put("k", 1, store::v1::COMMITTING);
  backend_.Put(1, {});
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->commits_rolled_back, 1);
  auto r = ledger_->Get("k");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state(), store::v1::LIVE);
  EXPECT_EQ(r->kind(), store::v1::ACTIVE);
  EXPECT_TRUE(r->commit_name().empty());
}

TEST_F(RecoveryTest, RemoveIntentsAreRolledForward) {
  Put("p", 1, store::v1::LIVE, store::v1::COMMITTED);
  Put("gone-already", 2, store::v1::REMOVING, store::v1::ACTIVE, "p");
  Put("still-there", 3, store::v1::REMOVING, store::v1::ACTIVE, "p");
  backend_.Put(1, {});
  backend_.Put(3, {1});
  ASSERT_EQ(ledger_->Children(1)->size(), 2u);
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->removes_completed, 2);
  EXPECT_EQ(backend_.objects().size(), 1u);
  EXPECT_THAT(*ledger_->Children(1), IsEmpty());
}

TEST_F(RecoveryTest, LiveRecordWithoutStorageIsMarkedMissingNotDropped) {
  Put("lost", 7, store::v1::LIVE, store::v1::COMMITTED);
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok());
  EXPECT_THAT(report->missing, ElementsAre("lost"));
  auto r = ledger_->Get("lost");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state(), store::v1::MISSING);
  EXPECT_TRUE(IsVisible(*r));
  EXPECT_FALSE(r->last_error().empty());
}

TEST_F(RecoveryTest, UnrecordedObjectsAreAdoptedHiddenAndIdsReserved) {
  Put("p", 1, store::v1::LIVE, store::v1::COMMITTED);
  backend_.Put(1, {});
  backend_.Put(42, {1});   // a child of a known parent
  backend_.Put(43, {42});  // a child of another stranger
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok());
  EXPECT_THAT(report->adopted, ElementsAre(AdoptedKey(42), AdoptedKey(43)));
  EXPECT_TRUE(backend_.objects().contains(42));  // never deleted blindly
  auto r = ledger_->Get(AdoptedKey(42));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state(), store::v1::ADOPTED);
  EXPECT_FALSE(IsVisible(*r));  // containerd's GC must not delete it
  EXPECT_EQ(r->parent(), "p");
  EXPECT_EQ(ledger_->Get(AdoptedKey(43))->parent(), AdoptedKey(42));
  // The parent cannot be removed from under its adopted child.
  EXPECT_THAT(*ledger_->Children(1), ElementsAre(AdoptedKey(42)));
  EXPECT_GT(ledger_->AllocateId(), 43u);
  // A second recovery finds nothing new.
  auto again = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(again->adopted, IsEmpty());
}

TEST_F(RecoveryTest, MissingRecordBecomesLiveWhenItsStorageIsBack) {
  Put("k", 3, store::v1::MISSING, store::v1::COMMITTED);
  backend_.Put(3, {});
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->missing_restored, 1);
  EXPECT_EQ(ledger_->Get("k")->state(), store::v1::LIVE);
}

TEST_F(RecoveryTest, RemovalTheBackendRefusesIsQueuedNotFatal) {
  Put("x", 1, store::v1::REMOVING);
  Put("y", 2, store::v1::PREPARING);
  backend_.Put(1, {});
  backend_.Put(2, {});
  backend_.FailRemove(absl::UnavailableError("device busy"));
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->removals_queued, 2);
  EXPECT_EQ(report->intents_resolved(), 2);
  for (uint64_t id : {1, 2}) {
    auto pending = ledger_->Get(RemovedKey(id));
    ASSERT_TRUE(pending.ok());
    EXPECT_EQ(pending->state(), store::v1::REMOVE_PENDING);
    EXPECT_EQ(pending->remove_attempts(), 1);
    EXPECT_GT(pending->next_attempt_ns(), 0);
    EXPECT_THAT(pending->last_error(), HasSubstr("device busy"));
  }
  EXPECT_EQ(ledger_->Get("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ledger_->Get("y").status().code(), absl::StatusCode::kNotFound);
  // Queued removals are not intents: a second recovery leaves them to the
  // queue, and their objects are not adopted.
  backend_.FailRemove(absl::OkStatus());
  auto again = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->intents_resolved(), 0);
  EXPECT_THAT(again->adopted, IsEmpty());
  EXPECT_EQ(backend_.objects().size(), 2u);
}

}  // namespace
}  // namespace snapledger
