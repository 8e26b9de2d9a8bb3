// ThreadSanitizer builds only (SNAPLEDGER_TSAN): tells TSan what Debian's
// absl::Mutex does.
//
// Debian's libabsl_synchronization is not built with -fsanitize=thread, so
// its lock operations (atomics and futexes inside an uninstrumented library)
// create no happens-before edges TSan can see, and every member guarded by
// an absl::Mutex would be reported as racy. These definitions interpose the
// library's own (an executable's symbols come first) and bracket each real
// call with __tsan_acquire/__tsan_release on the mutex's address:
// acquire after every lock, release before every unlock, both around every
// wait (which unlocks and locks again inside). That gives the edges a lock
// gives; it does not give TSan's deadlock detector the lock order.
//
// Linked into test binaries only (snapledger_test in the top-level
// CMakeLists.txt), never into the daemon.

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace {

// The library's definition of `symbol` (the next one after ours).
template <typename Fn>
Fn Real(const char* symbol) {
  void* f = ::dlsym(RTLD_NEXT, symbol);
  if (f == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: %s not found: %s\n", symbol,
                 ::dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(f);
}

void Acquired(const void* mu) { __tsan_acquire(const_cast<void*>(mu)); }
void Releasing(const void* mu) { __tsan_release(const_cast<void*>(mu)); }

// absl evaluates a Condition inside the library while it holds the mutex:
// in the waiter's thread once it has the lock again (before the wrapper's
// Acquired after the call), and in an unlocking thread deciding whom to
// wake. Each evaluation of a wrapped condition is bracketed like a critical
// section (acquire, evaluate, release), so its reads are ordered after the
// writes made under the mutex before it and before those made after it, as
// they are.
struct GuardedCondition {
  const absl::Condition* cond;
  const void* mu;
  static bool Eval(GuardedCondition* g) {
    Acquired(g->mu);
    const bool met = g->cond->Eval();
    Releasing(g->mu);
    return met;
  }
};

using MutexFn = void (*)(absl::Mutex*);
using TryFn = bool (*)(absl::Mutex*);
using CondFn = void (*)(absl::Mutex*, const absl::Condition&);
using CondTimeoutFn = bool (*)(absl::Mutex*, const absl::Condition&,
                               absl::Duration);
using CondDeadlineFn = bool (*)(absl::Mutex*, const absl::Condition&,
                                absl::Time);
using WaitFn = void (*)(absl::CondVar*, absl::Mutex*);
using WaitTimeoutFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Duration);
using WaitDeadlineFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Time);

// The Itanium-mangled names of the library's members (Debian's inline
// namespace is absl::debian3; a new Abseil fails loudly in Real()).
#define SNAPLEDGER_ABSL_SYM(name) "_ZN4absl7debian3" name

// absl's own deadlock detector keeps a graph of lock ids behind a spin lock
// inside the uninstrumented library, which TSan would report as racing
// memmoves; TSan has a deadlock detector of its own. Off in these binaries.
const bool kNoAbslDeadlockGraph = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const auto real = Real<MutexFn>(SNAPLEDGER_ABSL_SYM("5Mutex4LockEv"));
  real(this);
  Acquired(this);
}

void Mutex::ReaderLock() {
  static const auto real =
      Real<MutexFn>(SNAPLEDGER_ABSL_SYM("5Mutex10ReaderLockEv"));
  real(this);
  Acquired(this);
}

bool Mutex::TryLock() {
  static const auto real = Real<TryFn>(SNAPLEDGER_ABSL_SYM("5Mutex7TryLockEv"));
  const bool locked = real(this);
  if (locked) Acquired(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  static const auto real =
      Real<TryFn>(SNAPLEDGER_ABSL_SYM("5Mutex13ReaderTryLockEv"));
  const bool locked = real(this);
  if (locked) Acquired(this);
  return locked;
}

void Mutex::Unlock() {
  static const auto real =
      Real<MutexFn>(SNAPLEDGER_ABSL_SYM("5Mutex6UnlockEv"));
  Releasing(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  static const auto real =
      Real<MutexFn>(SNAPLEDGER_ABSL_SYM("5Mutex12ReaderUnlockEv"));
  Releasing(this);
  real(this);
}

void Mutex::Await(const Condition& cond) {
  static const auto real =
      Real<CondFn>(SNAPLEDGER_ABSL_SYM("5Mutex5AwaitERKNS0_9ConditionE"));
  Releasing(this);
  GuardedCondition guarded{&cond, this};
  real(this, absl::Condition(&GuardedCondition::Eval, &guarded));
  Acquired(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Real<CondTimeoutFn>(SNAPLEDGER_ABSL_SYM(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE"));
  Releasing(this);
  GuardedCondition guarded{&cond, this};
  const bool met =
      real(this, absl::Condition(&GuardedCondition::Eval, &guarded), timeout);
  Acquired(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Real<CondDeadlineFn>(SNAPLEDGER_ABSL_SYM(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE"));
  Releasing(this);
  GuardedCondition guarded{&cond, this};
  const bool met =
      real(this, absl::Condition(&GuardedCondition::Eval, &guarded), deadline);
  Acquired(this);
  return met;
}

void Mutex::LockWhen(const Condition& cond) {
  static const auto real =
      Real<CondFn>(SNAPLEDGER_ABSL_SYM("5Mutex8LockWhenERKNS0_9ConditionE"));
  GuardedCondition guarded{&cond, this};
  real(this, absl::Condition(&GuardedCondition::Eval, &guarded));
  Acquired(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Real<CondTimeoutFn>(SNAPLEDGER_ABSL_SYM(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE"));
  GuardedCondition guarded{&cond, this};
  const bool met =
      real(this, absl::Condition(&GuardedCondition::Eval, &guarded), timeout);
  Acquired(this);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Real<CondDeadlineFn>(SNAPLEDGER_ABSL_SYM(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE"));
  GuardedCondition guarded{&cond, this};
  const bool met =
      real(this, absl::Condition(&GuardedCondition::Eval, &guarded), deadline);
  Acquired(this);
  return met;
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static const auto real = Real<CondFn>(
      SNAPLEDGER_ABSL_SYM("5Mutex14ReaderLockWhenERKNS0_9ConditionE"));
  GuardedCondition guarded{&cond, this};
  real(this, absl::Condition(&GuardedCondition::Eval, &guarded));
  Acquired(this);
}

void CondVar::Wait(Mutex* mu) {
  static const auto real =
      Real<WaitFn>(SNAPLEDGER_ABSL_SYM("7CondVar4WaitEPNS0_5MutexE"));
  Releasing(mu);
  real(this, mu);
  Acquired(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static const auto real = Real<WaitTimeoutFn>(SNAPLEDGER_ABSL_SYM(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE"));
  Releasing(mu);
  const bool timed_out = real(this, mu, timeout);
  Acquired(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static const auto real = Real<WaitDeadlineFn>(
      SNAPLEDGER_ABSL_SYM("7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE"));
  Releasing(mu);
  const bool timed_out = real(this, mu, deadline);
  Acquired(mu);
  return timed_out;
}

ABSL_NAMESPACE_END
}  // namespace absl
