#include "plugin/coordinator.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "plugin/backend/timed/timed_backend.h"
#include "plugin/recovery.h"
#include "plugin/watcher.h"
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

void CopyLabels(const Labels& from, Record* to) {
  to->mutable_labels()->clear();
  for (const auto& [k, v] : from) (*to->mutable_labels())[k] = v;
}

}  // namespace

SnapshotKind ToSnapshotKind(RecordKind kind) {
  switch (kind) {
    case store::v1::VIEW:
      return SnapshotKind::kView;
    case store::v1::ACTIVE:
      return SnapshotKind::kActive;
    default:
      return SnapshotKind::kCommitted;
  }
}

RecordKind ToRecordKind(SnapshotKind kind) {
  switch (kind) {
    case SnapshotKind::kView:
      return store::v1::VIEW;
    case SnapshotKind::kActive:
      return store::v1::ACTIVE;
    case SnapshotKind::kCommitted:
      return store::v1::COMMITTED;
  }
  return store::v1::KIND_UNSPECIFIED;
}

// The namespace and containerd-level key a record's key carries (cleared
// for keys of another form), and no owner or leases yet: those are the
// watcher's to fill.
void SetIdentity(Record* record) {
  record->clear_owner();
  record->clear_leases();
  if (std::optional<ProxyKey> parsed = ParseProxyKey(record->key())) {
    record->set_namespace_(parsed->ns);
    record->set_containerd_key(parsed->key);
  } else {
    record->clear_namespace_();
    record->clear_containerd_key();
  }
}

absl::Status ValidateLabels(const Labels& labels) {
  for (const auto& [k, v] : labels) {
    if (k.size() + v.size() > kMaxLabelBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("label key and value greater than maximum size (",
                       kMaxLabelBytes, " bytes), key: ", k));
    }
  }
  return absl::OkStatus();
}

Coordinator::Coordinator(Ledger* ledger, Backend* backend,
                         CoordinatorOptions options)
    : ledger_(ledger), backend_(backend), options_(std::move(options)) {}

Coordinator::~Coordinator() { StopRemovalQueue(); }

absl::Status Coordinator::RollBackIntent(Record intent,
                                         const absl::Status& cause) {
  // The backend may have done part of the work before failing (or may
  // still be doing it, after a time-out): ask it, as recovery would.
  if (absl::IsDeadlineExceeded(cause)) {
    NotePendingIntent(intent.key());
    return absl::OkStatus();
  }
  absl::StatusOr<bool> stored = backend_->Exists(intent.backend_id());
  if (!stored.ok()) {
    NotePendingIntent(intent.key());
    return stored.status();
  }
  intent.set_last_error(cause.ToString());
  RecoveryReport report;
  absl::Status s = ResolveIntent(*ledger_, *backend_, intent, *stored, &report);
  if (!s.ok()) {
    NotePendingIntent(intent.key());
    return s;
  }
  if (report.removals_queued > 0) {
    absl::StatusOr<Record> pending =
        ledger_->Get(RemovedKey(intent.backend_id()));
    if (pending.ok()) Reschedule(*pending);
  }
  return absl::OkStatus();
}

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
  if (absl::Status s = ValidateLabels(labels); !s.ok()) return s;
  if (IsReservedKey(key)) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot key ", Quote(key),
                     " is reserved: keys beginning with \"snapledger.\" name "
                     "snapledger's own records"));
  }

  ResolvePendingIntents();
  // The parent is held shared: prepares on one parent run side by side, but
  // never beside a Remove of it.
  KeyLocks::Guard guard = locks_.Lock({key}, {parent});
  absl::ReaderMutexLock gate(&cleanup_gate_);

  // containerd checks the parent first.
  Record record;
  if (!parent.empty()) {
    absl::StatusOr<Record> p = ledger_->Get(parent);
    if (!p.ok() || !IsVisible(*p)) {
      if (p.ok() || absl::IsNotFound(p.status())) {
        return absl::NotFoundError(
            absl::StrCat("parent snapshot ", Quote(parent), " does not exist"));
      }
      return p.status();
    }
    if (p->kind() != store::v1::COMMITTED) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parent ", Quote(parent), " is not a committed snapshot"));
    }
    if (p->state() == store::v1::MISSING) {
      return absl::FailedPreconditionError(absl::StrCat(
          "parent ", Quote(parent),
          " has lost its backend storage (state missing); remove it"));
    }
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

  if (absl::Status s = backend_->Create(record.backend_id(),
                                        record.parent_backend_id(), kind);
      !s.ok()) {
    if (absl::Status u = RollBackIntent(record, s); !u.ok()) {
      spdlog::error("prepare {}: cannot roll back the intent yet: {}", key,
                    u.ToString());
    }
    return BackendError(
        s, absl::StrCat("create storage for snapshot ", Quote(key)));
  }
  CRASH_POINT("prepare.after_backend");

  record.set_state(store::v1::LIVE);
  Ledger::Batch done;
  done.Put(record);
  done.Note(MakeEvent(kind == SnapshotKind::kView ? "view" : "prepare", record,
                      absl::StrCat("backend object ", record.backend_id())));
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    // The intent stays and is rolled back once the ledger heals: the caller
    // sees a failure, which is what the roll-back makes true.
    NotePendingIntent(key);
    return s;
  }
  CRASH_POINT("prepare.after_complete");
  return backend_->MountsOfNew(record.backend_id(), record.parent_backend_id(),
                               kind);
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
  Ledger::Batch intent;
  intent.Put(intent_record);
  if (absl::Status s = ledger_->Write(intent); !s.ok()) return s;
  CRASH_POINT("commit.after_intent");

  absl::StatusOr<Usage> usage = backend_->Commit(active->backend_id());
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

  const int64_t now = NowNanos();
  Record committed = *active;
  committed.set_key(name);
  committed.set_kind(store::v1::COMMITTED);
  committed.set_state(store::v1::LIVE);
  committed.set_created_ns(now);
  committed.set_updated_ns(now);
  committed.set_size_bytes(usage->size_bytes);
  committed.set_inodes(usage->inodes);
  committed.clear_last_error();
  SetIdentity(&committed);
  CopyLabels(labels, &committed);
  Ledger::Batch done;
  done.Delete(*active);
  done.Put(committed);
  done.Note(MakeEvent("commit", committed, absl::StrCat("from ", key)));
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    NotePendingIntent(key);  // rolled back to the active snapshot later
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
    KeyLocks::Guard guard = locks_.Lock(
        {key}, {seen->parent(), parent_id != 0 ? RemovedKey(parent_id) : ""});
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
  const absl::Time now = options_.clock();

  absl::StatusOr<std::vector<std::string>> children =
      ledger_->Children(record.backend_id(), 9);
  if (!children.ok()) return children.status();
  if (!children->empty()) {
    const std::string names = DescribeChildren(*children);
    if (!defer) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot remove snapshot with child: ", Quote(key),
                       " has children [", names, "]"));
    }
    // Waits, without a due time, for the removal of its last child.
    Record pending = ToPendingRemoval(record, now);
    const std::string cause =
        absl::StrCat("waiting for children [", names, "]");
    RecordRemovalAttempt(&pending, now, cause, /*counts=*/false);
    pending.set_next_attempt_ns(0);
    Ledger::Batch batch;
    batch.Delete(record);
    batch.Put(pending);
    batch.Note(MakeEvent("remove-deferred", pending,
                         absl::StrCat(cause, "; queued as ", pending.key())));
    if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
    CRASH_POINT("remove.after_defer");
    spdlog::info("remove {}: deferred as {} ({})", key, pending.key(), cause);
    Reschedule(pending);
    return absl::OkStatus();
  }

  if (std::optional<std::string> holder =
          options_.holder ? options_.holder(record) : std::nullopt) {
    // Under either policy the removal waits, without a due time, for the
    // watcher to see the container go. containerd removes a snapshot from
    // its own records before it asks us, and asks again only when another
    // snapshot of ours goes: a plain refusal would leave this one behind.
    const std::string cause =
        absl::StrCat("its container ", *holder, " still exists");
    Record pending = ToPendingRemoval(record, now);
    RecordRemovalAttempt(&pending, now, cause, /*counts=*/false);
    pending.set_next_attempt_ns(0);
    pending.set_held_by(*holder);
    Ledger::Batch batch;
    batch.Delete(record);
    batch.Put(pending);
    batch.Note(MakeEvent("remove-deferred", pending,
                         absl::StrCat(cause, "; queued as ", pending.key())));
    if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
    CRASH_POINT("remove.after_defer");
    spdlog::info("remove {}: deferred as {} ({})", key, pending.key(), cause);
    Reschedule(pending);
    if (!defer) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot remove snapshot ", Quote(key), " now: ", cause,
          " (its removal completes once the container is gone, queued as ",
          pending.key(), ")"));
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
  if (!removed.ok()) {
    // A time-out leaves the backend working on it: the record cannot go back
    // to live (the object may vanish any moment), so it is queued whatever
    // the policy.
    const bool timed_out = absl::IsDeadlineExceeded(removed);
    if (!defer && !timed_out) {
      Record rollback = record;
      rollback.set_last_error(removed.ToString());
      Ledger::Batch undo;
      undo.Put(rollback);
      undo.Note(MakeEvent("remove-refused", record, removed.ToString()));
      if (absl::Status u = ledger_->Write(undo); !u.ok()) {
        spdlog::error("remove {}: cannot roll back the intent: {}", key,
                      u.ToString());
        NotePendingIntent(key);
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot remove snapshot ", Quote(key), " now: ", removed.message()));
    }
    Record pending = ToPendingRemoval(record, now);
    RecordRemovalAttempt(&pending, now, removed.ToString(), /*counts=*/true);
    pending.set_next_attempt_ns(
        absl::ToUnixNanos(now + RetryDelay(options_.retry, 1)));
    Ledger::Batch batch;
    batch.Delete(intent_record);
    batch.Put(pending);
    batch.Note(MakeEvent(
        "remove-deferred", pending,
        absl::StrCat(removed.ToString(), "; queued as ", pending.key())));
    if (absl::Status s = ledger_->Write(batch); !s.ok()) {
      NotePendingIntent(key);  // rolled forward, or queued, later
      return s;
    }
    CRASH_POINT("remove.after_defer");
    spdlog::warn("remove {}: cannot remove now ({}); queued as {}", key,
                 removed.ToString(), pending.key());
    Reschedule(pending);
    if (!defer) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot remove snapshot ", Quote(key), " now: ", removed.message(),
          " (its removal continues in the background, queued as ",
          pending.key(), ")"));
    }
    return absl::OkStatus();
  }
  CRASH_POINT("remove.after_backend");

  Ledger::Batch done;
  done.Delete(record);
  done.Note(MakeEvent("remove", record));
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    NotePendingIntent(key);  // rolled forward later
    return s;
  }
  CRASH_POINT("remove.after_complete");
  CascadeTo(record.parent_backend_id());
  return absl::OkStatus();
}

std::string Coordinator::DescribeChildren(
    const std::vector<std::string>& keys) {
  std::vector<std::string> names;
  for (size_t i = 0; i < keys.size() && i < 8; ++i) {
    std::string name = keys[i];
    if (IsReservedKey(name)) {
      absl::StatusOr<Record> child = ledger_->Get(name);
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
  batch.Note(MakeEvent("labels", *record));
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

void Coordinator::NotePendingIntent(const std::string& key) {
  absl::MutexLock lock(&pending_mu_);
  pending_.insert(key);
  has_pending_.store(true);
}

void Coordinator::ResolvePendingIntents() {
  if (!has_pending_.load()) return;
  std::set<std::string> keys;
  {
    absl::MutexLock lock(&pending_mu_);
    keys = pending_;
  }
  for (const std::string& key : keys) {
    absl::StatusOr<Record> seen = ledger_->Get(key);
    const uint64_t parent_id = seen.ok() ? seen->parent_backend_id() : 0;
    KeyLocks::Guard guard =
        locks_.Lock({key}, {seen.ok() ? seen->parent() : "",
                            parent_id != 0 ? RemovedKey(parent_id) : ""});
    absl::ReaderMutexLock gate(&cleanup_gate_);
    absl::Status s;
    absl::StatusOr<Record> record = ledger_->Get(key);
    if (record.ok() && !IsVisible(*record) &&
        (record->state() == store::v1::PREPARING ||
         record->state() == store::v1::COMMITTING ||
         record->state() == store::v1::REMOVING)) {
      absl::StatusOr<bool> stored = backend_->Exists(record->backend_id());
      RecoveryReport report;
      s = stored.ok()
              ? ResolveIntent(*ledger_, *backend_, *record, *stored, &report)
              : stored.status();
      if (s.ok() && report.removals_queued > 0) {
        absl::StatusOr<Record> pending =
            ledger_->Get(RemovedKey(record->backend_id()));
        if (pending.ok()) Reschedule(*pending);
      } else if (s.ok() && (report.removes_completed > 0 ||
                            report.prepares_rolled_back > 0)) {
        // The record is gone: a parent queued behind it may be free now.
        CascadeTo(record->parent_backend_id());
      }
    } else if (!record.ok() && !absl::IsNotFound(record.status())) {
      s = record.status();
    }
    if (!s.ok()) {
      // Tried again by the next mutation; other keys may still resolve.
      // While the ledger is known to be unwritable this is expected (and
      // every RPC already fails with the cause): keep the log quiet.
      if (ledger_->degraded()) {
        spdlog::debug("intent at {} still unresolved: {}", key, s.ToString());
      } else {
        spdlog::warn("intent at {} still unresolved: {}", key, s.ToString());
      }
      continue;
    }
    spdlog::info(
        "resolved the intent left at {} while the ledger was not "
        "writable",
        key);
    absl::MutexLock lock(&pending_mu_);
    pending_.erase(key);
    has_pending_.store(!pending_.empty());
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
  const int ran = RunDueRemovals(SIZE_MAX, options_.cleanup_budget);
  if (ran > 0) spdlog::debug("cleanup: {} queued removals attempted", ran);
  return s;
}

// ---- The removal queue ----

void Coordinator::Reschedule(const Record& pending) {
  absl::MutexLock lock(&queue_mu_);
  if (pending.state() == store::v1::REMOVE_PENDING &&
      pending.next_attempt_ns() > 0) {
    schedule_.Schedule(pending.backend_id(),
                       absl::FromUnixNanos(pending.next_attempt_ns()));
  } else {
    schedule_.Unschedule(pending.backend_id());
  }
  ++schedule_version_;
}

void Coordinator::CascadeTo(uint64_t parent_id) {
  if (parent_id == 0) return;
  absl::StatusOr<Record> parent = ledger_->Get(RemovedKey(parent_id));
  if (!parent.ok() || parent->state() != store::v1::REMOVE_PENDING) return;
  absl::StatusOr<std::vector<std::string>> children =
      ledger_->Children(parent_id, 1);
  if (!children.ok() || !children->empty()) return;
  // Due now. Not written to the ledger: after a restart LoadRemovalQueue()
  // finds a childless pending parent by itself.
  spdlog::info("removal queue: last child of {} ({}) is gone; removing it now",
               parent->key(), parent->removed_key());
  absl::MutexLock lock(&queue_mu_);
  schedule_.Schedule(parent_id, options_.clock());
  ++schedule_version_;
}

void Coordinator::AttemptRemoval(uint64_t id) {
  const std::string key = RemovedKey(id);
  // A ledger that cannot be read now must not drop the removal from the
  // schedule: it is due again after a back-off.
  auto retry_later = [&](const absl::Status& error) {
    spdlog::warn("removal queue: {}: {}; trying again later", key,
                 error.ToString());
    absl::MutexLock lock(&queue_mu_);
    schedule_.Schedule(id, options_.clock() + RetryDelay(options_.retry, 1));
    ++schedule_version_;
  };
  absl::StatusOr<Record> seen = ledger_->Get(key);
  if (!seen.ok() && !absl::IsNotFound(seen.status())) {
    return retry_later(seen.status());
  }
  if (!seen.ok() || seen->state() != store::v1::REMOVE_PENDING) return;
  const uint64_t parent_id = seen->parent_backend_id();
  KeyLocks::Guard guard = locks_.Lock(
      {key}, {seen->parent(), parent_id != 0 ? RemovedKey(parent_id) : ""});
  absl::ReaderMutexLock gate(&cleanup_gate_);
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok() && !absl::IsNotFound(record.status())) {
    return retry_later(record.status());
  }
  if (!record.ok() || record->state() != store::v1::REMOVE_PENDING) return;
  const absl::Time now = options_.clock();

  absl::StatusOr<std::vector<std::string>> children = ledger_->Children(id, 9);
  if (!children.ok()) return retry_later(children.status());
  if (!children->empty()) {
    // Not an attempt: it waits for the cascade.
    Record waiting = *record;
    waiting.set_next_attempt_ns(0);
    waiting.set_last_error(absl::StrCat("waiting for children [",
                                        DescribeChildren(*children), "]"));
    waiting.set_updated_ns(absl::ToUnixNanos(now));
    Ledger::Batch batch;
    batch.Put(waiting);
    if (absl::Status s = ledger_->Write(batch); !s.ok()) {
      spdlog::warn("removal queue: {}: {}", key, s.ToString());
    }
    return;
  }

  if (std::optional<std::string> holder =
          options_.holder ? options_.holder(*record) : std::nullopt) {
    // Not an attempt either: due again when the watcher sees it go.
    Record held = *record;
    held.set_next_attempt_ns(0);
    held.set_held_by(*holder);
    held.set_last_error(
        absl::StrCat("its container ", *holder, " still exists"));
    held.set_updated_ns(absl::ToUnixNanos(now));
    Ledger::Batch batch;
    batch.Put(held);
    if (record->held_by() != *holder) {
      batch.Note(MakeEvent("remove-deferred", held, held.last_error()));
    }
    if (absl::Status s = ledger_->Write(batch); !s.ok()) {
      return retry_later(s);
    }
    Reschedule(held);
    return;
  }

  Record intent_record = *record;
  intent_record.set_prior_state(store::v1::REMOVE_PENDING);
  intent_record.set_state(store::v1::REMOVING);
  Ledger::Batch intent;
  intent.Put(intent_record);
  if (absl::Status s = ledger_->Write(intent); !s.ok()) {
    return retry_later(s);  // nothing changed
  }
  CRASH_POINT("queue.after_intent");

  absl::Status removed = backend_->Remove(id);
  if (absl::IsNotFound(removed)) removed = absl::OkStatus();
  if (removed.ok()) {
    CRASH_POINT("queue.after_backend");
    Ledger::Batch done;
    done.Delete(intent_record);
    done.Note(
        MakeEvent("removed", *record,
                  absl::StrCat("by the removal queue after ",
                               record->remove_attempts(), " failed attempts")));
    if (absl::Status s = ledger_->Write(done); !s.ok()) {
      NotePendingIntent(key);  // rolled forward later
      return;
    }
    spdlog::info(
        "removal queue: removed {} ({}) after {} failed attempts, {} after it "
        "was asked for",
        record->removed_key(), key, record->remove_attempts(),
        absl::FormatDuration(absl::Trunc(
            now - absl::FromUnixNanos(record->remove_requested_ns()),
            absl::Milliseconds(1))));
    CascadeTo(parent_id);
    return;
  }

  Record failed = *record;
  failed.clear_held_by();
  // An earlier, timed-out call on this object is still running: waiting for
  // it is not a failed attempt (it would make the removal stuck meanwhile).
  RecordRemovalAttempt(&failed, now, removed.ToString(),
                       /*counts=*/!IsStillRunningElsewhere(removed));
  const int attempts = failed.remove_attempts();
  if (attempts >= options_.retry.max_attempts) {
    failed.set_state(store::v1::STUCK);
    failed.set_next_attempt_ns(0);
  } else {
    failed.set_next_attempt_ns(absl::ToUnixNanos(
        now + RetryDelay(options_.retry, std::max(attempts, 1))));
  }
  Ledger::Batch batch;
  batch.Put(failed);
  batch.Note(MakeEvent(
      failed.state() == store::v1::STUCK ? "stuck" : "remove-failed", failed,
      absl::StrCat("attempt ", attempts, ": ", removed.ToString())));
  if (absl::Status s = ledger_->Write(batch); !s.ok()) {
    NotePendingIntent(key);  // the REMOVING intent is rolled forward later
    return;
  }
  if (failed.state() == store::v1::STUCK) {
    spdlog::error(
        "removal queue: {} ({}) is stuck after {} attempts, last: {}; kept "
        "until an operator retries it",
        record->removed_key(), key, attempts, removed.ToString());
  } else {
    spdlog::warn("removal queue: {} ({}): attempt {} failed: {}",
                 record->removed_key(), key, attempts, removed.ToString());
  }
  Reschedule(failed);
}

int Coordinator::RunDueRemovals(size_t max, absl::Duration budget) {
  const absl::Time start = absl::Now();
  int ran = 0;
  while (static_cast<size_t>(ran) < max && absl::Now() - start < budget) {
    std::vector<uint64_t> due;
    {
      absl::MutexLock lock(&queue_mu_);
      if (stop_worker_) break;  // shutting down: the rest waits for a restart
      due = schedule_.TakeDue(options_.clock(), 1);
    }
    if (due.empty()) break;
    AttemptRemoval(due.front());
    ++ran;
  }
  return ran;
}

absl::Status Coordinator::LoadRemovalQueue() {
  std::vector<Record> pending;
  absl::Status scan = ledger_->ForEach([&](const Record& r) {
    if (r.state() == store::v1::REMOVE_PENDING) pending.push_back(r);
    return true;
  });
  if (!scan.ok()) return scan;
  const absl::Time now = options_.clock();
  absl::MutexLock lock(&queue_mu_);
  for (const Record& r : pending) {
    if (r.next_attempt_ns() > 0) {
      schedule_.Schedule(r.backend_id(),
                         absl::FromUnixNanos(r.next_attempt_ns()));
      continue;
    }
    absl::StatusOr<std::vector<std::string>> children =
        ledger_->Children(r.backend_id(), 1);
    if (!children.ok()) return children.status();
    // Its last child went while the daemon was down (or before a cascade
    // could be noted): due now.
    if (children->empty()) schedule_.Schedule(r.backend_id(), now);
  }
  ++schedule_version_;
  return absl::OkStatus();
}

absl::Status Coordinator::StartRemovalQueue() {
  if (absl::Status s = LoadRemovalQueue(); !s.ok()) return s;
  {
    absl::MutexLock lock(&queue_mu_);
    if (worker_.joinable()) return absl::OkStatus();
    stop_worker_ = false;
  }
  worker_ = std::thread([this] { WorkerLoop(); });
  return absl::OkStatus();
}

void Coordinator::StopRemovalQueue() {
  {
    absl::MutexLock lock(&queue_mu_);
    stop_worker_ = true;
    ++schedule_version_;
  }
  if (worker_.joinable()) worker_.join();
}

void Coordinator::WorkerLoop() {
  queue_mu_.Lock();
  while (!stop_worker_) {
    const std::optional<absl::Time> next = schedule_.NextDue();
    const absl::Time now = options_.clock();
    if (next.has_value() && *next <= now) {
      queue_mu_.Unlock();
      RunDueRemovals(16);
      queue_mu_.Lock();
      continue;
    }
    const uint64_t version = schedule_version_;
    struct Wake {
      Coordinator* self;
      uint64_t version;
    } wake{this, version};
    absl::Time deadline =
        next.has_value() ? absl::Now() + (*next - now) : absl::InfiniteFuture();
    // Intents left by a time-out or a ledger failure are resolved by the next
    // mutation; on a quiet host there may be none for a long time, so the
    // worker tries too, every second.
    if (has_pending_.load()) {
      deadline = std::min(deadline, absl::Now() + absl::Seconds(1));
    }
    queue_mu_.AwaitWithDeadline(
        absl::Condition(
            +[](Wake* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return w->self->stop_worker_ ||
                     w->self->schedule_version_ != w->version;
            },
            &wake),
        deadline);
    if (has_pending_.load() && !stop_worker_) {
      queue_mu_.Unlock();
      ResolvePendingIntents();
      queue_mu_.Lock();
    }
  }
  queue_mu_.Unlock();
}

absl::Status Coordinator::RetryRemoval(uint64_t backend_id) {
  const std::string key = RemovedKey(backend_id);
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok() || (record->state() != store::v1::REMOVE_PENDING &&
                       record->state() != store::v1::STUCK)) {
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
  batch.Note(MakeEvent("retry", due,
                       record->state() == store::v1::STUCK
                           ? "stuck removal retried on demand"
                           : "retried on demand"));
  if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
  spdlog::info("removal queue: retry of {} ({}) asked for", due.removed_key(),
               key);
  Reschedule(due);
  return absl::OkStatus();
}

absl::StatusOr<bool> Coordinator::SetOwnership(
    const std::string& key, const std::string& owner,
    const std::vector<std::string>& leases) {
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok()) return record.status();
  // Intents are left alone: the operation in flight rewrites the record.
  switch (record->state()) {
    case store::v1::LIVE:
    case store::v1::MISSING:
    case store::v1::REMOVE_PENDING:
    case store::v1::STUCK:
      break;
    default:
      return false;
  }
  const bool owner_changed = record->owner() != owner;
  const bool leases_changed =
      !std::equal(record->leases().begin(), record->leases().end(),
                  leases.begin(), leases.end());
  if (!owner_changed && !leases_changed) return false;
  Record updated = *record;
  updated.set_owner(owner);
  updated.clear_leases();
  for (const std::string& lease : leases) updated.add_leases(lease);
  Ledger::Batch batch;
  batch.Put(updated);
  const std::string client_key = ClientKey(updated);
  if (owner_changed) {
    std::string detail =
        owner.empty()
            ? absl::StrCat("no container (", record->owner(), " is gone)")
            : absl::StrCat("container ", owner);
    batch.Note(MakeEvent("owner", updated, std::move(detail)));
  }
  if (leases_changed) {
    batch.Note(MakeEvent(
        "leases", updated,
        leases.empty() ? std::string("none")
                       : absl::StrCat("leases ", absl::StrJoin(leases, ", "))));
  }
  if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
  spdlog::debug("ownership of {}: owner \"{}\", leases [{}]", client_key, owner,
                absl::StrJoin(leases, ", "));
  return true;
}

void Coordinator::ReleaseHold(uint64_t backend_id) {
  absl::StatusOr<Record> record = ledger_->Get(RemovedKey(backend_id));
  if (!record.ok() || record->state() != store::v1::REMOVE_PENDING ||
      record->held_by().empty()) {
    return;
  }
  // Due now. Not written to the ledger: after a restart LoadRemovalQueue()
  // makes a held removal due, and the attempt asks again.
  spdlog::info("removal queue: container {} of {} ({}) is gone; removing it",
               record->held_by(), record->removed_key(), record->key());
  absl::MutexLock lock(&queue_mu_);
  schedule_.Schedule(backend_id, options_.clock());
  ++schedule_version_;
}

absl::Status Coordinator::NoteEvent(const std::string& key,
                                    const std::string& op,
                                    const std::string& detail) {
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok()) return record.status();
  Ledger::Batch batch;
  batch.Note(MakeEvent(op, *record, detail));
  return ledger_->Write(batch);
}

absl::StatusOr<bool> Coordinator::AdoptObject(uint64_t id) {
  const std::string key = AdoptedKey(id);
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::ReaderMutexLock gate(&cleanup_gate_);
  if (ledger_->Get(key).ok()) return false;
  absl::StatusOr<std::vector<BackendObject>> objects = backend_->List();
  if (!objects.ok()) return objects.status();
  auto object =
      std::find_if(objects->begin(), objects->end(),
                   [&](const BackendObject& o) { return o.id == id; });
  if (object == objects->end()) return false;
  const uint64_t parent_id = object->parent_id;
  bool recorded = false;
  std::string parent_key;
  absl::Status scan = ledger_->ForEach([&](const Record& r) {
    if (r.backend_id() == id) recorded = true;
    if (parent_id != 0 && r.backend_id() == parent_id) {
      parent_key = ClientKey(r);
    }
    return !recorded;
  });
  if (!scan.ok()) return scan;
  if (recorded) return false;
  Record adopted = MakeAdoptedRecord(
      id, parent_id, parent_key,
      "backend object without a ledger record, adopted by reconcile --apply");
  Ledger::Batch batch;
  batch.Put(adopted);
  batch.Note(MakeEvent("adopted", adopted, adopted.last_error()));
  if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
  ledger_->ReserveIdsUpTo(id);
  spdlog::warn("reconcile: adopted backend object {} as {}", id, key);
  return true;
}

absl::StatusOr<bool> Coordinator::MarkMissing(const std::string& key,
                                              uint64_t seq) {
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::ReaderMutexLock gate(&cleanup_gate_);
  absl::StatusOr<Record> record = ledger_->Get(key);
  if (!record.ok()) {
    return absl::IsNotFound(record.status()) ? absl::StatusOr<bool>(false)
                                             : record.status();
  }
  if (record->state() != store::v1::LIVE || record->seq() > seq) return false;
  absl::StatusOr<bool> stored = backend_->Exists(record->backend_id());
  if (!stored.ok()) return stored.status();
  if (*stored) return false;
  Record missing = *record;
  missing.set_state(store::v1::MISSING);
  missing.set_last_error("backend object not found by reconcile --apply");
  missing.set_updated_ns(NowNanos());
  Ledger::Batch batch;
  batch.Put(missing);
  batch.Note(MakeEvent("missing", missing, missing.last_error()));
  if (absl::Status s = ledger_->Write(batch); !s.ok()) return s;
  spdlog::error(
      "reconcile: snapshot {} has lost its backend storage; marked "
      "missing",
      key);
  return true;
}

void CountRemoval(const Record& record, RemovalQueueStats* stats) {
  if (record.state() == store::v1::STUCK) {
    ++stats->stuck;
  } else if (record.state() == store::v1::REMOVE_PENDING) {
    if (record.next_attempt_ns() > 0) {
      ++stats->scheduled;
    } else {
      ++stats->waiting_for_children;
    }
  }
}

absl::StatusOr<RemovalQueueStats> Coordinator::GetRemovalQueueStats() {
  RemovalQueueStats stats;
  absl::Status scan = ledger_->ForEach([&](const Record& r) {
    CountRemoval(r, &stats);
    return true;
  });
  if (!scan.ok()) return scan;
  absl::MutexLock lock(&queue_mu_);
  stats.next_due = schedule_.NextDue();
  return stats;
}

}  // namespace snapledger
