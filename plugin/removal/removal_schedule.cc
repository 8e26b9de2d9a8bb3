#include "plugin/removal/removal_schedule.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"

namespace snapledger {

absl::Status ValidateRetryPolicy(const RetryPolicy& policy) {
  if (policy.initial_backoff <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("RetryPolicy.initial_backoff must be positive, got ",
                     absl::FormatDuration(policy.initial_backoff)));
  }
  if (policy.max_backoff < policy.initial_backoff) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RetryPolicy.max_backoff (", absl::FormatDuration(policy.max_backoff),
        ") must not be below initial_backoff (",
        absl::FormatDuration(policy.initial_backoff), ")"));
  }
  // Written so that NaN fails too.
  if (!(policy.jitter >= 0.0 && policy.jitter < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RetryPolicy.jitter must be in [0, 1), got ", policy.jitter));
  }
  if (policy.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("RetryPolicy.max_attempts must be at least 1, got ",
                     policy.max_attempts));
  }
  return absl::OkStatus();
}

absl::Duration RetryDelay(const RetryPolicy& policy, int failed_attempts,
                          double u) {
  // Double until the cap is reached rather than computing 2^(n - 1): the loop
  // ends after log2(max_backoff / initial_backoff) steps, whatever n is. The
  // step bound only matters for a policy ValidateRetryPolicy would reject
  // (initial_backoff <= 0); any positive Duration saturates long before it.
  constexpr int kMaxDoublings = 256;
  absl::Duration base = policy.initial_backoff;
  for (int i = 1;
       i < failed_attempts && i <= kMaxDoublings && base < policy.max_backoff;
       ++i) {
    base *= 2;
  }
  base = std::min(base, policy.max_backoff);
  u = std::isnan(u) ? 0.0 : std::clamp(u, 0.0, 1.0);
  const double floor_factor = 1.0 - policy.jitter;
  // Clamp so floating-point rounding never steps outside the documented range
  // (never above max_backoff). min/max, not std::clamp, which is undefined if
  // an invalid policy makes the bounds cross.
  return std::max(std::min(base * (1.0 - policy.jitter * u), base),
                  base * floor_factor);
}

absl::Duration RetryDelay(const RetryPolicy& policy, int failed_attempts) {
  // absl::BitGen is not thread-safe; one per thread avoids a lock.
  thread_local absl::BitGen gen;
  return RetryDelay(policy, failed_attempts,
                    absl::Uniform(absl::IntervalClosedOpen, gen, 0.0, 1.0));
}

RemovalSchedule::RemovalSchedule() = default;

RemovalSchedule::~RemovalSchedule() {
  // Unlink every node while `nodes_` still owns them.
  by_due_.clear();
}

void RemovalSchedule::Schedule(uint64_t id, absl::Time due) {
  auto it = nodes_.find(id);
  if (it != nodes_.end()) {
    Node& node = *it->second;
    if (node.due == due) return;
    // The key of a linked node must not change: unlink, update, relink.
    by_due_.erase(by_due_.iterator_to(node));
    node.due = due;
    by_due_.insert(node);
    return;
  }
  auto [inserted, added] =
      nodes_.try_emplace(id, std::make_unique<Node>(id, due));
  assert(added);
  (void)added;
  by_due_.insert(*inserted->second);
}

bool RemovalSchedule::Unschedule(uint64_t id) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return false;
  by_due_.erase(by_due_.iterator_to(*it->second));
  nodes_.erase(it);
  return true;
}

bool RemovalSchedule::Contains(uint64_t id) const {
  return nodes_.contains(id);
}

std::optional<absl::Time> RemovalSchedule::DueOf(uint64_t id) const {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return std::nullopt;
  return it->second->due;
}

std::optional<absl::Time> RemovalSchedule::NextDue() const {
  if (by_due_.empty()) return std::nullopt;
  return by_due_.begin()->due;
}

std::vector<uint64_t> RemovalSchedule::TakeDue(absl::Time now, size_t max) {
  std::vector<uint64_t> taken;
  while (taken.size() < max && !by_due_.empty() &&
         by_due_.begin()->due <= now) {
    const uint64_t id = by_due_.begin()->id;
    by_due_.erase(by_due_.begin());
    nodes_.erase(id);
    taken.push_back(id);
  }
  return taken;
}

size_t RemovalSchedule::size() const {
  assert(nodes_.size() == by_due_.size());
  return nodes_.size();
}

bool RemovalSchedule::empty() const { return nodes_.empty(); }

}  // namespace snapledger
