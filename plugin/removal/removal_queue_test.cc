// Removal policies and the removal queue (plugin/coordinator.h): refuse and
// defer, back-off, stuck, cascade, restart, and races between removal and
// use. The queue runs on a fake clock here; RunDueRemovals() stands in for
// the worker thread.
#include <atomic>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/backend/native/native_backend.h"
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

// Polls `done` until it holds or a generous deadline passes; returns its
// last value. Bounds a wait for something that must happen.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

const absl::Status kBusy =
    absl::FailedPreconditionError("object is in use: mounted at /x (busy)");

class RemovalTest : public testing::LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    Open(RemovePolicy::kDefer);
  }
  void TearDown() override {
    coord_.reset();
    LedgerFixture::TearDown();
  }

  void Open(RemovePolicy policy) { Open(policy, Retry()); }
  void Open(RemovePolicy policy, RetryPolicy retry) {
    coord_.reset();
    CoordinatorOptions options;
    options.remove_policy = policy;
    options.queue.retry = retry;
    options.queue.clock = [this] { return clock_.Now(); };
    options.queue.on_event = [this](RemovalEvent e) {
      events_.push_back(std::string(RemovalEventName(e)));
    };
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_, options);
    ASSERT_TRUE(coord_->removal_queue().Load().ok());
  }

  // No jitter, so that due times are exact.
  static RetryPolicy Retry() { return Retry(10); }
  static RetryPolicy Retry(int max_attempts) {
    RetryPolicy retry;
    retry.initial_backoff = absl::Seconds(1);
    retry.max_backoff = absl::Seconds(8);
    retry.jitter = 0;
    retry.max_attempts = max_attempts;
    return retry;
  }

  void Layer(const std::string& name, const std::string& parent) {
    ASSERT_TRUE(coord_->Prepare(name + "-active", parent, {}).ok());
    ASSERT_TRUE(coord_->Commit(name, name + "-active", {}).ok());
  }

  uint64_t IdOf(const std::string& key) {
    absl::StatusOr<Record> r = ledger_->Get(key);
    EXPECT_TRUE(r.ok()) << key;
    return r.ok() ? r->backend_id() : 0;
  }

  Record Pending(uint64_t id) {
    absl::StatusOr<Record> r = ledger_->Get(RemovedKey(id));
    EXPECT_TRUE(r.ok()) << RemovedKey(id) << ": " << r.status();
    return r.ok() ? *r : Record();
  }

  size_t RecordCount() {
    size_t n = 0;
    EXPECT_TRUE(ledger_
                    ->ForEach([&](const Record&) {
                      ++n;
                      return true;
                    })
                    .ok());
    return n;
  }

  testing::FakeClock clock_;
  std::unique_ptr<Coordinator> coord_;
  // What the queue reported (RemovalQueueOptions::on_event), by name.
  std::vector<std::string> events_;
};

TEST_F(RemovalTest, RefuseNamesTheChildrenAndKeepsTheSnapshot) {
  Open(RemovePolicy::kRefuse);
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("c1", "base", {}).ok());
  ASSERT_TRUE(coord_->View("c2", "base", {}).ok());
  absl::Status s = coord_->Remove("base");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("cannot remove snapshot with child: \"base\" has "
                        "children [c1, c2]"));
  EXPECT_TRUE(coord_->Stat("base").ok());
  EXPECT_EQ(backend_.objects().size(), 3u);
}

TEST_F(RemovalTest, RefuseBusyIsFailedPreconditionAndRollsBack) {
  Open(RemovePolicy::kRefuse);
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  const uint64_t id = IdOf("a");
  for (const absl::Status& cause :
       {kBusy, absl::UnavailableError("transient"), absl::InternalError("EIO"),
        absl::NotFoundError("odd")}) {
    if (absl::IsNotFound(cause)) break;  // NotFound means "already gone"
    backend_.FailRemoveOf(id, cause);
    absl::Status s = coord_->Remove("a");
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << cause;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(std::string(cause.message())));
    absl::StatusOr<Record> r = coord_->Stat("a");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->state(), store::v1::LIVE);
    EXPECT_THAT(r->last_error(), HasSubstr(std::string(cause.message())));
  }
  EXPECT_TRUE(backend_.objects().contains(id));
  backend_.FailRemoveOf(id, absl::OkStatus());
  EXPECT_TRUE(coord_->Remove("a").ok());
  EXPECT_EQ(RecordCount(), 0u);
}

TEST_F(RemovalTest, RefuseQueuesARemovalThatTimedOut) {
  // The backend may still be removing it: it cannot go back to live.
  Open(RemovePolicy::kRefuse);
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  const uint64_t id = IdOf("a");
  backend_.FailRemoveOf(id, absl::DeadlineExceededError("too slow"));
  // Answered OK: the key is gone and the removal is durable in the queue
  // (a refusal would say that nothing changed).
  EXPECT_TRUE(coord_->Remove("a").ok());
  EXPECT_TRUE(absl::IsNotFound(coord_->Stat("a").status()));
  EXPECT_EQ(Pending(id).state(), store::v1::REMOVE_PENDING);
  backend_.FailRemoveOf(id, absl::OkStatus());
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_EQ(RecordCount(), 0u);
  EXPECT_THAT(backend_.objects(), IsEmpty());
}

TEST_F(RemovalTest, DeferHidesTheSnapshotAndFreesItsKey) {
  Layer("base", "");
  const uint64_t id = IdOf("base");
  backend_.FailRemoveOf(id, kBusy);
  ASSERT_TRUE(coord_->Remove("base").ok());

  // Gone for containerd: Stat, List, parent lookups.
  EXPECT_TRUE(absl::IsNotFound(coord_->Stat("base").status()));
  int listed = 0;
  auto all = filter::Filter::ParseAll({});
  ASSERT_TRUE(all.ok());
  ASSERT_TRUE(coord_
                  ->List(*all,
                         [&](const Record&) {
                           ++listed;
                           return true;
                         })
                  .ok());
  EXPECT_EQ(listed, 0);
  EXPECT_TRUE(absl::IsNotFound(coord_->Prepare("x", "base", {}).status()));
  EXPECT_TRUE(absl::IsNotFound(coord_->Remove("base")));

  // Kept in the ledger, with the attempt and its error.
  Record pending = Pending(id);
  EXPECT_EQ(pending.state(), store::v1::REMOVE_PENDING);
  EXPECT_EQ(pending.removed_key(), "base");
  EXPECT_EQ(pending.remove_attempts(), 1);
  ASSERT_EQ(pending.remove_history_size(), 1);
  EXPECT_THAT(pending.remove_history(0).error(), HasSubstr("busy"));
  EXPECT_EQ(pending.next_attempt_ns(),
            absl::ToUnixNanos(clock_.Now() + absl::Seconds(1)));
  EXPECT_TRUE(backend_.objects().contains(id));

  // The key is free at once, and a new snapshot under it is a new object.
  Layer("base", "");
  EXPECT_NE(IdOf("base"), id);
  EXPECT_TRUE(coord_->Stat("base").ok());
}

TEST_F(RemovalTest, BackoffDoublesUpToTheCap) {
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  const uint64_t id = IdOf("a");
  backend_.FailRemoveOf(id, kBusy);
  ASSERT_TRUE(coord_->Remove("a").ok());
  // Delays after 1..6 failures: 1, 2, 4, 8, 8, 8 s (max_backoff 8 s).
  for (int64_t want : {1, 2, 4, 8, 8}) {
    const absl::Time due = absl::FromUnixNanos(Pending(id).next_attempt_ns());
    EXPECT_EQ(due - clock_.Now(), absl::Seconds(want));
    clock_.Advance(absl::Seconds(want) - absl::Milliseconds(1));
    EXPECT_EQ(coord_->removal_queue().RunDue(), 0)
        << "attempted before it was due";
    clock_.Advance(absl::Milliseconds(1));
    EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  }
  EXPECT_EQ(Pending(id).remove_attempts(), 6);
  EXPECT_EQ(Pending(id).remove_history_size(), 6);
}

TEST_F(RemovalTest, JitteredDelaysStayWithinBounds) {
  RetryPolicy retry = Retry();
  retry.jitter = 0.5;
  Open(RemovePolicy::kDefer, retry);
  std::set<int64_t> delays;
  for (int i = 0; i < 40; ++i) {
    const std::string key = absl::StrCat("k", i);
    ASSERT_TRUE(coord_->Prepare(key, "", {}).ok());
    const uint64_t id = IdOf(key);
    backend_.FailRemoveOf(id, kBusy);
    ASSERT_TRUE(coord_->Remove(key).ok());
    const absl::Duration d =
        absl::FromUnixNanos(Pending(id).next_attempt_ns()) - clock_.Now();
    EXPECT_GE(d, absl::Milliseconds(500));
    EXPECT_LE(d, absl::Seconds(1));
    delays.insert(absl::ToInt64Nanoseconds(d));
  }
  EXPECT_GT(delays.size(), 1u) << "jitter spread nothing";
}

TEST_F(RemovalTest, StuckAfterMaxAttemptsUntilRetried) {
  Open(RemovePolicy::kDefer, Retry(/*max_attempts=*/3));
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  const uint64_t id = IdOf("a");
  backend_.FailRemoveOf(id, kBusy);
  ASSERT_TRUE(coord_->Remove("a").ok());  // attempt 1
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);  // attempt 2
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);  // attempt 3: stuck
  Record stuck = Pending(id);
  EXPECT_EQ(stuck.state(), store::v1::STUCK);
  EXPECT_EQ(stuck.remove_attempts(), 3);
  EXPECT_EQ(stuck.remove_history_size(), 3);
  auto stats = coord_->removal_queue().Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->stuck, 1u);
  EXPECT_EQ(stats->scheduled, 0u);
  EXPECT_FALSE(stats->next_due.has_value());

  // Never retried by itself, even much later; kept, with its object.
  clock_.Advance(absl::Hours(24));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 0);
  EXPECT_TRUE(backend_.objects().contains(id));

  EXPECT_TRUE(absl::IsNotFound(coord_->removal_queue().Retry(id + 100)));
  backend_.FailRemoveOf(id, absl::OkStatus());
  ASSERT_TRUE(coord_->removal_queue().Retry(id).ok());
  EXPECT_EQ(Pending(id).state(), store::v1::REMOVE_PENDING);
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_EQ(RecordCount(), 0u);
  EXPECT_THAT(backend_.objects(), IsEmpty());
  // Attempt 1 was the RPC's own; the queue made the others.
  EXPECT_THAT(events_, ElementsAre("backoff", "failed", "backoff", "stuck",
                                   "operator", "backoff", "removed"));
}

TEST_F(RemovalTest, HistoryIsBounded) {
  Open(RemovePolicy::kDefer, Retry(/*max_attempts=*/1000));
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  const uint64_t id = IdOf("a");
  backend_.FailRemoveOf(id, kBusy);
  ASSERT_TRUE(coord_->Remove("a").ok());
  for (int i = 0; i < 50; ++i) {
    clock_.Advance(absl::Seconds(8));
    ASSERT_EQ(coord_->removal_queue().RunDue(), 1);
  }
  Record pending = Pending(id);
  EXPECT_EQ(pending.remove_attempts(), 51);
  EXPECT_EQ(pending.remove_history_size(), kMaxRemovalHistory);
  // The newest attempts are kept, oldest first.
  EXPECT_EQ(pending.remove_history(kMaxRemovalHistory - 1).at_ns(),
            absl::ToUnixNanos(clock_.Now()));
  EXPECT_LT(pending.remove_history(0).at_ns(),
            pending.remove_history(1).at_ns());
}

TEST_F(RemovalTest, CascadeRemovesParentsLeafFirst) {
  // base <- mid <- {leaf (busy), view}: containerd removes them all.
  Layer("base", "");
  Layer("mid", "base");
  ASSERT_TRUE(coord_->Prepare("leaf", "mid", {}).ok());
  ASSERT_TRUE(coord_->View("view", "mid", {}).ok());
  const uint64_t base = IdOf("base"), mid = IdOf("mid"), leaf = IdOf("leaf"),
                 view = IdOf("view");
  backend_.FailRemoveOf(leaf, kBusy);

  ASSERT_TRUE(coord_->Remove("leaf").ok());  // busy: queued
  ASSERT_TRUE(coord_->Remove("mid").ok());   // children remain: waits
  ASSERT_TRUE(coord_->Remove("base").ok());  // a child remains: waits
  EXPECT_THAT(Pending(mid).last_error(),
              HasSubstr("leaf (removal pending, snapledger.removed/"));
  EXPECT_THAT(Pending(mid).last_error(), HasSubstr("view"));
  EXPECT_EQ(Pending(mid).remove_attempts(), 0);
  auto stats = coord_->removal_queue().Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->scheduled, 1u);
  EXPECT_EQ(stats->waiting_for_children, 2u);
  EXPECT_EQ(stats->held, 0u);

  // The view goes at once; mid still has the pending leaf.
  ASSERT_TRUE(coord_->Remove("view").ok());
  EXPECT_EQ(Pending(mid).state(), store::v1::REMOVE_PENDING);

  // Once the leaf can go, the whole chain follows in one run, leaf first.
  backend_.FailRemoveOf(leaf, absl::OkStatus());
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 3);
  EXPECT_THAT(backend_.removed_order(), ElementsAre(view, leaf, mid, base));
  EXPECT_EQ(RecordCount(), 0u);
  EXPECT_THAT(backend_.objects(), IsEmpty());
}

TEST_F(RemovalTest, ContainerdRemovingAChildCascadesToAPendingParent) {
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("unknown-child", "base", {}).ok());
  ASSERT_TRUE(coord_->Remove("base").ok());  // waits for the child
  EXPECT_EQ(coord_->removal_queue().RunDue(), 0);
  ASSERT_TRUE(coord_->Remove("unknown-child").ok());
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);  // due at once, no back-off
  EXPECT_EQ(RecordCount(), 0u);
  EXPECT_THAT(backend_.objects(), IsEmpty());
}

// A child whose Prepare timed out stays an intent until the backend can be
// asked again; a parent deferred behind it meanwhile is due as soon as the
// intent is rolled back.
TEST_F(RemovalTest, RolledBackPrepareCascadesToAQueuedParent) {
  Layer("base", "");
  const uint64_t base = IdOf("base");
  backend_.FailCreate(absl::DeadlineExceededError("create took too long"));
  EXPECT_FALSE(coord_->Prepare("child", "base", {}).ok());
  backend_.FailCreate(absl::OkStatus());
  EXPECT_EQ(ledger_->Get("child")->state(), store::v1::PREPARING);
  backend_.FailExists(absl::UnavailableError("still busy"));
  ASSERT_TRUE(coord_->Remove("base").ok());  // waits for the intent
  EXPECT_THAT(Pending(base).last_error(), HasSubstr("child"));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 0);

  backend_.FailExists(absl::OkStatus());
  ASSERT_TRUE(coord_->Prepare("other", "", {}).ok());  // resolves the intent
  EXPECT_TRUE(absl::IsNotFound(ledger_->Get("child").status()));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_FALSE(backend_.objects().contains(base));
}

// An intent left by a failed call while the worker sleeps with nothing due
// (a quiet host: no later call will resolve it) wakes the worker, which
// resolves it once the backend answers again, without any further call.
TEST_F(RemovalTest, TheWorkerResolvesAnIntentLeftOnAQuietHost) {
  Open(RemovePolicy::kRefuse);
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  ASSERT_TRUE(coord_->removal_queue().Start().ok());  // sleeps: nothing due
  backend_.FailCommit(absl::UnavailableError("downstream gone"));
  backend_.FailExists(absl::UnavailableError("downstream gone"));
  EXPECT_EQ(coord_->Commit("layer", "a", {}).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(ledger_->Get("a")->state(), store::v1::COMMITTING);
  backend_.FailCommit(absl::OkStatus());
  backend_.FailExists(absl::OkStatus());
  EXPECT_TRUE(Eventually(
      [&] { return ledger_->Get("a")->state() == store::v1::LIVE; }));
  EXPECT_EQ(ledger_->Get("a")->kind(), store::v1::ACTIVE);
  EXPECT_TRUE(absl::IsNotFound(ledger_->Get("layer").status()));
}

TEST_F(RemovalTest, QueueSurvivesARestart) {
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("child", "base", {}).ok());
  ASSERT_TRUE(coord_->Prepare("busy", "", {}).ok());
  const uint64_t base = IdOf("base"), child = IdOf("child"),
                 busy = IdOf("busy");
  backend_.FailRemoveOf(busy, kBusy);
  ASSERT_TRUE(coord_->Remove("busy").ok());
  ASSERT_TRUE(coord_->Remove("base").ok());
  const int64_t busy_due = Pending(busy).next_attempt_ns();

  // Down: the ledger is reopened from disk; the child went meanwhile (as if
  // recovery rolled its removal forward).
  coord_.reset();
  ledger_.reset();
  Ledger::Options options;
  options.path = dir_ + "/ledger";
  auto reopened = Ledger::Open(options);
  ASSERT_TRUE(reopened.ok());
  ledger_ = *std::move(reopened);
  {
    absl::StatusOr<Record> c = ledger_->Get("child");
    ASSERT_TRUE(c.ok());
    Ledger::Batch batch;
    batch.Delete(*c);
    ASSERT_TRUE(ledger_->Write(batch).ok());
    backend_.Erase(child);
  }
  Open(RemovePolicy::kDefer);

  EXPECT_EQ(Pending(busy).next_attempt_ns(), busy_due);
  EXPECT_EQ(Pending(busy).remove_attempts(), 1);
  // The childless parent is due now; the busy one when its back-off ends.
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_FALSE(backend_.objects().contains(base));
  backend_.FailRemoveOf(busy, absl::OkStatus());
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_EQ(RecordCount(), 0u);
}

TEST_F(RemovalTest, CleanupRunsWhatIsDue) {
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  const uint64_t id = IdOf("a");
  backend_.FailRemoveOf(id, kBusy);
  ASSERT_TRUE(coord_->Remove("a").ok());
  backend_.FailRemoveOf(id, absl::OkStatus());
  ASSERT_TRUE(coord_->Cleanup().ok());
  EXPECT_TRUE(backend_.objects().contains(id)) << "not due yet";
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(coord_->Cleanup().ok());
  EXPECT_FALSE(backend_.objects().contains(id));
  EXPECT_EQ(RecordCount(), 0u);
}

TEST_F(RemovalTest, RecoveryQueuesARemoveItCannotFinish) {
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  absl::StatusOr<Record> a = ledger_->Get("a");
  ASSERT_TRUE(a.ok());
  Record removing = *a;
  removing.set_prior_state(store::v1::LIVE);
  removing.set_state(store::v1::REMOVING);
  Ledger::Batch batch;
  batch.Put(removing);
  ASSERT_TRUE(ledger_->Write(batch).ok());
  backend_.FailRemoveOf(a->backend_id(), kBusy);
  coord_.reset();

  auto report = ResolveIntents(*ledger_, backend_);
  ASSERT_TRUE(report.ok()) << report.status();  // the daemon still starts
  EXPECT_EQ(report->removals_queued, 1);
  Record pending = Pending(a->backend_id());
  EXPECT_EQ(pending.state(), store::v1::REMOVE_PENDING);
  EXPECT_EQ(pending.removed_key(), "a");
  EXPECT_THAT(pending.last_error(), HasSubstr("busy"));
  EXPECT_TRUE(absl::IsNotFound(ledger_->Get("a").status()));

  Open(RemovePolicy::kRefuse);  // the queue runs whatever the policy
  backend_.FailRemoveOf(a->backend_id(), absl::OkStatus());
  // Recovery made it due at its own (real) now.
  clock_.Advance(absl::Now() - clock_.Now());
  EXPECT_EQ(coord_->removal_queue().RunDue(), 1);
  EXPECT_EQ(RecordCount(), 0u);
}

// A crash in the middle of a queued attempt leaves a REMOVING intent at
// snapledger.removed/N: recovery finishes it, or puts it back in the queue.
TEST_F(RemovalTest, RecoveryOfAnInterruptedQueuedAttempt) {
  for (bool busy : {true, false}) {
    const std::string key = busy ? "busy" : "free";
    ASSERT_TRUE(coord_->Prepare(key, "", {}).ok());
    const uint64_t id = IdOf(key);
    backend_.FailRemoveOf(id, kBusy);
    ASSERT_TRUE(coord_->Remove(key).ok());
    Record removing = Pending(id);
    removing.set_prior_state(store::v1::REMOVE_PENDING);
    removing.set_state(store::v1::REMOVING);
    Ledger::Batch batch;
    batch.Put(removing);
    ASSERT_TRUE(ledger_->Write(batch).ok());
    if (!busy) backend_.FailRemoveOf(id, absl::OkStatus());

    coord_.reset();
    auto report = ResolveIntents(*ledger_, backend_);
    ASSERT_TRUE(report.ok()) << report.status();
    if (busy) {
      EXPECT_EQ(report->removals_queued, 1);
      Record pending = Pending(id);
      EXPECT_EQ(pending.state(), store::v1::REMOVE_PENDING);
      EXPECT_EQ(pending.removed_key(), key);
      EXPECT_EQ(pending.remove_attempts(), 2);
      EXPECT_TRUE(backend_.objects().contains(id));
      backend_.FailRemoveOf(id, absl::OkStatus());
    } else {
      EXPECT_EQ(report->removes_completed, 1);
      EXPECT_TRUE(absl::IsNotFound(ledger_->Get(RemovedKey(id)).status()));
      EXPECT_FALSE(backend_.objects().contains(id));
    }
    Open(RemovePolicy::kDefer);
  }
  clock_.Advance(absl::Now() - clock_.Now());
  coord_->removal_queue().RunDue();
  EXPECT_EQ(RecordCount(), 0u);
}

TEST_F(RemovalTest, ReservedKeysAreRefused) {
  EXPECT_EQ(coord_->Prepare(RemovedKey(5), "", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(coord_->Prepare("a", "", {}).ok());
  EXPECT_EQ(coord_->Commit(AdoptedKey(9), "a", {}).code(),
            absl::StatusCode::kInvalidArgument);
}

// A Remove of a parent that arrives while a child is being prepared on it
// waits for the prepare, then sees the child: one clean outcome.
TEST_F(RemovalTest, RemoveWaitsForAPrepareOnTheSameParent) {
  for (RemovePolicy policy : {RemovePolicy::kRefuse, RemovePolicy::kDefer}) {
    Open(policy);
    const std::string base = policy == RemovePolicy::kRefuse ? "b1" : "b2";
    Layer(base, "");
    const uint64_t base_id = IdOf(base);
    absl::Notification in_create, release;
    backend_.DuringCreate([&] {
      in_create.Notify();
      release.WaitForNotification();
    });
    std::thread prepare(
        [&] { EXPECT_TRUE(coord_->Prepare(base + "-child", base, {}).ok()); });
    in_create.WaitForNotification();
    backend_.DuringCreate(nullptr);
    std::atomic<bool> removed{false};
    absl::Status remove_status;
    std::thread remove([&] {
      remove_status = coord_->Remove(base);
      removed = true;
    });
    // Blocked, not merely slow: it waits for the parent's key lock, which
    // the prepare holds (shared) until its Create returns.
    EXPECT_TRUE(Eventually([&] { return coord_->LockWaiters() == 1; }))
        << "Remove never waited for the key lock";
    EXPECT_FALSE(removed.load()) << "Remove ran beside a prepare on it";
    release.Notify();
    prepare.join();
    remove.join();
    if (policy == RemovePolicy::kRefuse) {
      EXPECT_EQ(remove_status.code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_TRUE(coord_->Stat(base).ok());
    } else {
      EXPECT_TRUE(remove_status.ok()) << remove_status;
      EXPECT_EQ(Pending(base_id).removed_key(), base);
    }
    EXPECT_TRUE(backend_.objects().contains(IdOf(base + "-child")));
  }
}

// Checks what must hold whatever ran: no record names a parent object that
// has no record; every record's object is stored; every stored object has a
// record; no intent is left.
void ExpectConsistent(Ledger& ledger, Backend& backend) {
  std::map<uint64_t, Record> by_id;
  ASSERT_TRUE(ledger
                  .ForEach([&](const Record& r) {
                    by_id[r.backend_id()] = r;
                    return true;
                  })
                  .ok());
  absl::StatusOr<std::vector<BackendObject>> objects = backend.List();
  ASSERT_TRUE(objects.ok());
  std::set<uint64_t> stored;
  for (const BackendObject& o : *objects) {
    stored.insert(o.id);
    auto it = by_id.find(o.id);
    EXPECT_NE(it, by_id.end()) << "object " << o.id << " has no record";
    if (it != by_id.end()) {
      EXPECT_EQ(it->second.parent_backend_id(), o.parent_id);
    }
  }
  for (const auto& [id, r] : by_id) {
    EXPECT_TRUE(stored.contains(id)) << r.ShortDebugString();
    EXPECT_NE(r.state(), store::v1::PREPARING) << r.key();
    EXPECT_NE(r.state(), store::v1::COMMITTING) << r.key();
    EXPECT_NE(r.state(), store::v1::REMOVING) << r.key();
    if (r.parent_backend_id() != 0) {
      EXPECT_TRUE(by_id.contains(r.parent_backend_id()))
          << r.key() << " points at a missing parent";
    }
  }
}

class RemovalRaceTest : public RemovalTest,
                        public ::testing::WithParamInterface<
                            std::tuple<RemovePolicy, bool /*native*/>> {};

// Many clients prepare on, commit on, and remove the same few parents at
// once (containerd's GC beside running builds).
TEST_P(RemovalRaceTest, PreparesAndRemovesOnSharedParents) {
  const auto [policy, native] = GetParam();
  std::unique_ptr<Backend> native_backend;
  Backend* backend = &backend_;
  if (native) {
    auto b = NewNativeBackend(dir_ + "/native", NativeBackendOptions{});
    ASSERT_TRUE(b.ok()) << b.status();
    native_backend = *std::move(b);
    backend = native_backend.get();
  }
  CoordinatorOptions options;
  options.remove_policy = policy;
  options.queue.retry = Retry();
  options.queue.clock = [this] { return clock_.Now(); };
  coord_ = std::make_unique<Coordinator>(ledger_.get(), backend, options);

  constexpr int kParents = 3, kThreads = 6, kOps = 80;
  for (int p = 0; p < kParents; ++p) Layer(absl::StrCat("p", p), "");
  std::atomic<int> prepared{0}, removed_parents{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < kOps; ++i) {
        const std::string parent = absl::StrCat("p", rng() % kParents);
        const std::string key = absl::StrCat("t", t, "-", i);
        switch (rng() % 4) {
          case 0:  // remove a parent, then make it again
            if (coord_->Remove(parent).ok()) ++removed_parents;
            (void)coord_->Prepare(parent + "-a" + key, "", {});
            (void)coord_->Commit(parent, parent + "-a" + key, {});
            break;
          case 1:
            if (coord_->Prepare(key, parent, {}).ok()) {
              ++prepared;
              EXPECT_TRUE(coord_->Remove(key).ok());
            }
            break;
          case 2:
            if (coord_->View(key, parent, {}).ok()) ++prepared;
            break;
          default:
            (void)coord_->Cleanup();
            break;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_GT(prepared.load(), 0);
  EXPECT_GT(removed_parents.load(), 0);
  ExpectConsistent(*ledger_, *backend);

  // Then everything goes, parents after their children.
  std::vector<std::string> keys;
  ASSERT_TRUE(ledger_
                  ->ForEach([&](const Record& r) {
                    if (IsVisible(r) && r.kind() != store::v1::COMMITTED) {
                      keys.push_back(r.key());
                    }
                    return true;
                  })
                  .ok());
  for (const std::string& k : keys) EXPECT_TRUE(coord_->Remove(k).ok()) << k;
  for (int p = 0; p < kParents; ++p) (void)coord_->Remove(absl::StrCat("p", p));
  // Committed leftovers (a commit whose parent key was taken) have no
  // children now.
  keys.clear();
  ASSERT_TRUE(ledger_
                  ->ForEach([&](const Record& r) {
                    if (IsVisible(r)) keys.push_back(r.key());
                    return true;
                  })
                  .ok());
  for (const std::string& k : keys) EXPECT_TRUE(coord_->Remove(k).ok()) << k;
  clock_.Advance(absl::Minutes(1));
  coord_->removal_queue().RunDue();
  ExpectConsistent(*ledger_, *backend);
  EXPECT_EQ(RecordCount(), 0u);
  coord_.reset();
}

INSTANTIATE_TEST_SUITE_P(
    Policies, RemovalRaceTest,
    ::testing::Combine(::testing::Values(RemovePolicy::kRefuse,
                                         RemovePolicy::kDefer),
                       ::testing::Bool()),
    [](const auto& param_info) {
      return absl::StrCat(std::get<0>(param_info.param) == RemovePolicy::kRefuse
                              ? "Refuse"
                              : "Defer",
                          std::get<1>(param_info.param) ? "Native" : "Fake");
    });

}  // namespace
}  // namespace snapledger
