// GrpcContainerdOps against the in-process fake containerd
// (plugin/testing/fake_containerd.h) on a temporary unix socket.
#include "plugin/containerd/containerd_ops.h"

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "containerd/types/task/task.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/testing/fake_containerd.h"

namespace snapledger {
namespace {

namespace types_v1 = ::containerd::v1::types;

using ::snapledger::testing::FakeContainerd;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

class ContainerdOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/containerd_ops_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/containerd.sock";
    fake_ = std::make_unique<FakeContainerd>();
    fake_->Start(socket_);
    ops_ = MakeGrpcContainerdOps(Options());
  }
  void TearDown() override {
    ops_.reset();
    fake_.reset();
    std::filesystem::remove_all(dir_);
  }

  GrpcContainerdOpsOptions Options() {
    GrpcContainerdOpsOptions o;
    o.address = socket_;
    o.rpc_timeout = absl::Seconds(30);
    o.kill_wait = absl::Seconds(30);
    return o;
  }

  // The recorded calls whose method starts with `prefix`.
  std::vector<std::string> CallsTo(const std::string& prefix) {
    std::vector<std::string> out;
    for (const std::string& c : fake_->Calls()) {
      if (absl::StartsWith(c, prefix)) out.push_back(c);
    }
    return out;
  }

  std::string dir_;
  std::string socket_;
  std::unique_ptr<FakeContainerd> fake_;
  std::unique_ptr<ContainerdOps> ops_;
};

// ---------------------------------------------------------------------------
// Read-only calls.

TEST_F(ContainerdOpsTest, ContainerExistsInItsNamespaceOnly) {
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  auto exists = ops_->ContainerExists("default", "c");
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_TRUE(*exists);

  exists = ops_->ContainerExists("default", "missing");
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_FALSE(*exists);

  // The namespace travels in the header: same id, other namespace.
  exists = ops_->ContainerExists("k8s.io", "c");
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_FALSE(*exists);
  EXPECT_THAT(
      CallsTo("Containers/Get"),
      ElementsAre("Containers/Get default/c", "Containers/Get default/missing",
                  "Containers/Get k8s.io/c"));
}

TEST_F(ContainerdOpsTest, ContainerExistsReportsOtherErrors) {
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  fake_->FailCalls("Containers/Get",
                   grpc::Status(grpc::StatusCode::INTERNAL, "bolt is sad"));
  auto exists = ops_->ContainerExists("default", "c");
  ASSERT_FALSE(exists.ok());
  EXPECT_EQ(exists.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(exists.status().message(),
            "containerd Containers/Get default/c: INTERNAL: bolt is sad");
}

TEST_F(ContainerdOpsTest, GetTaskMapsEveryStatus) {
  const std::vector<std::pair<types_v1::Status, TaskStatus>> cases = {
      {types_v1::UNKNOWN, TaskStatus::kUnknown},
      {types_v1::CREATED, TaskStatus::kCreated},
      {types_v1::RUNNING, TaskStatus::kRunning},
      {types_v1::STOPPED, TaskStatus::kStopped},
      {types_v1::PAUSED, TaskStatus::kPaused},
      {types_v1::PAUSING, TaskStatus::kPausing},
      // A status a newer containerd might add.
      {static_cast<types_v1::Status>(42), TaskStatus::kUnknown},
  };
  for (const auto& [proto, want] : cases) {
    fake_->PutTask("default", "c", proto, 7);
    auto got = ops_->GetTask("default", "c");
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << "proto status " << proto << " gave "
                          << TaskStatusName(*got);
  }

  fake_->RemoveTask("default", "c");
  auto none = ops_->GetTask("default", "c");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, TaskStatus::kNone);
  // Namespaced like the container.
  fake_->PutTask("default", "c", types_v1::RUNNING, 7);
  none = ops_->GetTask("k8s.io", "c");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, TaskStatus::kNone);
}

// ---------------------------------------------------------------------------
// DeleteTask.

TEST_F(ContainerdOpsTest, DeleteTaskKillsWaitsThenDeletesACreatedTask) {
  fake_->PutTask("default", "c", types_v1::CREATED, 42);
  // containerd refuses to delete a task whose process lives: deleting
  // before the task stopped would fail.
  fake_->set_kill_stop_delay(absl::Milliseconds(300));
  const absl::Time t0 = absl::Now();
  ASSERT_EQ(ops_->DeleteTask("default", "c"), absl::OkStatus());
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(300));
  EXPECT_EQ(fake_->Task("default", "c"), std::nullopt);

  const std::vector<std::string> calls = CallsTo("Tasks/");
  ASSERT_GE(calls.size(), 4u);
  EXPECT_EQ(calls.front(), "Tasks/Get default/c");
  EXPECT_EQ(calls[1], "Tasks/Kill default/c signal=9 all=true");
  // Polled at least once after the kill, and deleted only at the end.
  for (size_t i = 2; i + 1 < calls.size(); ++i) {
    EXPECT_EQ(calls[i], "Tasks/Get default/c") << i;
  }
  EXPECT_EQ(calls.back(), "Tasks/Delete default/c");
  EXPECT_THAT(CallsTo("Tasks/Kill"), ::testing::SizeIs(1));
}

TEST_F(ContainerdOpsTest, DeleteTaskLeavesALiveTaskAlone) {
  // The reaper judged the task dead; it started again since: not killed.
  for (auto status : {types_v1::RUNNING, types_v1::PAUSED}) {
    fake_->ClearCalls();
    fake_->PutTask("default", "c", status, 42);
    const absl::Status st = ops_->DeleteTask("default", "c");
    EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
    EXPECT_THAT(st.message(), HasSubstr("left alone"));
    ASSERT_NE(fake_->Task("default", "c"), std::nullopt);
    EXPECT_THAT(CallsTo("Tasks/"), ElementsAre("Tasks/Get default/c"));
  }
}

TEST_F(ContainerdOpsTest, DeleteTaskOfAStoppedTaskDeletesWithoutKilling) {
  fake_->PutTask("default", "c", types_v1::STOPPED, 0, absl::Now());
  ASSERT_EQ(ops_->DeleteTask("default", "c"), absl::OkStatus());
  EXPECT_EQ(fake_->Task("default", "c"), std::nullopt);
  EXPECT_THAT(CallsTo("Tasks/"),
              ElementsAre("Tasks/Get default/c", "Tasks/Delete default/c"));
}

TEST_F(ContainerdOpsTest, DeleteTaskKillsACreatedTaskFirst) {
  // Created, never started: runc's init holds the pid until killed.
  fake_->PutTask("default", "c", types_v1::CREATED, 42);
  ASSERT_EQ(ops_->DeleteTask("default", "c"), absl::OkStatus());
  EXPECT_EQ(fake_->Task("default", "c"), std::nullopt);
  const std::vector<std::string> calls = CallsTo("Tasks/");
  ASSERT_GE(calls.size(), 4u);
  EXPECT_EQ(calls[1], "Tasks/Kill default/c signal=9 all=true");
  EXPECT_EQ(calls.back(), "Tasks/Delete default/c");

  // Without a process (pid 0) there is nothing to kill or wait for.
  fake_->ClearCalls();
  fake_->set_kill_stops_task(false);
  fake_->PutTask("default", "d", types_v1::CREATED, 0);
  ASSERT_EQ(ops_->DeleteTask("default", "d"), absl::OkStatus());
  EXPECT_EQ(fake_->Task("default", "d"), std::nullopt);
  EXPECT_THAT(CallsTo("Tasks/"),
              ElementsAre("Tasks/Get default/d", "Tasks/Delete default/d"));
}

TEST_F(ContainerdOpsTest, DeleteTaskWithoutATaskIsOk) {
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  ASSERT_EQ(ops_->DeleteTask("default", "c"), absl::OkStatus());
  EXPECT_THAT(CallsTo("Tasks/"), ElementsAre("Tasks/Get default/c"));
  // Gone between our look and the delete: deleted by someone else.
  fake_->ClearCalls();
  fake_->PutTask("default", "c", types_v1::STOPPED, 0, absl::Now());
  fake_->FailCalls("Tasks/Delete", grpc::Status(grpc::StatusCode::NOT_FOUND,
                                                "task c not found"));
  EXPECT_EQ(ops_->DeleteTask("default", "c"), absl::OkStatus());
  EXPECT_THAT(CallsTo("Tasks/"),
              ElementsAre("Tasks/Get default/c", "Tasks/Delete default/c"));
}

TEST_F(ContainerdOpsTest, DeleteTaskWhoseTaskVanishesWhileWaiting) {
  fake_->PutTask("default", "c", types_v1::CREATED, 42);
  fake_->set_kill_stops_task(false);
  std::thread deleter([&] {
    const absl::Status st = ops_->DeleteTask("default", "c");
    EXPECT_TRUE(st.ok()) << st;
  });
  // The look before the kill, then the wait's first poll: DeleteTask is
  // waiting for a task that does not stop.
  EXPECT_TRUE(fake_->AwaitCalls("Tasks/Get", 2));
  fake_->RemoveTask("default", "c");
  deleter.join();
  // Killed, then polled (the waiting path) until the task was gone; never
  // deleted.
  const std::vector<std::string> calls = CallsTo("Tasks/");
  ASSERT_GE(calls.size(), 3u);
  EXPECT_EQ(calls[0], "Tasks/Get default/c");
  EXPECT_EQ(calls[1], "Tasks/Kill default/c signal=9 all=true");
  EXPECT_THAT(std::vector<std::string>(calls.begin() + 2, calls.end()),
              Each(Eq("Tasks/Get default/c")));
}

TEST_F(ContainerdOpsTest, DeleteTaskToleratesKillOfAnAlreadyStoppedProcess) {
  // containerd answers NotFound ("process already finished") or
  // FailedPrecondition when the process ended between our look and the
  // kill; the task still has to be waited for and deleted.
  for (grpc::StatusCode code :
       {grpc::StatusCode::NOT_FOUND, grpc::StatusCode::FAILED_PRECONDITION}) {
    fake_->ClearCalls();
    fake_->PutTask("default", "c", types_v1::CREATED, 42);
    fake_->FailCalls("Tasks/Kill", grpc::Status(code, "already finished"));
    std::thread deleter([&] {
      const absl::Status st = ops_->DeleteTask("default", "c");
      EXPECT_TRUE(st.ok()) << st;
    });
    // Waiting despite the failed kill: its first poll still sees the task
    // created. The process then exits.
    EXPECT_TRUE(fake_->AwaitCalls("Tasks/Get", 2)) << code;
    fake_->PutTask("default", "c", types_v1::STOPPED, 42, absl::Now());
    deleter.join();
    EXPECT_EQ(fake_->Task("default", "c"), std::nullopt) << code;
    // Get, the refused kill, one or more polls, then the delete.
    const std::vector<std::string> calls = CallsTo("Tasks/");
    ASSERT_GE(calls.size(), 4u) << code;
    EXPECT_EQ(calls[1], "Tasks/Kill default/c signal=9 all=true") << code;
    EXPECT_THAT(std::vector<std::string>(calls.begin() + 2, calls.end() - 1),
                Each(Eq("Tasks/Get default/c")))
        << code;
    EXPECT_EQ(calls.back(), "Tasks/Delete default/c") << code;
  }
}

TEST_F(ContainerdOpsTest, DeleteTaskReportsAFailedKill) {
  fake_->PutTask("default", "c", types_v1::CREATED, 42);
  fake_->FailCalls("Tasks/Kill", grpc::Status(grpc::StatusCode::UNKNOWN,
                                              "runc: permission denied"));
  const absl::Status st = ops_->DeleteTask("default", "c");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(
      st.message(),
      "containerd Tasks/Kill default/c: UNKNOWN: runc: permission denied");
  EXPECT_THAT(CallsTo("Tasks/Delete"), IsEmpty());
  ASSERT_NE(fake_->Task("default", "c"), std::nullopt);
}

TEST_F(ContainerdOpsTest, DeleteTaskGivesUpWhenTheTaskNeverStops) {
  GrpcContainerdOpsOptions o = Options();
  o.kill_wait = absl::Milliseconds(300);
  ops_ = MakeGrpcContainerdOps(o);
  fake_->PutTask("default", "build-3", types_v1::CREATED, 42);
  fake_->set_kill_stops_task(false);

  const absl::Time t0 = absl::Now();
  const absl::Status st = ops_->DeleteTask("default", "build-3");
  const absl::Duration took = absl::Now() - t0;
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_THAT(std::string(st.message()),
              StartsWith("containerd Tasks/Kill default/build-3: "
                         "DEADLINE_EXCEEDED: "));
  EXPECT_THAT(std::string(st.message()), HasSubstr("(created)"));
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(5));
  // Polled, never deleted, still there.
  EXPECT_GE(CallsTo("Tasks/Get").size(), 2u);
  EXPECT_THAT(CallsTo("Tasks/Delete"), IsEmpty());
  ASSERT_NE(fake_->Task("default", "build-3"), std::nullopt);
  EXPECT_EQ(fake_->Task("default", "build-3")->status(), types_v1::CREATED);
}

TEST_F(ContainerdOpsTest, DeleteTaskErrorsNameCallNamespaceAndContainer) {
  fake_->PutTask("default", "build-3", types_v1::STOPPED, 0, absl::Now());
  fake_->FailCalls("Tasks/Delete", grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                                "connection reset"));
  const absl::Status st = ops_->DeleteTask("default", "build-3");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(),
            "containerd Tasks/Delete default/build-3: UNAVAILABLE: "
            "connection reset");
}

// ---------------------------------------------------------------------------
// DeleteContainer.

TEST_F(ContainerdOpsTest, DeleteContainerAndAlreadyGone) {
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  fake_->PutContainer("k8s.io", "c", "snapledger", "c-snap");
  ASSERT_EQ(ops_->DeleteContainer("default", "c"), absl::OkStatus());
  EXPECT_FALSE(fake_->HasContainer("default", "c"));
  EXPECT_TRUE(fake_->HasContainer("k8s.io", "c"));  // other namespace
  // Gone already: still OK.
  EXPECT_EQ(ops_->DeleteContainer("default", "c"), absl::OkStatus());
  EXPECT_THAT(CallsTo("Containers/Delete"),
              ElementsAre("Containers/Delete default/c",
                          "Containers/Delete default/c"));

  fake_->FailCalls("Containers/Delete",
                   grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone away"));
  const absl::Status st = ops_->DeleteContainer("k8s.io", "c");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(),
            "containerd Containers/Delete k8s.io/c: UNAVAILABLE: gone away");
}

TEST_F(ContainerdOpsTest, DeleteContainerRefusesWhileItHasATask) {
  // containerd itself would delete the record and orphan the task.
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  fake_->PutTask("default", "c", types_v1::STOPPED, 0, absl::Now());
  const absl::Status st = ops_->DeleteContainer("default", "c");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(std::string(st.message()),
              StartsWith("containerd Containers/Delete default/c: "));
  EXPECT_TRUE(fake_->HasContainer("default", "c"));
  EXPECT_THAT(CallsTo("Containers/Delete"), IsEmpty());

  ASSERT_EQ(ops_->DeleteTask("default", "c"), absl::OkStatus());
  ASSERT_EQ(ops_->DeleteContainer("default", "c"), absl::OkStatus());
  EXPECT_FALSE(fake_->HasContainer("default", "c"));
}

// ---------------------------------------------------------------------------
// CollectGarbage.

TEST_F(ContainerdOpsTest, CollectGarbageSyncDeletesAThrowawayLease) {
  fake_->PutLease("default", "keep", {absl::Now(), {}});
  const absl::Time before = absl::Now();
  ASSERT_EQ(ops_->CollectGarbage("default"), absl::OkStatus());
  EXPECT_EQ(fake_->sync_gc_runs(), 1);
  // Nothing left behind; other leases untouched.
  EXPECT_THAT(fake_->LeaseIds("default"), ElementsAre("keep"));

  const std::vector<std::string> calls = CallsTo("Leases/");
  ASSERT_EQ(calls.size(), 2u);
  const std::string prefix = "Leases/Create default/snapledger-gc-";
  ASSERT_THAT(calls[0], StartsWith(prefix));
  const std::string id =
      calls[0].substr(std::string("Leases/Create default/").size());
  EXPECT_EQ(calls[1], "Leases/Delete default/" + id + " sync=true");

  // The lease expires by itself should its delete fail.
  const auto labels = fake_->last_created_lease_labels();
  ASSERT_TRUE(labels.contains("containerd.io/gc.expire"));
  absl::Time expires;
  std::string err;
  ASSERT_TRUE(absl::ParseTime(
      absl::RFC3339_full, labels.at("containerd.io/gc.expire"), &expires, &err))
      << err;
  EXPECT_GT(expires, before);

  // Each run uses a fresh lease.
  fake_->ClearCalls();
  ASSERT_EQ(ops_->CollectGarbage("default"), absl::OkStatus());
  EXPECT_EQ(fake_->sync_gc_runs(), 2);
  ASSERT_EQ(CallsTo("Leases/Create").size(), 1u);
  EXPECT_THAT(CallsTo("Leases/Create")[0], StartsWith(prefix));
  EXPECT_NE(CallsTo("Leases/Create")[0], "Leases/Create default/" + id);
  EXPECT_THAT(fake_->LeaseIds("default"), ElementsAre("keep"));
}

TEST_F(ContainerdOpsTest, CollectGarbageReportsWhichStepFailed) {
  fake_->FailCalls("Leases/Create",
                   grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"));
  absl::Status st = ops_->CollectGarbage("default");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(st.message()),
              StartsWith("containerd Leases/Create default/snapledger-gc-"));
  EXPECT_THAT(CallsTo("Leases/Delete"), IsEmpty());
  EXPECT_EQ(fake_->sync_gc_runs(), 0);

  fake_->FailCalls("Leases/Create", grpc::Status::OK);
  fake_->FailCalls("Leases/Delete",
                   grpc::Status(grpc::StatusCode::INTERNAL, "gc failed"));
  st = ops_->CollectGarbage("default");
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(st.message()),
              StartsWith("containerd Leases/Delete default/snapledger-gc-"));
  EXPECT_THAT(std::string(st.message()), HasSubstr(": INTERNAL: gc failed"));
}

TEST_F(ContainerdOpsTest, ConcurrentCallsUseDistinctLeases) {
  fake_->PutTask("default", "c", types_v1::RUNNING, 1);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        if (!ops_->CollectGarbage("default").ok()) ++failures;
        auto task = ops_->GetTask("default", "c");
        if (!task.ok() || *task != TaskStatus::kRunning) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(fake_->sync_gc_runs(), 40);
  EXPECT_THAT(fake_->LeaseIds("default"), IsEmpty());
}

// ---------------------------------------------------------------------------
// containerd away or stuck.

// ---------------------------------------------------------------------------
// The prune's images.

TEST_F(ContainerdOpsTest, ListsNamespacesAndTheirImages) {
  const absl::Time updated = absl::FromUnixSeconds(1'700'000'000);
  fake_->PutImage("default", "registry.local/ci/tool:1", updated);
  fake_->PutImage("k8s.io", "docker.io/library/busybox:latest", updated);
  auto namespaces = ops_->ListNamespaces();
  ASSERT_TRUE(namespaces.ok()) << namespaces.status();
  EXPECT_THAT(*namespaces, ElementsAre("default", "k8s.io"));
  auto images = ops_->ListImages("default");
  ASSERT_TRUE(images.ok()) << images.status();
  ASSERT_EQ(images->size(), 1u);
  EXPECT_EQ((*images)[0].ns, "default");
  EXPECT_EQ((*images)[0].name, "registry.local/ci/tool:1");
  EXPECT_EQ((*images)[0].updated_at, updated);
  EXPECT_EQ((*images)[0].created_at, updated - absl::Hours(1));
}

TEST_F(ContainerdOpsTest, ImageUsersAreTheNamespacesContainersNamingIt) {
  fake_->PutContainer("default", "a", "snapledger", "a-snap");
  fake_->SetContainerImage("default", "a", "registry.local/ci/tool:1");
  // Another snapshotter's container counts too.
  fake_->PutContainer("default", "b", "overlayfs", "b-snap");
  fake_->SetContainerImage("default", "b", "registry.local/ci/tool:1");
  fake_->PutContainer("default", "c", "snapledger", "c-snap");  // busybox
  fake_->PutContainer("other", "d", "snapledger", "d-snap");
  fake_->SetContainerImage("other", "d", "registry.local/ci/tool:1");
  auto users = ops_->ImageUsers("default", "registry.local/ci/tool:1");
  ASSERT_TRUE(users.ok()) << users.status();
  EXPECT_THAT(*users, ElementsAre("a", "b"));
  users = ops_->ImageUsers("default", "registry.local/ci/tool");  // no tag
  ASSERT_TRUE(users.ok()) << users.status();
  EXPECT_THAT(*users, IsEmpty());
}

TEST_F(ContainerdOpsTest, DeleteImageIsNotSyncAndAlreadyGoneIsOk) {
  fake_->PutImage("default", "registry.local/ci/tool:1", absl::Now());
  EXPECT_TRUE(ops_->DeleteImage("default", "registry.local/ci/tool:1").ok());
  EXPECT_FALSE(fake_->HasImage("default", "registry.local/ci/tool:1"));
  EXPECT_TRUE(ops_->DeleteImage("default", "registry.local/ci/tool:1").ok());
  EXPECT_THAT(CallsTo("Images/Delete"),
              ElementsAre("Images/Delete default/registry.local/ci/tool:1 "
                          "sync=false",
                          "Images/Delete default/registry.local/ci/tool:1 "
                          "sync=false"));
  fake_->PutImage("default", "x:1", absl::Now());
  fake_->FailCalls("Images/Delete",
                   grpc::Status(grpc::StatusCode::INTERNAL, "bolt is sad"));
  absl::Status st = ops_->DeleteImage("default", "x:1");
  EXPECT_EQ(st.message(),
            "containerd Images/Delete default/x:1: INTERNAL: bolt is sad");
}

TEST_F(ContainerdOpsTest, DeadSocketFailsFastWithUnavailable) {
  fake_->Stop();
  const absl::Time t0 = absl::Now();
  auto exists = ops_->ContainerExists("default", "c");
  EXPECT_EQ(exists.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(exists.status().message()),
              StartsWith("containerd Containers/Get default/c: UNAVAILABLE: "));
  auto task = ops_->GetTask("default", "c");
  EXPECT_EQ(task.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(task.status().message()),
              StartsWith("containerd Tasks/Get default/c: UNAVAILABLE: "));
  absl::Status st = ops_->DeleteTask("default", "c");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(st.message()),
              StartsWith("containerd Tasks/Get default/c: UNAVAILABLE: "));
  st = ops_->DeleteContainer("default", "c");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  st = ops_->CollectGarbage("k8s.io");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(st.message()),
              StartsWith("containerd Leases/Create k8s.io/snapledger-gc-"));
  // rpc_timeout is 30s: failing fast means no waiting for the socket.
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));

  // And it recovers once containerd is back.
  fake_->Start(socket_);
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  EXPECT_TRUE(testing::Eventually([&] {
    auto e = ops_->ContainerExists("default", "c");
    return e.ok() && *e;
  }));
}

TEST_F(ContainerdOpsTest, EveryCallHonoursTheDeadline) {
  GrpcContainerdOpsOptions o = Options();
  o.rpc_timeout = absl::Milliseconds(300);
  o.gc_timeout = absl::Milliseconds(300);
  ops_ = MakeGrpcContainerdOps(o);
  fake_->PutContainer("default", "c", "snapledger", "c-snap");
  fake_->PutTask("default", "c", types_v1::STOPPED, 0, absl::Now());

  auto expect_deadline = [&](const absl::Status& st, const std::string& call) {
    EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
    EXPECT_THAT(std::string(st.message()),
                StartsWith("containerd " + call + " default/"));
  };
  auto timed = [&](auto&& fn) {
    const absl::Time t0 = absl::Now();
    fn();
    const absl::Duration took = absl::Now() - t0;
    EXPECT_GE(took, absl::Milliseconds(250));
    EXPECT_LT(took, absl::Seconds(5));
  };

  fake_->HangCalls("Containers/Get");
  timed([&] {
    expect_deadline(ops_->ContainerExists("default", "c").status(),
                    "Containers/Get");
  });
  fake_->HangCalls("Tasks/Delete");
  timed([&] {
    expect_deadline(ops_->DeleteTask("default", "c"), "Tasks/Delete");
  });
  fake_->HangCalls("Tasks/Get");
  timed([&] {
    expect_deadline(ops_->GetTask("default", "c").status(), "Tasks/Get");
  });
  // The sync delete waits for a whole collection: bounded too.
  fake_->HangCalls("Leases/Delete");
  timed([&] {
    expect_deadline(ops_->CollectGarbage("default"), "Leases/Delete");
  });
}

}  // namespace
}  // namespace snapledger
