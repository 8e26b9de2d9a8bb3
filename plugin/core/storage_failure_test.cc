// The ledger's disk fills up: RPCs fail with Unavailable naming the cause,
// the backend is not touched, reads keep working, and writes work again once
// space returns — without a restart. Needs root (mounts a small tmpfs).
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/core/coordinator.h"
#include "plugin/testing/fake_backend.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

class StorageFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/storage_failure_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    if (::mount("snapledger-test", dir_.c_str(), "tmpfs", 0, "size=8m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs (needs root): " << strerror(errno);
    }
    mounted_ = true;
    Ledger::Options options;
    options.path = dir_ + "/ledger";
    auto ledger = Ledger::Open(options);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = *std::move(ledger);
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_);
  }
  void TearDown() override {
    coord_.reset();
    ledger_.reset();
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    std::filesystem::remove_all(dir_);
  }
  // Fills the tmpfs until the kernel says ENOSPC.
  void FillDisk() {
    int fd = ::open((dir_ + "/filler").c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    std::string block(64 << 10, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    block.resize(512);  // top off the last partial pages
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    ASSERT_EQ(errno, ENOSPC);
    ::close(fd);
  }

  std::string dir_;
  bool mounted_ = false;
  std::unique_ptr<Ledger> ledger_;
  testing::FakeBackend backend_;
  std::unique_ptr<Coordinator> coord_;
};

TEST_F(StorageFailureTest, DiskFullFailsCleanlyAndHealsWithoutRestart) {
  ASSERT_TRUE(coord_->Prepare("before", "", {}).ok());

  FillDisk();
  // Small writes may still fit in a page the WAL already holds: keep going
  // until the ledger refuses one, as it must on a full disk.
  absl::Status failure;
  for (int i = 0; i < 1000 && failure.ok(); ++i) {
    auto r = coord_->Prepare("x" + std::to_string(i), "",
                             {{"pad", std::string(2000, 'p')}});
    failure = r.status();
  }
  ASSERT_EQ(failure.code(), absl::StatusCode::kUnavailable) << failure;
  EXPECT_THAT(std::string(failure.message()), HasSubstr("No space left"));
  const int creates_at_failure = backend_.creates();

  // While degraded: the backend is never touched, reads keep working.
  auto again = coord_->Prepare("during", "", {});
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(backend_.creates(), creates_at_failure);
  EXPECT_TRUE(coord_->Stat("before").ok());
  EXPECT_TRUE(ledger_->degraded());

  // Space returns: the next writes succeed without a restart.
  std::filesystem::remove(dir_ + "/filler");
  absl::Status healed = absl::UnknownError("not tried");
  for (int i = 0; i < 300 && !healed.ok(); ++i) {  // a bound, not a goal
    healed = coord_->Prepare("after", "", {}).status();
    if (!healed.ok())
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(healed.ok()) << healed;
  EXPECT_FALSE(ledger_->degraded());
  EXPECT_TRUE(coord_->Stat("after").ok());
  EXPECT_EQ(coord_->Stat("during").status().code(),
            absl::StatusCode::kNotFound);

  // Intents the full disk left half-done were resolved in-process: the
  // ledger and the backend agree again.
  std::set<uint64_t> recorded;
  ASSERT_TRUE(ledger_
                  ->ForEach([&](const Record& r) {
                    EXPECT_TRUE(IsVisible(r)) << r.ShortDebugString();
                    recorded.insert(r.backend_id());
                    return true;
                  })
                  .ok());
  std::set<uint64_t> stored;
  for (const auto& [id, o] : backend_.objects()) stored.insert(id);
  EXPECT_EQ(recorded, stored);

  // Everything acknowledged is durable across a reopen.
  coord_.reset();
  ledger_.reset();
  Ledger::Options options;
  options.path = dir_ + "/ledger";
  auto reopened = Ledger::Open(options);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE((*reopened)->Get("before").ok());
  EXPECT_TRUE((*reopened)->Get("after").ok());
  // No intent was left behind by the refused calls.
  ASSERT_TRUE((*reopened)
                  ->ForEach([](const Record& r) {
                    EXPECT_TRUE(IsVisible(r)) << r.key();
                    return true;
                  })
                  .ok());
}

}  // namespace
}  // namespace snapledger
