// Intents left unresolved while serving: an operation whose backend call
// timed out, or whose completion (or roll-back) the ledger refused. Each key
// is resolved exactly as start-up recovery would (ResolveIntent), by the
// first mutation after the cause goes away, or by the removal queue's worker
// on a quiet host — no restart needed. This set only remembers which keys to
// look at; the ledger holds the intents themselves, so a crash loses
// nothing (recovery then resolves them).
//
// Thread-safety: fully thread-safe. Any() is a lock-free read, cheap enough
// for every mutation to call.
#pragma once

#include <atomic>
#include <functional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace snapledger {

class PendingIntents {
 public:
  // Remembers that the intent at `key` is unresolved.
  void Note(const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets `key` (its intent is resolved).
  void Resolved(const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether any key is remembered.
  bool Any() const { return any_.load(std::memory_order_acquire); }
  // The keys remembered now.
  std::set<std::string> Keys() const ABSL_LOCKS_EXCLUDED(mu_);
  // Calls `fn` after each Note (outside the lock): how whoever resolves them
  // learns there is work, also when it sleeps with nothing else to do.
  // nullptr stops the calls; once SetOnNote(nullptr) returns, no call of an
  // earlier `fn` is running or will run.
  void SetOnNote(std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_, note_mu_);

 private:
  mutable absl::Mutex mu_;
  std::set<std::string> keys_ ABSL_GUARDED_BY(mu_);
  // Held while on_note_ runs, so that SetOnNote waits for a running call.
  absl::Mutex note_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::function<void()> on_note_ ABSL_GUARDED_BY(note_mu_);
  std::atomic<bool> any_{false};
};

}  // namespace snapledger
