// Per-key exclusive locks for the coordinator.
//
// Operations that touch the same snapshot keys (a key, its parent, a commit's
// target name) are serialised; operations on unrelated keys run in parallel.
// A caller locks all the keys it needs at once; they are taken in sorted
// order, so two callers can never deadlock on each other.
//
// Memory: an entry exists only while some caller holds or waits for its key,
// so the table is bounded by the number of operations in flight.
//
// Thread-safety: fully thread-safe. A Guard must be released (destroyed) on
// the thread-agnostic path; it may be moved.
#pragma once

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace snapledger {

class KeyLocks {
 public:
  class Guard {
   public:
    Guard(Guard&& other) noexcept;
    Guard& operator=(Guard&&) = delete;
    Guard(const Guard&) = delete;
    ~Guard();

   private:
    friend class KeyLocks;
    Guard(KeyLocks* locks, std::vector<std::string> keys)
        : locks_(locks), keys_(std::move(keys)) {}
    KeyLocks* locks_;
    std::vector<std::string> keys_;
  };

  // Blocks until every non-empty key in `keys` is held by the caller.
  [[nodiscard]] Guard Lock(std::vector<std::string> keys);

  // Number of keys currently held or waited for (for tests and stats).
  size_t ActiveKeys() const;

 private:
  void Release(const std::vector<std::string>& keys);

  struct Entry {
    bool held = false;
    int waiters = 0;
  };
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger
