// The prune's policy: parsing its values, validating it, and the selection
// (which candidates go, in which order) with a fixed clock and made-up disk
// figures. The Pruner that acts on the choices: pruner_test.cc.
#include "plugin/prune/prune_policy.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kMiB = int64_t{1} << 20;

TEST(ParseByteSizeTest, UnitsArePowersOf1024) {
  EXPECT_EQ(*ParseByteSize("512"), 512);
  EXPECT_EQ(*ParseByteSize("512B"), 512);
  EXPECT_EQ(*ParseByteSize("64KiB"), 64 * 1024);
  EXPECT_EQ(*ParseByteSize("2G"), 2 * kGiB);
  EXPECT_EQ(*ParseByteSize("2gb"), 2 * kGiB);
  EXPECT_EQ(*ParseByteSize("1.5 GiB"), 3 * kGiB / 2);
  EXPECT_EQ(*ParseByteSize("3Ti"), 3 * 1024 * kGiB);
}

TEST(ParseByteSizeTest, RefusesWhatIsNotASize) {
  for (const char* bad : {"", "GiB", "-1G", "12 parsecs", "1XB", "1e30P"}) {
    absl::StatusOr<int64_t> v = ParseByteSize(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(v.status())) << bad;
    if (!v.ok()) {
      EXPECT_THAT(v.status().message(), HasSubstr("not a size"));
    }
  }
}

TEST(ParseFreeTargetTest, PercentOrBytes) {
  absl::StatusOr<FreeTarget> p = ParseFreeTarget("30%");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->percent);
  EXPECT_EQ(p->BytesOn(100 * kGiB), 30 * kGiB);
  EXPECT_EQ(p->ToString(), "30%");
  absl::StatusOr<FreeTarget> b = ParseFreeTarget("20GiB");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE(b->percent);
  EXPECT_EQ(b->BytesOn(100 * kGiB), 20 * kGiB);
  EXPECT_EQ(b->ToString(), "20.0 GiB");
  for (const char* bad : {"0%", "101%", "x%", "thirty"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseFreeTarget(bad).status())) << bad;
  }
}

TEST(ValidatePrunePolicyTest, SaysWhichSettingIsWrong) {
  PrunePolicy p;
  EXPECT_TRUE(ValidatePrunePolicy(p).ok());  // off, no policy: fine
  p.enabled = true;
  EXPECT_THAT(ValidatePrunePolicy(p).message(), HasSubstr("needs a policy"));
  p.keep_duration = absl::Hours(72);
  EXPECT_TRUE(ValidatePrunePolicy(p).ok());
  p.interval = absl::ZeroDuration();
  EXPECT_THAT(ValidatePrunePolicy(p).message(), HasSubstr("prune.interval"));
  p.interval = absl::Minutes(5);
  p.pressure_dead_after = absl::ZeroDuration();
  EXPECT_THAT(ValidatePrunePolicy(p).message(), HasSubstr("prune.dead_after"));
  p.pressure_dead_after = absl::Minutes(1);
  p.max_used = 0;
  EXPECT_THAT(ValidatePrunePolicy(p).message(), HasSubstr("prune.max_used"));
  p.max_used.reset();
  p.leases = {""};
  EXPECT_THAT(ValidatePrunePolicy(p).message(), HasSubstr("prune.leases"));
  p.leases = {"ci-*"};
  p.images = {"docker.io/library/*", ""};
  EXPECT_THAT(ValidatePrunePolicy(p).message(), HasSubstr("prune.images"));
  p.images = {"docker.io/library/*"};
  EXPECT_TRUE(ValidatePrunePolicy(p).ok());
  p.keep_duration = -absl::Seconds(1);
  EXPECT_THAT(ValidatePrunePolicy(p).message(),
              HasSubstr("prune.keep_duration"));
}

class SelectPruneTest : public ::testing::Test {
 protected:
  const absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);

  PruneCandidate Container(const std::string& id, absl::Duration idle,
                           int64_t bytes) {
    PruneCandidate c;
    c.kind = PruneKind::kContainer;
    c.ns = "default";
    c.id = id;
    c.unused_since = now_ - idle;
    c.estimated_bytes = bytes;
    return c;
  }
  PruneCandidate Lease(const std::string& id, absl::Duration age, int64_t bytes,
                       bool expired_by_label = false) {
    PruneCandidate c;
    c.kind = PruneKind::kLease;
    c.ns = "default";
    c.id = id;
    c.unused_since = now_ - age;
    c.estimated_bytes = bytes;
    c.expired_by_label = expired_by_label;
    return c;
  }
  PruneCandidate Image(const std::string& name, absl::Duration age,
                       bool in_use = false) {
    PruneCandidate c;
    c.kind = PruneKind::kImage;
    c.ns = "default";
    c.id = name;
    c.unused_since = now_ - age;
    c.in_use = in_use;
    return c;  // estimated_bytes 0: unknown before the deletion
  }
  static std::vector<std::string> Ids(const std::vector<PruneChoice>& v) {
    std::vector<std::string> out;
    for (const PruneChoice& c : v) {
      out.push_back(c.candidate.id + ":" +
                    std::string(PruneReasonName(c.reason)));
    }
    return out;
  }
  // 100 GiB, `free` of them free.
  static DiskFigures Disk(int64_t free) { return {100 * kGiB, free, -1}; }

  PrunePolicy policy_ = [] {
    PrunePolicy p;
    p.enabled = true;
    p.dead_after = absl::Minutes(10);
    p.pressure_dead_after = absl::Minutes(1);
    p.leases = {"ci-*"};
    return p;
  }();
};

TEST_F(SelectPruneTest, NoPolicyNoPressureNothingGoes) {
  EXPECT_THAT(SelectPrune(policy_, now_, Disk(90 * kGiB),
                          {Container("old", absl::Hours(100), kGiB)}),
              IsEmpty());
  policy_.min_free = *ParseFreeTarget("30%");
  EXPECT_THAT(SelectPrune(policy_, now_, Disk(31 * kGiB),
                          {Container("old", absl::Hours(100), kGiB)}),
              IsEmpty());
}

TEST_F(SelectPruneTest, TtlTakesEverythingUnusedLongerOldestFirst) {
  policy_.keep_duration = absl::Hours(72);
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(90 * kGiB),
                              {Container("c-73h", absl::Hours(73), kMiB),
                               Container("c-71h", absl::Hours(71), kMiB),
                               Lease("ci-100h", absl::Hours(100), kMiB),
                               Lease("other-100h", absl::Hours(100), kMiB),
                               Lease("ci-1h", absl::Hours(1), kMiB)})),
              ElementsAre("ci-100h:ttl", "c-73h:ttl"));
}

TEST_F(SelectPruneTest, TtlShorterThanDeadAfterStillWaitsForDeath) {
  policy_.keep_duration = absl::Minutes(2);
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(90 * kGiB),
                              {Container("c-5m", absl::Minutes(5), kMiB),
                               Container("c-11m", absl::Minutes(11), kMiB)})),
              ElementsAre("c-11m:ttl"));
}

TEST_F(SelectPruneTest, PressureTakesOldestUntilTheEstimateCoversTheDeficit) {
  policy_.min_free = *ParseFreeTarget("30%");
  // 25 GiB free of 100: 5 GiB short.
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(25 * kGiB),
                              {Container("c-20m", absl::Minutes(20), 3 * kGiB),
                               Container("c-2h", absl::Hours(2), 3 * kGiB),
                               Container("c-1h", absl::Hours(1), 3 * kGiB)})),
              ElementsAre("c-2h:pressure", "c-1h:pressure"));
}

TEST_F(SelectPruneTest, PressureReapsContainersYoungerThanDeadAfter) {
  policy_.min_free = *ParseFreeTarget("30%");
  // Dead (10 m) or not, idle for 2 minutes is enough under pressure; 30 s
  // is not (a `ctr run` between creating its container and its task).
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(10 * kGiB),
                              {Container("c-2m", absl::Minutes(2), kGiB),
                               Container("c-30s", absl::Seconds(30), kGiB)})),
              ElementsAre("c-2m:pressure"));
}

TEST_F(SelectPruneTest, PressureContainersFirstThenExpiredLeases) {
  policy_.min_free = *ParseFreeTarget("30%");
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(10 * kGiB),
                              {Lease("ci-old", absl::Hours(50), kGiB, true),
                               Lease("ci-live", absl::Hours(60), kGiB, false),
                               Lease("not-ours", absl::Hours(60), kGiB, true),
                               Container("c-1h", absl::Hours(1), kGiB)})),
              ElementsAre("c-1h:pressure", "ci-old:pressure"));
}

TEST_F(SelectPruneTest, TtlChoicesCountTowardsThePressureTarget) {
  policy_.min_free = *ParseFreeTarget("30%");
  policy_.keep_duration = absl::Hours(24);
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(27 * kGiB),
                              {Container("c-2d", absl::Hours(48), 4 * kGiB),
                               Container("c-1h", absl::Hours(1), 4 * kGiB)})),
              ElementsAre("c-2d:ttl"));
}

TEST_F(SelectPruneTest, MaxUsedCountsSnapledgersBytes) {
  policy_.max_used = 10 * kGiB;
  DiskFigures disk = Disk(90 * kGiB);
  disk.used_bytes = 12 * kGiB;
  EXPECT_EQ(BytesNeeded(policy_, disk), 2 * kGiB);
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, disk,
                              {Container("a", absl::Hours(3), kGiB),
                               Container("b", absl::Hours(2), kGiB),
                               Container("c", absl::Hours(1), kGiB)})),
              ElementsAre("a:pressure", "b:pressure"));
  disk.used_bytes = -1;  // not measured: no pressure from max_used
  EXPECT_EQ(BytesNeeded(policy_, disk), 0);
}

TEST_F(SelectPruneTest, ContainerGlobsLimitWhatGoes) {
  policy_.keep_duration = absl::Hours(1);
  policy_.containers = {"obuilder-run-*"};
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(90 * kGiB),
                              {Container("obuilder-run-7", absl::Hours(2), 1),
                               Container("db", absl::Hours(2), 1)})),
              ElementsAre("obuilder-run-7:ttl"));
  policy_.leases.clear();  // no lease patterns: no lease ever
  EXPECT_THAT(SelectPrune(policy_, now_, Disk(90 * kGiB),
                          {Lease("ci-1", absl::Hours(2), 1, true)}),
              IsEmpty());
}

TEST_F(SelectPruneTest, LiveContainersAreNeverCandidates) {
  policy_.min_free = *ParseFreeTarget("99%");
  policy_.keep_duration = absl::Seconds(1);
  PruneCandidate live = Container("running", absl::ZeroDuration(), kGiB);
  live.unused_since = absl::InfiniteFuture();  // its task is live
  EXPECT_THAT(SelectPrune(policy_, now_, Disk(0), {live}), IsEmpty());
}

TEST_F(SelectPruneTest, ImagesAreOptIn) {
  policy_.min_free = *ParseFreeTarget("99%");
  policy_.keep_duration = absl::Seconds(1);
  ASSERT_TRUE(policy_.images.empty());  // the default
  EXPECT_THAT(SelectPrune(policy_, now_, Disk(0),
                          {Image("docker.io/library/busybox:latest",
                                 absl::Hours(100))}),
              IsEmpty());
}

TEST_F(SelectPruneTest, ImagesGoLastUnderPressureOldestFirst) {
  policy_.min_free = *ParseFreeTarget("30%");
  policy_.images = {"registry.local/ci/*"};
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(10 * kGiB),
                              {Image("registry.local/ci/b:1", absl::Hours(1)),
                               Image("registry.local/ci/a:1", absl::Hours(5)),
                               Lease("ci-old", absl::Hours(2), kGiB, true),
                               Container("c-1h", absl::Hours(1), kGiB)})),
              ElementsAre("c-1h:pressure", "ci-old:pressure",
                          "registry.local/ci/a:1:pressure",
                          "registry.local/ci/b:1:pressure"));
  // Containers and leases cover the deficit: no image goes.
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(29 * kGiB),
                              {Image("registry.local/ci/a:1", absl::Hours(5)),
                               Container("c-1h", absl::Hours(1), kGiB)})),
              ElementsAre("c-1h:pressure"));
}

TEST_F(SelectPruneTest, ImagesInUseOrNotMatchingNeverGo) {
  policy_.min_free = *ParseFreeTarget("99%");
  policy_.keep_duration = absl::Seconds(1);
  policy_.images = {"registry.local/ci/*"};
  EXPECT_THAT(Ids(SelectPrune(
                  policy_, now_, Disk(0),
                  {Image("registry.local/ci/used:1", absl::Hours(9), true),
                   Image("docker.io/library/busybox:latest", absl::Hours(9)),
                   Image("registry.local/ci/unused:1", absl::Hours(9))})),
              ElementsAre("registry.local/ci/unused:1:ttl"));
}

TEST_F(SelectPruneTest, ImagesTtlIsSinceTheirLastUpdate) {
  policy_.keep_duration = absl::Hours(72);
  policy_.images = {"*"};
  EXPECT_THAT(Ids(SelectPrune(policy_, now_, Disk(90 * kGiB),
                              {Image("old:1", absl::Hours(73)),
                               Image("new:1", absl::Hours(71))})),
              ElementsAre("old:1:ttl"));
}

}  // namespace
}  // namespace snapledger
