// The admin API's LiveRepairs (plugin/admin/admin_service.h), done by the
// running daemon's coordinator. Lives here, where both are known, so that
// the admin library (and the CLI that links it) needs no coordinator.
//
// Thread-safety: as the coordinator's.
#pragma once

#include <cstdint>
#include <string>

#include "plugin/admin/admin_service.h"
#include "plugin/core/coordinator.h"

namespace snapledger {

class CoordinatorRepairs final : public LiveRepairs {
 public:
  // Not owned; must outlive this object.
  explicit CoordinatorRepairs(Coordinator* coordinator)
      : coordinator_(coordinator) {}

  [[nodiscard]] absl::Status RetryRemoval(uint64_t backend_id) override {
    return coordinator_->removal_queue().Retry(backend_id);
  }
  [[nodiscard]] absl::StatusOr<bool> AdoptObject(uint64_t id) override {
    return coordinator_->AdoptObject(id);
  }
  [[nodiscard]] absl::StatusOr<bool> MarkMissing(const std::string& key,
                                                 uint64_t seq) override {
    return coordinator_->MarkMissing(key, seq);
  }

 private:
  Coordinator* const coordinator_;
};

}  // namespace snapledger
