// Per-key reader/writer locks for the coordinator.
//
// Operations that touch the same snapshot keys (a key, its parent, a commit's
// target name) exclude each other as their modes say; operations on
// unrelated keys run in parallel. A caller names all the keys it needs at
// once, each in one of two modes:
//   - exclusive: no other caller holds the key in any mode meanwhile;
//   - shared: other callers may hold the key shared too, but none holds it
//     exclusively (e.g. two Prepares on the same parent run together).
// A key named in both modes is taken exclusively. Empty keys are ignored and
// duplicates are harmless.
//
// Writers do not starve: once a caller waits for a key exclusively, callers
// that arrive later for it in shared mode wait behind that writer.
//
// No deadlock: every caller takes its keys in one global (sorted) order and
// never waits for a key while holding a greater one. Proof in a line: a
// caller blocked on key k waits either for holders of k (who wait, if at all,
// only for keys > k) or for writers queued on k (who wait only for holders of
// k), so every chain of waits climbs the key order and cannot close a cycle.
//
// Memory: an entry exists only while some caller holds or waits for its key,
// so the table is bounded by the number of operations in flight.
//
// Thread-safety: fully thread-safe. A Guard releases its keys when destroyed,
// on any thread; it may be moved, not copied. Not reentrant: a caller must
// not lock a key it already holds through another Guard, or it may wait for
// itself forever (even in shared mode: behind a queued writer).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace snapledger {

class KeyLocks {
 public:
  // Holds a set of keys; releases them on destruction.
  class Guard {
   public:
    Guard(Guard&& other) noexcept;
    Guard& operator=(Guard&&) = delete;
    Guard(const Guard&) = delete;
    ~Guard();

   private:
    friend class KeyLocks;
    struct Held {
      std::string key;
      bool exclusive;
    };
    Guard(KeyLocks* locks, std::vector<Held> held)
        : locks_(locks), held_(std::move(held)) {}
    KeyLocks* locks_;
    std::vector<Held> held_;
  };

  // Blocks until the caller holds every non-empty key of `exclusive`
  // exclusively and every other non-empty key of `shared` in shared mode.
  // `Lock({key, parent})` takes both keys exclusively.
  [[nodiscard]] Guard Lock(std::vector<std::string> exclusive,
                           std::vector<std::string> shared = {});

  // Number of keys currently held or waited for (for tests and stats).
  size_t ActiveKeys() const;

  // Number of Lock calls currently blocked on a key (for tests and stats).
  size_t Waiting() const;

 private:
  struct Entry {
    int readers = 0;  // shared holders
    bool writer = false;
    int waiting_readers = 0;
    int waiting_writers = 0;
  };

  // Takes `key` in the given mode, waiting as long as needed.
  void Acquire(const std::string& key, bool exclusive)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Release(const std::vector<Guard::Held>& held);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  size_t waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace snapledger
