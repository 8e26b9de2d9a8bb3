#include "plugin/worker/worker_thread.h"

#include <atomic>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

TEST(WorkerThreadTest, StopEndsTheBodysSleepAndJoins) {
  WorkerThread worker("the test's thread");
  std::atomic<bool> returned{false};
  ASSERT_TRUE(worker
                  .Start([&] {
                    while (worker.SleepUntil(absl::InfiniteFuture())) {
                    }
                    returned = true;
                  })
                  .ok());
  EXPECT_FALSE(worker.stopping());
  worker.Stop();
  EXPECT_TRUE(worker.stopping());
  // Joined: the body has returned.
  EXPECT_TRUE(returned);
}

TEST(WorkerThreadTest, StartWhileRunningKeepsTheRunningBody) {
  WorkerThread worker("the test's thread");
  std::atomic<int> first{0};
  std::atomic<int> second{0};
  ASSERT_TRUE(worker
                  .Start([&] {
                    ++first;
                    while (worker.SleepUntil(absl::InfiniteFuture())) {
                    }
                  })
                  .ok());
  EXPECT_TRUE(worker.Start([&] { ++second; }).ok());
  worker.Stop();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 0);
}

TEST(WorkerThreadTest, StartsAgainAfterStop) {
  WorkerThread worker("the test's thread");
  std::atomic<int> runs{0};
  const auto body = [&] {
    ++runs;
    while (worker.SleepUntil(absl::InfiniteFuture())) {
    }
  };
  ASSERT_TRUE(worker.Start(body).ok());
  worker.Stop();
  ASSERT_TRUE(worker.Start(body).ok());
  EXPECT_FALSE(worker.stopping());
  worker.Stop();
  EXPECT_EQ(runs, 2);
}

TEST(WorkerThreadTest, StopCallsBeforeJoinOnlyWhileAThreadRuns) {
  WorkerThread worker("the test's thread");
  int calls = 0;
  worker.Stop([&] { ++calls; });
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(worker.stopping());

  // The body blocks on something of its own: only before_join ends it.
  absl::Notification release;
  ASSERT_TRUE(worker.Start([&] { release.WaitForNotification(); }).ok());
  worker.Stop([&] {
    ++calls;
    release.Notify();
  });
  EXPECT_EQ(calls, 1);
  worker.Stop([&] { ++calls; });  // joined already
  EXPECT_EQ(calls, 1);
}

TEST(WorkerThreadTest, SleepEndsWhenTheTimeIsUpUnlessStopping) {
  WorkerThread worker("the test's thread");
  EXPECT_TRUE(worker.SleepFor(absl::Milliseconds(1)));
  EXPECT_TRUE(worker.SleepUntil(absl::Now()));
  worker.Stop();
  EXPECT_FALSE(worker.SleepFor(absl::Milliseconds(1)));
  EXPECT_FALSE(worker.SleepUntil(absl::InfiniteFuture()));
}

TEST(WorkerThreadTest, AWakeBeforeTheWaitIsNotLost) {
  WorkerThread worker("the test's thread");
  const uint64_t seen = worker.wakes();
  worker.Wake();
  EXPECT_EQ(worker.wakes(), seen + 1);
  // Returns at once: the wake came after `seen` was read.
  EXPECT_TRUE(worker.WaitUntil(absl::InfiniteFuture(), seen));
  EXPECT_TRUE(worker.WaitFor(absl::InfiniteDuration(), seen));
}

TEST(WorkerThreadTest, WakeEndsAWaitInProgress) {
  WorkerThread worker("the test's thread");
  absl::Mutex mu;
  int passes = 0;
  ASSERT_TRUE(worker
                  .Start([&] {
                    uint64_t seen = 0;
                    while (worker.WaitUntil(absl::InfiniteFuture(), seen)) {
                      seen = worker.wakes();
                      absl::MutexLock lock(&mu);
                      ++passes;
                    }
                  })
                  .ok());
  for (int i = 1; i <= 3; ++i) {
    worker.Wake();
    absl::MutexLock lock(&mu);
    const auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return passes >= i;
    };
    mu.Await(absl::Condition(&reached));
  }
  worker.Stop();
  absl::MutexLock lock(&mu);
  EXPECT_GE(passes, 3);
}

TEST(WorkerThreadTest, SeenWakesDoNotEndAWait) {
  WorkerThread worker("the test's thread");
  worker.Wake();
  worker.Wake();
  std::atomic<bool> wait_went_on{true};
  absl::Notification waiting;
  ASSERT_TRUE(worker
                  .Start([&] {
                    const uint64_t seen = worker.wakes();
                    waiting.Notify();
                    // Only Stop() ends it: the wakes so far were seen.
                    wait_went_on =
                        worker.WaitUntil(absl::InfiniteFuture(), seen);
                  })
                  .ok());
  waiting.WaitForNotification();
  worker.Stop();
  EXPECT_FALSE(wait_went_on);
}

TEST(WorkerThreadTest, SleepIgnoresWakes) {
  WorkerThread worker("the test's thread");
  std::atomic<int> sleeps_ended{0};
  absl::Notification started;
  ASSERT_TRUE(worker
                  .Start([&] {
                    started.Notify();
                    while (worker.SleepUntil(absl::InfiniteFuture())) {
                      ++sleeps_ended;
                    }
                  })
                  .ok());
  started.WaitForNotification();
  for (int i = 0; i < 3; ++i) worker.Wake();
  worker.Stop();
  EXPECT_EQ(sleeps_ended, 0);
}

}  // namespace
}  // namespace snapledger
