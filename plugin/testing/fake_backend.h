// An in-memory Backend for unit tests: objects are entries in a map, and any
// operation can be made to fail on demand. Not for production use.
//
// Thread-safety: thread-safe.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "plugin/backend/backend.h"

namespace snapledger::testing {

class FakeBackend : public Backend {
 public:
  struct Object {
    uint64_t parent_id = 0;
    SnapshotKind kind = SnapshotKind::kActive;
    int64_t size = 0;
  };

  std::string_view Name() const override { return "fake"; }

  [[nodiscard]] absl::Status Create(uint64_t id, uint64_t parent_id,
                                    SnapshotKind kind) override {
    std::function<void()> during;
    {
      absl::MutexLock l(&mu_);
      during = during_create_;
    }
    if (during) during();  // lets a test hold a Create in flight
    absl::MutexLock l(&mu_);
    ++creates_;
    if (!fail_create_.ok()) return fail_create_;
    if (objects_.contains(id)) return absl::AlreadyExistsError("exists");
    if (parent_id != 0 && !objects_.contains(parent_id)) {
      return absl::NotFoundError("parent object not found");
    }
    objects_[id] = {parent_id, kind, 4096};
    return absl::OkStatus();
  }
  [[nodiscard]] absl::StatusOr<Usage> Commit(uint64_t id) override {
    absl::MutexLock l(&mu_);
    if (!fail_commit_.ok()) return fail_commit_;
    auto it = objects_.find(id);
    if (it == objects_.end()) return absl::NotFoundError("no object");
    it->second.kind = SnapshotKind::kCommitted;
    return Usage{it->second.size, 1};
  }
  [[nodiscard]] absl::Status Remove(uint64_t id) override {
    absl::MutexLock l(&mu_);
    ++removes_;
    if (!fail_remove_.ok()) return fail_remove_;
    if (auto it = fail_remove_of_.find(id); it != fail_remove_of_.end()) {
      return it->second;
    }
    if (objects_.contains(id)) removed_order_.push_back(id);
    if (objects_.erase(id) == 0) {
      return absl::NotFoundError(absl::StrCat("object ", id, " not found"));
    }
    return absl::OkStatus();
  }
  [[nodiscard]] absl::StatusOr<std::vector<Mount>> Mounts(
      uint64_t id, uint64_t parent_id, SnapshotKind kind) override {
    const bool ro = kind == SnapshotKind::kView;
    const uint64_t src = (ro && parent_id != 0) ? parent_id : id;
    return std::vector<Mount>{
        {"bind", absl::StrCat("/fake/", src), {"rbind", ro ? "ro" : "rw"}}};
  }
  [[nodiscard]] absl::StatusOr<Usage> DiskUsage(uint64_t id) override {
    absl::MutexLock l(&mu_);
    auto it = objects_.find(id);
    if (it == objects_.end()) return absl::NotFoundError("no object");
    return Usage{it->second.size, 1};
  }
  [[nodiscard]] absl::StatusOr<bool> Exists(uint64_t id) override {
    absl::MutexLock l(&mu_);
    if (!fail_exists_.ok()) return fail_exists_;
    return objects_.contains(id);
  }
  [[nodiscard]] absl::StatusOr<bool> IsCommitted(uint64_t id) override {
    absl::MutexLock l(&mu_);
    if (!fail_exists_.ok()) return fail_exists_;
    auto it = objects_.find(id);
    return it != objects_.end() && it->second.kind == SnapshotKind::kCommitted;
  }
  [[nodiscard]] absl::StatusOr<std::vector<BackendObject>> List() override {
    std::vector<BackendObject> out;
    std::function<void()> after;
    {
      absl::MutexLock l(&mu_);
      for (const auto& [id, o] : objects_) out.push_back({id, o.parent_id});
      after = after_list_;
    }
    if (after) after();  // lets a test change the world mid-reconciliation
    return out;
  }
  [[nodiscard]] absl::Status Cleanup() override {
    absl::MutexLock l(&mu_);
    ++cleanups_;
    return absl::OkStatus();
  }

  // Test controls.
  void DuringCreate(std::function<void()> fn) {
    absl::MutexLock l(&mu_);
    during_create_ = std::move(fn);
  }
  void AfterList(std::function<void()> fn) {
    absl::MutexLock l(&mu_);
    after_list_ = std::move(fn);
  }
  void FailCreate(absl::Status s) {
    absl::MutexLock l(&mu_);
    fail_create_ = std::move(s);
  }
  void FailCommit(absl::Status s) {
    absl::MutexLock l(&mu_);
    fail_commit_ = std::move(s);
  }
  void FailExists(absl::Status s) {
    absl::MutexLock l(&mu_);
    fail_exists_ = std::move(s);
  }
  void FailRemove(absl::Status s) {
    absl::MutexLock l(&mu_);
    fail_remove_ = std::move(s);
  }
  // Remove(id) fails with `s` (OK: succeeds again), e.g. a busy object.
  void FailRemoveOf(uint64_t id, absl::Status s) {
    absl::MutexLock l(&mu_);
    if (s.ok()) {
      fail_remove_of_.erase(id);
    } else {
      fail_remove_of_[id] = std::move(s);
    }
  }
  // Ids removed so far, in removal order.
  std::vector<uint64_t> removed_order() {
    absl::MutexLock l(&mu_);
    return removed_order_;
  }
  void Put(uint64_t id, Object o) {
    absl::MutexLock l(&mu_);
    objects_[id] = o;
  }
  void Erase(uint64_t id) {
    absl::MutexLock l(&mu_);
    objects_.erase(id);
  }
  std::map<uint64_t, Object> objects() {
    absl::MutexLock l(&mu_);
    return objects_;
  }
  void SetSize(uint64_t id, int64_t size) {
    absl::MutexLock l(&mu_);
    objects_[id].size = size;
  }
  int creates() {
    absl::MutexLock l(&mu_);
    return creates_;
  }
  int removes() {
    absl::MutexLock l(&mu_);
    return removes_;
  }
  int cleanups() {
    absl::MutexLock l(&mu_);
    return cleanups_;
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, Object> objects_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_create_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_commit_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_remove_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_exists_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, absl::Status> fail_remove_of_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> removed_order_ ABSL_GUARDED_BY(mu_);
  int creates_ ABSL_GUARDED_BY(mu_) = 0;
  int removes_ ABSL_GUARDED_BY(mu_) = 0;
  int cleanups_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void()> after_list_ ABSL_GUARDED_BY(mu_);
  std::function<void()> during_create_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger::testing
