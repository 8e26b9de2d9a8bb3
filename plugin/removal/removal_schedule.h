// When each pending removal is next due, and how long to wait after a failure.
//
// A removal that cannot be done now is kept in the ledger as a remove-pending
// record; the ledger is the durable truth. RemovalSchedule is only the
// in-memory index over those records: which backend object id to retry next,
// and when. It is rebuilt from the ledger at start-up, so nothing here needs
// to survive a crash.
//
// RetryPolicy and RetryDelay decide the due times: exponential backoff from
// initial_backoff, capped at max_backoff, with jitter that only ever shortens
// a delay, so removals that failed together do not retry together.
//
// Memory: one node per scheduled id, freed when the id is taken or
// unscheduled.
//
// Thread-safety: RetryDelay and ValidateRetryPolicy are thread-safe.
// RemovalSchedule is not: its owner (the coordinator's removal queue) guards
// it with its own mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "boost/intrusive/set.hpp"

namespace snapledger {

struct RetryPolicy {
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Minutes(5);
  // Each delay is scaled by a factor drawn from [1 - jitter, 1], so that
  // retries of removals that failed together spread out, and no delay exceeds
  // max_backoff.
  double jitter = 0.2;
  // Failed attempts after which a removal is `stuck`: kept, reported, retried
  // only on demand.
  int max_attempts = 10;
};

// OK, or InvalidArgument naming the offending field unless:
// initial_backoff > 0, max_backoff >= initial_backoff, 0 <= jitter < 1,
// max_attempts >= 1.
[[nodiscard]] absl::Status ValidateRetryPolicy(const RetryPolicy& policy);

// The delay after `failed_attempts` (>= 1) consecutive failures:
//   min(max_backoff, initial_backoff * 2^(failed_attempts - 1))
//     * (1 - jitter * u)
// for u in [0, 1). Never overflows, however large failed_attempts is; the
// result always lies in [base * (1 - jitter), base] where base is the capped
// backoff. Requires a policy that ValidateRetryPolicy accepts; a
// failed_attempts below 1 is treated as 1 and u is clamped to [0, 1].
absl::Duration RetryDelay(const RetryPolicy& policy, int failed_attempts,
                          double u);

// Same, with u drawn from a thread-local random source. Thread-safe.
absl::Duration RetryDelay(const RetryPolicy& policy, int failed_attempts);

// Due times of pending removals, by backend object id, earliest first.
//
// Each scheduled id has one Node, owned by `nodes_` (a hash map keyed by id,
// holding unique_ptrs so a node never moves) and linked into `by_due_`, a
// Boost.Intrusive set ordered by (due, id) that does not own it. A node is
// always unlinked from `by_due_` before `nodes_` frees it.
//
// Thread-safety: not thread-safe; see the file comment.
class RemovalSchedule {
 public:
  RemovalSchedule();
  ~RemovalSchedule();
  RemovalSchedule(const RemovalSchedule&) = delete;
  RemovalSchedule& operator=(const RemovalSchedule&) = delete;

  // Schedules `id` at `due`: inserts it, or moves an existing entry to `due`
  // (earlier or later).
  void Schedule(uint64_t id, absl::Time due);

  // Removes `id`; false if it was not scheduled.
  bool Unschedule(uint64_t id);

  bool Contains(uint64_t id) const;

  // The due time of `id`, or nullopt if it is not scheduled.
  std::optional<absl::Time> DueOf(uint64_t id) const;

  // The earliest due time, or nullopt when empty.
  std::optional<absl::Time> NextDue() const;

  // Removes and returns the ids due at or before `now`, earliest first (ties
  // by id), at most `max` of them. Later entries stay scheduled.
  std::vector<uint64_t> TakeDue(absl::Time now, size_t max = SIZE_MAX);

  size_t size() const;
  bool empty() const;

 private:
  struct Node : boost::intrusive::set_base_hook<> {
    Node(uint64_t node_id, absl::Time due_at) : id(node_id), due(due_at) {}
    const uint64_t id;
    absl::Time due;
  };
  struct ByDueThenId {
    bool operator()(const Node& a, const Node& b) const {
      if (a.due != b.due) return a.due < b.due;
      return a.id < b.id;
    }
  };
  using DueSet =
      boost::intrusive::set<Node, boost::intrusive::compare<ByDueThenId>>;

  // Owns every node. Declared before `by_due_` so it is destroyed after it.
  absl::flat_hash_map<uint64_t, std::unique_ptr<Node>> nodes_;
  // Links the nodes of `nodes_` in due order; owns none of them.
  DueSet by_due_;
};

}  // namespace snapledger
