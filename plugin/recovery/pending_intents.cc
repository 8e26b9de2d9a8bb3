#include "plugin/recovery/pending_intents.h"

namespace snapledger {

void PendingIntents::Note(const std::string& key) {
  {
    absl::MutexLock lock(&mu_);
    keys_.insert(key);
    any_.store(true, std::memory_order_release);
  }
  absl::MutexLock lock(&note_mu_);
  if (on_note_) on_note_();
}

void PendingIntents::SetOnNote(std::function<void()> fn) {
  absl::MutexLock lock(&note_mu_);
  on_note_ = std::move(fn);
}

void PendingIntents::Resolved(const std::string& key) {
  absl::MutexLock lock(&mu_);
  keys_.erase(key);
  any_.store(!keys_.empty(), std::memory_order_release);
}

std::set<std::string> PendingIntents::Keys() const {
  absl::MutexLock lock(&mu_);
  return keys_;
}

}  // namespace snapledger
