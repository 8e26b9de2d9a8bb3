#include "plugin/recovery/reconciler.h"

#include <stdlib.h>

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/testing/ledger_fixture.h"

namespace snapledger {
namespace {

using ::testing::IsEmpty;

class ReconcilerTest : public testing::LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    reconciler_ = std::make_unique<Reconciler>(ledger_.get(), &backend_);
  }
  void TearDown() override {
    reconciler_.reset();
    LedgerFixture::TearDown();
  }
  void Put(const std::string& key, uint64_t id, uint64_t parent_id = 0,
           RecordState state = store::v1::LIVE) {
    Record r;
    r.set_key(key);
    r.set_backend_id(id);
    r.set_parent_backend_id(parent_id);
    r.set_state(state);
    r.set_kind(store::v1::COMMITTED);
    Ledger::Batch b;
    b.Put(r);
    ASSERT_TRUE(ledger_->Write(b).ok());
  }

  std::unique_ptr<Reconciler> reconciler_;
};

TEST_F(ReconcilerTest, AgreementHasNoFindings) {
  Put("a", 1);
  Put("b", 2, 1);
  backend_.Put(1, {});
  backend_.Put(2, {1});
  auto r = reconciler_->RunOnce();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->findings, IsEmpty());
  EXPECT_EQ(r->records_judged, 2);
  EXPECT_EQ(r->objects_listed, 2);
}

TEST_F(ReconcilerTest, FindsMissingUnrecordedAndParentMismatch) {
  Put("lost", 1);
  Put("child", 2, 3);
  backend_.Put(2, {7});  // parent differs from the record's
  backend_.Put(3, {});   // nobody names it
  auto r = reconciler_->RunOnce();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->findings_total, 3);
  std::map<Finding::Type, Finding> by_type;
  for (const auto& f : r->findings) by_type[f.type()] = f;
  EXPECT_EQ(by_type[Finding::MISSING_OBJECT].key(), "lost");
  EXPECT_EQ(by_type[Finding::PARENT_MISMATCH].key(), "child");
  EXPECT_EQ(by_type[Finding::UNRECORDED_OBJECT].backend_id(), 3u);
  EXPECT_EQ(r->findings_by_type[Finding::MISSING_OBJECT], 1);
  EXPECT_EQ(r->findings_by_type[Finding::PARENT_MISMATCH], 1);
  EXPECT_EQ(r->findings_by_type[Finding::UNRECORDED_OBJECT], 1);
}

TEST_F(ReconcilerTest, IntentsAreNotJudged) {
  Put("preparing", 1, 0, store::v1::PREPARING);
  Put("removing", 2, 0, store::v1::REMOVING);
  backend_.Put(1, {});
  auto r = reconciler_->RunOnce();
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->findings, IsEmpty());
}

// A snapshot prepared while the pass runs (its LIVE record written after the
// pass started, its object created after the backend was listed) is not
// reported missing: the race of context/002.
TEST_F(ReconcilerTest, RecordsNewerThanThePassAreNotJudged) {
  backend_.AfterList([&] {
    backend_.AfterList(nullptr);
    backend_.Put(5, {});
    Put("new", 5);
  });
  auto r = reconciler_->RunOnce();
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->findings, IsEmpty());
  EXPECT_EQ(r->records_skipped_newer, 1);
  // The next pass judges it, and finds it well.
  auto next = reconciler_->RunOnce();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->records_judged, 1);
  EXPECT_THAT(next->findings, IsEmpty());
}

// A Remove that completes while the pass runs (object listed, record gone by
// the scan) is not reported as an unrecorded object.
TEST_F(ReconcilerTest, ObjectsRemovedDuringThePassAreNotOrphans) {
  Put("going", 4);
  backend_.Put(4, {});
  backend_.AfterList([&] {
    backend_.AfterList(nullptr);
    backend_.Erase(4);
    Record r;
    r.set_key("going");
    Ledger::Batch b;
    b.Delete(r);
    ASSERT_TRUE(ledger_->Write(b).ok());
  });
  auto r = reconciler_->RunOnce();
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->findings, IsEmpty());
}

TEST_F(ReconcilerTest, PeriodicPassesKeepTheLatestReport) {
  Put("lost", 1);
  EXPECT_FALSE(reconciler_->Latest().has_value());
  ASSERT_TRUE(reconciler_->Start(absl::Milliseconds(20)).ok());
  for (int i = 0; i < 200 && !reconciler_->Latest(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  reconciler_->Stop();
  ASSERT_TRUE(reconciler_->Latest().has_value());
  EXPECT_EQ(reconciler_->Latest()->findings_total, 1);
}

}  // namespace
}  // namespace snapledger
