// ObjectDir on its own: the layout, the create protocol (Begin, fill, Place)
// and what a dropped or refused object leaves. The backends' use of it
// (remove, busy objects, list, cleanup) is the contract suite's,
// plugin/backend/backend_contract_test.cc.
#include "plugin/backend/fs/object_dir.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/backend/fs/fs_tree.h"
#include "plugin/testing/fs_helpers.h"

namespace snapledger {
namespace {

using ::snapledger::testing::ModeOf;
using ::snapledger::testing::Names;
using ::snapledger::testing::PathExists;
using ::snapledger::testing::ReadFile;
using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::IsEmpty;

class ObjectDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/object_dir_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << strerror(errno);
    char resolved[PATH_MAX];
    ASSERT_NE(::realpath(tmpl.c_str(), resolved), nullptr);
    dir_ = resolved;
    absl::StatusOr<std::unique_ptr<ObjectDir>> objects =
        ObjectDir::Open(dir_ + "/root", "test", /*sync=*/true);
    ASSERT_TRUE(objects.ok()) << objects.status();
    objects_ = *std::move(objects);
  }
  void TearDown() override {
    objects_.reset();
    if (!dir_.empty()) {
      ASSERT_TRUE(fstree::RemoveTree(dir_).ok());
    }
  }
  // Begins an object holding one file, "data".
  ObjectDir::NewObject Filled() {
    absl::StatusOr<ObjectDir::NewObject> object = objects_->Begin();
    EXPECT_TRUE(object.ok()) << object.status();
    const int fd = ::openat(object->fd(), "data", O_WRONLY | O_CREAT, 0644);
    EXPECT_GE(fd, 0) << strerror(errno);
    ::close(fd);
    return *std::move(object);
  }

  std::string dir_;
  std::unique_ptr<ObjectDir> objects_;
};

TEST_F(ObjectDirTest, OpenMakesAPrivateResolvedDirectory) {
  EXPECT_EQ(objects_->path(), dir_ + "/root/snapshots");
  EXPECT_EQ(ModeOf(objects_->path()), S_IFDIR | 0700u);
  EXPECT_EQ(objects_->PathIn(7, "fs"), dir_ + "/root/snapshots/7/fs");
  absl::StatusOr<std::unique_ptr<ObjectDir>> empty =
      ObjectDir::Open("", "test", true);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.status().message(), "test backend: empty root path");
}

TEST_F(ObjectDirTest, PlaceMakesAWholeObject) {
  ASSERT_TRUE(objects_->Place(Filled(), 3, 0).ok());
  ASSERT_TRUE(objects_->Place(Filled(), 4, 3).ok());
  EXPECT_THAT(Names(objects_->path()), ElementsAre("3", "4"));
  EXPECT_THAT(Names(objects_->ObjectPath(4)), ElementsAre("data", "parent"));
  EXPECT_EQ(ReadFile(objects_->PathIn(4, "parent")), "3\n");
  absl::StatusOr<uint64_t> parent = objects_->ReadParent(4);
  ASSERT_TRUE(parent.ok()) << parent.status();
  EXPECT_EQ(*parent, 3u);
  absl::StatusOr<std::vector<BackendObject>> listed = objects_->List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(*listed, ElementsAre(FieldsAre(3u, 0u), FieldsAre(4u, 3u)));
}

TEST_F(ObjectDirTest, ADroppedOrRefusedObjectLeavesNothing) {
  {
    ObjectDir::NewObject dropped = Filled();
    EXPECT_THAT(Names(objects_->path()),
                ElementsAre(::testing::StartsWith("new-")));
  }
  EXPECT_THAT(Names(objects_->path()), IsEmpty());

  ASSERT_TRUE(objects_->Place(Filled(), 3, 0).ok());
  absl::Status s = objects_->Place(Filled(), 3, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_EQ(s.message(), "snapshot object 3 already exists");
  EXPECT_THAT(Names(objects_->path()), ElementsAre("3"));
  EXPECT_EQ(ReadFile(objects_->PathIn(3, "parent")), "0\n");
}

// Remove() with the background deletion (object_dir.h, "Deferred
// deletion"); the busy checks are the contract suite's.
std::vector<MountEntry> NoUsers(const std::vector<MountEntry>&,
                                const std::string&, dev_t) {
  return {};
}

TEST_F(ObjectDirTest, RemoveAnswersBeforeTheTreeIsDeleted) {
  ASSERT_TRUE(objects_->Place(Filled(), 3, 0).ok());
  ASSERT_TRUE(objects_->Place(Filled(), 4, 3).ok());
  objects_->PauseRemovalsForTesting(true);
  ASSERT_TRUE(objects_->Remove(4, NoUsers).ok());

  // Gone as an object at once; its tree waits, renamed, for the deleter.
  EXPECT_THAT(Names(objects_->path()), ElementsAre("3", "rm-4"));
  EXPECT_THAT(Names(objects_->path() + "/rm-4"), ElementsAre("data", "parent"));
  absl::StatusOr<bool> exists = objects_->Exists(4);
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_FALSE(*exists);
  absl::StatusOr<std::vector<BackendObject>> listed = objects_->List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(*listed, ElementsAre(FieldsAre(3u, 0u)));
  EXPECT_EQ(objects_->Remove(4, NoUsers).code(), absl::StatusCode::kNotFound);
  // Objects come and go meanwhile.
  ASSERT_TRUE(objects_->Place(Filled(), 5, 3).ok());

  objects_->PauseRemovalsForTesting(false);
  objects_->WaitForRemovals();
  EXPECT_THAT(Names(objects_->path()), ElementsAre("3", "5"));
}

TEST_F(ObjectDirTest, RemovedTreesLeftByAStopAreCleanups) {
  ASSERT_TRUE(objects_->Place(Filled(), 3, 0).ok());
  ASSERT_TRUE(objects_->Place(Filled(), 4, 0).ok());
  objects_->PauseRemovalsForTesting(true);
  ASSERT_TRUE(objects_->Remove(3, NoUsers).ok());
  // As a daemon killed after the rename: what was queued stays on disk.
  objects_.reset();
  absl::StatusOr<std::unique_ptr<ObjectDir>> reopened =
      ObjectDir::Open(dir_ + "/root", "test", /*sync=*/true);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  objects_ = *std::move(reopened);
  EXPECT_THAT(Names(objects_->path()), ElementsAre("4", "rm-3"));
  absl::StatusOr<std::vector<BackendObject>> listed = objects_->List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(*listed, ElementsAre(FieldsAre(4u, 0u)));

  ASSERT_TRUE(objects_->Cleanup().ok());
  EXPECT_THAT(Names(objects_->path()), ElementsAre("4"));
}

TEST_F(ObjectDirTest, CleanupDrainsTheRemovalQueue) {
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(objects_->Place(Filled(), id, 0).ok());
  }
  objects_->PauseRemovalsForTesting(true);
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(objects_->Remove(id, NoUsers).ok());
  }
  EXPECT_THAT(Names(objects_->path()), ElementsAre("rm-1", "rm-2", "rm-3"));
  ASSERT_TRUE(objects_->Cleanup().ok());
  EXPECT_THAT(Names(objects_->path()), IsEmpty());
  // Nothing left for the deleter.
  objects_->PauseRemovalsForTesting(false);
  objects_->WaitForRemovals();
  // An id removed, made again and removed again (no reuse in service).
  ASSERT_TRUE(objects_->Place(Filled(), 2, 0).ok());
  objects_->PauseRemovalsForTesting(true);
  ASSERT_TRUE(objects_->Remove(2, NoUsers).ok());
  ASSERT_TRUE(objects_->Place(Filled(), 2, 0).ok());
  ASSERT_TRUE(objects_->Remove(2, NoUsers).ok());
  EXPECT_THAT(Names(objects_->path()), ElementsAre("rm-2"));
  objects_->PauseRemovalsForTesting(false);
  objects_->WaitForRemovals();
  EXPECT_THAT(Names(objects_->path()), IsEmpty());
}

TEST_F(ObjectDirTest, AFullRemovalQueueDeletesOnTheCallersTime) {
  const uint64_t n = ObjectDir::kMaxQueuedRemovals + 2;
  for (uint64_t id = 1; id <= n; ++id) {
    ASSERT_TRUE(objects_->Place(Filled(), id, 0).ok());
  }
  objects_->PauseRemovalsForTesting(true);
  for (uint64_t id = 1; id <= n; ++id) {
    ASSERT_TRUE(objects_->Remove(id, NoUsers).ok());
  }
  // The first kMaxQueuedRemovals wait; the rest went at once.
  const std::vector<std::string> names = Names(objects_->path());
  EXPECT_EQ(names.size(), ObjectDir::kMaxQueuedRemovals);
  EXPECT_FALSE(PathExists(objects_->path() + "/rm-" + std::to_string(n)));
  EXPECT_TRUE(PathExists(objects_->path() + "/rm-1"));
  objects_->PauseRemovalsForTesting(false);
  objects_->WaitForRemovals();
  EXPECT_THAT(Names(objects_->path()), IsEmpty());
}

TEST_F(ObjectDirTest, Checks) {
  ASSERT_TRUE(objects_->Place(Filled(), 3, 0).ok());
  EXPECT_TRUE(objects_->CheckExists(3).ok());
  EXPECT_EQ(objects_->CheckExists(5).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(objects_->CheckExists(0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(objects_->CheckCreate(3, 0, SnapshotKind::kActive).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(objects_->CheckCreate(5, 9, SnapshotKind::kView).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(objects_->CheckCreate(5, 0, SnapshotKind::kCommitted).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(objects_->CheckCreate(5, 3, SnapshotKind::kActive).ok());
  EXPECT_EQ(CheckMountable(3, SnapshotKind::kCommitted).code(),
            absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(ParseObjectId("42"), 42u);
  for (const char* bad : {"", "0", "017", "-3", "4x", "18446744073709551616"}) {
    EXPECT_EQ(ParseObjectId(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(ParseObjectId("18446744073709551615"), UINT64_MAX);
}

}  // namespace
}  // namespace snapledger
