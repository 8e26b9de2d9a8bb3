#include "plugin/key_locks.h"

#include <algorithm>

namespace snapledger {

KeyLocks::Guard::Guard(Guard&& other) noexcept
    : locks_(other.locks_), keys_(std::move(other.keys_)) {
  other.locks_ = nullptr;
}

KeyLocks::Guard::~Guard() {
  if (locks_ != nullptr) locks_->Release(keys_);
}

KeyLocks::Guard KeyLocks::Lock(std::vector<std::string> keys) {
  std::erase(keys, std::string());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  absl::MutexLock lock(&mu_);
  for (const std::string& key : keys) {
    Entry& entry = entries_[key];
    if (entry.held) {
      ++entry.waiters;
      // Entries may move when the map rehashes: find the key again each time.
      // The entry cannot vanish while it has waiters.
      struct Waiting {
        KeyLocks* self;
        const std::string* key;
      } waiting{this, &key};
      mu_.Await(absl::Condition(
          +[](Waiting* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return !w->self->entries_.find(*w->key)->second.held;
          },
          &waiting));
      --entries_[key].waiters;
    }
    entries_[key].held = true;
  }
  return Guard(this, std::move(keys));
}

void KeyLocks::Release(const std::vector<std::string>& keys) {
  absl::MutexLock lock(&mu_);
  for (const std::string& key : keys) {
    auto it = entries_.find(key);
    if (it == entries_.end()) continue;
    it->second.held = false;
    if (it->second.waiters == 0) entries_.erase(it);
  }
}

size_t KeyLocks::ActiveKeys() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace snapledger
