#include "plugin/backend/faulty/faulty_backend.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/backend/timed/timed_backend.h"
#include "plugin/testing/fake_backend.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;
using Op = FaultyBackend::Op;

std::shared_ptr<testing::FakeBackend> Fake() {
  return std::make_shared<testing::FakeBackend>();
}

TEST(FaultyBackendTest, NoFaultsPassesEverythingThrough) {
  auto fake = Fake();
  FaultyBackend b(fake, {});
  ASSERT_TRUE(b.Create(1, 0, SnapshotKind::kActive).ok());
  ASSERT_TRUE(b.Commit(1).ok());
  ASSERT_TRUE(b.Create(2, 1, SnapshotKind::kView).ok());
  EXPECT_TRUE(*b.Exists(2));
  EXPECT_EQ(b.List()->size(), 2u);
  ASSERT_TRUE(b.Remove(2).ok());
  EXPECT_EQ(fake->objects().size(), 1u);
  EXPECT_EQ(b.stats().calls, 6u);
  EXPECT_EQ(b.stats().injected(), 0u);
}

TEST(FaultyBackendTest, EioBeforeLeavesNothingDone) {
  auto fake = Fake();
  FaultyBackend b(fake, {.eio = 1, .after_inner = 0});
  absl::Status s = b.Create(1, 0, SnapshotKind::kActive);
  // What the fs/ helpers answer for EIO.
  EXPECT_EQ(s.code(), absl::ErrnoToStatus(EIO, "").code()) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("Input/output error"));
  EXPECT_TRUE(fake->objects().empty());
  EXPECT_EQ(fake->creates(), 0);
  EXPECT_EQ(b.stats().eio, 1u);
  EXPECT_FALSE(b.List().ok());
  EXPECT_FALSE(b.Exists(1).ok());
}

TEST(FaultyBackendTest, FailureAfterTheInnerCallDidItsWork) {
  auto fake = Fake();
  FaultyBackend b(fake, {.enospc = 1, .after_inner = 1});
  absl::Status s = b.Create(7, 0, SnapshotKind::kActive);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("No space left"));
  // ... yet the object was made.
  EXPECT_TRUE(fake->objects().contains(7));
  EXPECT_EQ(b.stats().after_inner, 1u);
  // enospc does not apply to queries or removes.
  EXPECT_TRUE(b.Exists(7).ok());
  EXPECT_TRUE(b.Remove(7).ok());
  EXPECT_TRUE(fake->objects().empty());
}

TEST(FaultyBackendTest, EbusyRefusesRemoveAsAMountedObject) {
  auto fake = Fake();
  FaultyBackend b(fake, {.ebusy = 1, .after_inner = 1});
  ASSERT_TRUE(b.Create(3, 0, SnapshotKind::kActive).ok());
  absl::Status s = b.Remove(3);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("(busy)"));
  // Always before the call: a busy object stays.
  EXPECT_TRUE(fake->objects().contains(3));
  EXPECT_EQ(b.stats().ebusy, 1u);
  EXPECT_EQ(b.stats().after_inner, 0u);
}

TEST(FaultyBackendTest, SlowCallsSleepThenRun) {
  auto fake = Fake();
  FaultyBackend b(fake, {.slow = 1, .slow_delay = absl::Milliseconds(30)});
  const absl::Time start = absl::Now();
  ASSERT_TRUE(b.Create(1, 0, SnapshotKind::kActive).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(30));
  EXPECT_TRUE(fake->objects().contains(1));
  EXPECT_EQ(b.stats().slow, 1u);
}

TEST(FaultyBackendTest, HangBlocksUntilReleasedThenRuns) {
  auto fake = Fake();
  FaultyBackend b(fake, {.hang = 1, .hang_limit = absl::Hours(1)});
  absl::Status result = absl::UnknownError("not returned");
  std::thread t([&] { result = b.Create(1, 0, SnapshotKind::kActive); });
  while (b.hung() == 0) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(fake->objects().empty());  // blocked before the inner call
  b.ReleaseHangs();
  t.join();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_TRUE(fake->objects().contains(1));
  EXPECT_EQ(b.hung(), 0);
}

TEST(FaultyBackendTest, HangEndsAtItsLimit) {
  auto fake = Fake();
  FaultyBackend b(fake, {.hang = 1, .hang_limit = absl::Milliseconds(20)});
  EXPECT_TRUE(b.Create(1, 0, SnapshotKind::kActive).ok());
  EXPECT_EQ(b.stats().hang, 1u);
}

TEST(FaultyBackendTest, HangUnderTimedBackendIsAbandonedThenFinishes) {
  auto fake = Fake();
  auto faulty = std::make_shared<FaultyBackend>(
      fake, FaultyBackendOptions{.hang = 1, .hang_limit = absl::Hours(1)});
  TimedBackend timed(faulty, {.timeout = absl::Milliseconds(20)});
  absl::Status s = timed.Create(1, 0, SnapshotKind::kActive);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(timed.abandoned(), 1u);
  faulty->SetEnabled(false);  // releases the hang
  ASSERT_TRUE(timed.WaitIdle(absl::Seconds(30)));
  EXPECT_TRUE(fake->objects().contains(1));
}

TEST(FaultyBackendTest, DisabledInjectsNothing) {
  auto fake = Fake();
  FaultyBackend b(fake, {.eio = 1});
  b.SetEnabled(false);
  EXPECT_TRUE(b.Create(1, 0, SnapshotKind::kActive).ok());
  EXPECT_EQ(b.stats().injected(), 0u);
  b.SetEnabled(true);
  EXPECT_FALSE(b.Commit(1).ok());
}

TEST(FaultyBackendTest, DeterministicForASeedWhateverTheInterleaving) {
  const FaultyBackendOptions options{.seed = 42,
                                     .eio = 0.2,
                                     .enospc = 0.1,
                                     .ebusy = 0.1,
                                     .slow = 0.1,
                                     .slow_delay = absl::ZeroDuration()};
  // The same calls per object, issued in a different global order, draw
  // the same faults.
  auto run = [&](bool reverse) {
    auto fake = Fake();
    FaultyBackend b(fake, options);
    std::vector<int> outcome(64);
    for (int i = 0; i < 64; ++i) {
      const int id = reverse ? 64 - i : i + 1;
      absl::Status s = b.Create(id, 0, SnapshotKind::kActive);
      outcome[id - 1] = static_cast<int>(s.code());
    }
    return std::make_pair(outcome, b.stats().injected());
  };
  auto [a, na] = run(false);
  auto [r, nr] = run(true);
  EXPECT_EQ(a, r);
  EXPECT_EQ(na, nr);
  EXPECT_GT(na, 0u);
  // Another seed draws another pattern.
  FaultyBackendOptions other = options;
  other.seed = 43;
  int differ = 0;
  for (uint64_t id = 1; id <= 64; ++id) {
    differ += FaultyBackend::Decide(options, Op::kCreate, id, 0) !=
              FaultyBackend::Decide(other, Op::kCreate, id, 0);
  }
  EXPECT_GT(differ, 0);
}

TEST(FaultyBackendTest, RatesFollowTheProbabilities) {
  const FaultyBackendOptions options{
      .seed = 7, .eio = 0.1, .enospc = 0.2, .hang = 0.05, .slow = 0.15};
  int eio = 0, enospc = 0, hang = 0, slow = 0, none = 0;
  constexpr int kDraws = 20000;
  for (uint64_t n = 0; n < kDraws; ++n) {
    switch (FaultyBackend::Decide(options, Op::kCreate, n % 97, n).first) {
      case Fault::kEio:
        ++eio;
        break;
      case Fault::kEnospc:
        ++enospc;
        break;
      case Fault::kHang:
        ++hang;
        break;
      case Fault::kSlow:
        ++slow;
        break;
      case Fault::kNone:
        ++none;
        break;
      case Fault::kEbusy:
        ADD_FAILURE() << "ebusy drawn for a create";
        break;
    }
  }
  // Within 15% of the expected counts (binomial spread is under 5%).
  EXPECT_NEAR(eio, 0.10 * kDraws, 0.015 * kDraws);
  EXPECT_NEAR(enospc, 0.20 * kDraws, 0.03 * kDraws);
  EXPECT_NEAR(hang, 0.05 * kDraws, 0.0075 * kDraws);
  EXPECT_NEAR(slow, 0.15 * kDraws, 0.0225 * kDraws);
  EXPECT_NEAR(none, 0.50 * kDraws, 0.075 * kDraws);
}

}  // namespace
}  // namespace snapledger
