#include "plugin/backend/timed/timed_backend.h"

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace timed_backend_internal {

// Bookkeeping of abandoned calls, shared by the TimedBackend and every call
// thread.
struct SharedState {
  struct Abandoned {
    BackendCall info;
    absl::Time started;
  };

  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return abandoned.empty();
  }

  mutable absl::Mutex mu;
  uint64_t next_seq ABSL_GUARDED_BY(mu) = 1;
  // Keyed by a sequence number; an entry goes when its call returns.
  std::map<uint64_t, Abandoned> abandoned ABSL_GUARDED_BY(mu);
};

// The persistent threads that run bounded calls, shared by the TimedBackend
// and every worker thread (a worker may outlive the TimedBackend while it
// runs an abandoned call).
//
// A worker is busy (running one call) or idle (parked on its own condition
// variable, listed in `idle`). A call is handed to the most recently idled
// worker, or to a new worker when none is idle. A worker that finishes its
// call goes back to `idle`, unless `closed` (the TimedBackend is gone) or
// max_idle workers are idle already: then its thread ends. So at most
// max_idle threads are idle, and no more are busy than calls run.
struct WorkerPool {
  explicit WorkerPool(size_t idle_limit)
      : max_idle(std::max<size_t>(idle_limit, 1)) {}
  const size_t max_idle;

  using Task = absl::AnyInvocable<void() &&>;

  // One worker's mailbox; lives on its thread's stack, and is listed in
  // `idle` only while the thread waits on `cv` (so the pointer stays valid).
  struct Worker {
    absl::CondVar cv;
    // Guarded by WorkerPool::mu: set by whoever takes this worker off `idle`.
    Task task;
  };

  // Runs `task` on an idle worker, or on a new thread if none is idle.
  // Throws std::system_error (and drops `task`) if a thread cannot start.
  static void Run(const std::shared_ptr<WorkerPool>& pool, Task task) {
    {
      absl::MutexLock l(&pool->mu);
      if (!pool->idle.empty()) {
        Worker* w = pool->idle.back();
        pool->idle.pop_back();
        w->task = std::move(task);
        w->cv.Signal();
        return;
      }
    }
    // Started outside the lock: a thread start is slow.
    std::thread(&WorkerPool::Main, pool, std::move(task)).detach();
  }

  // Ends the idle workers' threads, and busy workers' threads once their
  // calls finish. No task is handed over after this.
  void Close() {
    absl::MutexLock l(&mu);
    closed = true;
    for (Worker* w : idle) w->cv.Signal();
    idle.clear();
  }

 private:
  // A worker thread: runs `task`, then whatever it is handed while idle.
  static void Main(std::shared_ptr<WorkerPool> pool, Task task) {
    Worker self;
    while (true) {
      std::move(task)();
      task = nullptr;  // what the call held goes before the worker idles
      absl::MutexLock l(&pool->mu);
      if (pool->closed || pool->idle.size() >= pool->max_idle) return;
      pool->idle.push_back(&self);
      // Whoever takes `self` off `idle` (a caller handing it a task, or
      // Close()) does so under `mu` before signalling.
      while (self.task == nullptr && !pool->closed) self.cv.Wait(&pool->mu);
      // A task handed over before Close() still runs; `self` is off `idle`
      // in either case.
      if (self.task == nullptr) return;
      task = std::move(self.task);
      self.task = nullptr;
    }
  }

 public:
  absl::Mutex mu;
  bool closed ABSL_GUARDED_BY(mu) = false;
  // Idle workers, the most recently idled last (taken first: its stack and
  // caches are warm).
  std::vector<Worker*> idle ABSL_GUARDED_BY(mu);
};

}  // namespace timed_backend_internal

namespace {

using Op = BackendOp;
using timed_backend_internal::SharedState;
using timed_backend_internal::WorkerPool;

// One call's rendezvous between the caller and the worker running the call.
template <typename T>
struct PendingCall {
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  // Set by the caller when it stops waiting; then `seq` names the call's
  // entry in SharedState::abandoned and `result` stays empty.
  bool abandoned ABSL_GUARDED_BY(mu) = false;
  uint64_t seq ABSL_GUARDED_BY(mu) = 0;
  std::optional<T> result ABSL_GUARDED_BY(mu);
};

bool IsCreateOrRemove(Op op) { return op == Op::kCreate || op == Op::kRemove; }

// Durations for people: whole seconds beyond a second, else milliseconds.
std::string Human(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(
      d, d >= absl::Seconds(1) ? absl::Seconds(1) : absl::Milliseconds(1)));
}

// Why `next` may not start while the abandoned `busy` runs; nullopt if it
// may. Mirrors backend.h's rules for concurrent calls.
std::optional<std::string> Conflict(const BackendCall& next,
                                    const BackendCall& busy) {
  if (next.op == Op::kList || busy.op == Op::kList) return std::nullopt;
  if (next.op == Op::kCleanup) {
    if (!IsCreateOrRemove(busy.op) && busy.op != Op::kCleanup) {
      return std::nullopt;
    }
    return absl::StrCat("cleanup must wait: ", DescribeBackendCall(busy),
                        " outlived its time limit and is still running");
  }
  if (busy.op == Op::kCleanup) {
    if (!IsCreateOrRemove(next.op)) return std::nullopt;
    return absl::StrCat(DescribeBackendCall(next),
                        " must wait: a cleanup outlived its time limit and is "
                        "still running");
  }
  if (next.id == busy.id) {
    return absl::StrCat("object ", next.id, " is still busy with ",
                        BackendOpNoun(busy.op),
                        " that outlived its time limit");
  }
  if (next.op == Op::kRemove && busy.op == Op::kCreate && busy.parent_id != 0 &&
      busy.parent_id == next.id) {
    return absl::StrCat("object ", next.id, " is still busy with a create of ",
                        "object ", busy.id,
                        " on it that outlived its time limit");
  }
  if (next.op == Op::kCreate && busy.op == Op::kRemove && next.parent_id != 0 &&
      next.parent_id == busy.id) {
    return absl::StrCat("parent object ", busy.id,
                        " is still busy with a remove that outlived its time "
                        "limit");
  }
  return std::nullopt;
}

const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename U>
const absl::Status& StatusOf(const absl::StatusOr<U>& s) {
  return s.status();
}

}  // namespace

TimedBackend::TimedBackend(std::shared_ptr<Backend> inner,
                           TimedBackendOptions options)
    : ForwardingBackend(std::move(inner)),
      on_call_(std::move(options.on_call)),
      timeout_(options.timeout),
      bounded_(options.timeout > absl::ZeroDuration() &&
               options.timeout != absl::InfiniteDuration()),
      name_(this->inner() != nullptr ? std::string(this->inner()->Name())
                                     : std::string()),
      state_(std::make_shared<SharedState>()),
      pool_(std::make_shared<WorkerPool>(options.max_idle_workers)) {
  assert(this->inner() != nullptr);
}

TimedBackend::~TimedBackend() {
  // Idle workers end now; workers running abandoned calls end when their
  // calls do. Neither is joined: they hold the pool and what their call
  // needs themselves.
  pool_->Close();
  if (size_t n = abandoned(); n > 0) {
    spdlog::warn(
        "{} backend: closing with {} call(s) past their time limit still "
        "running; they finish in the background",
        name_, n);
  }
}

template <typename T, typename Fn>
T TimedBackend::Run(const BackendCall& info, Fn fn) {
  bool timed_out = false;
  if (!on_call_) return RunBounded<T>(info, std::move(fn), &timed_out);
  const absl::Time start = absl::Now();
  T result = RunBounded<T>(info, std::move(fn), &timed_out);
  on_call_(BackendCallSample{BackendOpName(info.op), absl::Now() - start,
                             StatusOf(result).code(), timed_out});
  return result;
}

template <typename T, typename Fn>
T TimedBackend::RunBounded(const BackendCall& info, Fn fn, bool* timed_out) {
  if (!bounded_) return fn(*inner());

  const absl::Time started = absl::Now();
  {
    absl::MutexLock l(&state_->mu);
    for (const auto& [seq, busy] : state_->abandoned) {
      if (std::optional<std::string> why = Conflict(info, busy.info)) {
        return MarkStillRunningElsewhere(absl::UnavailableError(
            absl::StrCat(name_, " backend: ", *why, " (started ",
                         Human(started - busy.started), " ago)")));
      }
    }
  }

  auto call = std::make_shared<PendingCall<T>>();
  try {
    // The task holds everything it touches: it may outlive `this`. The
    // worker destroys it once it returned, before it takes another.
    WorkerPool::Run(
        pool_, [call, fn = std::move(fn), inner = inner(), state = state_,
                name = name_, info, started]() mutable {
          T result = fn(*inner);
          uint64_t seq = 0;
          {
            absl::MutexLock l(&call->mu);
            call->done = true;
            if (!call->abandoned) {
              // Let go first, so that a caller holding the result knows this
              // thread holds the backend no more. (Only drops a reference: the
              // waiting caller's TimedBackend holds another.)
              inner.reset();
              call->result.emplace(std::move(result));
              return;
            }
            seq = call->seq;
          }
          // Abandoned: nobody waits for `result` any more.
          // Logged before the entry goes, so that WaitIdle() implies the log.
          spdlog::warn(
              "{} backend: {} finished {} after it started, past its time "
              "limit: {}",
              name, DescribeBackendCall(info), Human(absl::Now() - started),
              StatusOf(result).ToString());
          {
            absl::MutexLock l(&state->mu);
            state->abandoned.erase(seq);
          }
          inner.reset();  // may destroy the backend, if its owners are gone
        });
  } catch (const std::system_error& e) {
    return absl::UnavailableError(
        absl::StrCat(name_, " backend: cannot start a thread for the ",
                     DescribeBackendCall(info), ": ", e.what()));
  }

  absl::MutexLock l(&call->mu);
  if (call->mu.AwaitWithTimeout(absl::Condition(&call->done), timeout_)) {
    return *std::move(call->result);
  }
  // Registered before returning, so the caller's next call already sees it.
  call->abandoned = true;
  {
    absl::MutexLock sl(&state_->mu);
    call->seq = state_->next_seq++;
    state_->abandoned.emplace(call->seq, SharedState::Abandoned{info, started});
  }
  *timed_out = true;
  return absl::DeadlineExceededError(absl::StrCat(
      name_, " backend: ", DescribeBackendCall(info), " did not finish within ",
      absl::FormatDuration(timeout_), "; it continues in the background"));
}

template class ForwardingBackend<TimedBackend>;

bool TimedBackend::WaitIdle(absl::Duration timeout) {
  absl::MutexLock l(&state_->mu);
  return state_->mu.AwaitWithTimeout(
      absl::Condition(state_.get(), &SharedState::Idle), timeout);
}

size_t TimedBackend::abandoned() const {
  absl::MutexLock l(&state_->mu);
  return state_->abandoned.size();
}

std::unique_ptr<TimedBackend> NewTimedBackend(std::shared_ptr<Backend> inner,
                                              TimedBackendOptions options) {
  return std::make_unique<TimedBackend>(std::move(inner), options);
}

}  // namespace snapledger
