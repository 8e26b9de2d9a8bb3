// What is the native backend's own: its layout, children as copies of their
// parents, views owning no tree, its bind mounts. The contract it shares with
// the overlayfs backend (create, commit, remove, list, cleanup, usage, busy
// objects) is in plugin/backend/backend_contract_test.cc.
#include "plugin/backend/native/native_backend.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/backend/fs/fs_tree.h"
#include "plugin/testing/backend_fixture.h"
#include "plugin/testing/fs_helpers.h"

namespace snapledger {
namespace {

using ::snapledger::testing::LimitLeavingFreeFds;
using ::snapledger::testing::ModeOf;
using ::snapledger::testing::Names;
using ::snapledger::testing::ReadFile;
using ::snapledger::testing::WriteFile;

using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::IsEmpty;

class NativeBackendTest : public testing::BackendTest {
 protected:
  NativeBackendTest() : BackendTest("state/native") {}
  absl::StatusOr<std::unique_ptr<Backend>> OpenBackend(
      const std::string& root) override {
    return NewNativeBackend(root);
  }
};

TEST_F(NativeBackendTest, Layout) {
  EXPECT_EQ(backend_->Name(), "native");
  Create(1, 0, SnapshotKind::kActive);
  EXPECT_THAT(Names(Object(1)), ElementsAre("fs", "parent"));
  ASSERT_TRUE(backend_->Commit(1).ok());
  EXPECT_THAT(Names(Object(1)), ElementsAre("fs", "parent"));
}

TEST_F(NativeBackendTest, ActiveWithParentStartsAsACopyOfIt) {
  Create(1, 0, SnapshotKind::kActive);
  ASSERT_EQ(::mkdir((Tree(1) + "/etc").c_str(), 0750), 0);
  WriteFile(Tree(1) + "/etc/hostname", "layer1\n", 0640);
  ASSERT_EQ(::symlink("etc/hostname", (Tree(1) + "/link").c_str()), 0);
  ASSERT_EQ(::chmod(Tree(1).c_str(), 0711), 0);
  ASSERT_TRUE(backend_->Commit(1).ok());

  Create(2, 1, SnapshotKind::kActive);
  EXPECT_EQ(ReadFile(Tree(2) + "/etc/hostname"), "layer1\n");
  EXPECT_EQ(ModeOf(Tree(2) + "/etc/hostname"), S_IFREG | 0640u);
  EXPECT_EQ(ModeOf(Tree(2) + "/etc"), S_IFDIR | 0750u);
  EXPECT_EQ(ModeOf(Tree(2)), S_IFDIR | 0711u);
  EXPECT_TRUE(S_ISLNK(ModeOf(Tree(2) + "/link")));
  EXPECT_EQ(ReadFile(Object(2) + "/parent"), "1\n");

  // A copy, not a share.
  WriteFile(Tree(2) + "/etc/hostname", "layer2\n", 0640);
  EXPECT_EQ(ReadFile(Tree(1) + "/etc/hostname"), "layer1\n");
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u), FieldsAre(2u, 1u)));
  EXPECT_THAT(Temporaries(), IsEmpty());
}

TEST_F(NativeBackendTest, ViewWithParentOwnsNoTree) {
  Create(1, 0, SnapshotKind::kActive);
  WriteFile(Tree(1) + "/file", std::string(50000, 'f'));
  ASSERT_TRUE(backend_->Commit(1).ok());
  Create(3, 1, SnapshotKind::kView);

  EXPECT_TRUE(Exists(3));
  EXPECT_THAT(Names(Object(3)), ElementsAre("parent"));
  absl::StatusOr<Usage> usage = backend_->DiskUsage(3);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->size_bytes, 0);
  EXPECT_EQ(usage->inodes, 0);
  usage = backend_->Commit(3);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->inodes, 0);

  absl::StatusOr<std::vector<Mount>> mounts =
      backend_->Mounts(3, 1, SnapshotKind::kView);
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_THAT(*mounts, ElementsAre(Mount{"bind", Tree(1), {"rbind", "ro"}}));
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u), FieldsAre(3u, 1u)));

  // Nothing to copy from a view of a view.
  absl::Status s = backend_->Create(4, 3, SnapshotKind::kActive);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_FALSE(Exists(4));
  EXPECT_THAT(Temporaries(), IsEmpty());
}

TEST_F(NativeBackendTest, ViewWithoutParentHasAnEmptyTree) {
  Create(5, 0, SnapshotKind::kView);
  EXPECT_THAT(Names(Tree(5)), IsEmpty());
  absl::StatusOr<std::vector<Mount>> mounts =
      backend_->Mounts(5, 0, SnapshotKind::kView);
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_THAT(*mounts, ElementsAre(Mount{"bind", Tree(5), {"rbind", "ro"}}));
  EXPECT_THAT(List(), ElementsAre(FieldsAre(5u, 0u)));
}

TEST_F(NativeBackendTest, MountsOfActiveObjects) {
  Create(1, 0, SnapshotKind::kActive);
  Create(2, 1, SnapshotKind::kActive);
  for (uint64_t id : {1, 2}) {
    absl::StatusOr<std::vector<Mount>> mounts =
        backend_->Mounts(id, id - 1, SnapshotKind::kActive);
    ASSERT_TRUE(mounts.ok()) << mounts.status();
    EXPECT_THAT(*mounts, ElementsAre(Mount{"bind", Tree(id), {"rbind", "rw"}}));
    EXPECT_EQ((*mounts)[0].source.front(), '/');
  }
}

TEST_F(NativeBackendTest, FailedCopyLeavesNoObject) {
  Create(1, 0, SnapshotKind::kActive);
  {
    int fd = ::open(Tree(1).c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(fd, 0);
    for (int i = 0; i < 20; ++i) {
      ASSERT_EQ(::mkdirat(fd, "level", 0755), 0);
      const int next = ::openat(fd, "level", O_RDONLY | O_DIRECTORY);
      ASSERT_GE(next, 0);
      ::close(fd);
      fd = next;
    }
    ::close(fd);
  }
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old_limit), 0);
  struct rlimit limit = old_limit;
  limit.rlim_cur = LimitLeavingFreeFds(10);  // the copy runs out midway
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  absl::Status s = backend_->Create(2, 1, SnapshotKind::kActive);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old_limit), 0);

  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_FALSE(Exists(2));
  EXPECT_THAT(Temporaries(), IsEmpty());
  EXPECT_THAT(List(), ElementsAre(FieldsAre(1u, 0u)));
}

}  // namespace
}  // namespace snapledger
