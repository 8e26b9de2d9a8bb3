// What is the overlayfs backend's own: its layout, the exact mounts of each
// shape, the ancestor chain, stored usage, real overlay mounts (merged
// content, copy-up, whiteouts), busy layers, and the start-up checks. The
// contract it shares with the native backend is in
// plugin/backend/backend_contract_test.cc.
#include "plugin/backend/overlayfs/overlay_backend.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/backend/fs/fs_tree.h"
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
using ::testing::HasSubstr;

class OverlayBackendTest : public testing::BackendTest {
 protected:
  OverlayBackendTest() : BackendTest("overlayfs") {}
  void SetUp() override {
    BackendTest::SetUp();
    // What every overlay mount starts with on this machine.
    if (::access("/sys/module/overlay/parameters/index", F_OK) == 0) {
      prefix_.push_back("index=off");
    }
  }
  absl::StatusOr<std::unique_ptr<Backend>> OpenBackend(
      const std::string& root) override {
    OverlayBackendOptions options = options_;
    options.skip_support_check = !PrivateMountNamespace::Unavailable().empty();
    return NewOverlayBackend(root, options);
  }
  // Reopens the backend with `options`.
  void Open(OverlayBackendOptions options = {}) {
    options_ = std::move(options);
    BackendTest::Open();
  }
  std::string Work(uint64_t id) const { return Object(id) + "/work"; }
  // Objects 1..n, each committed on the one before.
  void MakeChain(uint64_t n) {
    for (uint64_t id = 1; id <= n; ++id) {
      Create(id, id - 1, SnapshotKind::kActive);
      Commit(id);
    }
  }
  Mount MountOf(uint64_t id, uint64_t parent, SnapshotKind kind) {
    absl::StatusOr<std::vector<Mount>> mounts =
        backend_->Mounts(id, parent, kind);
    EXPECT_TRUE(mounts.ok()) << mounts.status();
    if (!mounts.ok()) return {};
    EXPECT_EQ(mounts->size(), 1u);
    return mounts->empty() ? Mount{} : mounts->front();
  }
  // prefix_ followed by `options`.
  std::vector<std::string> Options(std::vector<std::string> options) const {
    std::vector<std::string> all = prefix_;
    all.insert(all.end(), options.begin(), options.end());
    return all;
  }

  OverlayBackendOptions options_;
  std::vector<std::string> prefix_;
};

TEST_F(OverlayBackendTest, LayoutOfEachKind) {
  EXPECT_EQ(backend_->Name(), "overlayfs");
  Create(1, 0, SnapshotKind::kActive);
  EXPECT_THAT(Names(Object(1)), ElementsAre("fs", "parent", "work"));
  EXPECT_EQ(ModeOf(Tree(1)), S_IFDIR | 0755u);
  EXPECT_EQ(ModeOf(Work(1)), S_IFDIR | 0711u);
  ASSERT_EQ(::chown(Tree(1).c_str(), 1234, 5678), 0);
  Commit(1);
  // Nothing removed at Commit; the usage stored.
  EXPECT_THAT(Names(Object(1)), ElementsAre("fs", "parent", "usage", "work"));

  // Nothing is copied from a parent; the new layer is owned like it.
  WriteFile(Tree(1) + "/file", "x");
  Create(2, 1, SnapshotKind::kActive);
  EXPECT_THAT(Names(Tree(2)), ::testing::IsEmpty());
  struct stat st;
  ASSERT_EQ(::stat(Tree(2).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  // A view gets an fs/ (as containerd's does) but no work/.
  Create(3, 1, SnapshotKind::kView);
  EXPECT_THAT(Names(Object(3)), ElementsAre("fs", "parent"));
  EXPECT_THAT(Names(Tree(3)), ::testing::IsEmpty());
}

TEST_F(OverlayBackendTest, MountOfEachShape) {
  MakeChain(2);
  Create(5, 0, SnapshotKind::kActive);
  Create(6, 0, SnapshotKind::kView);
  Create(7, 1, SnapshotKind::kView);
  Create(8, 1, SnapshotKind::kActive);
  Create(9, 2, SnapshotKind::kView);
  Create(10, 2, SnapshotKind::kActive);

  // No parent: a bind of its own layer.
  EXPECT_EQ(MountOf(5, 0, SnapshotKind::kActive),
            (Mount{"bind", Tree(5), {"rw", "rbind"}}));
  EXPECT_EQ(MountOf(6, 0, SnapshotKind::kView),
            (Mount{"bind", Tree(6), {"ro", "rbind"}}));
  // A view of one layer: a read-only bind of it.
  EXPECT_EQ(MountOf(7, 1, SnapshotKind::kView),
            (Mount{"bind", Tree(1), {"ro", "rbind"}}));
  // Active on one layer.
  EXPECT_EQ(MountOf(8, 1, SnapshotKind::kActive),
            (Mount{"overlay", "overlay",
                   Options({"workdir=" + Work(8), "upperdir=" + Tree(8),
                            "lowerdir=" + Tree(1)})}));
  // A view of two layers: lower dirs only, nearest first.
  EXPECT_EQ(MountOf(9, 2, SnapshotKind::kView),
            (Mount{"overlay", "overlay",
                   Options({"lowerdir=" + Tree(2) + ":" + Tree(1)})}));
  EXPECT_EQ(MountOf(10, 2, SnapshotKind::kActive),
            (Mount{"overlay", "overlay",
                   Options({"workdir=" + Work(10), "upperdir=" + Tree(10),
                            "lowerdir=" + Tree(2) + ":" + Tree(1)})}));

  // Configured options come last, on overlay mounts only.
  OverlayBackendOptions options;
  options.mount_options = {"volatile", "redirect_dir=off"};
  Open(options);
  EXPECT_EQ(MountOf(10, 2, SnapshotKind::kActive),
            (Mount{"overlay", "overlay",
                   Options({"workdir=" + Work(10), "upperdir=" + Tree(10),
                            "lowerdir=" + Tree(2) + ":" + Tree(1), "volatile",
                            "redirect_dir=off"})}));
  EXPECT_EQ(MountOf(5, 0, SnapshotKind::kActive),
            (Mount{"bind", Tree(5), {"rw", "rbind"}}));
}

TEST_F(OverlayBackendTest, LongChainsListEveryLayerNearestFirst) {
  constexpr uint64_t kLayers = 128;
  MakeChain(kLayers);
  Create(kLayers + 1, kLayers, SnapshotKind::kActive);
  std::vector<std::string> lower;
  for (uint64_t id = kLayers; id >= 1; --id) lower.push_back(Tree(id));
  const Mount expected{
      "overlay", "overlay",
      Options({"workdir=" + Work(kLayers + 1), "upperdir=" + Tree(kLayers + 1),
               "lowerdir=" + absl::StrJoin(lower, ":")})};
  EXPECT_EQ(MountOf(kLayers + 1, kLayers, SnapshotKind::kActive), expected);
  absl::StatusOr<std::vector<Mount>> fresh =
      backend_->MountsOfNew(kLayers + 1, kLayers, SnapshotKind::kActive);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_THAT(*fresh, ElementsAre(expected));

  // A new process learns the chain from the parent files.
  Open();
  absl::StatusOr<std::vector<Mount>> uncached =
      backend_->MountsOfNew(kLayers + 1, kLayers, SnapshotKind::kActive);
  EXPECT_EQ(uncached.status().code(), absl::StatusCode::kFailedPrecondition)
      << uncached.status();
  EXPECT_EQ(MountOf(kLayers + 1, kLayers, SnapshotKind::kActive), expected);
  fresh = backend_->MountsOfNew(kLayers + 1, kLayers, SnapshotKind::kActive);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_THAT(*fresh, ElementsAre(expected));
  // An object created on a cached parent needs no reading either.
  Create(kLayers + 2, kLayers, SnapshotKind::kView);
  fresh = backend_->MountsOfNew(kLayers + 2, kLayers, SnapshotKind::kView);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->front().options.back(),
            "lowerdir=" + absl::StrJoin(lower, ":"));
}

TEST_F(OverlayBackendTest, MountsErrors) {
  MakeChain(2);
  // The parent given must be the stored one.
  absl::StatusOr<std::vector<Mount>> mounts =
      backend_->Mounts(2, 0, SnapshotKind::kActive);
  EXPECT_EQ(mounts.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mounts.status().message(), "snapshot object 2 has parent 1, not 0");
  // A missing ancestor is damage.
  Open();
  ASSERT_EQ(::rename(Object(1).c_str(), (dir_ + "/away").c_str()), 0);
  mounts = backend_->Mounts(2, 1, SnapshotKind::kActive);
  EXPECT_EQ(mounts.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(mounts.status().message(), HasSubstr("ancestor 1 is missing"));
  // So is a cycle of parent files.
  ASSERT_EQ(::rename((dir_ + "/away").c_str(), Object(1).c_str()), 0);
  WriteFile(Object(1) + "/parent", "2\n");
  mounts = backend_->Mounts(2, 1, SnapshotKind::kActive);
  EXPECT_EQ(mounts.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(OverlayBackendTest, CommittedUsageIsTheStoredOne) {
  Create(1, 0, SnapshotKind::kActive);
  WriteFile(Tree(1) + "/data", std::string(64 << 10, 'd'));
  ASSERT_EQ(::link((Tree(1) + "/data").c_str(), (Tree(1) + "/link").c_str()),
            0);
  absl::StatusOr<Usage> committed = backend_->Commit(1);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(committed->inodes, 2);
  EXPECT_EQ(ReadFile(Object(1) + "/usage"),
            absl::StrCat(committed->size_bytes, " 2\n"));

  // Later changes to the layer (there should be none) are not measured.
  WriteFile(Tree(1) + "/late", std::string(64 << 10, 'l'));
  absl::StatusOr<Usage> usage = backend_->DiskUsage(1);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->size_bytes, committed->size_bytes);
  EXPECT_EQ(usage->inodes, 2);
  usage = backend_->Commit(1);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->inodes, 2);

  // An active object is measured live.
  Create(2, 1, SnapshotKind::kActive);
  usage = backend_->DiskUsage(2);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->inodes, 1);
  WriteFile(Tree(2) + "/new", "n");
  usage = backend_->DiskUsage(2);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->inodes, 2);

  WriteFile(Object(1) + "/usage", "12 banana\n");
  EXPECT_EQ(backend_->DiskUsage(1).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(OverlayBackendTest, StartUpChecks) {
  if (!PrivateMountNamespace::Unavailable().empty()) {
    GTEST_SKIP() << PrivateMountNamespace::Unavailable();
  }
  absl::Status s = CheckOverlaySupport(dir_ + "/elsewhere");
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(Names(dir_ + "/elsewhere"), ::testing::IsEmpty());  // no litter

  // overlayfs cannot be an upper layer: a root inside an overlay fails the
  // test mount, and the backend refuses to open there.
  for (const char* name : {"l", "u", "w", "merged"}) {
    ASSERT_EQ(::mkdir((dir_ + "/" + name).c_str(), 0755), 0);
  }
  const std::string merged = dir_ + "/merged";
  const std::string data = absl::StrCat("lowerdir=", dir_, "/l,upperdir=", dir_,
                                        "/u,workdir=", dir_, "/w");
  ASSERT_EQ(::mount("overlay", merged.c_str(), "overlay", 0, data.c_str()), 0)
      << strerror(errno);
  absl::Cleanup unmount = [merged] { ::umount2(merged.c_str(), MNT_DETACH); };
  s = CheckOverlaySupport(merged + "/root");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("test overlay mount"));
  EXPECT_THAT(s.message(), HasSubstr("backend = \"native\""));
  absl::StatusOr<std::unique_ptr<Backend>> refused =
      NewOverlayBackend(merged + "/root");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Names(merged + "/root"), ::testing::IsEmpty());
  // Only a test that cannot mount skips the check.
  OverlayBackendOptions skip;
  skip.skip_support_check = true;
  EXPECT_TRUE(NewOverlayBackend(merged + "/root", skip).ok());
}

TEST_F(OverlayBackendTest, UserXattrOnlyInAUserNamespace) {
  const std::string map = ReadFile("/proc/self/uid_map");
  if (map.find("4294967295") == std::string::npos) {
    GTEST_SKIP() << "running in a user namespace";
  }
  absl::StatusOr<bool> needed = NeedsOverlayUserXattr(root_);
  ASSERT_TRUE(needed.ok()) << needed.status();
  EXPECT_FALSE(*needed);
  Create(1, 0, SnapshotKind::kActive);
  Commit(1);
  Create(2, 1, SnapshotKind::kActive);
  for (const std::string& option :
       MountOf(2, 1, SnapshotKind::kActive).options) {
    EXPECT_NE(option, "userxattr");
  }
}

// Real overlay mounts: in the private mount namespace only.
class OverlayBackendMountTest
    : public testing::MountingTest<OverlayBackendTest> {
 protected:
  // Three committed layers:
  //   1: a=1 b=1 d/x=1
  //   2: b=2 c=2
  //   3: c=3, and a whiteout of a
  void MakeThreeLayers() {
    Create(1, 0, SnapshotKind::kActive);
    WriteFile(Tree(1) + "/a", "1");
    WriteFile(Tree(1) + "/b", "1");
    ASSERT_EQ(::mkdir((Tree(1) + "/d").c_str(), 0755), 0);
    WriteFile(Tree(1) + "/d/x", "1");
    Commit(1);
    Create(2, 1, SnapshotKind::kActive);
    WriteFile(Tree(2) + "/b", "2");
    WriteFile(Tree(2) + "/c", "2");
    Commit(2);
    Create(3, 2, SnapshotKind::kActive);
    WriteFile(Tree(3) + "/c", "3");
    ASSERT_EQ(::mknod((Tree(3) + "/a").c_str(), S_IFCHR | 0, makedev(0, 0)), 0)
        << strerror(errno);
    Commit(3);
  }
};

bool IsWhiteout(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode) &&
         st.st_rdev == makedev(0, 0);
}

TEST_F(OverlayBackendMountTest, ThreeLayersMergeWithCopyUpAndWhiteouts) {
  MakeThreeLayers();
  Create(4, 3, SnapshotKind::kActive);
  const std::string rootfs = NewDir("rootfs");
  const Mount mount = MountOf(4, 3, SnapshotKind::kActive);
  ASSERT_EQ(mount.type, "overlay");
  ASSERT_EQ(PerformMount(mount, rootfs), 0) << strerror(errno);
  absl::Cleanup unmount = [rootfs] { ::umount2(rootfs.c_str(), MNT_DETACH); };

  // The merged view: the nearest layer wins, whiteouts hide.
  EXPECT_FALSE(PathExists(rootfs + "/a"));
  EXPECT_EQ(ReadFile(rootfs + "/b"), "2");
  EXPECT_EQ(ReadFile(rootfs + "/c"), "3");
  EXPECT_EQ(ReadFile(rootfs + "/d/x"), "1");

  // Writing copies up into the object's own layer; the lower ones stay.
  WriteFile(rootfs + "/b", "4");
  WriteFile(rootfs + "/d/x", "4");
  EXPECT_EQ(ReadFile(rootfs + "/b"), "4");
  EXPECT_EQ(ReadFile(Tree(4) + "/b"), "4");
  EXPECT_EQ(ReadFile(Tree(4) + "/d/x"), "4");
  EXPECT_EQ(ReadFile(Tree(2) + "/b"), "2");
  EXPECT_EQ(ReadFile(Tree(1) + "/d/x"), "1");
  // Deleting a lower file leaves a whiteout in the upper layer only.
  ASSERT_EQ(::unlink((rootfs + "/c").c_str()), 0) << strerror(errno);
  EXPECT_FALSE(PathExists(rootfs + "/c"));
  EXPECT_TRUE(IsWhiteout(Tree(4) + "/c"));
  EXPECT_EQ(ReadFile(Tree(3) + "/c"), "3");

  // A read-only view of the same three layers.
  Create(5, 3, SnapshotKind::kView);
  const std::string view = NewDir("view");
  ASSERT_EQ(PerformMount(MountOf(5, 3, SnapshotKind::kView), view), 0)
      << strerror(errno);
  absl::Cleanup unmount_view = [view] { ::umount2(view.c_str(), MNT_DETACH); };
  EXPECT_FALSE(PathExists(view + "/a"));
  EXPECT_EQ(ReadFile(view + "/b"), "2");
  EXPECT_EQ(ReadFile(view + "/c"), "3");
  EXPECT_EQ(::open((view + "/new").c_str(), O_WRONLY | O_CREAT, 0644), -1);
  EXPECT_EQ(errno, EROFS);

  EXPECT_EQ(::umount2(view.c_str(), 0), 0) << strerror(errno);
  std::move(unmount_view).Cancel();
  EXPECT_EQ(::umount2(rootfs.c_str(), 0), 0) << strerror(errno);
  std::move(unmount).Cancel();
}

TEST_F(OverlayBackendMountTest, RemoveRefusesEveryLayerOfAMountedOverlay) {
  MakeThreeLayers();
  Create(4, 3, SnapshotKind::kActive);
  const std::string rootfs = NewDir("rootfs");
  ASSERT_EQ(PerformMount(MountOf(4, 3, SnapshotKind::kActive), rootfs), 0)
      << strerror(errno);
  absl::Cleanup unmount = [rootfs] { ::umount2(rootfs.c_str(), MNT_DETACH); };

  // Lower layers, bottom and middle, and the upper one.
  for (uint64_t id : {1, 2, 3, 4}) {
    absl::Status s = backend_->Remove(id);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_EQ(s.message(),
              absl::StrCat("snapshot object ", id, " is in use: mounted at ",
                           rootfs, " (busy)"));
    EXPECT_TRUE(backend_->Exists(id).value_or(false)) << id;
  }
  EXPECT_EQ(ReadFile(Tree(1) + "/d/x"), "1");
  EXPECT_EQ(ReadFile(rootfs + "/d/x"), "1");

  ASSERT_EQ(::umount2(rootfs.c_str(), 0), 0) << strerror(errno);
  std::move(unmount).Cancel();
  absl::Status s = backend_->Remove(4);
  EXPECT_TRUE(s.ok()) << s;
  s = backend_->Remove(1);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_FALSE(PathExists(Object(1)));
}

TEST_F(OverlayBackendMountTest, RemoveSeesLayersNamedRelativeToSnapshots) {
  MakeThreeLayers();
  // As containerd's mount package mounts long lower dir lists: from inside
  // the common parent, with relative paths.
  const std::string merged = NewDir("merged");
  const int cwd = ::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(cwd, 0);
  ASSERT_EQ(::chdir(snapshots_.c_str()), 0);
  const int rc = ::mount("overlay", merged.c_str(), "overlay", 0,
                         "lowerdir=3/fs:2/fs:1/fs");
  const int err = errno;
  ASSERT_EQ(::fchdir(cwd), 0);
  ::close(cwd);
  ASSERT_EQ(rc, 0) << strerror(err);
  absl::Cleanup unmount = [merged] { ::umount2(merged.c_str(), MNT_DETACH); };
  EXPECT_EQ(ReadFile(merged + "/c"), "3");

  absl::Status s = backend_->Remove(2);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("(busy)"));
  EXPECT_TRUE(PathExists(Tree(2) + "/b"));
  ASSERT_EQ(::umount2(merged.c_str(), 0), 0) << strerror(errno);
  std::move(unmount).Cancel();
  s = backend_->Remove(2);
  EXPECT_TRUE(s.ok()) << s;
}

// Another root (containerd's own overlayfs, another snapledger) names its
// layers "<id>/fs" too. Its relative-only mount is not ours unless its
// layers are exactly one of our chains: this one skips our layer 2.
TEST_F(OverlayBackendMountTest, AnotherRootsRelativeLayersAreNotOurs) {
  MakeThreeLayers();
  const std::string other = NewDir("other");
  for (const char* layer : {"3/fs", "1/fs"}) {
    ASSERT_TRUE(std::filesystem::create_directories(other + "/" + layer));
  }
  const std::string merged = NewDir("merged");
  const int cwd = ::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(cwd, 0);
  ASSERT_EQ(::chdir(other.c_str()), 0);
  const int rc =
      ::mount("overlay", merged.c_str(), "overlay", 0, "lowerdir=3/fs:1/fs");
  const int err = errno;
  ASSERT_EQ(::fchdir(cwd), 0);
  ::close(cwd);
  ASSERT_EQ(rc, 0) << strerror(err);
  absl::Cleanup unmount = [merged] { ::umount2(merged.c_str(), MNT_DETACH); };

  absl::Status s = backend_->Remove(3);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_FALSE(PathExists(Object(3)));
}

}  // namespace
}  // namespace snapledger
