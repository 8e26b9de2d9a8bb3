#include "plugin/locks/key_locks.h"

#include <algorithm>
#include <utility>

namespace snapledger {

KeyLocks::Guard::Guard(Guard&& other) noexcept
    : locks_(other.locks_), held_(std::move(other.held_)) {
  other.locks_ = nullptr;
}

KeyLocks::Guard::~Guard() {
  if (locks_ != nullptr) locks_->Release(held_);
}

KeyLocks::Guard KeyLocks::Lock(std::vector<std::string> exclusive,
                               std::vector<std::string> shared) {
  std::vector<Guard::Held> held;
  held.reserve(exclusive.size() + shared.size());
  for (std::string& key : exclusive) {
    if (!key.empty()) held.push_back({std::move(key), true});
  }
  for (std::string& key : shared) {
    if (!key.empty()) held.push_back({std::move(key), false});
  }
  // The global order; for a key named twice the exclusive request sorts
  // first and is the one kept.
  std::sort(held.begin(), held.end(),
            [](const Guard::Held& a, const Guard::Held& b) {
              if (a.key != b.key) return a.key < b.key;
              return a.exclusive && !b.exclusive;
            });
  held.erase(std::unique(held.begin(), held.end(),
                         [](const Guard::Held& a, const Guard::Held& b) {
                           return a.key == b.key;
                         }),
             held.end());
  absl::MutexLock lock(&mu_);
  for (const Guard::Held& h : held) Acquire(h.key, h.exclusive);
  return Guard(this, std::move(held));
}

namespace {

// Whether a caller may take a key in the given mode now. A shared request
// also yields to queued writers, so that they do not starve.
bool Available(int readers, bool writer, int waiting_writers, bool exclusive) {
  if (writer) return false;
  return exclusive ? readers == 0 : waiting_writers == 0;
}

}  // namespace

void KeyLocks::Acquire(const std::string& key, bool exclusive) {
  Entry* entry = &entries_[key];
  if (!Available(entry->readers, entry->writer, entry->waiting_writers,
                 exclusive)) {
    ++(exclusive ? entry->waiting_writers : entry->waiting_readers);
    ++waiting_;
    // Entries move when the map rehashes: find the key again each time. It
    // cannot vanish while it has waiters.
    struct Request {
      KeyLocks* self;
      const std::string* key;
      bool exclusive;
    } request{this, &key, exclusive};
    mu_.Await(absl::Condition(
        +[](Request* r) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          const Entry& e = r->self->entries_.find(*r->key)->second;
          return Available(e.readers, e.writer, e.waiting_writers,
                           r->exclusive);
        },
        &request));
    --waiting_;
    entry = &entries_.find(key)->second;
    --(exclusive ? entry->waiting_writers : entry->waiting_readers);
  }
  if (exclusive) {
    entry->writer = true;
  } else {
    ++entry->readers;
  }
}

void KeyLocks::Release(const std::vector<Guard::Held>& held) {
  absl::MutexLock lock(&mu_);
  for (const Guard::Held& h : held) {
    auto it = entries_.find(h.key);
    if (it == entries_.end()) continue;  // cannot be: held keys have entries
    Entry& entry = it->second;
    if (h.exclusive) {
      entry.writer = false;
    } else {
      --entry.readers;
    }
    if (!entry.writer && entry.readers == 0 && entry.waiting_readers == 0 &&
        entry.waiting_writers == 0) {
      entries_.erase(it);
    }
  }
}

size_t KeyLocks::ActiveKeys() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

size_t KeyLocks::Waiting() const {
  absl::MutexLock lock(&mu_);
  return waiting_;
}

}  // namespace snapledger
