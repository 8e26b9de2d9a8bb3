#include "plugin/core/coordinator.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "plugin/record/history.h"
#include "plugin/record/keys.h"
#include "plugin/record/states.h"
#include "plugin/record/transitions.h"
#include "plugin/recovery/recovery.h"
#include "spdlog/spdlog.h"
#include "store/crash_point.h"

namespace snapledger {
namespace {

int64_t NowNanos() { return absl::ToUnixNanos(absl::Now()); }

std::string Quote(const std::string& s) { return absl::StrCat("\"", s, "\""); }

// Prefixes a backend error with what was being done, keeping its code unless
// the code would mislead containerd: a backend's NotFound or AlreadyExists
// concerns an object id, not the client's key.
absl::Status BackendError(const absl::Status& s, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", s.message());
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kInvalidArgument:
      return absl::InternalError(msg);
    default:
      return absl::Status(s.code(), msg);
  }
}

// The labels containerd forwards to a snapshotter (its
// FilterInheritedLabels): what a backend that proxies one may pass on.
BackendLabels ForwardedLabels(const Labels& labels) {
  BackendLabels forwarded;
  for (const auto& [k, v] : labels) {
    if (k == kSnapshotRefLabel || absl::StartsWith(k, kForwardedLabelPrefix)) {
      forwarded.emplace(k, v);
    }
  }
  return forwarded;
}

// The name a Prepare asks the snapshotter to commit the new snapshot under
// when the layer is available remotely (containerd's snapshot.ref label);
// empty if none.
std::string RemoteTarget(SnapshotKind kind, const Labels& labels) {
  if (kind != SnapshotKind::kActive) return "";
  auto it = labels.find(kSnapshotRefLabel);
  return it == labels.end() ? "" : it->second;
}

}  // namespace

std::optional<RemovePolicy> ParseRemovePolicy(std::string_view name) {
  if (name == "refuse") return RemovePolicy::kRefuse;
  if (name == "defer") return RemovePolicy::kDefer;
  return std::nullopt;
}

std::string_view RemovePolicyName(RemovePolicy policy) {
  return policy == RemovePolicy::kDefer ? "defer" : "refuse";
}

Coordinator::Coordinator(Ledger* ledger, Backend* backend,
                         CoordinatorOptions options)
    : ledger_(ledger),
      backend_(backend),
      options_(std::move(options)),
      queue_(
          RemovalQueueDeps{
              .ledger = ledger,
              .backend = backend,
              .locks = &locks_,
              .cleanup_gate = &cleanup_gate_,
              .pending_intents = &pending_intents_,
              .heal = [this] { ResolvePendingIntents(); },
          },
          options_.queue) {}

Coordinator::~Coordinator() { queue_.Stop(); }

absl::StatusOr<Record> Coordinator::GetVisible(const std::string& key) {
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok()) {
    if (absl::IsNotFound(record.status())) {
      return absl::NotFoundError(
          absl::StrCat("snapshot ", Quote(key), " does not exist"));
    }
    return record.status();
  }
  if (!IsVisible(*record)) {
    return absl::NotFoundError(
        absl::StrCat("snapshot ", Quote(key), " does not exist"));
  }
  return record;
}

absl::StatusOr<std::vector<Mount>> Coordinator::Prepare(
    const std::string& key, const std::string& parent, const Labels& labels) {
  return Create(SnapshotKind::kActive, key, parent, labels);
}

absl::StatusOr<std::vector<Mount>> Coordinator::View(const std::string& key,
                                                     const std::string& parent,
                                                     const Labels& labels) {
  return Create(SnapshotKind::kView, key, parent, labels);
}

absl::StatusOr<Record> Coordinator::GetParentForCreate(
    const std::string& parent) {
  absl::StatusOr<Record> p = ledger_->Get(parent);
  if (!p.ok() || !IsVisible(*p)) {
    if (p.ok() || absl::IsNotFound(p.status())) {
      return absl::NotFoundError(
          absl::StrCat("parent snapshot ", Quote(parent), " does not exist"));
    }
    return p.status();
  }
  if (p->kind() != store::v1::COMMITTED) {
    return absl::InvalidArgumentError(
        absl::StrCat("parent ", Quote(parent), " is not a committed snapshot"));
  }
  if (p->state() == store::v1::MISSING) {
    return absl::FailedPreconditionError(absl::StrCat(
        "parent ", Quote(parent),
        " has lost its backend storage (state missing); remove it"));
  }
  return p;
}

absl::StatusOr<std::vector<Mount>> Coordinator::Create(
    SnapshotKind kind, const std::string& key, const std::string& parent,
    const Labels& labels) {
  if (key.empty()) {
    return absl::InvalidArgumentError("snapshot key must not be empty");
  }
  if (key == parent) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot ", Quote(key), " cannot be its own parent"));
  }
  if (absl::Status s = ValidateText("snapshot key", key); !s.ok()) return s;
  if (absl::Status s = ValidateText("parent", parent); !s.ok()) return s;
  if (absl::Status s = ValidateLabels(labels); !s.ok()) return s;
  if (IsReservedKey(key)) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot key ", Quote(key),
                     " is reserved: keys beginning with \"snapledger.\" name "
                     "snapledger's own records"));
  }

  // The remote-snapshot protocol: the backend may commit the new snapshot
  // itself under this name (see CompleteCommittedByBackend).
  std::string target = RemoteTarget(kind, labels);
  if (target == key || target == parent || IsReservedKey(target)) target = "";

  ResolvePendingIntents();
  // The parent is held shared: prepares on one parent run side by side, but
  // never beside a Remove of it.
  KeyLocks::Guard guard = target.empty() ? locks_.Lock({key}, {parent})
                                         : locks_.Lock({key, target}, {parent});
  absl::ReaderMutexLock gate(&cleanup_gate_);

  // containerd checks the parent first.
  Record record;
  if (!parent.empty()) {
    absl::StatusOr<Record> p = GetParentForCreate(parent);
    if (!p.ok()) return p.status();
    record.set_parent(parent);
    record.set_parent_backend_id(p->backend_id());
  }

  absl::StatusOr<Record> existing = ledger_->Get(key);
  if (existing.ok()) {
    if (!IsVisible(*existing)) {
      // An intent that could not be resolved yet (a backend call that
      // outlived its time limit, a ledger that refused a write).
      return absl::UnavailableError(
          absl::StrCat("snapshot ", Quote(key),
                       ": an earlier operation on it has not finished; try "
                       "again later"));
    }
    return absl::AlreadyExistsError(
        absl::StrCat("snapshot ", Quote(key), ": already exists"));
  }
  if (!absl::IsNotFound(existing.status())) return existing.status();
  if (!target.empty()) {
    // The target exists already: what a remote snapshotter answers when its
    // commit under the target name finds one (containerd then looks it up).
    absl::StatusOr<Record> t = ledger_->Get(target);
    if (t.ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("target snapshot ", Quote(target), ": already exists"));
    }
    if (!absl::IsNotFound(t.status())) return t.status();
  }

  const int64_t now = NowNanos();
  record.set_key(key);
  record.set_kind(ToRecordKind(kind));
  record.set_state(store::v1::PREPARING);
  record.set_backend_id(ledger_->AllocateId());
  record.set_created_ns(now);
  record.set_updated_ns(now);
  SetIdentity(&record);
  CopyLabels(labels, &record);

  Ledger::Batch intent;
  intent.Put(record);
  if (absl::Status s = ledger_->Write(intent); !s.ok()) return s;
  CRASH_POINT("prepare.after_intent");

  if (absl::Status s = backend_->CreateWithLabels(
          record.backend_id(), record.parent_backend_id(), kind,
          ForwardedLabels(labels));
      !s.ok()) {
    if (!target.empty() && IsCommittedByBackend(s)) {
      return CompleteCommittedByBackend(record, target);
    }
    if (absl::Status u = RollBackIntent(record, s); !u.ok()) {
      spdlog::error("prepare {}: cannot roll back the intent yet: {}", key,
                    u.ToString());
    }
    return BackendError(
        s, absl::StrCat("create storage for snapshot ", Quote(key)));
  }
  CRASH_POINT("prepare.after_backend");

  record.set_state(store::v1::LIVE);
  // Deferred: carried to disk by the next synced write. If a crash loses
  // it, recovery finds the intent with a whole object and rolls it forward.
  Ledger::Batch done(Ledger::Durability::kDeferred);
  done.Put(record);
  done.Note(MakeEvent(
      kind == SnapshotKind::kView ? HistoryOp::kView : HistoryOp::kPrepare,
      record, absl::StrCat("backend object ", record.backend_id())));
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    // The intent stays and is rolled back once the ledger heals: the caller
    // sees a failure, which is what the roll-back makes true.
    pending_intents_.Note(key);
    return s;
  }
  CRASH_POINT("prepare.after_complete");
  return backend_->MountsOfNew(record.backend_id(), record.parent_backend_id(),
                               kind);
}

absl::StatusOr<std::vector<Mount>> Coordinator::CompleteCommittedByBackend(
    const Record& intent_record, const std::string& target) {
  CRASH_POINT("prepare.after_backend");
  absl::StatusOr<Usage> usage = backend_->DiskUsage(intent_record.backend_id());
  if (!usage.ok()) {
    // The object is whole; only its size is unknown until a later Stat.
    spdlog::warn("prepare {}: usage of the backend's committed object {}: {}",
                 intent_record.key(), intent_record.backend_id(),
                 usage.status().ToString());
    usage = Usage{};
  }
  const int64_t now = NowNanos();
  Record committed = intent_record;
  committed.set_key(target);
  committed.set_kind(store::v1::COMMITTED);
  committed.set_state(store::v1::LIVE);
  committed.set_created_ns(now);
  committed.set_updated_ns(now);
  committed.set_size_bytes(usage->size_bytes);
  committed.set_inodes(usage->inodes);
  SetIdentity(&committed);
  Ledger::Batch done;
  done.Delete(intent_record);
  done.Put(committed);
  done.Note(MakeEvent(
      HistoryOp::kCommit, committed,
      absl::StrCat("remote snapshot: prepared as ", intent_record.key(),
                   ", committed by the backend (object ",
                   committed.backend_id(), ")")));
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    // The PREPARING intent stays and is rolled back (the object removed)
    // once the ledger heals; containerd sees a failure and unpacks later.
    pending_intents_.Note(intent_record.key());
    return s;
  }
  CRASH_POINT("prepare.after_complete");
  // What containerd expects from a remote snapshotter: it then finds the
  // committed snapshot by its snapshot.ref label and parent.
  return absl::AlreadyExistsError(
      absl::StrCat("target snapshot ", Quote(target), ": already exists"));
}

absl::StatusOr<std::vector<Mount>> Coordinator::Mounts(const std::string& key) {
  absl::StatusOr<Record> record = GetVisible(key);
  if (!record.ok()) return record.status();
  if (record->kind() == store::v1::COMMITTED) {
    return absl::FailedPreconditionError(
        absl::StrCat("requested snapshot ", Quote(key), " not active or view"));
  }
  if (record->state() == store::v1::MISSING) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", Quote(key), " has lost its backend storage"));
  }
  return backend_->Mounts(record->backend_id(), record->parent_backend_id(),
                          ToSnapshotKind(record->kind()));
}

absl::Status Coordinator::Commit(const std::string& name,
                                 const std::string& key, const Labels& labels) {
  if (name.empty() || key.empty()) {
    return absl::InvalidArgumentError(
        "commit needs both a name and the key of an active snapshot");
  }
  if (absl::Status s = ValidateText("snapshot name", name); !s.ok()) return s;
  if (absl::Status s = ValidateLabels(labels); !s.ok()) return s;
  if (IsReservedKey(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot name ", Quote(name),
                     " is reserved: names beginning with \"snapledger.\" name "
                     "snapledger's own records"));
  }

  ResolvePendingIntents();
  KeyLocks::Guard guard = locks_.Lock({key, name});
  absl::ReaderMutexLock gate(&cleanup_gate_);

  // containerd checks the target name first.
  absl::StatusOr<Record> target = ledger_->Get(name);
  if (target.ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("committed snapshot ", Quote(name), ": already exists"));
  }
  if (!absl::IsNotFound(target.status())) return target.status();

  absl::StatusOr<Record> active = GetVisible(key);
  if (!active.ok()) {
    if (absl::IsNotFound(active.status())) {
      return absl::NotFoundError(absl::StrCat("failed to get active snapshot ",
                                              Quote(key), ": not found"));
    }
    return active.status();
  }
  if (active->kind() != store::v1::ACTIVE ||
      active->state() != store::v1::LIVE) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", Quote(key), " is not active"));
  }

  Record intent_record = *active;
  intent_record.set_state(store::v1::COMMITTING);
  intent_record.set_prior_state(store::v1::LIVE);
  intent_record.set_commit_name(name);
  {
    // Commit replaces the labels; the intent carries them so that recovery
    // can complete the commit if the completion is lost.
    Record with_labels;
    CopyLabels(labels, &with_labels);
    *intent_record.mutable_commit_labels() = with_labels.labels();
  }
  Ledger::Batch intent;
  intent.Put(intent_record);
  if (absl::Status s = ledger_->Write(intent); !s.ok()) return s;
  CRASH_POINT("commit.after_intent");

  absl::StatusOr<Usage> usage =
      backend_->CommitWithLabels(active->backend_id(), ForwardedLabels(labels));
  if (!usage.ok()) {
    if (absl::Status u = RollBackIntent(intent_record, usage.status());
        !u.ok()) {
      spdlog::error("commit {}: cannot roll back the intent yet: {}", key,
                    u.ToString());
    }
    return BackendError(usage.status(),
                        absl::StrCat("commit snapshot ", Quote(key)));
  }
  CRASH_POINT("commit.after_backend");

  Record committed = CompleteCommit(intent_record, *usage, absl::Now());
  // Deferred, as Prepare's: recovery completes the commit from the intent.
  Ledger::Batch done(Ledger::Durability::kDeferred);
  done.Delete(*active);
  done.Put(committed);
  done.Note(
      MakeEvent(HistoryOp::kCommit, committed, absl::StrCat("from ", key)));
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    pending_intents_.Note(key);  // rolled back to the active snapshot later
    return s;
  }
  CRASH_POINT("commit.after_complete");
  return absl::OkStatus();
}

absl::Status Coordinator::Remove(const std::string& key) {
  ResolvePendingIntents();
  // The parent is known only from the record: read it, lock, and check that
  // the key still names the same snapshot.
  for (int tries = 0;; ++tries) {
    absl::StatusOr<Record> seen = GetVisible(key);
    if (!seen.ok()) return seen.status();
    const uint64_t parent_id = seen->parent_backend_id();
    KeyLocks::Guard guard =
        locks_.Lock({key}, {seen->parent(), RemovedKeyOfParent(parent_id)});
    absl::ReaderMutexLock gate(&cleanup_gate_);
    absl::StatusOr<Record> record = GetVisible(key);
    if (!record.ok()) return record.status();
    if (record->backend_id() == seen->backend_id()) {
      return RemoveLocked(*record);
    }
    if (tries == 8) {
      return absl::UnavailableError(absl::StrCat(
          "snapshot ", Quote(key), " keeps changing; try the removal again"));
    }
  }
}

absl::Status Coordinator::RemoveLocked(const Record& record) {
  const std::string& key = record.key();
  const bool defer = options_.remove_policy == RemovePolicy::kDefer;

  absl::StatusOr<std::vector<std::string>> children =
      ledger_->Children(record.backend_id(), 9);
  if (!children.ok()) return children.status();
  if (!children->empty()) {
    const std::string names = queue_.DescribeChildren(*children);
    if (!defer) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot remove snapshot with child: ", Quote(key),
                       " has children [", names, "]"));
    }
    // Waits, without a due time, for the removal of its last child.
    return queue_
        .Defer(record,
               {.cause = absl::StrCat("waiting for children [", names, "]")})
        .status();
  }

  if (std::optional<std::string> holder = queue_.Holder(record)) {
    // Under either policy the removal waits, without a due time, for the
    // watcher to see the container go. containerd removes a snapshot from
    // its own records before it asks us, and asks again only when another
    // snapshot of ours goes: a plain refusal would leave this one behind.
    const std::string cause =
        absl::StrCat("its container ", *holder, " still exists");
    absl::StatusOr<Record> pending =
        queue_.Defer(record, {.cause = cause, .held_by = *holder});
    if (!pending.ok()) return pending.status();
    if (!defer) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot remove snapshot ", Quote(key), " now: ", cause,
          " (its removal completes once the container is gone, queued as ",
          pending->key(), ")"));
    }
    return absl::OkStatus();
  }

  Record intent_record = record;
  intent_record.set_prior_state(record.state());
  intent_record.set_state(store::v1::REMOVING);
  Ledger::Batch intent;
  intent.Put(intent_record);
  if (absl::Status s = ledger_->Write(intent); !s.ok()) return s;
  CRASH_POINT("remove.after_intent");

  absl::Status removed = backend_->Remove(record.backend_id());
  if (absl::IsNotFound(removed)) {
    spdlog::warn("remove {}: backend object {} was already gone", key,
                 record.backend_id());
    removed = absl::OkStatus();
  }
  // A backend may fail after doing the work (an fsync after its rename, say):
  // ask it, as recovery would, before the record goes back to live.
  bool may_be_gone = false;
  if (!removed.ok() && !absl::IsDeadlineExceeded(removed)) {
    absl::StatusOr<bool> stored = backend_->Exists(record.backend_id());
    if (stored.ok() && !*stored) {
      spdlog::warn(
          "remove {}: the backend answered {}, but object {} is gone: the "
          "removal is complete",
          key, removed.ToString(), record.backend_id());
      removed = absl::OkStatus();
    } else {
      may_be_gone = !stored.ok();
    }
  }
  if (!removed.ok()) {
    return RemoveFailed(record, intent_record, removed, may_be_gone);
  }
  CRASH_POINT("remove.after_backend");

  // Deferred: recovery rolls a REMOVING intent forward anyway.
  Ledger::Batch done(Ledger::Durability::kDeferred);
  done.Delete(record);
  done.Note(MakeEvent(HistoryOp::kRemove, record));
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    pending_intents_.Note(key);  // rolled forward later
    return s;
  }
  CRASH_POINT("remove.after_complete");
  queue_.CascadeTo(record.parent_backend_id());
  return absl::OkStatus();
}

absl::Status Coordinator::RemoveFailed(const Record& record,
                                       const Record& intent_record,
                                       const absl::Status& removed,
                                       bool may_be_gone) {
  const std::string& key = record.key();
  const bool defer = options_.remove_policy == RemovePolicy::kDefer;
  // A time-out leaves the backend working on it, and a backend that cannot
  // say whether the object is still there may have removed it: the record
  // cannot go back to live (the object may be gone, or vanish any moment),
  // so it is queued whatever the policy, and the Remove answers OK.
  if (!defer && !absl::IsDeadlineExceeded(removed) && !may_be_gone) {
    Record rollback = record;
    rollback.set_last_error(removed.ToString());
    Ledger::Batch undo;
    undo.Put(rollback);
    undo.Note(MakeEvent(HistoryOp::kRemoveRefused, record, removed.ToString()));
    if (absl::Status u = ledger_->Write(undo); !u.ok()) {
      spdlog::error("remove {}: cannot roll back the intent: {}", key,
                    u.ToString());
      pending_intents_.Note(key);
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot remove snapshot ", Quote(key), " now: ", removed.message()));
  }
  absl::StatusOr<Record> pending = queue_.Defer(
      intent_record,
      {.cause = removed.ToString(),
       .counts = true,
       .due = queue_.Now() + RetryDelay(queue_.retry_policy(), 1)});
  if (!pending.ok()) {
    pending_intents_.Note(key);  // rolled forward, or queued, later
    return pending.status();
  }
  if (!defer) {
    // The key is gone from the client's view and the removal is durable in
    // the queue: that is what happened, so it is what the client hears (a
    // refusal would claim nothing changed). The warning says why.
    spdlog::warn(
        "remove {}: the snapshotter could not say whether it removed the "
        "object ({}); the removal continues in the background, queued as {}",
        key, removed.ToString(), pending->key());
  }
  return absl::OkStatus();
}

absl::StatusOr<Record> Coordinator::Stat(const std::string& key) {
  return GetVisible(key);
}

absl::StatusOr<Record> Coordinator::Update(
    const std::string& key, const Labels& labels,
    const std::vector<std::string>& paths) {
  if (key.empty()) {
    return absl::InvalidArgumentError("snapshot name must not be empty");
  }
  ResolvePendingIntents();
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::StatusOr<Record> record = GetVisible(key);
  if (!record.ok()) return record.status();

  Labels updated(record->labels().begin(), record->labels().end());
  if (paths.empty()) {
    updated = labels;
  }
  for (const std::string& path : paths) {
    if (path.starts_with("labels.")) {
      const std::string label = path.substr(7);
      auto it = labels.find(label);
      if (it == labels.end() || it->second.empty()) {
        updated.erase(label);
      } else {
        updated[label] = it->second;
      }
    } else if (path == "labels") {
      updated = labels;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot update ", Quote(path), " field on snapshot ", Quote(key)));
    }
  }
  // containerd never stores a label with an empty value.
  std::erase_if(updated, [](const auto& kv) { return kv.second.empty(); });
  if (absl::Status s = ValidateLabels(updated); !s.ok()) return s;

  CopyLabels(updated, &*record);
  record->set_updated_ns(NowNanos());
  Ledger::Batch batch;
  batch.Put(*record);
  batch.Note(MakeEvent(HistoryOp::kLabels, *record));
  if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
  return ledger_->Get(key);
}

absl::Status Coordinator::List(const filter::Filter& filter,
                               absl::FunctionRef<bool(const Record&)> emit) {
  return ledger_->ForEach([&](const Record& record) {
    if (!IsVisible(record)) return true;
    if (!filter.MatchesAll()) {
      bool match = filter.Match([&](const std::vector<std::string>& path)
                                    -> std::optional<std::string> {
        if (path.empty()) return std::nullopt;
        if (path[0] == "name") return record.key();
        if (path[0] == "parent") return record.parent();
        if (path[0] == "kind") {
          switch (record.kind()) {
            case store::v1::ACTIVE:
              return "active";
            case store::v1::VIEW:
              return "view";
            case store::v1::COMMITTED:
              return "committed";
            default:
              return std::nullopt;
          }
        }
        if (path[0] == "labels") {
          // As containerd: the label key is the rest of the path joined
          // with '.', so labels."a.b" and labels.a.b name the same label.
          std::vector<std::string> rest(path.begin() + 1, path.end());
          auto it = record.labels().find(absl::StrJoin(rest, "."));
          if (it == record.labels().end()) return std::nullopt;
          return it->second;
        }
        return std::nullopt;
      });
      if (!match) return true;
    }
    return emit(record);
  });
}

absl::StatusOr<Usage> Coordinator::GetUsage(const std::string& key) {
  absl::StatusOr<Record> record = GetVisible(key);
  if (!record.ok()) return record.status();
  switch (record->kind()) {
    case store::v1::ACTIVE: {
      if (record->state() == store::v1::MISSING) return Usage{};
      absl::StatusOr<Usage> usage = backend_->DiskUsage(record->backend_id());
      if (!usage.ok()) {
        return BackendError(usage.status(),
                            absl::StrCat("usage of snapshot ", Quote(key)));
      }
      return usage;
    }
    case store::v1::COMMITTED:
      return Usage{record->size_bytes(), record->inodes()};
    default:
      return Usage{};
  }
}

absl::Status Coordinator::Cleanup() {
  // containerd calls Cleanup after every GC pass. Waiting here for in-flight
  // copies would make every new mutation queue behind the waiting sweep, so
  // a busy moment skips it: temporaries only wait for the next Cleanup (or
  // the next start).
  absl::Status s;
  if (cleanup_gate_.WriterTryLock()) {
    s = backend_->Cleanup();
    cleanup_gate_.WriterUnlock();
  } else {
    spdlog::debug("cleanup: mutations in flight; sweep skipped this time");
  }
  // containerd calls Cleanup right after its garbage collector's removals:
  // the moment to run what is due, within a budget (containerd holds its
  // metadata lock meanwhile).
  const int ran = queue_.RunDue(SIZE_MAX, options_.cleanup_budget);
  if (ran > 0) spdlog::debug("cleanup: {} queued removals attempted", ran);
  return s;
}

}  // namespace snapledger
