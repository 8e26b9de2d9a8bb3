#include "plugin/backend/faulty/faulty_backend.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace snapledger {
namespace {

using Op = FaultyBackend::Op;

// splitmix64's finaliser: a well-mixed 64-bit hash.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A uniform draw in [0, 1) from (seed, op, id, n, salt).
double Draw(uint64_t seed, Op op, uint64_t id, uint64_t n, uint64_t salt) {
  uint64_t h = Mix(seed);
  h = Mix(h ^ static_cast<uint64_t>(op));
  h = Mix(h ^ id);
  h = Mix(h ^ n);
  h = Mix(h ^ salt);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

double Clamp(double p) { return std::clamp(p, 0.0, 1.0); }

bool IsMutation(Op op) {
  return op == Op::kCreate || op == Op::kCommit || op == Op::kRemove ||
         op == Op::kCleanup;
}

}  // namespace

FaultyBackend::FaultyBackend(std::shared_ptr<Backend> inner,
                             FaultyBackendOptions options)
    : ForwardingBackend(std::move(inner)), options_(options) {}

FaultyBackend::~FaultyBackend() = default;

std::pair<Fault, bool> FaultyBackend::Decide(
    const FaultyBackendOptions& options, Op op, uint64_t id, uint64_t n) {
  const double u = Draw(options.seed, op, id, n, 0);
  const bool after = IsMutation(op) && Draw(options.seed, op, id, n, 1) <
                                           Clamp(options.after_inner);
  // Consecutive slices of [0, 1), one per fault that applies to `op`.
  double edge = 0;
  edge += Clamp(options.eio);
  if (u < edge) return {Fault::kEio, after};
  if (op == Op::kCreate || op == Op::kCommit) {
    edge += Clamp(options.enospc);
    if (u < edge) return {Fault::kEnospc, after};
  }
  if (op == Op::kRemove) {
    edge += Clamp(options.ebusy);
    if (u < edge) return {Fault::kEbusy, false};
  }
  edge += Clamp(options.hang);
  if (u < edge) return {Fault::kHang, false};
  edge += Clamp(options.slow);
  if (u < edge) return {Fault::kSlow, false};
  return {Fault::kNone, false};
}

std::pair<Fault, bool> FaultyBackend::Next(Op op, uint64_t id) {
  if (!enabled_.load(std::memory_order_acquire)) return {Fault::kNone, false};
  absl::MutexLock l(&mu_);
  const uint64_t n = calls_[{op, id}]++;
  std::pair<Fault, bool> fault = Decide(options_, op, id, n);
  ++stats_.calls;
  switch (fault.first) {
    case Fault::kNone:
      break;
    case Fault::kEio:
      ++stats_.eio;
      break;
    case Fault::kEnospc:
      ++stats_.enospc;
      break;
    case Fault::kEbusy:
      ++stats_.ebusy;
      break;
    case Fault::kHang:
      ++stats_.hang;
      break;
    case Fault::kSlow:
      ++stats_.slow;
      break;
  }
  return fault;
}

void FaultyBackend::Delay(Fault fault) {
  if (fault == Fault::kSlow) {
    absl::SleepFor(options_.slow_delay);
    return;
  }
  if (fault != Fault::kHang) return;
  const absl::Time deadline = absl::Now() + options_.hang_limit;
  absl::MutexLock l(&mu_);
  const uint64_t gen = release_gen_;
  ++hung_;
  auto released = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return release_gen_ != gen || !enabled_.load(std::memory_order_acquire);
  };
  mu_.AwaitWithDeadline(absl::Condition(&released), deadline);
  --hung_;
}

absl::Status FaultyBackend::Failure(Fault fault, const BackendCall& call) {
  const std::string what =
      absl::StrCat("injected fault: ", DescribeBackendCall(call));
  switch (fault) {
    case Fault::kEio:
      return absl::ErrnoToStatus(EIO, what);
    case Fault::kEnospc:
      return absl::ErrnoToStatus(ENOSPC, what);
    case Fault::kEbusy:
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot object ", call.id, " is in use: ", what, ": ",
                       ::strerror(EBUSY), " (busy)"));
    default:
      return absl::OkStatus();
  }
}

template <typename T, typename Fn>
T FaultyBackend::Run(const BackendCall& call, Fn fn) {
  const Op drawn = call.op == Op::kIsCommitted ? Op::kExists : call.op;
  const auto [fault, after] = Next(drawn, call.id);
  Delay(fault);
  const absl::Status failure = Failure(fault, call);
  if (failure.ok()) return fn(*inner());
  if (!after) return failure;
  T result = fn(*inner());
  if (!result.ok()) return result;  // the inner call failed by itself
  {
    absl::MutexLock l(&mu_);
    ++stats_.after_inner;
  }
  return failure;
}

template class ForwardingBackend<FaultyBackend>;

void FaultyBackend::SetEnabled(bool enabled) {
  enabled_.store(enabled, std::memory_order_release);
  if (!enabled) ReleaseHangs();
}

void FaultyBackend::ReleaseHangs() {
  absl::MutexLock l(&mu_);
  ++release_gen_;
}

int FaultyBackend::hung() const {
  absl::MutexLock l(&mu_);
  return hung_;
}

FaultStats FaultyBackend::stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

}  // namespace snapledger
