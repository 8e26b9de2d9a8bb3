#include "plugin/worker/worker_thread.h"

#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace snapledger {

WorkerThread::WorkerThread(std::string name) : name_(std::move(name)) {}

WorkerThread::~WorkerThread() { Stop(); }

absl::Status WorkerThread::Start(std::function<void()> body) {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  if (thread_.joinable()) return absl::OkStatus();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = false;
  }
  try {
    thread_ = std::thread(std::move(body));
  } catch (const std::system_error& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot start ", name_, ": ", e.what()));
  }
  return absl::OkStatus();
}

void WorkerThread::Stop() {
  Stop([] {});
}

void WorkerThread::Stop(absl::FunctionRef<void()> before_join) {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (!thread_.joinable()) return;
  before_join();
  thread_.join();
}

bool WorkerThread::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

bool WorkerThread::SleepFor(absl::Duration timeout) {
  return Await(absl::Now() + timeout, nullptr);
}

bool WorkerThread::SleepUntil(absl::Time deadline) {
  return Await(deadline, nullptr);
}

uint64_t WorkerThread::wakes() const {
  absl::MutexLock lock(&mu_);
  return wakes_;
}

void WorkerThread::Wake() {
  absl::MutexLock lock(&mu_);
  ++wakes_;
}

bool WorkerThread::WaitFor(absl::Duration timeout, uint64_t seen) {
  return Await(absl::Now() + timeout, &seen);
}

bool WorkerThread::WaitUntil(absl::Time deadline, uint64_t seen) {
  return Await(deadline, &seen);
}

bool WorkerThread::Await(absl::Time deadline, const uint64_t* seen) {
  absl::MutexLock lock(&mu_);
  const auto woken = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || (seen != nullptr && wakes_ != *seen);
  };
  mu_.AwaitWithDeadline(absl::Condition(&woken), deadline);
  return !stopping_;
}

}  // namespace snapledger
