#include "plugin/backend/forwarding_backend.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "plugin/backend/backend_call.h"

namespace snapledger {
namespace {

std::string Labels(const BackendLabels& labels) {
  return absl::StrJoin(labels, ",", absl::PairFormatter("="));
}

// Notes each call it receives ("create 8 7 1") and answers from the ids, so
// that a test sees both what reached it and that the answer came back.
class RecordingBackend final : public Backend {
 public:
  std::string_view Name() const override { return "recording"; }
  absl::Status Create(uint64_t id, uint64_t parent_id,
                      SnapshotKind kind) override {
    Note("create", id, parent_id, static_cast<int>(kind));
    return absl::NotFoundError(absl::StrCat("create ", id));
  }
  absl::Status CreateWithLabels(uint64_t id, uint64_t parent_id,
                                SnapshotKind kind,
                                const BackendLabels& labels) override {
    Note("create_with_labels", id, parent_id, static_cast<int>(kind),
         Labels(labels));
    return absl::OkStatus();
  }
  absl::StatusOr<Usage> Commit(uint64_t id) override {
    Note("commit", id);
    return Usage{static_cast<int64_t>(id), 1};
  }
  absl::StatusOr<Usage> CommitWithLabels(uint64_t id,
                                         const BackendLabels& labels) override {
    Note("commit_with_labels", id, Labels(labels));
    return Usage{static_cast<int64_t>(id), 2};
  }
  absl::Status Remove(uint64_t id) override {
    Note("remove", id);
    return absl::FailedPreconditionError("busy");
  }
  absl::StatusOr<std::vector<Mount>> Mounts(uint64_t id, uint64_t parent_id,
                                            SnapshotKind kind) override {
    Note("mounts", id, parent_id, static_cast<int>(kind));
    return std::vector<Mount>{{"bind", absl::StrCat(id), {}}};
  }
  absl::StatusOr<std::vector<Mount>> MountsOfNew(uint64_t id,
                                                 uint64_t parent_id,
                                                 SnapshotKind kind) override {
    Note("mounts_of_new", id, parent_id, static_cast<int>(kind));
    return std::vector<Mount>{{"overlay", absl::StrCat(id), {}}};
  }
  absl::StatusOr<Usage> DiskUsage(uint64_t id) override {
    Note("disk_usage", id);
    return Usage{static_cast<int64_t>(id) * 10, 3};
  }
  absl::StatusOr<bool> Exists(uint64_t id) override {
    Note("exists", id);
    return true;
  }
  absl::StatusOr<bool> IsCommitted(uint64_t id) override {
    Note("is_committed", id);
    return true;
  }
  absl::StatusOr<std::vector<BackendObject>> List() override {
    Note("list");
    return std::vector<BackendObject>{{5, 4}};
  }
  absl::StatusOr<std::vector<uint64_t>> ListIds() override {
    Note("list_ids");
    return std::vector<uint64_t>{5, 6};
  }
  absl::Status Cleanup() override {
    Note("cleanup");
    return absl::OkStatus();
  }

  std::vector<std::string> calls;

 private:
  template <typename... Args>
  void Note(const Args&... args) {
    calls.push_back(absl::StrJoin(std::make_tuple(args...), " "));
  }
};

// A decorator that notes what each call works on and then makes it.
class NotingBackend final : public ForwardingBackend<NotingBackend> {
 public:
  explicit NotingBackend(std::shared_ptr<Backend> inner)
      : ForwardingBackend(std::move(inner)) {}

  std::vector<std::string> runs;

 private:
  friend class ForwardingBackend<NotingBackend>;

  template <typename T, typename Fn>
  T Run(const BackendCall& call, Fn fn) {
    runs.push_back(absl::StrCat(std::string(BackendOpName(call.op)), " ",
                                call.id, " ", call.parent_id));
    return fn(*inner());
  }
};

class ForwardingBackendTest : public ::testing::Test {
 protected:
  std::shared_ptr<RecordingBackend> inner_ =
      std::make_shared<RecordingBackend>();
  NotingBackend backend_{inner_};
  const BackendLabels labels_{{"a", "1"}, {"b", "2"}};
};

TEST_F(ForwardingBackendTest, EveryCallRunsThroughTheDecoratorToTheInner) {
  EXPECT_EQ(backend_.Name(), "recording");

  EXPECT_EQ(backend_.Create(8, 7, SnapshotKind::kView).message(), "create 8");
  EXPECT_TRUE(
      backend_.CreateWithLabels(9, 8, SnapshotKind::kActive, labels_).ok());
  EXPECT_EQ(backend_.Commit(9)->size_bytes, 9);
  EXPECT_EQ(backend_.CommitWithLabels(10, labels_)->inodes, 2);
  EXPECT_TRUE(absl::IsFailedPrecondition(backend_.Remove(11)));
  EXPECT_EQ(backend_.Mounts(12, 11, SnapshotKind::kActive)->at(0).source, "12");
  EXPECT_EQ(backend_.DiskUsage(13)->size_bytes, 130);
  EXPECT_TRUE(*backend_.Exists(14));
  EXPECT_TRUE(*backend_.IsCommitted(15));
  EXPECT_EQ(backend_.List()->at(0).parent_id, 4u);
  EXPECT_EQ(backend_.ListIds()->size(), 2u);
  EXPECT_TRUE(backend_.Cleanup().ok());

  EXPECT_EQ(inner_->calls,
            (std::vector<std::string>{
                "create 8 7 0", "create_with_labels 9 8 1 a=1,b=2", "commit 9",
                "commit_with_labels 10 a=1,b=2", "remove 11", "mounts 12 11 1",
                "disk_usage 13", "exists 14", "is_committed 15", "list",
                "list_ids", "cleanup"}));
  // CreateWithLabels counts as a create, CommitWithLabels as a commit,
  // ListIds as a list; only a create names its parent.
  EXPECT_EQ(backend_.runs,
            (std::vector<std::string>{
                "create 8 7", "create 9 8", "commit 9 0", "commit 10 0",
                "remove 11 0", "mounts 12 0", "disk_usage 13 0", "exists 14 0",
                "is_committed 15 0", "list 0 0", "list 0 0", "cleanup 0 0"}));
}

TEST_F(ForwardingBackendTest, MountsOfNewGoesStraightToTheInner) {
  absl::StatusOr<std::vector<Mount>> mounts =
      backend_.MountsOfNew(3, 2, SnapshotKind::kActive);
  ASSERT_TRUE(mounts.ok());
  EXPECT_EQ(mounts->at(0).type, "overlay");
  EXPECT_EQ(inner_->calls, std::vector<std::string>{"mounts_of_new 3 2 1"});
  EXPECT_TRUE(backend_.runs.empty());
}

TEST(BackendCallTest, NamesForMetrics) {
  EXPECT_EQ(BackendOpName(BackendOp::kCreate), "create");
  EXPECT_EQ(BackendOpName(BackendOp::kCommit), "commit");
  EXPECT_EQ(BackendOpName(BackendOp::kRemove), "remove");
  EXPECT_EQ(BackendOpName(BackendOp::kMounts), "mounts");
  EXPECT_EQ(BackendOpName(BackendOp::kDiskUsage), "disk_usage");
  EXPECT_EQ(BackendOpName(BackendOp::kExists), "exists");
  EXPECT_EQ(BackendOpName(BackendOp::kIsCommitted), "is_committed");
  EXPECT_EQ(BackendOpName(BackendOp::kList), "list");
  EXPECT_EQ(BackendOpName(BackendOp::kCleanup), "cleanup");
}

TEST(BackendCallTest, DescribesACallForMessages) {
  EXPECT_EQ(DescribeBackendCall({BackendOp::kRemove, 42}),
            "remove of object 42");
  EXPECT_EQ(DescribeBackendCall({BackendOp::kCreate, 8, 7}),
            "create of object 8 on object 7");
  EXPECT_EQ(DescribeBackendCall({BackendOp::kCreate, 8}), "create of object 8");
  EXPECT_EQ(DescribeBackendCall({BackendOp::kDiskUsage, 3}),
            "disk usage query of object 3");
  EXPECT_EQ(DescribeBackendCall({BackendOp::kIsCommitted, 4}),
            "committed check of object 4");
  EXPECT_EQ(DescribeBackendCall({BackendOp::kList}), "list");
  EXPECT_EQ(DescribeBackendCall({BackendOp::kCleanup}), "cleanup");
  EXPECT_EQ(BackendOpNoun(BackendOp::kExists), "an exists check");
  EXPECT_EQ(BackendOpNoun(BackendOp::kMounts), "a mounts query");
}

}  // namespace
}  // namespace snapledger
