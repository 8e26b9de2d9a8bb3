// A fixture for tests of a local backend (native, overlayfs, and the contract
// suite run on both): a fresh resolved test directory, the backend opened at
// a root below it, and the questions those tests ask about its snapshots/
// directory. Tests only; failures are reported through GoogleTest.
#pragma once

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "plugin/backend/backend.h"
#include "plugin/backend/fs/fs_tree.h"
#include "plugin/testing/fs_helpers.h"

namespace snapledger::testing {

class BackendTest : public ::testing::Test {
 protected:
  // The backend lives at `root_below_dir` under the test's directory (not
  // there yet: opening the backend makes it).
  explicit BackendTest(std::string root_below_dir)
      : root_below_dir_(std::move(root_below_dir)) {}

  // Opens the backend under test at `root`.
  virtual absl::StatusOr<std::unique_ptr<Backend>> OpenBackend(
      const std::string& root) = 0;

  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/backend_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << strerror(errno);
    char resolved[PATH_MAX];
    ASSERT_NE(::realpath(tmpl.c_str(), resolved), nullptr);
    dir_ = resolved;
    root_ = dir_ + "/" + root_below_dir_;
    snapshots_ = root_ + "/snapshots";
    Open();
  }
  void TearDown() override {
    backend_.reset();
    if (dir_.empty()) return;
    if (!fstree::RemoveTree(dir_).ok()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  // (Re)opens the backend at root_, as a restarted daemon would.
  void Open() {
    backend_.reset();
    absl::StatusOr<std::unique_ptr<Backend>> backend = OpenBackend(root_);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
  }

  std::string Object(uint64_t id) const {
    return absl::StrCat(snapshots_, "/", id);
  }
  std::string Tree(uint64_t id) const { return Object(id) + "/fs"; }

  void Create(uint64_t id, uint64_t parent, SnapshotKind kind) {
    absl::Status s = backend_->Create(id, parent, kind);
    ASSERT_TRUE(s.ok()) << s;
  }
  void Commit(uint64_t id) {
    absl::StatusOr<Usage> usage = backend_->Commit(id);
    ASSERT_TRUE(usage.ok()) << usage.status();
  }
  bool Exists(uint64_t id) {
    absl::StatusOr<bool> exists = backend_->Exists(id);
    EXPECT_TRUE(exists.ok()) << exists.status();
    return exists.ok() && *exists;
  }
  // List() as (id, parent id) pairs.
  std::vector<std::pair<uint64_t, uint64_t>> List() {
    absl::StatusOr<std::vector<BackendObject>> objects = backend_->List();
    EXPECT_TRUE(objects.ok()) << objects.status();
    std::vector<std::pair<uint64_t, uint64_t>> out;
    if (objects.ok()) {
      for (const BackendObject& o : *objects) {
        out.emplace_back(o.id, o.parent_id);
      }
    }
    return out;
  }
  // Entries of snapshots/ that are not objects.
  std::vector<std::string> Temporaries() {
    std::vector<std::string> names;
    for (const std::string& name : Names(snapshots_)) {
      if (name.rfind("new-", 0) == 0 || name.rfind("rm-", 0) == 0) {
        names.push_back(name);
      }
    }
    return names;
  }
  // A new empty directory under the test's directory, e.g. a mount target.
  std::string NewDir(const std::string& name) {
    const std::string path = dir_ + "/" + name;
    EXPECT_EQ(::mkdir(path.c_str(), 0755), 0)
        << path << ": " << strerror(errno);
    return path;
  }

  std::string dir_;        // the test's own directory, resolved
  std::string root_;       // the backend's root
  std::string snapshots_;  // root_/snapshots
  std::unique_ptr<Backend> backend_;

 private:
  const std::string root_below_dir_;
};

}  // namespace snapledger::testing
