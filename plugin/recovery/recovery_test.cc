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

// Completions are deferred writes: a crash may lose one whose reply reached
// the client, so an intent whose backend work is whole goes forward.
TEST_F(RecoveryTest, PrepareIntentsWithAWholeObjectAreRolledForward) {
  Put("made", 1, store::v1::PREPARING);  // crash after backend create
  Put("view", 3, store::v1::PREPARING, store::v1::VIEW);
  Put("not-made", 2, store::v1::PREPARING);  // crash before it
  backend_.Put(1, {});
  backend_.Put(3, {});
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->prepares_rolled_forward, 2);
  EXPECT_EQ(report->prepares_rolled_back, 1);
  EXPECT_EQ(report->intents_resolved(), 3);
  EXPECT_TRUE(backend_.objects().contains(1));
  auto made = ledger_->Get("made");
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(made->state(), store::v1::LIVE);
  EXPECT_EQ(made->kind(), store::v1::ACTIVE);
  EXPECT_EQ(made->backend_id(), 1u);
  EXPECT_EQ(ledger_->Get("view")->state(), store::v1::LIVE);
  EXPECT_EQ(ledger_->Get("not-made").status().code(),
            absl::StatusCode::kNotFound);
  // The history says what recovery did.
  auto history = ledger_->History("made", 10);
  ASSERT_TRUE(history.ok());
  ASSERT_FALSE(history->empty());
  EXPECT_EQ(history->front().op(), "prepare");
  EXPECT_THAT(history->front().detail(), HasSubstr("completed at start-up"));
  EXPECT_EQ(ledger_->History("view", 10)->front().op(), "view");
  EXPECT_EQ(ledger_->History("not-made", 10)->front().op(), "rolled-back");
  // Nothing to do a second time.
  auto again = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->intents_resolved(), 0);
  EXPECT_THAT(again->adopted, IsEmpty());
}

TEST_F(RecoveryTest, CommitIntentsWithAWholeObjectAreCompleted) {
  Put("p", 1, store::v1::LIVE, store::v1::COMMITTED);
  backend_.Put(1, {});
  Record intent;
  intent.set_key("k");
  intent.set_parent("p");
  intent.set_parent_backend_id(1);
  intent.set_backend_id(2);
  intent.set_kind(store::v1::ACTIVE);
  intent.set_state(store::v1::COMMITTING);
  intent.set_prior_state(store::v1::LIVE);
  intent.set_commit_name("ns/7/layer");
  (*intent.mutable_labels())["of-the-active"] = "1";
  (*intent.mutable_commit_labels())["of-the-commit"] = "2";
  {
    Ledger::Batch b;
    b.Put(intent);
    ASSERT_TRUE(ledger_->Write(b).ok());
  }
  backend_.Put(2, {1, SnapshotKind::kActive, 4096});
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->commits_rolled_forward, 1);
  EXPECT_EQ(report->intents_resolved(), 1);
  EXPECT_EQ(ledger_->Get("k").status().code(), absl::StatusCode::kNotFound);
  auto committed = ledger_->Get("ns/7/layer");
  ASSERT_TRUE(committed.ok());
  EXPECT_EQ(committed->kind(), store::v1::COMMITTED);
  EXPECT_EQ(committed->state(), store::v1::LIVE);
  EXPECT_EQ(committed->backend_id(), 2u);
  EXPECT_EQ(committed->parent(), "p");
  EXPECT_EQ(committed->size_bytes(), 4096);  // the backend's usage
  EXPECT_EQ(backend_.objects().at(2).kind, SnapshotKind::kCommitted);
  EXPECT_EQ(committed->namespace_(), "ns");
  EXPECT_EQ(committed->containerd_key(), "layer");
  EXPECT_TRUE(committed->commit_name().empty());
  EXPECT_TRUE(committed->commit_labels().empty());
  // Commit replaces the labels.
  EXPECT_EQ(committed->labels().size(), 1u);
  EXPECT_EQ(committed->labels().at("of-the-commit"), "2");
  // The parent's children index names the committed snapshot.
  EXPECT_THAT(*ledger_->Children(1), ElementsAre("ns/7/layer"));
  auto history = ledger_->History("ns/7/layer", 10);
  ASSERT_TRUE(history.ok());
  ASSERT_FALSE(history->empty());
  EXPECT_EQ(history->front().op(), "commit");
  EXPECT_THAT(history->front().detail(), HasSubstr("completed at start-up"));
}

TEST_F(RecoveryTest, CommitIntentsTheBackendCannotCompleteAreRolledBack) {
  Put("k", 1, store::v1::COMMITTING);      // object there, commit fails
  Put("gone", 2, store::v1::COMMITTING);   // object lost
  Put("taken", 3, store::v1::COMMITTING);  // its name is taken
  Put("name-of-taken", 4, store::v1::LIVE, store::v1::COMMITTED);
  {
    Record r = *ledger_->Get("k");
    r.set_commit_name("name-of-k");
    Record t = *ledger_->Get("taken");
    t.set_commit_name("name-of-taken");
    Ledger::Batch b;
    b.Put(r);
    b.Put(t);
    ASSERT_TRUE(ledger_->Write(b).ok());
  }
  backend_.Put(1, {});
  backend_.Put(3, {});
  backend_.Put(4, {});
  backend_.FailCommit(absl::UnavailableError("disk on fire"));
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->commits_rolled_back, 3);
  EXPECT_EQ(report->commits_rolled_forward, 0);
  EXPECT_THAT(report->missing, ElementsAre("gone"));
  auto k = ledger_->Get("k");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->state(), store::v1::LIVE);
  EXPECT_EQ(k->kind(), store::v1::ACTIVE);
  EXPECT_TRUE(k->commit_name().empty());
  EXPECT_THAT(k->last_error(), HasSubstr("disk on fire"));
  EXPECT_EQ(ledger_->Get("name-of-k").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ledger_->Get("gone")->state(), store::v1::MISSING);
  EXPECT_EQ(ledger_->Get("taken")->state(), store::v1::LIVE);
  EXPECT_THAT(ledger_->Get("taken")->last_error(), HasSubstr("is taken"));
  EXPECT_EQ(ledger_->Get("name-of-taken")->backend_id(), 4u);
}

// While serving, the coordinator resolves intents of calls that failed:
// their clients were told so, and a prepare or a commit goes back.
TEST_F(RecoveryTest, IntentsOfFailedCallsAreRolledBackWhateverTheBackendHolds) {
  Put("prepared", 1, store::v1::PREPARING);
  Put("committing", 2, store::v1::COMMITTING);
  backend_.Put(1, {});
  backend_.Put(2, {});
  RecoveryReport report;
  ASSERT_TRUE(ResolveIntent(*ledger_, backend_, *ledger_->Get("prepared"),
                            /*stored=*/true, IntentOrigin::kFailedCall, &report)
                  .ok());
  ASSERT_TRUE(ResolveIntent(*ledger_, backend_, *ledger_->Get("committing"),
                            /*stored=*/true, IntentOrigin::kFailedCall, &report)
                  .ok());
  EXPECT_EQ(report.prepares_rolled_back, 1);
  EXPECT_EQ(report.commits_rolled_back, 1);
  EXPECT_EQ(report.rolled_forward(), 0);
  EXPECT_FALSE(backend_.objects().contains(1));
  EXPECT_EQ(ledger_->Get("prepared").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ledger_->Get("committing")->state(), store::v1::LIVE);
  EXPECT_EQ(ledger_->Get("committing")->kind(), store::v1::ACTIVE);
}

// A commit whose call failed although the backend did it (a remote
// snapshotter that committed and died before answering) happened: it is
// completed, not rolled back onto an active object that no longer exists.
TEST_F(RecoveryTest, FailedCommitCallsTheBackendDidAnywayAreCompleted) {
  Put("committing", 2, store::v1::COMMITTING);
  {
    Record r = *ledger_->Get("committing");
    r.set_commit_name("ns/1/layer");
    Ledger::Batch b;
    b.Put(r);
    ASSERT_TRUE(ledger_->Write(b).ok());
  }
  backend_.Put(2, {0, SnapshotKind::kCommitted, 4096});
  RecoveryReport report;
  ASSERT_TRUE(ResolveIntent(*ledger_, backend_, *ledger_->Get("committing"),
                            /*stored=*/true, IntentOrigin::kFailedCall, &report)
                  .ok());
  EXPECT_EQ(report.commits_rolled_forward, 1);
  EXPECT_EQ(report.commits_rolled_back, 0);
  EXPECT_EQ(ledger_->Get("committing").status().code(),
            absl::StatusCode::kNotFound);
  auto committed = ledger_->Get("ns/1/layer");
  ASSERT_TRUE(committed.ok());
  EXPECT_EQ(committed->kind(), store::v1::COMMITTED);
  EXPECT_EQ(committed->state(), store::v1::LIVE);
  EXPECT_EQ(committed->backend_id(), 2u);

  // A backend that cannot say leaves the intent for later.
  Put("unsure", 3, store::v1::COMMITTING);
  backend_.Put(3, {});
  backend_.FailExists(absl::UnavailableError("downstream gone"));
  EXPECT_EQ(ResolveIntent(*ledger_, backend_, *ledger_->Get("unsure"),
                          /*stored=*/true, IntentOrigin::kFailedCall, &report)
                .code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(ledger_->Get("unsure")->state(), store::v1::COMMITTING);
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
  // A failed prepare's object is removed (not rolled forward, as at
  // start-up): the backend refuses, so it is queued.
  RecoveryReport failed_call;
  ASSERT_TRUE(ResolveIntent(*ledger_, backend_, *ledger_->Get("y"),
                            /*stored=*/true, IntentOrigin::kFailedCall,
                            &failed_call)
                  .ok());
  EXPECT_EQ(failed_call.removals_queued, 1);
  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->removals_queued, 1);
  EXPECT_EQ(report->intents_resolved(), 1);
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
