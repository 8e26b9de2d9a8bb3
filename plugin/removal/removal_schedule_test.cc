#include "plugin/removal/removal_schedule.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A fixed origin: no test reads the wall clock.
const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

absl::Time At(int seconds) { return kT0 + absl::Seconds(seconds); }

// --- RemovalSchedule -------------------------------------------------------

TEST(RemovalScheduleTest, EmptyByDefault) {
  RemovalSchedule schedule;
  EXPECT_TRUE(schedule.empty());
  EXPECT_EQ(schedule.size(), 0u);
  EXPECT_EQ(schedule.NextDue(), std::nullopt);
  EXPECT_EQ(schedule.DueOf(1), std::nullopt);
  EXPECT_FALSE(schedule.Contains(1));
  EXPECT_THAT(schedule.TakeDue(absl::InfiniteFuture()), IsEmpty());
}

TEST(RemovalScheduleTest, OrdersByDueThenId) {
  RemovalSchedule schedule;
  schedule.Schedule(7, At(20));
  schedule.Schedule(9, At(10));
  schedule.Schedule(3, At(10));
  schedule.Schedule(5, At(30));
  schedule.Schedule(1, At(20));
  EXPECT_EQ(schedule.size(), 5u);
  EXPECT_EQ(schedule.NextDue(), At(10));
  EXPECT_THAT(schedule.TakeDue(absl::InfiniteFuture()),
              ElementsAre(3, 9, 1, 7, 5));
  EXPECT_TRUE(schedule.empty());
}

TEST(RemovalScheduleTest, RescheduleEarlierMovesEntry) {
  RemovalSchedule schedule;
  schedule.Schedule(1, At(10));
  schedule.Schedule(2, At(20));
  schedule.Schedule(3, At(30));
  schedule.Schedule(3, At(5));
  EXPECT_EQ(schedule.size(), 3u);  // moved, not duplicated
  EXPECT_EQ(schedule.DueOf(3), At(5));
  EXPECT_EQ(schedule.NextDue(), At(5));
  EXPECT_THAT(schedule.TakeDue(absl::InfiniteFuture()), ElementsAre(3, 1, 2));
}

TEST(RemovalScheduleTest, RescheduleLaterMovesEntry) {
  RemovalSchedule schedule;
  schedule.Schedule(1, At(10));
  schedule.Schedule(2, At(20));
  schedule.Schedule(3, At(30));
  schedule.Schedule(1, At(40));
  EXPECT_EQ(schedule.size(), 3u);
  EXPECT_EQ(schedule.DueOf(1), At(40));
  EXPECT_EQ(schedule.NextDue(), At(20));
  EXPECT_THAT(schedule.TakeDue(At(30)), ElementsAre(2, 3));
  EXPECT_THAT(schedule.TakeDue(At(40)), ElementsAre(1));
}

TEST(RemovalScheduleTest, RescheduleToSameDueKeepsEntry) {
  RemovalSchedule schedule;
  schedule.Schedule(1, At(10));
  schedule.Schedule(1, At(10));
  EXPECT_EQ(schedule.size(), 1u);
  EXPECT_EQ(schedule.DueOf(1), At(10));
}

TEST(RemovalScheduleTest, RescheduleIntoTieOrdersById) {
  RemovalSchedule schedule;
  schedule.Schedule(5, At(10));
  schedule.Schedule(2, At(30));
  schedule.Schedule(2, At(10));
  schedule.Schedule(8, At(1));
  schedule.Schedule(8, At(10));
  EXPECT_THAT(schedule.TakeDue(At(10)), ElementsAre(2, 5, 8));
}

TEST(RemovalScheduleTest, UnscheduleRemovesOnlyThatId) {
  RemovalSchedule schedule;
  schedule.Schedule(1, At(10));
  schedule.Schedule(2, At(20));
  schedule.Schedule(3, At(30));
  EXPECT_TRUE(schedule.Unschedule(1));
  EXPECT_FALSE(schedule.Contains(1));
  EXPECT_EQ(schedule.DueOf(1), std::nullopt);
  EXPECT_EQ(schedule.size(), 2u);
  EXPECT_EQ(schedule.NextDue(), At(20));
  EXPECT_FALSE(schedule.Unschedule(1));   // already gone
  EXPECT_FALSE(schedule.Unschedule(42));  // never there
  EXPECT_THAT(schedule.TakeDue(absl::InfiniteFuture()), ElementsAre(2, 3));
}

TEST(RemovalScheduleTest, UnscheduledIdCanBeScheduledAgain) {
  RemovalSchedule schedule;
  schedule.Schedule(1, At(10));
  ASSERT_TRUE(schedule.Unschedule(1));
  schedule.Schedule(1, At(50));
  EXPECT_EQ(schedule.DueOf(1), At(50));
  EXPECT_EQ(schedule.size(), 1u);
}

TEST(RemovalScheduleTest, TakeDueRespectsNow) {
  RemovalSchedule schedule;
  schedule.Schedule(1, At(10));
  schedule.Schedule(2, At(20));
  schedule.Schedule(3, At(30));
  EXPECT_THAT(schedule.TakeDue(At(9)), IsEmpty());
  EXPECT_EQ(schedule.size(), 3u);
  // Due exactly at `now` counts as due.
  EXPECT_THAT(schedule.TakeDue(At(20)), ElementsAre(1, 2));
  EXPECT_FALSE(schedule.Contains(1));
  EXPECT_FALSE(schedule.Contains(2));
  EXPECT_TRUE(schedule.Contains(3));
  EXPECT_EQ(schedule.NextDue(), At(30));
  EXPECT_EQ(schedule.size(), 1u);
}

TEST(RemovalScheduleTest, TakeDueRespectsMax) {
  RemovalSchedule schedule;
  for (uint64_t id = 1; id <= 5; ++id) schedule.Schedule(id, At(10));
  schedule.Schedule(6, At(100));
  EXPECT_THAT(schedule.TakeDue(At(50), 2), ElementsAre(1, 2));
  EXPECT_THAT(schedule.TakeDue(At(50), 0), IsEmpty());
  EXPECT_EQ(schedule.size(), 4u);
  EXPECT_EQ(schedule.NextDue(), At(10));
  EXPECT_THAT(schedule.TakeDue(At(50), 10), ElementsAre(3, 4, 5));
  EXPECT_THAT(schedule.TakeDue(At(50)), IsEmpty());
  EXPECT_EQ(schedule.DueOf(6), At(100));
}

TEST(RemovalScheduleTest, NextDueAndDueOfTrackChanges) {
  RemovalSchedule schedule;
  schedule.Schedule(10, At(30));
  EXPECT_EQ(schedule.NextDue(), At(30));
  schedule.Schedule(11, At(20));
  EXPECT_EQ(schedule.NextDue(), At(20));
  EXPECT_EQ(schedule.DueOf(10), At(30));
  EXPECT_EQ(schedule.DueOf(11), At(20));
  ASSERT_TRUE(schedule.Unschedule(11));
  EXPECT_EQ(schedule.NextDue(), At(30));
  schedule.Schedule(10, absl::InfinitePast());
  EXPECT_EQ(schedule.NextDue(), absl::InfinitePast());
  EXPECT_THAT(schedule.TakeDue(absl::InfinitePast()), ElementsAre(10));
  EXPECT_EQ(schedule.NextDue(), std::nullopt);
}

TEST(RemovalScheduleTest, ExtremeIds) {
  RemovalSchedule schedule;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  schedule.Schedule(kMax, At(1));
  schedule.Schedule(0, At(1));
  EXPECT_THAT(schedule.TakeDue(At(1)), ElementsAre(0, kMax));
}

TEST(RemovalScheduleTest, DestroyedWhileNonEmpty) {
  // Under ASan this also checks that every node is freed.
  auto schedule = std::make_unique<RemovalSchedule>();
  for (uint64_t id = 0; id < 1000; ++id) schedule->Schedule(id, At(id % 7));
  ASSERT_EQ(schedule->size(), 1000u);
  ASSERT_EQ(schedule->NextDue(), At(0));
  schedule.reset();
}

// 10,000 random operations, checked after each one against a model: an id ->
// due map plus the (due, id) order the schedule should follow.
TEST(RemovalScheduleTest, RandomOperationsMatchModel) {
  std::mt19937_64 rng(20240531);  // fixed seed: reproducible
  auto pick = [&rng](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  RemovalSchedule schedule;
  std::map<uint64_t, absl::Time> due_of;
  std::set<std::pair<absl::Time, uint64_t>> order;
  int taken_total = 0, moved_total = 0;

  for (int step = 0; step < 10'000; ++step) {
    SCOPED_TRACE(step);
    // Few ids and few distinct times: plenty of reschedules and ties.
    const uint64_t id = static_cast<uint64_t>(pick(0, 99));
    const int op = pick(0, 99);
    if (op < 55) {
      const absl::Time due = At(pick(0, 200));
      auto it = due_of.find(id);
      if (it != due_of.end()) {
        order.erase({it->second, id});
        ++moved_total;
      }
      due_of[id] = due;
      order.insert({due, id});
      schedule.Schedule(id, due);
    } else if (op < 75) {
      const bool present = due_of.erase(id) > 0;
      if (present) order.erase({*schedule.DueOf(id), id});
      EXPECT_EQ(schedule.Unschedule(id), present);
    } else if (op < 90) {
      const absl::Time now = At(pick(-10, 210));
      const size_t max = static_cast<size_t>(pick(0, 8));
      std::vector<uint64_t> want;
      while (want.size() < max && !order.empty() &&
             order.begin()->first <= now) {
        want.push_back(order.begin()->second);
        due_of.erase(order.begin()->second);
        order.erase(order.begin());
      }
      ASSERT_EQ(schedule.TakeDue(now, max), want);
      taken_total += static_cast<int>(want.size());
    } else {
      auto it = due_of.find(id);
      ASSERT_EQ(schedule.Contains(id), it != due_of.end());
      ASSERT_EQ(schedule.DueOf(id),
                it == due_of.end() ? std::nullopt : std::optional(it->second));
    }
    ASSERT_EQ(schedule.size(), due_of.size());
    ASSERT_EQ(schedule.empty(), due_of.empty());
    ASSERT_EQ(schedule.NextDue(), order.empty()
                                      ? std::nullopt
                                      : std::optional(order.begin()->first));
  }
  // The sequence exercised every path, not just inserts.
  EXPECT_GT(taken_total, 1000) << taken_total;
  EXPECT_GT(moved_total, 1000) << moved_total;

  std::vector<uint64_t> want;
  for (const auto& [due, id] : order) want.push_back(id);
  EXPECT_EQ(schedule.TakeDue(absl::InfiniteFuture()), want);
  EXPECT_TRUE(schedule.empty());
}

// --- RetryDelay ------------------------------------------------------------

TEST(RetryDelayTest, DoublesFromInitialUntilCappedAtZeroU) {
  RetryPolicy policy;  // 1s initial, 5min cap, jitter 0.2
  const std::vector<absl::Duration> want = {
      absl::Seconds(1),  absl::Seconds(2),   absl::Seconds(4),
      absl::Seconds(8),  absl::Seconds(16),  absl::Seconds(32),
      absl::Seconds(64), absl::Seconds(128), absl::Seconds(256),
      absl::Minutes(5),  absl::Minutes(5),   absl::Minutes(5)};
  for (int n = 1; n <= static_cast<int>(want.size()); ++n) {
    EXPECT_EQ(RetryDelay(policy, n, 0.0), want[n - 1]) << "attempts " << n;
  }
}

TEST(RetryDelayTest, UNearOneGivesLowerBound) {
  RetryPolicy policy;
  policy.jitter = 0.25;  // exact in binary: factor 0.75
  EXPECT_EQ(RetryDelay(policy, 1, 1.0), absl::Milliseconds(750));
  EXPECT_EQ(RetryDelay(policy, 3, 1.0), absl::Seconds(3));
  EXPECT_EQ(RetryDelay(policy, 50, 1.0), absl::Seconds(225));
  const double almost_one = std::nextafter(1.0, 0.0);
  for (int n : {1, 3, 50}) {
    const absl::Duration base = RetryDelay(policy, n, 0.0);
    const absl::Duration d = RetryDelay(policy, n, almost_one);
    EXPECT_GE(d, base * 0.75) << "attempts " << n;
    EXPECT_LE(d, base * 0.75 + absl::Nanoseconds(1)) << "attempts " << n;
  }
  EXPECT_EQ(RetryDelay(policy, 2, 0.5), absl::Seconds(2) * 0.875);
}

TEST(RetryDelayTest, RandomDrawsStayInRangeAndSpread) {
  RetryPolicy policy;
  for (int n : {1, 4, 9, 10, 1000}) {
    SCOPED_TRACE(n);
    const absl::Duration base = RetryDelay(policy, n, 0.0);
    const absl::Duration lo = base * (1.0 - policy.jitter);
    std::set<absl::Duration> distinct;
    absl::Duration min = absl::InfiniteDuration(), max = -min;
    for (int i = 0; i < 10'000; ++i) {
      const absl::Duration d = RetryDelay(policy, n);
      ASSERT_GE(d, lo);
      ASSERT_LE(d, base);
      ASSERT_LE(d, policy.max_backoff);
      distinct.insert(d);
      min = std::min(min, d);
      max = std::max(max, d);
    }
    // The jitter really spreads the draws over most of the range.
    EXPECT_GT(distinct.size(), 1000u);
    EXPECT_LT(min, lo + (base - lo) / 10);
    EXPECT_GT(max, base - (base - lo) / 10);
  }
}

TEST(RetryDelayTest, ZeroJitterIsExact) {
  RetryPolicy policy;
  policy.jitter = 0.0;
  policy.initial_backoff = absl::Milliseconds(100);
  policy.max_backoff = absl::Seconds(1);
  for (double u : {0.0, 0.3, 0.999}) {
    EXPECT_EQ(RetryDelay(policy, 1, u), absl::Milliseconds(100));
    EXPECT_EQ(RetryDelay(policy, 2, u), absl::Milliseconds(200));
    EXPECT_EQ(RetryDelay(policy, 4, u), absl::Milliseconds(800));
    EXPECT_EQ(RetryDelay(policy, 5, u), absl::Seconds(1));
  }
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(RetryDelay(policy, 3), absl::Milliseconds(400));
  }
}

TEST(RetryDelayTest, HugeAttemptCountsDoNotOverflow) {
  RetryPolicy policy;
  for (int n : {63, 64, 65, 1000, INT_MAX}) {
    for (double u : {0.0, 0.5, 0.99}) {
      EXPECT_EQ(RetryDelay(policy, n, u),
                policy.max_backoff * (1.0 - policy.jitter * u))
          << "attempts " << n << " u " << u;
    }
  }
  // The smallest step and a cap that doubling can never reach: the backoff
  // saturates instead of wrapping around.
  policy.initial_backoff = absl::Nanoseconds(1);
  policy.max_backoff = absl::InfiniteDuration();
  EXPECT_EQ(RetryDelay(policy, INT_MAX, 0.5), absl::InfiniteDuration());
  EXPECT_EQ(RetryDelay(policy, 31, 0.0), absl::Nanoseconds(1 << 30));
}

TEST(RetryDelayTest, AttemptsBelowOneCountAsOne) {
  RetryPolicy policy;
  EXPECT_EQ(RetryDelay(policy, 0, 0.0), policy.initial_backoff);
  EXPECT_EQ(RetryDelay(policy, INT_MIN, 0.0), policy.initial_backoff);
}

TEST(RetryDelayTest, OutOfRangeUIsClamped) {
  RetryPolicy policy;
  EXPECT_EQ(RetryDelay(policy, 1, -3.0), absl::Seconds(1));
  EXPECT_EQ(RetryDelay(policy, 1, 7.0), absl::Seconds(1) * 0.8);
  EXPECT_EQ(RetryDelay(policy, 1, std::nan("")), absl::Seconds(1));
}

// --- ValidateRetryPolicy ---------------------------------------------------

TEST(ValidateRetryPolicyTest, AcceptsDefaultsAndBoundaries) {
  EXPECT_TRUE(ValidateRetryPolicy(RetryPolicy{}).ok());
  RetryPolicy edge;
  edge.initial_backoff = absl::Nanoseconds(1);
  edge.max_backoff = edge.initial_backoff;
  edge.jitter = 0.0;
  edge.max_attempts = 1;
  EXPECT_TRUE(ValidateRetryPolicy(edge).ok());
  edge.jitter = std::nextafter(1.0, 0.0);
  EXPECT_TRUE(ValidateRetryPolicy(edge).ok());
}

void ExpectRejected(const RetryPolicy& policy, const char* field) {
  const absl::Status status = ValidateRetryPolicy(policy);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr(field));
}

TEST(ValidateRetryPolicyTest, RejectsNonPositiveInitialBackoff) {
  for (absl::Duration d :
       {absl::ZeroDuration(), absl::Seconds(-1), -absl::InfiniteDuration()}) {
    RetryPolicy policy;
    policy.initial_backoff = d;
    ExpectRejected(policy, "initial_backoff");
  }
}

TEST(ValidateRetryPolicyTest, RejectsMaxBackoffBelowInitial) {
  RetryPolicy policy;
  policy.initial_backoff = absl::Seconds(10);
  policy.max_backoff = absl::Seconds(9);
  ExpectRejected(policy, "max_backoff");
  policy.max_backoff = absl::ZeroDuration();
  ExpectRejected(policy, "max_backoff");
}

TEST(ValidateRetryPolicyTest, RejectsJitterOutsideZeroToOne) {
  for (double jitter : {-0.01, 1.0, 1.5, std::nan(""),
                        std::numeric_limits<double>::infinity()}) {
    RetryPolicy policy;
    policy.jitter = jitter;
    ExpectRejected(policy, "jitter");
  }
}

TEST(ValidateRetryPolicyTest, RejectsMaxAttemptsBelowOne) {
  for (int attempts : {0, -1, INT_MIN}) {
    RetryPolicy policy;
    policy.max_attempts = attempts;
    ExpectRejected(policy, "max_attempts");
  }
}

}  // namespace
}  // namespace snapledger
