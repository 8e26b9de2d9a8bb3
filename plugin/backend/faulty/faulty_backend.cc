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

const char* OpName(Op op) {
  switch (op) {
    case Op::kCreate:
      return "create";
    case Op::kCommit:
      return "commit";
    case Op::kRemove:
      return "remove";
    case Op::kMounts:
      return "mounts";
    case Op::kDiskUsage:
      return "disk usage";
    case Op::kExists:
      return "exists";
    case Op::kList:
      return "list";
    case Op::kCleanup:
      return "cleanup";
  }
  return "call";
}

}  // namespace

FaultyBackend::FaultyBackend(std::shared_ptr<Backend> inner,
                             FaultyBackendOptions options)
    : inner_(std::move(inner)), options_(options) {}

FaultyBackend::~FaultyBackend() = default;

std::string_view FaultyBackend::Name() const { return inner_->Name(); }

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

absl::Status FaultyBackend::Failure(Fault fault, Op op, uint64_t id) {
  const std::string what =
      absl::StrCat("injected fault: ", OpName(op), " of object ", id);
  switch (fault) {
    case Fault::kEio:
      return absl::ErrnoToStatus(EIO, what);
    case Fault::kEnospc:
      return absl::ErrnoToStatus(ENOSPC, what);
    case Fault::kEbusy:
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot object ", id, " is in use: ", what, ": ",
                       ::strerror(EBUSY), " (busy)"));
    default:
      return absl::OkStatus();
  }
}

template <typename T, typename Fn>
T FaultyBackend::Run(Op op, uint64_t id, Fn fn) {
  const auto [fault, after] = Next(op, id);
  Delay(fault);
  const absl::Status failure = Failure(fault, op, id);
  if (failure.ok()) return fn();
  if (!after) return failure;
  T result = fn();
  if (!result.ok()) return result;  // the inner call failed by itself
  {
    absl::MutexLock l(&mu_);
    ++stats_.after_inner;
  }
  return failure;
}

absl::Status FaultyBackend::Create(uint64_t id, uint64_t parent_id,
                                   SnapshotKind kind) {
  return Run<absl::Status>(Op::kCreate, id,
                           [&] { return inner_->Create(id, parent_id, kind); });
}

absl::StatusOr<Usage> FaultyBackend::Commit(uint64_t id) {
  return Run<absl::StatusOr<Usage>>(Op::kCommit, id,
                                    [&] { return inner_->Commit(id); });
}

absl::Status FaultyBackend::Remove(uint64_t id) {
  return Run<absl::Status>(Op::kRemove, id, [&] { return inner_->Remove(id); });
}

absl::StatusOr<std::vector<Mount>> FaultyBackend::Mounts(uint64_t id,
                                                         uint64_t parent_id,
                                                         SnapshotKind kind) {
  return Run<absl::StatusOr<std::vector<Mount>>>(
      Op::kMounts, id, [&] { return inner_->Mounts(id, parent_id, kind); });
}

absl::StatusOr<std::vector<Mount>> FaultyBackend::MountsOfNew(
    uint64_t id, uint64_t parent_id, SnapshotKind kind) {
  return inner_->MountsOfNew(id, parent_id, kind);
}

absl::StatusOr<Usage> FaultyBackend::DiskUsage(uint64_t id) {
  return Run<absl::StatusOr<Usage>>(Op::kDiskUsage, id,
                                    [&] { return inner_->DiskUsage(id); });
}

absl::StatusOr<bool> FaultyBackend::Exists(uint64_t id) {
  return Run<absl::StatusOr<bool>>(Op::kExists, id,
                                   [&] { return inner_->Exists(id); });
}

absl::StatusOr<bool> FaultyBackend::IsCommitted(uint64_t id) {
  return Run<absl::StatusOr<bool>>(Op::kExists, id,
                                   [&] { return inner_->IsCommitted(id); });
}

absl::StatusOr<std::vector<BackendObject>> FaultyBackend::List() {
  return Run<absl::StatusOr<std::vector<BackendObject>>>(
      Op::kList, 0, [&] { return inner_->List(); });
}

absl::Status FaultyBackend::Cleanup() {
  return Run<absl::Status>(Op::kCleanup, 0, [&] { return inner_->Cleanup(); });
}

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
