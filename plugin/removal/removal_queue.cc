#include "plugin/removal/removal_queue.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "plugin/record/history.h"
#include "plugin/record/keys.h"
#include "plugin/record/states.h"
#include "spdlog/spdlog.h"
#include "store/crash_point.h"

namespace snapledger {

std::string_view RemovalEventName(RemovalEvent event) {
  switch (event) {
    case RemovalEvent::kRemoved:
      return "removed";
    case RemovalEvent::kFailed:
      return "failed";
    case RemovalEvent::kStuck:
      return "stuck";
    case RemovalEvent::kWaitingForChildren:
      return "waiting_for_children";
    case RemovalEvent::kHeld:
      return "held";
    case RemovalEvent::kBackoffRetry:
      return "backoff";
    case RemovalEvent::kOperatorRetry:
      return "operator";
  }
  return "unknown";
}

RemovalQueue::RemovalQueue(RemovalQueueDeps deps, RemovalQueueOptions options)
    : deps_(std::move(deps)), options_(std::move(options)) {}

RemovalQueue::~RemovalQueue() { Stop(); }

std::optional<std::string> RemovalQueue::Holder(const Record& record) const {
  return options_.holder ? options_.holder(record) : std::nullopt;
}

absl::StatusOr<Record> RemovalQueue::Defer(const Record& record,
                                           const Deferral& deferral) {
  Ledger::Batch batch;
  Record pending = DeferRemoval(record, deferral, options_.clock(), &batch);
  if (absl::Status s = deps_.ledger->Write(batch); !s.ok()) return s;
  CRASH_POINT("remove.after_defer");
  if (deferral.counts) {  // a failed attempt
    spdlog::warn("remove {}: cannot remove now ({}); queued as {}",
                 ClientKey(pending), deferral.cause, pending.key());
  } else {
    spdlog::info("remove {}: deferred as {} ({})", ClientKey(pending),
                 pending.key(), deferral.cause);
  }
  Reschedule(pending);
  return pending;
}

void RemovalQueue::ScheduleAt(uint64_t id, absl::Time due) {
  absl::MutexLock lock(&mu_);
  schedule_.Schedule(id, due);
  worker_.Wake();
}

void RemovalQueue::Reschedule(const Record& pending) {
  absl::MutexLock lock(&mu_);
  if (pending.state() == store::v1::REMOVE_PENDING &&
      pending.next_attempt_ns() > 0) {
    schedule_.Schedule(pending.backend_id(),
                       absl::FromUnixNanos(pending.next_attempt_ns()));
  } else {
    schedule_.Unschedule(pending.backend_id());
  }
  worker_.Wake();
}

void RemovalQueue::CascadeTo(uint64_t parent_id) {
  if (parent_id == 0) return;
  absl::StatusOr<Record> parent = deps_.ledger->Get(RemovedKey(parent_id));
  if (!parent.ok() || parent->state() != store::v1::REMOVE_PENDING) return;
  absl::StatusOr<std::vector<std::string>> children =
      deps_.ledger->Children(parent_id, 1);
  if (!children.ok() || !children->empty()) return;
  // Due now. Not written to the ledger: after a restart Load() finds a
  // childless pending parent by itself.
  spdlog::info("removal queue: last child of {} ({}) is gone; removing it now",
               parent->key(), parent->removed_key());
  ScheduleAt(parent_id, options_.clock());
}

void RemovalQueue::ReleaseHold(uint64_t backend_id) {
  absl::StatusOr<Record> record = deps_.ledger->Get(RemovedKey(backend_id));
  if (!record.ok() || record->state() != store::v1::REMOVE_PENDING ||
      record->held_by().empty()) {
    return;
  }
  // Due now. Not written to the ledger: after a restart Load() makes a held
  // removal due, and the attempt asks again.
  spdlog::info("removal queue: container {} of {} ({}) is gone; removing it",
               record->held_by(), record->removed_key(), record->key());
  ScheduleAt(backend_id, options_.clock());
}

void RemovalQueue::RetryLater(uint64_t id, const absl::Status& error) {
  spdlog::warn("removal queue: {}: {}; trying again later", RemovedKey(id),
               error.ToString());
  ScheduleAt(id, options_.clock() + RetryDelay(options_.retry, 1));
}

void RemovalQueue::Attempt(uint64_t id) {
  const std::string key = RemovedKey(id);
  // A ledger that cannot be read now must not drop the removal from the
  // schedule: it is due again after a back-off.
  absl::StatusOr<Record> seen = deps_.ledger->Get(key);
  if (!seen.ok() && !absl::IsNotFound(seen.status())) {
    return RetryLater(id, seen.status());
  }
  if (!seen.ok() || seen->state() != store::v1::REMOVE_PENDING) return;
  KeyLocks::Guard guard = deps_.locks->Lock(
      {key}, {seen->parent(), RemovedKeyOfParent(seen->parent_backend_id())});
  absl::ReaderMutexLock gate(deps_.cleanup_gate);
  absl::StatusOr<Record> record = deps_.ledger->Get(key);
  if (!record.ok() && !absl::IsNotFound(record.status())) {
    return RetryLater(id, record.status());
  }
  if (!record.ok() || record->state() != store::v1::REMOVE_PENDING) return;
  AttemptLocked(*record);
}

void RemovalQueue::AttemptLocked(const Record& record) {
  const uint64_t id = record.backend_id();
  const absl::Time now = options_.clock();
  absl::StatusOr<std::vector<std::string>> children =
      deps_.ledger->Children(id, 9);
  if (!children.ok()) return RetryLater(id, children.status());
  if (!children->empty()) {
    // Not an attempt: it waits for the cascade.
    Record waiting = record;
    waiting.set_next_attempt_ns(0);
    waiting.set_last_error(absl::StrCat("waiting for children [",
                                        DescribeChildren(*children), "]"));
    waiting.set_updated_ns(absl::ToUnixNanos(now));
    Ledger::Batch batch;
    batch.Put(waiting);
    if (absl::Status s = deps_.ledger->Write(batch); !s.ok()) {
      spdlog::warn("removal queue: {}: {}", record.key(), s.ToString());
      return;
    }
    Notify(RemovalEvent::kWaitingForChildren);
    return;
  }

  if (std::optional<std::string> holder = Holder(record)) {
    // Not an attempt either: due again when the watcher sees it go.
    Record held = record;
    held.set_next_attempt_ns(0);
    held.set_held_by(*holder);
    held.set_last_error(
        absl::StrCat("its container ", *holder, " still exists"));
    held.set_updated_ns(absl::ToUnixNanos(now));
    Ledger::Batch batch;
    batch.Put(held);
    if (record.held_by() != *holder) {
      batch.Note(
          MakeEvent(HistoryOp::kRemoveDeferred, held, held.last_error()));
    }
    if (absl::Status s = deps_.ledger->Write(batch); !s.ok()) {
      return RetryLater(id, s);
    }
    Notify(RemovalEvent::kHeld);
    Reschedule(held);
    return;
  }

  Record intent_record = record;
  intent_record.set_prior_state(store::v1::REMOVE_PENDING);
  intent_record.set_state(store::v1::REMOVING);
  Ledger::Batch intent;
  intent.Put(intent_record);
  if (absl::Status s = deps_.ledger->Write(intent); !s.ok()) {
    return RetryLater(id, s);  // nothing changed
  }
  CRASH_POINT("queue.after_intent");
  if (record.remove_attempts() > 0) Notify(RemovalEvent::kBackoffRetry);

  absl::Status removed = deps_.backend->Remove(id);
  if (absl::IsNotFound(removed)) removed = absl::OkStatus();
  if (!removed.ok()) return NoteFailure(record, removed);
  CRASH_POINT("queue.after_backend");
  // Deferred: recovery rolls the REMOVING intent forward if it is lost.
  Ledger::Batch done(Ledger::Durability::kDeferred);
  done.Delete(intent_record);
  done.Note(
      MakeEvent(HistoryOp::kRemoved, record,
                absl::StrCat("by the removal queue after ",
                             record.remove_attempts(), " failed attempts")));
  if (absl::Status s = deps_.ledger->Write(done); !s.ok()) {
    deps_.pending_intents->Note(record.key());  // rolled forward later
    return;
  }
  CRASH_POINT("queue.after_complete");
  Notify(RemovalEvent::kRemoved);
  spdlog::info(
      "removal queue: removed {} ({}) after {} failed attempts, {} after it "
      "was asked for",
      record.removed_key(), record.key(), record.remove_attempts(),
      absl::FormatDuration(
          absl::Trunc(now - absl::FromUnixNanos(record.remove_requested_ns()),
                      absl::Milliseconds(1))));
  CascadeTo(record.parent_backend_id());
}

void RemovalQueue::NoteFailure(const Record& record,
                               const absl::Status& error) {
  const absl::Time now = options_.clock();
  Record failed = record;
  failed.clear_held_by();
  // An earlier, timed-out call on this object is still running: waiting for
  // it is not a failed attempt (it would make the removal stuck meanwhile).
  RecordRemovalAttempt(&failed, now, error.ToString(),
                       /*counts=*/!IsStillRunningElsewhere(error));
  const int attempts = failed.remove_attempts();
  if (attempts >= options_.retry.max_attempts) {
    failed.set_state(store::v1::STUCK);
    failed.set_next_attempt_ns(0);
  } else {
    failed.set_next_attempt_ns(absl::ToUnixNanos(
        now + RetryDelay(options_.retry, std::max(attempts, 1))));
  }
  const bool stuck = failed.state() == store::v1::STUCK;
  Ledger::Batch batch;
  batch.Put(failed);
  batch.Note(
      MakeEvent(stuck ? HistoryOp::kStuck : HistoryOp::kRemoveFailed, failed,
                absl::StrCat("attempt ", attempts, ": ", error.ToString())));
  if (absl::Status s = deps_.ledger->Write(batch); !s.ok()) {
    // The REMOVING intent is rolled forward later.
    deps_.pending_intents->Note(record.key());
    return;
  }
  Notify(stuck ? RemovalEvent::kStuck : RemovalEvent::kFailed);
  if (stuck) {
    spdlog::error(
        "removal queue: {} ({}) is stuck after {} attempts, last: {}; kept "
        "until an operator retries it",
        record.removed_key(), record.key(), attempts, error.ToString());
  } else {
    spdlog::warn("removal queue: {} ({}): attempt {} failed: {}",
                 record.removed_key(), record.key(), attempts,
                 error.ToString());
  }
  Reschedule(failed);
}

int RemovalQueue::RunDue(size_t max, absl::Duration budget) {
  const absl::Time start = absl::Now();
  int ran = 0;
  while (static_cast<size_t>(ran) < max && absl::Now() - start < budget) {
    std::vector<uint64_t> due;
    {
      absl::MutexLock lock(&mu_);
      // Shutting down: the rest waits for a restart.
      if (worker_.stopping()) break;
      due = schedule_.TakeDue(options_.clock(), 1);
    }
    if (due.empty()) break;
    Attempt(due.front());
    ++ran;
  }
  return ran;
}

absl::Status RemovalQueue::Load() {
  std::vector<Record> pending;
  // Through the state index: the queue's records, not the whole ledger.
  absl::Status scan = deps_.ledger->ForEachInState(store::v1::REMOVE_PENDING,
                                                   [&](const Record& r) {
                                                     pending.push_back(r);
                                                     return true;
                                                   });
  if (!scan.ok()) return scan;
  const absl::Time now = options_.clock();
  absl::MutexLock lock(&mu_);
  for (const Record& r : pending) {
    if (r.next_attempt_ns() > 0) {
      schedule_.Schedule(r.backend_id(),
                         absl::FromUnixNanos(r.next_attempt_ns()));
      continue;
    }
    absl::StatusOr<std::vector<std::string>> children =
        deps_.ledger->Children(r.backend_id(), 1);
    if (!children.ok()) return children.status();
    // Its last child went while the daemon was down (or before a cascade
    // could be noted): due now.
    if (children->empty()) schedule_.Schedule(r.backend_id(), now);
  }
  worker_.Wake();
  return absl::OkStatus();
}

absl::Status RemovalQueue::Start() {
  if (absl::Status s = Load(); !s.ok()) return s;
  if (absl::Status s = worker_.Start([this] { WorkerLoop(); }); !s.ok()) {
    return s;
  }
  // An intent noted while the worker sleeps with nothing due wakes it: it
  // then tries to resolve it every second (WorkerLoop).
  if (deps_.pending_intents != nullptr && deps_.heal) {
    deps_.pending_intents->SetOnNote([this] { worker_.Wake(); });
  }
  return absl::OkStatus();
}

void RemovalQueue::Stop() {
  worker_.Stop([this] {
    if (deps_.pending_intents != nullptr && deps_.heal) {
      deps_.pending_intents->SetOnNote(nullptr);
    }
  });
}

void RemovalQueue::WorkerLoop() {
  while (!worker_.stopping()) {
    std::optional<absl::Time> next;
    absl::Time now;
    uint64_t seen = 0;
    {
      absl::MutexLock lock(&mu_);
      next = schedule_.NextDue();
      now = options_.clock();
      seen = worker_.wakes();
    }
    if (next.has_value() && *next <= now) {
      RunDue(16);
      continue;
    }
    absl::Time deadline =
        next.has_value() ? absl::Now() + (*next - now) : absl::InfiniteFuture();
    // Intents left by a time-out or a ledger failure are resolved by the next
    // mutation; on a quiet host there may be none for a long time, so the
    // worker tries too, every second.
    const bool healing = deps_.pending_intents->Any() && deps_.heal;
    if (healing) deadline = std::min(deadline, absl::Now() + absl::Seconds(1));
    const bool going_on = worker_.WaitUntil(deadline, seen);
    if (healing && going_on) deps_.heal();
  }
}

absl::Status RemovalQueue::Retry(uint64_t backend_id) {
  const std::string key = RemovedKey(backend_id);
  KeyLocks::Guard guard = deps_.locks->Lock({key});
  absl::StatusOr<Record> record = deps_.ledger->Get(key);
  if (!record.ok() || !IsQueuedRemoval(*record)) {
    if (record.ok() || absl::IsNotFound(record.status())) {
      return absl::NotFoundError(
          absl::StrCat("no queued removal of backend object ", backend_id));
    }
    return record.status();
  }
  Record due = *record;
  due.set_state(store::v1::REMOVE_PENDING);
  due.set_next_attempt_ns(absl::ToUnixNanos(options_.clock()));
  Ledger::Batch batch;
  batch.Put(due);
  batch.Note(MakeEvent(HistoryOp::kRetry, due,
                       record->state() == store::v1::STUCK
                           ? "stuck removal retried on demand"
                           : "retried on demand"));
  if (absl::Status s = deps_.ledger->Write(batch); !s.ok()) return s;
  Notify(RemovalEvent::kOperatorRetry);
  spdlog::info("removal queue: retry of {} ({}) asked for", due.removed_key(),
               key);
  Reschedule(due);
  return absl::OkStatus();
}

absl::StatusOr<RemovalQueueStats> RemovalQueue::Stats() {
  // The ledger's counts, kept by every write: no scan.
  absl::StatusOr<Ledger::Counts> counts = deps_.ledger->CountRecords();
  if (!counts.ok()) return counts.status();
  RemovalQueueStats stats;
  const auto count = [&](RecordState state) -> size_t {
    auto it = counts->by_state.find(state);
    return it == counts->by_state.end() ? 0 : it->second;
  };
  stats.stuck = count(store::v1::STUCK);
  stats.waiting_for_children = counts->pending_without_due;
  stats.held = counts->pending_held;
  stats.scheduled =
      count(store::v1::REMOVE_PENDING) - counts->pending_without_due;
  absl::MutexLock lock(&mu_);
  stats.next_due = schedule_.NextDue();
  return stats;
}

std::string RemovalQueue::DescribeChildren(
    const std::vector<std::string>& keys) {
  std::vector<std::string> names;
  for (size_t i = 0; i < keys.size() && i < 8; ++i) {
    std::string name = keys[i];
    if (IsReservedKey(name)) {
      absl::StatusOr<Record> child = deps_.ledger->Get(name);
      if (child.ok() && !child->removed_key().empty()) {
        name = absl::StrCat(child->removed_key(),
                            child->state() == store::v1::STUCK
                                ? " (removal stuck, "
                                : " (removal pending, ",
                            child->key(), ")");
      }
    }
    names.push_back(std::move(name));
  }
  if (keys.size() > 8) names.push_back("...");
  return absl::StrJoin(names, ", ");
}

}  // namespace snapledger
