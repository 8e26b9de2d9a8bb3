// The contract of backend.h, run against every local backend: creation,
// commit, removal, listing, cleanup, atomicity, usage, mounts that work, and
// the refusal to remove what is in use. What differs between backends (how a
// child gets its parent's data, the exact mounts) is tested beside each one.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/backend/backend.h"
#include "plugin/backend/fs/fs_tree.h"
#include "plugin/backend/native/native_backend.h"
#include "plugin/backend/overlayfs/overlay_backend.h"
#include "plugin/testing/backend_fixture.h"
#include "plugin/testing/fs_helpers.h"
#include "plugin/testing/perform_mount.h"
#include "plugin/testing/private_mount_namespace.h"

namespace snapledger {
namespace {

using ::snapledger::testing::ModeOf;
using ::snapledger::testing::Names;
using ::snapledger::testing::PathExists;
using ::snapledger::testing::PerformMount;
using ::snapledger::testing::PrivateMountNamespace;
using ::snapledger::testing::ReadFile;
using ::snapledger::testing::WriteFile;

using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The entries of `snapshots` once the removed trees are deleted: Remove()
// answers after the rename to rm-<id>, and the tree goes in the background
// (plugin/backend/fs/object_dir.h), so rm-* entries may linger a moment.
// Waits at most 10 s for them.
std::vector<std::string> NamesOnceDeleted(const std::string& snapshots) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    std::vector<std::string> names = Names(snapshots);
    const bool removing = std::any_of(
        names.begin(), names.end(),
        [](const std::string& n) { return n.rfind("rm-", 0) == 0; });
    if (!removing || std::chrono::steady_clock::now() > deadline) return names;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// A backend under test: its name and how to open one at a root.
struct BackendFlavour {
  std::string name;
  std::function<absl::StatusOr<std::unique_ptr<Backend>>(const std::string&)>
      open;
};

std::ostream& operator<<(std::ostream& os, const BackendFlavour& f) {
  return os << f.name;
}

std::vector<BackendFlavour> Flavours() {
  return {
      {"native",
       [](const std::string& root) { return NewNativeBackend(root); }},
      {"overlayfs",
       [](const std::string& root) {
         OverlayBackendOptions options;
         // Without mounts the start-up check cannot run; nothing else in
         // the contract needs them, and the mount tests skip.
         options.skip_support_check =
             !PrivateMountNamespace::Unavailable().empty();
         return NewOverlayBackend(root, options);
       }},
  };
}

class BackendContractTest
    : public testing::BackendTest,
      public ::testing::WithParamInterface<BackendFlavour> {
 protected:
  BackendContractTest() : BackendTest("state/" + GetParam().name) {}
  absl::StatusOr<std::unique_ptr<Backend>> OpenBackend(
      const std::string& root) override {
    return GetParam().open(root);
  }
};

INSTANTIATE_TEST_SUITE_P(
    Backends, BackendContractTest, ::testing::ValuesIn(Flavours()),
    [](const ::testing::TestParamInfo<BackendFlavour>& param_info) {
      return param_info.param.name;
    });

TEST_P(BackendContractTest, OpeningCreatesThePrivateLayout) {
  EXPECT_EQ(backend_->Name(), GetParam().name);
  EXPECT_EQ(ModeOf(root_), S_IFDIR | 0700u);
  EXPECT_EQ(ModeOf(dir_ + "/state"), S_IFDIR | 0700u);
  EXPECT_EQ(ModeOf(snapshots_), S_IFDIR | 0700u);
  EXPECT_THAT(Names(snapshots_), IsEmpty());
  EXPECT_THAT(List(), IsEmpty());
  // Reopening finds what is there.
  Create(1, 0, SnapshotKind::kActive);
  Open();
  EXPECT_TRUE(Exists(1));
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u)));

  WriteFile(dir_ + "/file", "");
  EXPECT_FALSE(GetParam().open(dir_ + "/file").ok());
  EXPECT_FALSE(GetParam().open(dir_ + "/file/below").ok());
  EXPECT_EQ(GetParam().open("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(BackendContractTest, ActiveWithoutParentStartsEmpty) {
  EXPECT_FALSE(Exists(1));
  Create(1, 0, SnapshotKind::kActive);
  EXPECT_TRUE(Exists(1));
  EXPECT_EQ(ModeOf(Tree(1)), S_IFDIR | 0755u);
  EXPECT_THAT(Names(Tree(1)), IsEmpty());
  EXPECT_EQ(ReadFile(Object(1) + "/parent"), "0\n");
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u)));
  EXPECT_THAT(Temporaries(), IsEmpty());
}

TEST_P(BackendContractTest, ObjectsOnAParentRecordIt) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_TRUE(backend_->Commit(1).ok());
  Create(2, 1, SnapshotKind::kActive);
  Create(3, 1, SnapshotKind::kView);
  EXPECT_EQ(ReadFile(Object(2) + "/parent"), "1\n");
  EXPECT_EQ(ReadFile(Object(3) + "/parent"), "1\n");
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u), FieldsAre(2u, 1u),
                                  FieldsAre(3u, 1u)));
  EXPECT_THAT(Temporaries(), IsEmpty());
}

TEST_P(BackendContractTest, ListIdsNamesWhatListLists) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_TRUE(backend_->Commit(1).ok());
  Create(7, 1, SnapshotKind::kActive);
  Create(3, 1, SnapshotKind::kView);
  // Neither a file nor a directory not named by an id is an object.
  ASSERT_EQ(::mkdir((snapshots_ + "/not-an-id").c_str(), 0700), 0);
  WriteFile(snapshots_ + "/9", "a file, not an object");
  absl::StatusOr<std::vector<uint64_t>> ids = backend_->ListIds();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(1u, 3u, 7u));
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u), FieldsAre(3u, 1u),
                                  FieldsAre(7u, 1u)));
}

TEST_P(BackendContractTest, CreateErrors) {
  Create(1, 0, SnapshotKind::kActive);
  WriteFile(Tree(1) + "/mine", "keep");

  absl::Status s = backend_->Create(1, 0, SnapshotKind::kActive);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_EQ(s.message(), "snapshot object 1 already exists");
  s = backend_->Create(1, 0, SnapshotKind::kView);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_EQ(ReadFile(Tree(1) + "/mine"), "keep");

  for (SnapshotKind kind : {SnapshotKind::kActive, SnapshotKind::kView}) {
    s = backend_->Create(2, 9, kind);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
    EXPECT_EQ(s.message(), "parent snapshot object 9 not found");
    EXPECT_FALSE(Exists(2));
  }

  EXPECT_EQ(backend_->Create(0, 0, SnapshotKind::kActive).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->Create(2, 0, SnapshotKind::kCommitted).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->Create(2, 2, SnapshotKind::kActive).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Exists(2));
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u)));
  EXPECT_THAT(Temporaries(), IsEmpty());
}

TEST_P(BackendContractTest, NoActiveOnAViewWithAParent) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_TRUE(backend_->Commit(1).ok());
  Create(3, 1, SnapshotKind::kView);
  absl::Status s = backend_->Create(4, 3, SnapshotKind::kActive);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_FALSE(Exists(4));
  EXPECT_THAT(Temporaries(), IsEmpty());
  // A view without a parent is an (empty) tree: it can be built on.
  Create(5, 0, SnapshotKind::kView);
  Create(6, 5, SnapshotKind::kActive);
  EXPECT_TRUE(Exists(6));
}

TEST_P(BackendContractTest, MountsOfNewAreMounts) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_TRUE(backend_->Commit(1).ok());
  Create(2, 1, SnapshotKind::kActive);
  Create(3, 1, SnapshotKind::kView);
  ASSERT_TRUE(backend_->Commit(2).ok());
  Create(4, 2, SnapshotKind::kActive);
  Create(5, 2, SnapshotKind::kView);
  for (auto [id, parent, kind] : {std::tuple{1, 0, SnapshotKind::kActive},
                                  std::tuple{2, 1, SnapshotKind::kActive},
                                  std::tuple{3, 1, SnapshotKind::kView},
                                  std::tuple{4, 2, SnapshotKind::kActive},
                                  std::tuple{5, 2, SnapshotKind::kView}}) {
    absl::StatusOr<std::vector<Mount>> mounts =
        backend_->Mounts(id, parent, kind);
    absl::StatusOr<std::vector<Mount>> fresh =
        backend_->MountsOfNew(id, parent, kind);
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    EXPECT_EQ(*fresh, *mounts) << id;
    ASSERT_EQ(mounts->size(), 1u);
    for (const std::string& option : mounts->front().options) {
      EXPECT_NE(option, "");
    }
  }
  // No stat: an id with no object still gets its (would-be) mount.
  EXPECT_TRUE(backend_->MountsOfNew(17, 0, SnapshotKind::kActive).ok());
  EXPECT_EQ(
      backend_->MountsOfNew(2, 1, SnapshotKind::kCommitted).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_P(BackendContractTest, MountsErrors) {
  Create(1, 0, SnapshotKind::kActive);
  absl::StatusOr<std::vector<Mount>> mounts =
      backend_->Mounts(1, 0, SnapshotKind::kCommitted);
  EXPECT_EQ(mounts.status().code(), absl::StatusCode::kInvalidArgument);
  mounts = backend_->Mounts(17, 0, SnapshotKind::kActive);
  EXPECT_EQ(mounts.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(mounts.status().message(), "snapshot object 17 not found");
  mounts = backend_->Mounts(0, 0, SnapshotKind::kView);
  EXPECT_EQ(mounts.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(BackendContractTest, CommitReturnsUsageAndIsIdempotent) {
  Create(1, 0, SnapshotKind::kActive);
  WriteFile(Tree(1) + "/data", std::string(100 << 10, 'd'));
  ASSERT_EQ(::link((Tree(1) + "/data").c_str(), (Tree(1) + "/again").c_str()),
            0);
  absl::StatusOr<Usage> live = backend_->DiskUsage(1);
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->inodes, 2);  // fs/ and the doubly linked file

  absl::StatusOr<Usage> first = backend_->Commit(1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->inodes, 2);  // the hard link counted once
  EXPECT_GE(first->size_bytes, 100 << 10);
  EXPECT_LT(first->size_bytes, 2 * (100 << 10));
  absl::StatusOr<Usage> measured = fstree::DiskUsage(Tree(1));
  ASSERT_TRUE(measured.ok());
  EXPECT_EQ(first->size_bytes, measured->size_bytes);
  EXPECT_EQ(first->size_bytes, live->size_bytes);

  absl::StatusOr<Usage> again = backend_->Commit(1);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->size_bytes, first->size_bytes);
  EXPECT_EQ(again->inodes, first->inodes);
  absl::StatusOr<Usage> usage = backend_->DiskUsage(1);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->size_bytes, first->size_bytes);
  EXPECT_EQ(usage->inodes, first->inodes);

  absl::StatusOr<Usage> missing = backend_->Commit(17);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "snapshot object 17 not found");
  EXPECT_EQ(backend_->Commit(0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(BackendContractTest, DiskUsageErrors) {
  absl::StatusOr<Usage> usage = backend_->DiskUsage(17);
  EXPECT_EQ(usage.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(usage.status().message(), "snapshot object 17 not found");
  EXPECT_EQ(backend_->DiskUsage(0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->Exists(0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(BackendContractTest, RemoveDeletesEverything) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_EQ(::mkdir((Tree(1) + "/ro").c_str(), 0755), 0);
  WriteFile(Tree(1) + "/ro/file", "x", 0);
  ASSERT_EQ(::chmod((Tree(1) + "/ro").c_str(), 0555), 0);
  ASSERT_TRUE(backend_->Commit(1).ok());
  Create(2, 1, SnapshotKind::kView);

  ASSERT_TRUE(backend_->Remove(2).ok());
  EXPECT_FALSE(Exists(2));
  ASSERT_TRUE(backend_->Remove(1).ok());
  EXPECT_FALSE(Exists(1));
  EXPECT_FALSE(PathExists(Object(1)));
  EXPECT_THAT(NamesOnceDeleted(snapshots_), IsEmpty());
  EXPECT_THAT(List(), IsEmpty());

  absl::Status s = backend_->Remove(1);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(s.message(), "snapshot object 1 not found");
  EXPECT_EQ(backend_->Remove(0).code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(BackendContractTest, RemoveReplacesAStaleRemovalDirectory) {
  Create(7, 0, SnapshotKind::kActive);
  // As if an earlier object 7 had been renamed but not yet deleted.
  ASSERT_EQ(::mkdir((snapshots_ + "/rm-7").c_str(), 0700), 0);
  WriteFile(snapshots_ + "/rm-7/stale", "s");
  ASSERT_TRUE(backend_->Remove(7).ok());
  EXPECT_FALSE(Exists(7));
  EXPECT_THAT(NamesOnceDeleted(snapshots_), IsEmpty());
}

TEST_P(BackendContractTest, ListIgnoresTemporariesAndStrangers) {
  Create(10, 0, SnapshotKind::kActive);
  Create(2, 0, SnapshotKind::kActive);
  Create(33, 10, SnapshotKind::kActive);
  Create(34, 2, SnapshotKind::kView);
  // Leftovers of interrupted calls.
  ASSERT_EQ(::mkdir((snapshots_ + "/new-xyz").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((snapshots_ + "/new-xyz/fs").c_str(), 0755), 0);
  WriteFile(snapshots_ + "/new-xyz/parent", "10\n");
  ASSERT_EQ(::mkdir((snapshots_ + "/rm-5").c_str(), 0700), 0);
  WriteFile(snapshots_ + "/rm-5/parent", "0\n");
  // Things that are no objects of ours.
  for (const char* name : {"abc", "017", "0", "-3", "18446744073709551616"}) {
    ASSERT_EQ(::mkdir((snapshots_ + "/" + name).c_str(), 0700), 0) << name;
  }
  WriteFile(snapshots_ + "/44", "a file");
  ASSERT_EQ(::symlink("2", (snapshots_ + "/45").c_str()), 0);

  EXPECT_THAT(List(), ElementsAre(FieldsAre(2u, 0u), FieldsAre(10u, 0u),
                                  FieldsAre(33u, 10u), FieldsAre(34u, 2u)));
  EXPECT_FALSE(Exists(5));
}

TEST_P(BackendContractTest, CleanupSweepsOnlyTemporaries) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_EQ(::mkdir((snapshots_ + "/new-xyz").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((snapshots_ + "/new-xyz/fs").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((snapshots_ + "/new-xyz/fs/ro").c_str(), 0755), 0);
  WriteFile(snapshots_ + "/new-xyz/fs/ro/file", "x", 0);
  ASSERT_EQ(::chmod((snapshots_ + "/new-xyz/fs/ro").c_str(), 0500), 0);
  ASSERT_EQ(::mkdir((snapshots_ + "/rm-5").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((snapshots_ + "/rm-5/fs").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((snapshots_ + "/stranger").c_str(), 0700), 0);

  ASSERT_TRUE(backend_->Cleanup().ok());
  EXPECT_THAT(Names(snapshots_), ElementsAre("1", "stranger"));
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u)));
  // Nothing left to do is fine.
  EXPECT_TRUE(backend_->Cleanup().ok());
}

TEST_P(BackendContractTest, ListReportsDamagedObjects) {
  Create(1, 0, SnapshotKind::kActive);
  WriteFile(Object(1) + "/parent", "banana\n");
  absl::StatusOr<std::vector<BackendObject>> objects = backend_->List();
  EXPECT_EQ(objects.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(objects.status().message(), HasSubstr(Object(1) + "/parent"));

  WriteFile(Object(1) + "/parent", "1\n");  // its own parent
  EXPECT_EQ(backend_->List().status().code(), absl::StatusCode::kDataLoss);
  WriteFile(Object(1) + "/parent", "7");  // no newline: torn
  EXPECT_EQ(backend_->List().status().code(), absl::StatusCode::kDataLoss);

  ASSERT_EQ(::unlink((Object(1) + "/parent").c_str()), 0);
  objects = backend_->List();
  EXPECT_EQ(objects.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(objects.status().message(), HasSubstr("missing"));
}

TEST_P(BackendContractTest, ConcurrentCallsOnDifferentIds) {
  Create(1, 0, SnapshotKind::kActive);
  WriteFile(Tree(1) + "/base", "base");
  ASSERT_TRUE(backend_->Commit(1).ok());
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (uint64_t i = 0; i < 5; ++i) {
        const uint64_t id = 100 + t * 10 + i;
        const SnapshotKind kind =
            i % 2 ? SnapshotKind::kView : SnapshotKind::kActive;
        EXPECT_TRUE(backend_->Create(id, 1, kind).ok());
        EXPECT_TRUE(backend_->Mounts(id, 1, kind).ok());
        EXPECT_TRUE(backend_->Commit(id).ok());
        if (i == 4) {
          EXPECT_TRUE(backend_->Remove(id).ok());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const auto listed = List();
  EXPECT_EQ(listed.size(), 1u + 4 * 4);
  for (uint64_t t = 0; t < 4; ++t) {
    EXPECT_TRUE(Exists(100 + t * 10));
    EXPECT_FALSE(Exists(100 + t * 10 + 4));
  }
  NamesOnceDeleted(snapshots_);  // the removed trees go in the background
  EXPECT_THAT(Temporaries(), IsEmpty());
}

// Contract tests that mount: in the private mount namespace only.
class BackendMountContractTest
    : public testing::MountingTest<BackendContractTest> {
 protected:
  // Mounts the single mount of object `id` at `target`.
  void MountObject(uint64_t id, uint64_t parent, SnapshotKind kind,
                   const std::string& target) {
    absl::StatusOr<std::vector<Mount>> mounts =
        backend_->Mounts(id, parent, kind);
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    ASSERT_EQ(mounts->size(), 1u);
    ASSERT_EQ(PerformMount(mounts->front(), target), 0)
        << mounts->front().type << " " << strerror(errno);
  }
};

INSTANTIATE_TEST_SUITE_P(
    Backends, BackendMountContractTest, ::testing::ValuesIn(Flavours()),
    [](const ::testing::TestParamInfo<BackendFlavour>& param_info) {
      return param_info.param.name;
    });

TEST_P(BackendMountContractTest, ReturnedMountsWork) {
  Create(1, 0, SnapshotKind::kActive);
  WriteFile(Tree(1) + "/from-parent", "p");
  ASSERT_TRUE(backend_->Commit(1).ok());
  Create(2, 1, SnapshotKind::kActive);
  Create(3, 1, SnapshotKind::kView);
  const std::string active = NewDir("active");
  const std::string view = NewDir("view");

  MountObject(2, 1, SnapshotKind::kActive, active);
  absl::Cleanup unmount_active = [&] { ::umount2(active.c_str(), MNT_DETACH); };
  EXPECT_EQ(ReadFile(active + "/from-parent"), "p");
  WriteFile(active + "/written", "w");
  EXPECT_EQ(ReadFile(Tree(2) + "/written"), "w");  // the object's own tree
  EXPECT_FALSE(PathExists(Tree(1) + "/written"));

  MountObject(3, 1, SnapshotKind::kView, view);
  absl::Cleanup unmount_view = [&] { ::umount2(view.c_str(), MNT_DETACH); };
  EXPECT_EQ(ReadFile(view + "/from-parent"), "p");
  const int fd = ::open((view + "/new").c_str(), O_WRONLY | O_CREAT, 0644);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(errno, EROFS);
  if (fd >= 0) ::close(fd);
  EXPECT_FALSE(PathExists(Tree(1) + "/new"));

  EXPECT_EQ(::umount2(view.c_str(), 0), 0) << strerror(errno);
  std::move(unmount_view).Cancel();
  EXPECT_EQ(::umount2(active.c_str(), 0), 0) << strerror(errno);
  std::move(unmount_active).Cancel();
}

TEST_P(BackendMountContractTest, RemoveRefusesATreeMountedElsewhere) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_EQ(::mkdir((Tree(1) + "/etc").c_str(), 0755), 0);
  WriteFile(Tree(1) + "/etc/hostname", "box\n");
  const std::string rootfs = NewDir("rootfs");
  MountObject(1, 0, SnapshotKind::kActive, rootfs);
  absl::Cleanup unmount = [rootfs] { ::umount2(rootfs.c_str(), MNT_DETACH); };

  absl::Status s = backend_->Remove(1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(),
            "snapshot object 1 is in use: mounted at " + rootfs + " (busy)");
  // Nothing touched, for the object or for its user.
  EXPECT_TRUE(Exists(1));
  EXPECT_EQ(ReadFile(Tree(1) + "/etc/hostname"), "box\n");
  EXPECT_EQ(ReadFile(rootfs + "/etc/hostname"), "box\n");
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u)));
  EXPECT_THAT(Temporaries(), IsEmpty());

  // A second user is named too.
  const std::string hosts = dir_ + "/hosts";
  WriteFile(hosts, "");
  ASSERT_EQ(::mount((Tree(1) + "/etc/hostname").c_str(), hosts.c_str(), nullptr,
                    MS_BIND, nullptr),
            0)
      << strerror(errno);
  absl::Cleanup unmount_hosts = [hosts] {
    ::umount2(hosts.c_str(), MNT_DETACH);
  };
  s = backend_->Remove(1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(), "snapshot object 1 is in use: mounted at " + rootfs +
                             ", " + hosts + " (busy)");

  ASSERT_EQ(::umount2(hosts.c_str(), 0), 0) << strerror(errno);
  ASSERT_EQ(::umount2(rootfs.c_str(), 0), 0) << strerror(errno);
  s = backend_->Remove(1);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_FALSE(Exists(1));
  EXPECT_THAT(NamesOnceDeleted(snapshots_), IsEmpty());
}

// The mount table is read again after a change: a mount made after an
// earlier Remove looked at it is seen, and so is its unmount.
TEST_P(BackendMountContractTest, RemoveSeesMountsMadeSinceAnEarlierRemove) {
  Create(1, 0, SnapshotKind::kActive);
  Create(2, 0, SnapshotKind::kActive);
  Create(3, 0, SnapshotKind::kActive);
  absl::Status s = backend_->Remove(1);
  ASSERT_TRUE(s.ok()) << s;

  const std::string rootfs = NewDir("rootfs");
  ASSERT_EQ(::mount(Tree(2).c_str(), rootfs.c_str(), nullptr, MS_BIND, nullptr),
            0)
      << strerror(errno);
  absl::Cleanup unmount = [rootfs] { ::umount2(rootfs.c_str(), MNT_DETACH); };
  s = backend_->Remove(2);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(),
            "snapshot object 2 is in use: mounted at " + rootfs + " (busy)");
  s = backend_->Remove(3);  // not in use
  EXPECT_TRUE(s.ok()) << s;
  s = backend_->Remove(2);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;

  ASSERT_EQ(::umount2(rootfs.c_str(), 0), 0) << strerror(errno);
  std::move(unmount).Cancel();
  s = backend_->Remove(2);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(NamesOnceDeleted(snapshots_), IsEmpty());
}

TEST_P(BackendMountContractTest, RemoveRefusesTheParentOfAMountedView) {
  Create(1, 0, SnapshotKind::kActive);
  WriteFile(Tree(1) + "/layer", "l");
  ASSERT_TRUE(backend_->Commit(1).ok());
  Create(3, 1, SnapshotKind::kView);
  const std::string view = NewDir("view");
  MountObject(3, 1, SnapshotKind::kView, view);
  absl::Cleanup unmount = [view] { ::umount2(view.c_str(), MNT_DETACH); };

  // The mount shows the parent's tree, which is what must stay.
  absl::Status s = backend_->Remove(1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(),
            "snapshot object 1 is in use: mounted at " + view + " (busy)");
  EXPECT_EQ(ReadFile(view + "/layer"), "l");
  // The view's own storage is not in its mount: removing it takes nothing
  // from the mount.
  s = backend_->Remove(3);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(ReadFile(view + "/layer"), "l");
  EXPECT_TRUE(Exists(1));

  ASSERT_EQ(::umount2(view.c_str(), 0), 0) << strerror(errno);
  std::move(unmount).Cancel();
  s = backend_->Remove(1);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(NamesOnceDeleted(snapshots_), IsEmpty());
}

TEST_P(BackendMountContractTest, RemoveRefusesAnObjectWithAMountInside) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_EQ(::mkdir((Tree(1) + "/mnt").c_str(), 0755), 0);
  WriteFile(Tree(1) + "/own", "o");
  const std::string elsewhere = NewDir("elsewhere");
  WriteFile(elsewhere + "/precious", "p");

  // Inside the tree, on the tree, on the object's directory.
  for (const std::string& target : {Tree(1) + "/mnt", Tree(1), Object(1)}) {
    SCOPED_TRACE(target);
    ASSERT_EQ(
        ::mount(elsewhere.c_str(), target.c_str(), nullptr, MS_BIND, nullptr),
        0)
        << strerror(errno);
    absl::Cleanup unmount = [target] { ::umount2(target.c_str(), MNT_DETACH); };
    absl::Status s = backend_->Remove(1);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_EQ(s.message(),
              "snapshot object 1 is in use: mounted at " + target + " (busy)");
    EXPECT_EQ(ReadFile(target + "/precious"), "p");
    ASSERT_EQ(::umount2(target.c_str(), 0), 0) << strerror(errno);
    EXPECT_TRUE(Exists(1));
    EXPECT_EQ(ReadFile(Tree(1) + "/own"), "o");
    EXPECT_THAT(Temporaries(), IsEmpty());
  }
  EXPECT_EQ(ReadFile(elsewhere + "/precious"), "p");
  absl::Status s = backend_->Remove(1);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_FALSE(Exists(1));
}

TEST_P(BackendMountContractTest, RemoveRefusesWhileAnEarlierLeftoverIsBusy) {
  Create(7, 0, SnapshotKind::kActive);
  WriteFile(Tree(7) + "/own", "o");
  // As if an earlier object 7 had been renamed for removal, and its tree
  // were still some container's rootfs.
  const std::string leftover = snapshots_ + "/rm-7";
  ASSERT_EQ(::mkdir(leftover.c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((leftover + "/fs").c_str(), 0755), 0);
  WriteFile(leftover + "/fs/old", "x");
  const std::string rootfs = NewDir("rootfs");
  ASSERT_EQ(::mount((leftover + "/fs").c_str(), rootfs.c_str(), nullptr,
                    MS_BIND, nullptr),
            0)
      << strerror(errno);
  absl::Cleanup unmount = [rootfs] { ::umount2(rootfs.c_str(), MNT_DETACH); };

  absl::Status s = backend_->Remove(7);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(), "snapshot object 7 cannot be removed: " + leftover +
                             ", left by an earlier removal, is in use: "
                             "mounted at " +
                             rootfs + " (busy)");
  EXPECT_TRUE(Exists(7));
  EXPECT_EQ(ReadFile(Tree(7) + "/own"), "o");
  EXPECT_EQ(ReadFile(rootfs + "/old"), "x");

  ASSERT_EQ(::umount2(rootfs.c_str(), 0), 0) << strerror(errno);
  s = backend_->Remove(7);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_FALSE(Exists(7));
  EXPECT_THAT(NamesOnceDeleted(snapshots_), IsEmpty());
}

}  // namespace
}  // namespace snapledger
