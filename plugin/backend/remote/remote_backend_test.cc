// The remote backend against an in-process snapshotter (FakeSnapshotter)
// over a unix socket: naming, labels, busy, lost objects, the
// remote-snapshot protocol (also through the coordinator), an unreachable
// downstream and its return.
#include "plugin/backend/remote/remote_backend.h"

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/core/coordinator.h"
#include "plugin/filter/filter.h"
#include "plugin/testing/fake_snapshotter.h"
#include "store/ledger.h"

namespace snapledger {
namespace {

using ::snapledger::testing::FakeSnapshotter;
using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// "yes", "no" or the error: comparable, and readable when a check fails.
std::string Show(const absl::StatusOr<bool>& exists) {
  if (!exists.ok()) return exists.status().ToString();
  return *exists ? "yes" : "no";
}

class RemoteBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/remote_backend_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/snap.sock";
    fake_ = std::make_unique<FakeSnapshotter>(socket_);
    ASSERT_TRUE(fake_->Start());
    RemoteBackendOptions options;
    options.address = "unix://" + socket_;
    // Long: a call that waited for the downstream would show as
    // DeadlineExceeded, not as the Unavailable the tests expect.
    options.call_timeout = absl::Minutes(5);
    auto backend = NewRemoteBackend(options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
  }
  void TearDown() override {
    backend_.reset();
    fake_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string dir_, socket_;
  std::unique_ptr<FakeSnapshotter> fake_;
  std::unique_ptr<Backend> backend_;
};

TEST_F(RemoteBackendTest, NamesObjectsUnderItsOwnPrefixOnly) {
  ASSERT_TRUE(backend_->Create(1, 0, SnapshotKind::kActive).ok());
  auto mounts = backend_->MountsOfNew(1, 0, SnapshotKind::kActive);
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  ASSERT_EQ(mounts->size(), 1u);
  EXPECT_EQ((*mounts)[0].source, "/fake/snapledger/a/1");
  EXPECT_EQ((*mounts)[0].type, "bind");

  auto usage = backend_->Commit(1);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->size_bytes, 4096);
  ASSERT_TRUE(backend_->Create(2, 1, SnapshotKind::kView).ok());
  ASSERT_TRUE(backend_->Create(3, 1, SnapshotKind::kActive).ok());
  fake_->AddForeign("sha256:someone-elses");
  fake_->AddForeign("snapledger/x/9");  // under the prefix, not our grammar

  auto snaps = fake_->Snapshots();
  EXPECT_TRUE(snaps.contains("snapledger/c/1"));
  EXPECT_EQ(snaps["snapledger/a/2"].parent(), "snapledger/c/1");
  EXPECT_EQ(snaps["snapledger/a/2"].kind(),
            containerd::services::snapshots::v1::VIEW);

  auto listed = backend_->List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(*listed, ElementsAre(FieldsAre(1u, 0u), FieldsAre(2u, 1u),
                                   FieldsAre(3u, 1u)));
  EXPECT_EQ(Show(backend_->Exists(1)), "yes");
  EXPECT_EQ(Show(backend_->Exists(2)), "yes");
  EXPECT_EQ(Show(backend_->Exists(7)), "no");

  auto view_mounts = backend_->Mounts(2, 1, SnapshotKind::kView);
  ASSERT_TRUE(view_mounts.ok());
  EXPECT_EQ((*view_mounts)[0].source, "/fake/snapledger/a/2");

  // Commit is idempotent (an answer lost on the way back).
  EXPECT_TRUE(backend_->Commit(1).ok());

  // Children first, as the downstream requires.
  EXPECT_TRUE(absl::IsFailedPrecondition(backend_->Remove(1)));
  ASSERT_TRUE(backend_->Remove(2).ok());
  ASSERT_TRUE(backend_->Remove(3).ok());
  ASSERT_TRUE(backend_->Remove(1).ok());
  EXPECT_TRUE(absl::IsNotFound(backend_->Remove(1)));
  // Someone else's snapshots are untouched.
  EXPECT_THAT(fake_->Snapshots(),
              UnorderedElementsAre(Pair("sha256:someone-elses", ::testing::_),
                                   Pair("snapledger/x/9", ::testing::_)));
  EXPECT_TRUE(backend_->Cleanup().ok());
  EXPECT_EQ(fake_->cleanups(), 1);
}

TEST_F(RemoteBackendTest, ForwardsContainerdsLabelsWithTheRefRenamed) {
  BackendLabels labels = {
      {"containerd.io/snapshot/remote/stargz.digest", "sha256:abc"},
      {"containerd.io/snapshot.ref", "sha256:chain"},
      {"containerd.io/gc.root", "x"},  // containerd never forwards these
      {"mine", "y"},
  };
  ASSERT_TRUE(
      backend_->CreateWithLabels(4, 0, SnapshotKind::kActive, labels).ok());
  EXPECT_THAT(
      fake_->SeenLabels()["snapledger/a/4"],
      UnorderedElementsAre(
          Pair("containerd.io/snapshot/remote/stargz.digest", "sha256:abc"),
          Pair("containerd.io/snapshot.ref", "snapledger/c/4")));
  ASSERT_TRUE(backend_->CommitWithLabels(4, labels).ok());
  EXPECT_THAT(fake_->SeenLabels()["snapledger/c/4"],
              ElementsAre(Pair("containerd.io/snapshot/remote/stargz.digest",
                               "sha256:abc")));
}

TEST_F(RemoteBackendTest, BusyIsFailedPreconditionAndLostIsNotFound) {
  ASSERT_TRUE(backend_->Create(5, 0, SnapshotKind::kActive).ok());
  fake_->SetBusy("snapledger/a/5", true);
  absl::Status busy = backend_->Remove(5);
  EXPECT_TRUE(absl::IsFailedPrecondition(busy)) << busy;
  EXPECT_THAT(busy.message(), HasSubstr("busy"));
  fake_->SetBusy("snapledger/a/5", false);
  ASSERT_TRUE(backend_->Remove(5).ok());

  ASSERT_TRUE(backend_->Create(6, 0, SnapshotKind::kActive).ok());
  fake_->Lose("snapledger/a/6");
  EXPECT_EQ(Show(backend_->Exists(6)), "no");
  EXPECT_TRUE(absl::IsNotFound(backend_->DiskUsage(6).status()));
  EXPECT_TRUE(absl::IsInternal(backend_->Commit(6).status()) ||
              absl::IsNotFound(backend_->Commit(6).status()));
}

TEST_F(RemoteBackendTest, RemoteSnapshotCommittedByTheDownstream) {
  fake_->SetRemoteSnapshots(true);
  absl::Status s = backend_->CreateWithLabels(
      8, 0, SnapshotKind::kActive,
      {{"containerd.io/snapshot.ref", "sha256:chain"}});
  EXPECT_TRUE(IsCommittedByBackend(s)) << s;
  auto snaps = fake_->Snapshots();
  ASSERT_TRUE(snaps.contains("snapledger/c/8"));
  EXPECT_FALSE(snaps.contains("snapledger/a/8"));
  EXPECT_FALSE(snaps.contains("sha256:chain"));  // never a client's name
  EXPECT_EQ(Show(backend_->Exists(8)), "yes");
  // Without the label it is an ordinary Prepare, even on such a downstream.
  EXPECT_TRUE(backend_->Create(9, 8, SnapshotKind::kActive).ok());
}

TEST_F(RemoteBackendTest, UnreachableIsUnavailableAtOnceThenReconnects) {
  ASSERT_TRUE(backend_->Create(10, 0, SnapshotKind::kActive).ok());
  fake_->Stop();
  for (int i = 0; i < 3; ++i) {
    absl::Status s = backend_->Create(11, 0, SnapshotKind::kActive);
    EXPECT_TRUE(absl::IsUnavailable(s)) << s;
    EXPECT_TRUE(absl::IsUnavailable(backend_->Exists(10).status()));
    EXPECT_TRUE(absl::IsUnavailable(backend_->List().status()));
  }
  // The same snapshotter back on the same socket: the channel reconnects by
  // itself (it keeps the objects: an in-memory fake that outlived Stop).
  ASSERT_TRUE(fake_->Start());
  absl::StatusOr<bool> exists = absl::UnavailableError("not yet");
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (absl::IsUnavailable(exists.status()) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    exists = backend_->Exists(10);
  }
  EXPECT_EQ(Show(exists), "yes");
}

TEST(RemoteBackendOpenTest, UnsupportedSchemeIsAClearError) {
  auto backend = NewRemoteBackend({.address = "npipe:////./pipe/stargz"});
  ASSERT_FALSE(backend.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(backend.status()));
  EXPECT_THAT(backend.status().message(), HasSubstr("not supported"));
}

// The remote-snapshot protocol end to end through the coordinator, as
// containerd drives it for a lazily pulled layer.
class RemoteCoordinatorTest : public RemoteBackendTest {
 protected:
  void SetUp() override {
    RemoteBackendTest::SetUp();
    Ledger::Options options;
    options.path = dir_ + "/ledger";
    auto ledger = Ledger::Open(options);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = *std::move(ledger);
    coord_ = std::make_unique<Coordinator>(ledger_.get(), backend_.get());
  }
  void TearDown() override {
    coord_.reset();
    ledger_.reset();
    RemoteBackendTest::TearDown();
  }
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Coordinator> coord_;
};

TEST_F(RemoteCoordinatorTest, LazyLayerIsRecordedUnderTheRefName) {
  fake_->SetRemoteSnapshots(true);
  const Labels labels = {
      {"containerd.io/snapshot.ref", "sha256:chain1"},
      {"containerd.io/snapshot/remote/stargz.digest", "sha256:l1"}};
  auto prepared = coord_->Prepare("default/1/extract-1", "", labels);
  EXPECT_TRUE(absl::IsAlreadyExists(prepared.status())) << prepared.status();

  // What containerd does next: the Walk with the ref and parent filter.
  auto filter = filter::Filter::ParseAll(
      {R"(labels."containerd.io/snapshot.ref"==sha256:chain1,parent=="")"});
  ASSERT_TRUE(filter.ok()) << filter.status();
  std::vector<std::string> found;
  ASSERT_TRUE(coord_
                  ->List(*filter,
                         [&](const Record& r) {
                           found.push_back(r.key());
                           EXPECT_EQ(r.kind(), store::v1::COMMITTED);
                           return true;
                         })
                  .ok());
  EXPECT_THAT(found, ElementsAre("sha256:chain1"));
  EXPECT_TRUE(absl::IsNotFound(coord_->Stat("default/1/extract-1").status()));
  auto stat = coord_->Stat("sha256:chain1");
  ASSERT_TRUE(stat.ok());
  EXPECT_EQ(stat->state(), store::v1::LIVE);
  EXPECT_EQ(stat->labels().at("containerd.io/snapshot.ref"), "sha256:chain1");
  EXPECT_TRUE(
      fake_->Snapshots().contains(RemoteCommittedName(stat->backend_id())));

  // A second pull of the same layer: AlreadyExists at once, nothing new.
  auto again = coord_->Prepare("default/2/extract-2", "", labels);
  EXPECT_TRUE(absl::IsAlreadyExists(again.status()));
  EXPECT_EQ(fake_->Snapshots().size(), 1u);

  // The next layer on top, and a container's rootfs on that: ordinary.
  fake_->SetRemoteSnapshots(false);
  ASSERT_TRUE(coord_->Prepare("default/3/rootfs", "sha256:chain1", {}).ok());
  ASSERT_TRUE(coord_->Remove("default/3/rootfs").ok());
  ASSERT_TRUE(coord_->Remove("sha256:chain1").ok());
  EXPECT_TRUE(fake_->Snapshots().empty());
}

TEST_F(RemoteCoordinatorTest, OrdinaryUnpackWhenTheLayerIsNotRemote) {
  auto prepared =
      coord_->Prepare("default/1/extract-1", "",
                      {{"containerd.io/snapshot.ref", "sha256:chain1"}});
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  ASSERT_TRUE(
      coord_->Commit("default/2/sha256:chain1", "default/1/extract-1", {})
          .ok());
  auto stat = coord_->Stat("default/2/sha256:chain1");
  ASSERT_TRUE(stat.ok());
  EXPECT_TRUE(
      fake_->Snapshots().contains(RemoteCommittedName(stat->backend_id())));
}

}  // namespace
}  // namespace snapledger
