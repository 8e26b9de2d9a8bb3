// The owner tracker's reports as admin API messages (owner_reports.h): every
// field, the words for task states and reaper actions, and what "never" and
// "none" become on the wire.
#include "plugin/server/owner_reports.h"

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;

TEST(OwnerReportsTest, WatcherStatusCarriesEveryField) {
  WatcherReport report;
  report.address = "/run/containerd/containerd.sock";
  report.connected = true;
  report.last_sync = absl::FromUnixNanos(1'700'000'000'123'456'789);
  report.last_error = absl::UnavailableError("connection refused");
  report.containers = 7;
  report.leases = 3;
  const adminpb::WatcherStatus status = WatcherStatusProto(report);
  EXPECT_TRUE(status.enabled());
  EXPECT_EQ(status.address(), "/run/containerd/containerd.sock");
  EXPECT_TRUE(status.connected());
  EXPECT_EQ(status.last_sync_ns(), 1'700'000'000'123'456'789);
  EXPECT_EQ(status.last_error(), "UNAVAILABLE: connection refused");
  EXPECT_EQ(status.containers(), 7u);
  EXPECT_EQ(status.leases(), 3u);
}

TEST(OwnerReportsTest, WatcherStatusNeverSyncedAndNoErrorAreUnset) {
  const adminpb::WatcherStatus status = WatcherStatusProto(WatcherReport{});
  // A tracker exists only with a containerd address: enabled all the same.
  EXPECT_TRUE(status.enabled());
  EXPECT_FALSE(status.connected());
  EXPECT_EQ(status.last_sync_ns(), 0);
  EXPECT_EQ(status.last_error(), "");
  EXPECT_EQ(status.containers(), 0u);
  EXPECT_EQ(status.leases(), 0u);
}

DeadContainer Sample() {
  DeadContainer d;
  d.ns = "default";
  d.id = "build-1";
  d.image = "docker.io/library/busybox:latest";
  d.task = TaskStatus::kStopped;
  d.idle_since = absl::FromUnixNanos(1'600'000'000'000'000'042);
  d.snapshot = "default/3/ctr1";
  d.pinned = {"default/3/ctr1", "default/2/layer2", "default/1/layer1"};
  d.pinned_bytes = 12345;
  d.reaper = ReaperAction::kReap;
  return d;
}

TEST(OwnerReportsTest, DeadContainerCarriesEveryField) {
  const adminpb::DeadContainer d = DeadContainerProto(Sample());
  EXPECT_EQ(d.namespace_(), "default");
  EXPECT_EQ(d.id(), "build-1");
  EXPECT_EQ(d.image(), "docker.io/library/busybox:latest");
  EXPECT_EQ(d.task(), "stopped");
  EXPECT_EQ(d.idle_since_ns(), 1'600'000'000'000'000'042);
  EXPECT_EQ(d.snapshot(), "default/3/ctr1");
  EXPECT_THAT(d.pinned(), ElementsAre("default/3/ctr1", "default/2/layer2",
                                      "default/1/layer1"));
  EXPECT_EQ(d.pinned_bytes(), 12345);
  EXPECT_EQ(d.reaper(), "reap");
}

TEST(OwnerReportsTest, DeadContainerTaskAndReaperWords) {
  DeadContainer d = Sample();
  d.task = TaskStatus::kNone;
  d.reaper = ReaperAction::kNone;
  EXPECT_EQ(DeadContainerProto(d).task(), "none");
  EXPECT_EQ(DeadContainerProto(d).reaper(), "");
  d.task = TaskStatus::kCreated;
  d.reaper = ReaperAction::kDryRun;
  EXPECT_EQ(DeadContainerProto(d).task(), "created");
  EXPECT_EQ(DeadContainerProto(d).reaper(), "dry-run");
}

TEST(OwnerReportsTest, DeadResponseKeepsOrderAndTruncatesGrace) {
  DeadReport report;
  report.watcher.address = "unix:///run/containerd/containerd.sock";
  report.watcher.connected = true;
  report.grace = absl::Minutes(10) + absl::Milliseconds(999);
  DeadContainer second = Sample();
  second.id = "keeper";
  second.reaper = ReaperAction::kNone;
  report.containers = {Sample(), second};
  report.reaped_total = 4;
  const adminpb::DeadResponse response = DeadResponseProto(report);
  EXPECT_EQ(response.watcher().SerializeAsString(),
            WatcherStatusProto(report.watcher).SerializeAsString());
  EXPECT_EQ(response.grace_seconds(), 600);
  ASSERT_EQ(response.containers_size(), 2);
  EXPECT_EQ(response.containers(0).SerializeAsString(),
            DeadContainerProto(report.containers[0]).SerializeAsString());
  EXPECT_EQ(response.containers(1).id(), "keeper");
  EXPECT_EQ(response.containers(1).reaper(), "");
  EXPECT_EQ(response.reaped_total(), 4u);
}

TEST(OwnerReportsTest, EmptyDeadReport) {
  const adminpb::DeadResponse response = DeadResponseProto(DeadReport{});
  EXPECT_TRUE(response.has_watcher());
  EXPECT_TRUE(response.watcher().enabled());
  EXPECT_EQ(response.grace_seconds(), 0);
  EXPECT_EQ(response.containers_size(), 0);
  EXPECT_EQ(response.reaped_total(), 0u);
}

}  // namespace
}  // namespace snapledger
