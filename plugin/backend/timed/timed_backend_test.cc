#include "plugin/backend/timed/timed_backend.h"

#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Generous: CI is a loaded 2-core machine, and these only bound waits that
// succeed at once when the code is right.
constexpr absl::Duration kGenerous = absl::Seconds(30);
// The limit for tests that make calls time out. Fast calls made alongside
// must still finish within it, so it is not tiny.
constexpr absl::Duration kLimit = absl::Milliseconds(100);

// A Backend whose calls return what the test set, count themselves, and can
// be made to block until Release().
class GateBackend : public Backend {
 public:
  // Results of the calls that do not block.
  struct Results {
    absl::Status create;
    absl::StatusOr<Usage> commit = Usage{1, 1};
    absl::Status remove;
    absl::StatusOr<std::vector<Mount>> mounts = std::vector<Mount>{};
    absl::StatusOr<Usage> disk_usage = Usage{2, 2};
    absl::StatusOr<bool> exists = true;
    absl::StatusOr<std::vector<BackendObject>> list =
        std::vector<BackendObject>{};
    absl::Status cleanup;
  };

  std::string_view Name() const override { return "test"; }

  absl::Status Create(uint64_t id, uint64_t parent_id,
                      SnapshotKind kind) override {
    Enter("create", id);
    absl::Status r = results().create;
    Leave();
    return r;
  }
  absl::StatusOr<Usage> Commit(uint64_t id) override {
    Enter("commit", id);
    absl::StatusOr<Usage> r = results().commit;
    Leave();
    return r;
  }
  absl::Status Remove(uint64_t id) override {
    Enter("remove", id);
    absl::Status r = results().remove;
    Leave();
    return r;
  }
  absl::StatusOr<std::vector<Mount>> Mounts(uint64_t id, uint64_t parent_id,
                                            SnapshotKind kind) override {
    Enter("mounts", id);
    absl::StatusOr<std::vector<Mount>> r = results().mounts;
    Leave();
    return r;
  }
  absl::StatusOr<Usage> DiskUsage(uint64_t id) override {
    Enter("disk_usage", id);
    absl::StatusOr<Usage> r = results().disk_usage;
    Leave();
    return r;
  }
  absl::StatusOr<bool> Exists(uint64_t id) override {
    Enter("exists", id);
    absl::StatusOr<bool> r = results().exists;
    Leave();
    return r;
  }
  absl::StatusOr<std::vector<BackendObject>> List() override {
    Enter("list", 0);
    absl::StatusOr<std::vector<BackendObject>> r = results().list;
    Leave();
    return r;
  }
  absl::Status Cleanup() override {
    Enter("cleanup", 0);
    absl::Status r = results().cleanup;
    Leave();
    return r;
  }

  // Test controls.
  void SetResults(Results r) {
    absl::MutexLock l(&mu_);
    results_ = std::move(r);
  }
  // Calls of `method` on `id` (0 for list and cleanup) block until Release().
  void Block(const std::string& method, uint64_t id = 0) {
    absl::MutexLock l(&mu_);
    blocked_.insert({method, id});
  }
  void Release() {
    if (!released_.HasBeenNotified()) released_.Notify();
  }
  // Waits until `n` calls in all have entered the backend.
  bool WaitEntered(int n, absl::Duration timeout = kGenerous) {
    absl::MutexLock l(&mu_);
    auto entered_enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return entered_ >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&entered_enough), timeout);
  }
  // Waits until every call that entered has returned.
  bool WaitFinished(absl::Duration timeout = kGenerous) {
    absl::MutexLock l(&mu_);
    auto all_finished = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return finished_ == entered_;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&all_finished), timeout);
  }
  int entered() {
    absl::MutexLock l(&mu_);
    return entered_;
  }
  int finished() {
    absl::MutexLock l(&mu_);
    return finished_;
  }
  int calls(const std::string& method) {
    absl::MutexLock l(&mu_);
    return calls_[method];
  }
  std::thread::id last_thread() {
    absl::MutexLock l(&mu_);
    return last_thread_;
  }
  // The kernel's id of the last call's thread: unlike std::thread::id, not
  // reused soon after a thread ends.
  pid_t last_tid() {
    absl::MutexLock l(&mu_);
    return last_tid_;
  }

 private:
  void Enter(const std::string& method, uint64_t id) {
    bool block;
    {
      absl::MutexLock l(&mu_);
      ++entered_;
      ++calls_[method];
      last_thread_ = std::this_thread::get_id();
      last_tid_ = ::gettid();
      block = blocked_.contains({method, id});
    }
    if (block) released_.WaitForNotification();
  }
  void Leave() {
    absl::MutexLock l(&mu_);
    ++finished_;
  }
  Results results() {
    absl::MutexLock l(&mu_);
    return results_;
  }

  absl::Notification released_;
  absl::Mutex mu_;
  Results results_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<std::string, uint64_t>> blocked_ ABSL_GUARDED_BY(mu_);
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
  std::thread::id last_thread_ ABSL_GUARDED_BY(mu_);
  pid_t last_tid_ ABSL_GUARDED_BY(mu_) = 0;
};

class TimedBackendTest : public ::testing::Test {
 protected:
  // Every test ends with no thread blocked and no call running.
  void TearDown() override {
    inner_->Release();
    EXPECT_TRUE(inner_->WaitFinished());
    if (timed_ != nullptr) {
      EXPECT_TRUE(timed_->WaitIdle(kGenerous));
      EXPECT_EQ(timed_->abandoned(), 0u);
    }
  }

  // Makes the call `method` on `id` block, issues it through `timed_`, and
  // waits until it has entered the inner backend.
  template <typename Call>
  void Abandon(const std::string& method, uint64_t id, Call call) {
    inner_->Block(method, id);
    const int entered = inner_->entered();
    const size_t abandoned = timed_->abandoned();
    absl::Status s = call();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_EQ(timed_->abandoned(), abandoned + 1);
    ASSERT_TRUE(inner_->WaitEntered(entered + 1));
  }

  std::shared_ptr<GateBackend> inner_ = std::make_shared<GateBackend>();
  std::unique_ptr<TimedBackend> timed_ = NewTimedBackend(inner_, {kLimit});
};

template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

// ThreadSanitizer's runtime starts threads of its own when it likes, so under
// TSan the process's thread count says nothing about the pool's workers.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SNAPLEDGER_UNDER_TSAN 1
#endif
#endif
#define SKIP_THREAD_COUNTS_UNDER_TSAN()                                      \
  do {                                                                       \
    if (kUnderTsan) GTEST_SKIP() << "TSan's runtime threads skew the count"; \
  } while (0)
#ifdef SNAPLEDGER_UNDER_TSAN
constexpr bool kUnderTsan = true;
#else
constexpr bool kUnderTsan = false;
#endif

// Threads of this process now (Linux), -1 if unknown.
int ThreadCount() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

// Threads of this process once the count held still for 50ms (threads of
// earlier tests' pools may still be ending), -1 if unknown.
int SettledThreadCount() {
  int n = ThreadCount();
  for (int stable = 0; stable < 50; ++stable) {
    absl::SleepFor(absl::Milliseconds(1));
    const int now = ThreadCount();
    if (now != n) stable = 0;
    n = now;
  }
  return n;
}

// Waits until this process has at most `n` threads; true if it got there.
bool WaitThreadsAtMost(int n) {
  const absl::Time deadline = absl::Now() + kGenerous;
  while (ThreadCount() > n) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// The most idle workers the tests' TimedBackends keep, set through the
// public option rather than assumed from the default.
constexpr int kMaxIdleWorkers = 3;

TEST_F(TimedBackendTest, FastCallsPassResultsThrough) {
  timed_ = NewTimedBackend(inner_, {kGenerous});
  EXPECT_EQ(timed_->Name(), "test");

  GateBackend::Results ok;
  ok.commit = Usage{123, 4};
  ok.mounts = std::vector<Mount>{{"bind", "/x/7", {"rbind", "ro"}}};
  ok.disk_usage = Usage{5, 6};
  ok.exists = false;
  ok.list = std::vector<BackendObject>{{3, 0}, {4, 3}};
  inner_->SetResults(ok);
  EXPECT_TRUE(timed_->Create(1, 0, SnapshotKind::kActive).ok());
  absl::StatusOr<Usage> commit = timed_->Commit(1);
  ASSERT_TRUE(commit.ok()) << commit.status();
  EXPECT_EQ(commit->size_bytes, 123);
  EXPECT_EQ(commit->inodes, 4);
  EXPECT_TRUE(timed_->Remove(1).ok());
  absl::StatusOr<std::vector<Mount>> mounts =
      timed_->Mounts(7, 3, SnapshotKind::kView);
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_THAT(*mounts, ElementsAre(Mount{"bind", "/x/7", {"rbind", "ro"}}));
  absl::StatusOr<Usage> usage = timed_->DiskUsage(1);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->size_bytes, 5);
  EXPECT_EQ(usage->inodes, 6);
  absl::StatusOr<bool> exists = timed_->Exists(1);
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_FALSE(*exists);
  absl::StatusOr<std::vector<BackendObject>> list = timed_->List();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].id, 4u);
  EXPECT_EQ((*list)[1].parent_id, 3u);
  EXPECT_TRUE(timed_->Cleanup().ok());

  GateBackend::Results failing;
  failing.create = absl::AlreadyExistsError("create: id 1 exists");
  failing.commit = absl::FailedPreconditionError("commit: not active");
  failing.remove = absl::NotFoundError("remove: no object 1");
  failing.mounts = absl::InvalidArgumentError("mounts: committed");
  failing.disk_usage = absl::DataLossError("usage: bad parent file");
  failing.exists = absl::PermissionDeniedError("exists: EACCES");
  failing.list = absl::InternalError("list: EIO");
  failing.cleanup = absl::ResourceExhaustedError("cleanup: ENOSPC");
  inner_->SetResults(failing);
  EXPECT_EQ(timed_->Create(1, 0, SnapshotKind::kActive), failing.create);
  EXPECT_EQ(StatusOf(timed_->Commit(1)), failing.commit.status());
  EXPECT_EQ(timed_->Remove(1), failing.remove);
  EXPECT_EQ(StatusOf(timed_->Mounts(1, 0, SnapshotKind::kActive)),
            failing.mounts.status());
  EXPECT_EQ(StatusOf(timed_->DiskUsage(1)), failing.disk_usage.status());
  EXPECT_EQ(StatusOf(timed_->Exists(1)), failing.exists.status());
  EXPECT_EQ(StatusOf(timed_->List()), failing.list.status());
  EXPECT_EQ(timed_->Cleanup(), failing.cleanup);

  EXPECT_EQ(inner_->entered(), 16);
  EXPECT_EQ(timed_->abandoned(), 0u);
}

TEST_F(TimedBackendTest, BoundedCallsRunOnAnotherThreadAndLetGoOfInner) {
  ASSERT_TRUE(timed_->Exists(1).ok());
  EXPECT_NE(inner_->last_thread(), std::this_thread::get_id());
  // A call that finished in time holds the backend no more.
  timed_.reset();
  EXPECT_EQ(inner_.use_count(), 1);
}

TEST_F(TimedBackendTest, MountsOfNewRunsOnTheCallersThread) {
  // No hand-off to a worker: the inner backend promises no I/O there.
  absl::StatusOr<std::vector<Mount>> mounts =
      timed_->MountsOfNew(1, 0, SnapshotKind::kActive);
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_EQ(inner_->last_thread(), std::this_thread::get_id());
  // Mounts, bounded, still goes through a worker.
  ASSERT_TRUE(timed_->Mounts(1, 0, SnapshotKind::kActive).ok());
  EXPECT_NE(inner_->last_thread(), std::this_thread::get_id());
}

TEST_F(TimedBackendTest, BlockedCallTimesOutAndContinuesInTheBackground) {
  inner_->Block("remove", 42);
  const absl::Time start = absl::Now();
  absl::Status s = timed_->Remove(42);
  EXPECT_LT(absl::Now() - start, kGenerous);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(s.message(), HasSubstr("test backend: remove of object 42 did "
                                     "not finish within 100ms; it continues "
                                     "in the background"));
  EXPECT_EQ(timed_->abandoned(), 1u);
  ASSERT_TRUE(inner_->WaitEntered(1));
  EXPECT_EQ(inner_->finished(), 0);
  EXPECT_FALSE(timed_->WaitIdle(absl::Milliseconds(10)));
}

TEST_F(TimedBackendTest, EveryCallIsToldToTheObserverWithItsOutcome) {
  std::vector<BackendCallSample> samples;
  absl::Mutex mu;
  TimedBackendOptions options{kLimit};
  options.on_call = [&](const BackendCallSample& s) {
    absl::MutexLock lock(&mu);
    samples.push_back(s);
  };
  timed_ = NewTimedBackend(inner_, options);
  ASSERT_TRUE(timed_->Create(1, 0, SnapshotKind::kActive).ok());
  GateBackend::Results failing;
  failing.commit = absl::FailedPreconditionError("commit: not active");
  inner_->SetResults(failing);
  EXPECT_FALSE(timed_->Commit(1).ok());
  inner_->Block("remove", 42);
  EXPECT_EQ(timed_->Remove(42).code(), absl::StatusCode::kDeadlineExceeded);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[0].op, "create");
  EXPECT_EQ(samples[0].code, absl::StatusCode::kOk);
  EXPECT_FALSE(samples[0].timed_out);
  EXPECT_EQ(samples[1].op, "commit");
  EXPECT_EQ(samples[1].code, absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(samples[2].op, "remove");
  EXPECT_EQ(samples[2].code, absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(samples[2].timed_out);
  EXPECT_GE(samples[2].took, kLimit);
}

TEST_F(TimedBackendTest, EveryCallOnABusyIdIsRefusedWithoutReachingInner) {
  Abandon("remove", 42, [&] { return timed_->Remove(42); });
  const int entered = inner_->entered();

  std::vector<absl::Status> refused = {
      timed_->Remove(42),
      timed_->Create(42, 0, SnapshotKind::kActive),
      StatusOf(timed_->Commit(42)),
      StatusOf(timed_->Mounts(42, 0, SnapshotKind::kActive)),
      StatusOf(timed_->DiskUsage(42)),
      StatusOf(timed_->Exists(42)),
  };
  for (const absl::Status& s : refused) {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(),
                HasSubstr("test backend: object 42 is still busy with a "
                          "remove that outlived its time limit (started "));
    EXPECT_THAT(s.message(), HasSubstr(" ago)"));
    EXPECT_TRUE(IsStillRunningElsewhere(s)) << s;
  }
  EXPECT_FALSE(IsStillRunningElsewhere(absl::UnavailableError("other")));
  EXPECT_EQ(inner_->entered(), entered);
  EXPECT_EQ(inner_->calls("remove"), 1);
  EXPECT_EQ(timed_->abandoned(), 1u);
}

TEST_F(TimedBackendTest, CallsOnOtherIdsAndListStillWork) {
  Abandon("remove", 42, [&] { return timed_->Remove(42); });

  absl::StatusOr<bool> exists = timed_->Exists(43);
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_TRUE(*exists);
  EXPECT_TRUE(timed_->Remove(43).ok());
  EXPECT_TRUE(timed_->Create(44, 0, SnapshotKind::kActive).ok());
  EXPECT_TRUE(timed_->Commit(44).ok());
  EXPECT_TRUE(timed_->List().ok());
  EXPECT_EQ(inner_->calls("remove"), 2);
  EXPECT_EQ(timed_->abandoned(), 1u);
}

TEST_F(TimedBackendTest, AbandonedListRefusesNothing) {
  Abandon("list", 0, [&] { return StatusOf(timed_->List()); });

  EXPECT_TRUE(timed_->Cleanup().ok());
  EXPECT_TRUE(timed_->Remove(1).ok());
  EXPECT_TRUE(timed_->Exists(0).ok());
}

TEST_F(TimedBackendTest, RemoveOfParentConflictsWithAbandonedCreate) {
  Abandon("create", 8,
          [&] { return timed_->Create(8, 7, SnapshotKind::kActive); });

  absl::Status s = timed_->Remove(7);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(),
              HasSubstr("object 7 is still busy with a create of object 8"));
  EXPECT_EQ(inner_->calls("remove"), 0);
  // Only its removal conflicts: the parent can still be read, other
  // objects removed, and more children made from it.
  EXPECT_TRUE(timed_->Exists(7).ok());
  EXPECT_TRUE(timed_->Remove(9).ok());
  EXPECT_TRUE(timed_->Create(10, 7, SnapshotKind::kView).ok());
  EXPECT_EQ(inner_->calls("remove"), 1);

  inner_->Release();
  ASSERT_TRUE(timed_->WaitIdle(kGenerous));
  EXPECT_TRUE(timed_->Remove(7).ok());
  EXPECT_EQ(inner_->calls("remove"), 2);
}

TEST_F(TimedBackendTest, CreateOnParentBeingRemovedIsRefused) {
  Abandon("remove", 7, [&] { return timed_->Remove(7); });

  absl::Status s = timed_->Create(8, 7, SnapshotKind::kActive);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("parent object 7 is still busy with a "
                                     "remove"));
  EXPECT_EQ(inner_->calls("create"), 0);
  EXPECT_TRUE(timed_->Create(9, 0, SnapshotKind::kActive).ok());
}

TEST_F(TimedBackendTest, CleanupIsRefusedWhileAnAbandonedRemoveRuns) {
  Abandon("remove", 42, [&] { return timed_->Remove(42); });

  absl::Status s = timed_->Cleanup();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("cleanup must wait: remove of object 42 "
                                     "outlived its time limit"));
  EXPECT_EQ(inner_->calls("cleanup"), 0);

  inner_->Release();
  ASSERT_TRUE(timed_->WaitIdle(kGenerous));
  EXPECT_TRUE(timed_->Cleanup().ok());
  EXPECT_EQ(inner_->calls("cleanup"), 1);
}

TEST_F(TimedBackendTest, CleanupIsRefusedWhileAnAbandonedCreateRuns) {
  Abandon("create", 5,
          [&] { return timed_->Create(5, 0, SnapshotKind::kActive); });

  EXPECT_EQ(timed_->Cleanup().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(inner_->calls("cleanup"), 0);
}

TEST_F(TimedBackendTest, CleanupRunsWhileAbandonedReadsRun) {
  Abandon("exists", 5, [&] { return StatusOf(timed_->Exists(5)); });
  Abandon("commit", 6, [&] { return StatusOf(timed_->Commit(6)); });

  EXPECT_TRUE(timed_->Cleanup().ok());
  EXPECT_EQ(inner_->calls("cleanup"), 1);
}

TEST_F(TimedBackendTest, AbandonedCleanupHoldsCreateAndRemoveOnly) {
  Abandon("cleanup", 0, [&] { return timed_->Cleanup(); });

  absl::Status s = timed_->Remove(3);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("remove of object 3 must wait: a "
                                     "cleanup outlived its time limit"));
  EXPECT_EQ(timed_->Create(4, 0, SnapshotKind::kActive).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(timed_->Cleanup().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(inner_->calls("remove"), 0);
  EXPECT_EQ(inner_->calls("create"), 0);
  EXPECT_EQ(inner_->calls("cleanup"), 1);

  EXPECT_TRUE(timed_->Exists(3).ok());
  EXPECT_TRUE(timed_->Commit(3).ok());
  EXPECT_TRUE(timed_->List().ok());
}

TEST_F(TimedBackendTest, ReleasedCallFreesItsIdAndLogsItsOutcomeOnce) {
  auto out = std::make_shared<std::ostringstream>();
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(*out)));

  GateBackend::Results results;
  results.remove = absl::NotFoundError("no object 42 here");
  inner_->SetResults(results);
  Abandon("remove", 42, [&] { return timed_->Remove(42); });
  EXPECT_EQ(timed_->Exists(42).status().code(), absl::StatusCode::kUnavailable);

  inner_->Release();
  const bool idle = timed_->WaitIdle(kGenerous);
  spdlog::set_default_logger(previous);
  ASSERT_TRUE(idle);
  EXPECT_EQ(timed_->abandoned(), 0u);

  const std::string log = out->str();
  EXPECT_THAT(log, HasSubstr("test backend: remove of object 42 finished"));
  EXPECT_THAT(log, HasSubstr("NOT_FOUND: no object 42 here"));
  EXPECT_EQ(log.find("remove of object 42"), log.rfind("remove of object 42"));

  const int exists_before = inner_->calls("exists");
  absl::StatusOr<bool> exists = timed_->Exists(42);
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_EQ(inner_->calls("exists"), exists_before + 1);
  EXPECT_EQ(timed_->Remove(42), results.remove);
}

TEST_F(TimedBackendTest, ManyAbandonedCallsAllDrain) {
  for (uint64_t id = 1; id <= 5; ++id) {
    Abandon("disk_usage", id, [&] { return StatusOf(timed_->DiskUsage(id)); });
  }
  EXPECT_EQ(timed_->abandoned(), 5u);
  inner_->Release();
  ASSERT_TRUE(timed_->WaitIdle(kGenerous));
  EXPECT_EQ(timed_->abandoned(), 0u);
  for (uint64_t id = 1; id <= 5; ++id) {
    EXPECT_TRUE(timed_->DiskUsage(id).ok());
  }
}

TEST_F(TimedBackendTest, DestroyingWhileACallIsAbandonedIsSafe) {
  Abandon("remove", 42, [&] { return timed_->Remove(42); });
  timed_.reset();

  inner_->Release();
  ASSERT_TRUE(inner_->WaitFinished());
  EXPECT_EQ(inner_->finished(), 1);
  // The call's thread logs, and then lets go of the backend, after the inner
  // call returned; wait for that so that nothing outlives the test.
  const absl::Time deadline = absl::Now() + kGenerous;
  while (inner_.use_count() > 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(inner_.use_count(), 1);
}

TEST_F(TimedBackendTest, ConcurrentCallsOnDifferentIds) {
  timed_ = NewTimedBackend(inner_, {kGenerous});
  std::vector<std::thread> threads;
  for (uint64_t t = 1; t <= 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        EXPECT_TRUE(timed_->Create(t, 0, SnapshotKind::kActive).ok());
        EXPECT_TRUE(timed_->Exists(t).ok());
        EXPECT_TRUE(timed_->Remove(t).ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(inner_->entered(), 4 * 100 * 3);
}

TEST_F(TimedBackendTest, SequentialCallsReuseWorkers) {
  timed_ = NewTimedBackend(
      inner_, {.timeout = kGenerous, .max_idle_workers = kMaxIdleWorkers});
  std::set<pid_t> threads;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(timed_->Exists(1).ok());
    threads.insert(inner_->last_tid());
  }
  EXPECT_FALSE(threads.contains(::gettid()));
  // Usually one; a worker may not be back in the pool yet when the next
  // call comes, and then another serves it.
  EXPECT_LE(threads.size(), static_cast<size_t>(kMaxIdleWorkers));
}

TEST_F(TimedBackendTest, IdleWorkersAreBoundedAndEndWithTheBackend) {
  SKIP_THREAD_COUNTS_UNDER_TSAN();
  timed_ = NewTimedBackend(
      inner_, {.timeout = kGenerous, .max_idle_workers = kMaxIdleWorkers});
  const int baseline = SettledThreadCount();
  ASSERT_GT(baseline, 0);
  // 20 calls at once: 20 workers.
  constexpr int kCalls = 20;
  for (uint64_t id = 1; id <= kCalls; ++id) inner_->Block("disk_usage", id);
  std::vector<std::thread> callers;
  for (uint64_t id = 1; id <= kCalls; ++id) {
    callers.emplace_back([&, id] { EXPECT_TRUE(timed_->DiskUsage(id).ok()); });
  }
  ASSERT_TRUE(inner_->WaitEntered(kCalls));
  EXPECT_GE(ThreadCount(), baseline + 2 * kCalls);
  inner_->Release();
  for (std::thread& t : callers) t.join();
  // The workers beyond kMaxIdleWorkers end; the rest stay for later calls.
  EXPECT_TRUE(WaitThreadsAtMost(baseline + kMaxIdleWorkers));
  for (uint64_t id = 1; id <= kCalls; ++id) {
    EXPECT_TRUE(timed_->DiskUsage(id).ok());
  }
  // (A worker may be between its call and the pool for a moment.)
  EXPECT_TRUE(WaitThreadsAtMost(baseline + kMaxIdleWorkers));
  // Destroying the backend ends the idle workers.
  timed_.reset();
  EXPECT_TRUE(WaitThreadsAtMost(baseline));
  EXPECT_EQ(inner_.use_count(), 1);
}

TEST_F(TimedBackendTest, AbandonedCallsWorkerEndsOnceTheBackendIsGone) {
  SKIP_THREAD_COUNTS_UNDER_TSAN();
  const int baseline = SettledThreadCount();
  ASSERT_GT(baseline, 0);
  Abandon("remove", 42, [&] { return timed_->Remove(42); });
  // Served by another worker, which then idles.
  ASSERT_TRUE(timed_->Exists(1).ok());
  EXPECT_NE(inner_->last_thread(), std::this_thread::get_id());
  EXPECT_TRUE(WaitThreadsAtMost(baseline + 2));
  timed_.reset();
  EXPECT_TRUE(WaitThreadsAtMost(baseline + 1));  // the idle one ended
  EXPECT_EQ(inner_->finished(), 1);              // the remove still runs

  inner_->Release();
  ASSERT_TRUE(inner_->WaitFinished());
  EXPECT_TRUE(WaitThreadsAtMost(baseline));  // and so did the busy one
  EXPECT_EQ(inner_.use_count(), 1);
}

TEST_F(TimedBackendTest, NoBoundCallsDirectly) {
  for (absl::Duration timeout :
       {absl::ZeroDuration(), absl::Seconds(-1), absl::InfiniteDuration()}) {
    SCOPED_TRACE(absl::FormatDuration(timeout));
    timed_ = NewTimedBackend(inner_, {timeout});
    GateBackend::Results results;
    results.exists = absl::UnavailableError("exists: stale handle");
    inner_->SetResults(results);
    EXPECT_EQ(StatusOf(timed_->Exists(1)), results.exists.status());
    EXPECT_EQ(inner_->last_thread(), std::this_thread::get_id());
    EXPECT_TRUE(timed_->Remove(1).ok());
    EXPECT_EQ(inner_->last_thread(), std::this_thread::get_id());
    EXPECT_EQ(timed_->abandoned(), 0u);
    EXPECT_TRUE(timed_->WaitIdle(absl::ZeroDuration()));
  }
}

}  // namespace
}  // namespace snapledger
