#include "plugin/coordinator.h"

#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "plugin/recovery.h"
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

Coordinator::Coordinator(Ledger* ledger, Backend* backend)
    : ledger_(ledger), backend_(backend) {}

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

  ResolvePendingIntents();
  KeyLocks::Guard guard = locks_.Lock({key, parent});
  absl::ReaderMutexLock gate(&cleanup_gate_);

  absl::StatusOr<Record> existing = ledger_->Get(key);
  if (existing.ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("snapshot ", Quote(key), ": already exists"));
  }
  if (!absl::IsNotFound(existing.status())) return existing.status();

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

  const int64_t now = NowNanos();
  record.set_key(key);
  record.set_kind(ToRecordKind(kind));
  record.set_state(store::v1::PREPARING);
  record.set_backend_id(ledger_->AllocateId());
  record.set_created_ns(now);
  record.set_updated_ns(now);
  CopyLabels(labels, &record);

  Ledger::Batch intent;
  intent.Put(record);
  if (absl::Status s = ledger_->Write(intent); !s.ok()) return s;
  CRASH_POINT("prepare.after_intent");

  if (absl::Status s = backend_->Create(record.backend_id(),
                                        record.parent_backend_id(), kind);
      !s.ok()) {
    Ledger::Batch undo;
    undo.Delete(record);
    if (absl::Status u = ledger_->Write(undo); !u.ok()) {
      spdlog::error("prepare {}: cannot roll back the intent: {}", key,
                    u.ToString());
      NotePendingIntent(key);
    }
    return BackendError(
        s, absl::StrCat("create storage for snapshot ", Quote(key)));
  }
  CRASH_POINT("prepare.after_backend");

  record.set_state(store::v1::LIVE);
  Ledger::Batch done;
  done.Put(record);
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    // The intent stays and is rolled back once the ledger heals: the caller
    // sees a failure, which is what the roll-back makes true.
    NotePendingIntent(key);
    return s;
  }
  CRASH_POINT("prepare.after_complete");
  return backend_->Mounts(record.backend_id(), record.parent_backend_id(),
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
    Record rollback = *active;
    rollback.set_last_error(std::string(usage.status().message()));
    Ledger::Batch undo;
    undo.Put(rollback);
    if (absl::Status u = ledger_->Write(undo); !u.ok()) {
      spdlog::error("commit {}: cannot roll back the intent: {}", key,
                    u.ToString());
      NotePendingIntent(key);
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
  CopyLabels(labels, &committed);
  Ledger::Batch done;
  done.Delete(*active);
  done.Put(committed);
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    NotePendingIntent(key);  // rolled back to the active snapshot later
    return s;
  }
  CRASH_POINT("commit.after_complete");
  return absl::OkStatus();
}

absl::Status Coordinator::Remove(const std::string& key) {
  ResolvePendingIntents();
  KeyLocks::Guard guard = locks_.Lock({key});
  absl::ReaderMutexLock gate(&cleanup_gate_);

  absl::StatusOr<Record> record = GetVisible(key);
  if (!record.ok()) return record.status();

  absl::StatusOr<std::vector<std::string>> children =
      ledger_->Children(record->backend_id(), 9);
  if (!children.ok()) return children.status();
  if (!children->empty()) {
    std::string names = absl::StrJoin(
        children->begin(),
        children->begin() + std::min<size_t>(children->size(), 8), ", ");
    if (children->size() > 8) absl::StrAppend(&names, ", ...");
    return absl::FailedPreconditionError(
        absl::StrCat("cannot remove snapshot with child: ", Quote(key),
                     " has children [", names, "]"));
  }

  Record intent_record = *record;
  intent_record.set_prior_state(record->state());
  intent_record.set_state(store::v1::REMOVING);
  Ledger::Batch intent;
  intent.Put(intent_record);
  if (absl::Status s = ledger_->Write(intent); !s.ok()) return s;
  CRASH_POINT("remove.after_intent");

  absl::Status removed = backend_->Remove(record->backend_id());
  if (absl::IsNotFound(removed)) {
    spdlog::warn("remove {}: backend object {} was already gone", key,
                 record->backend_id());
    removed = absl::OkStatus();
  }
  if (!removed.ok()) {
    Record rollback = *record;
    rollback.set_last_error(std::string(removed.message()));
    Ledger::Batch undo;
    undo.Put(rollback);
    if (absl::Status u = ledger_->Write(undo); !u.ok()) {
      spdlog::error("remove {}: cannot roll back the intent: {}", key,
                    u.ToString());
      NotePendingIntent(key);
    }
    return BackendError(removed, absl::StrCat("remove snapshot ", Quote(key)));
  }
  CRASH_POINT("remove.after_backend");

  Ledger::Batch done;
  done.Delete(*record);
  if (absl::Status s = ledger_->Write(done); !s.ok()) {
    NotePendingIntent(key);  // rolled forward later
    return s;
  }
  CRASH_POINT("remove.after_complete");
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
    KeyLocks::Guard guard = locks_.Lock({key});
    absl::ReaderMutexLock gate(&cleanup_gate_);
    absl::Status s;
    absl::StatusOr<Record> record = ledger_->Get(key);
    if (record.ok() && !IsVisible(*record)) {
      absl::StatusOr<bool> stored = backend_->Exists(record->backend_id());
      RecoveryReport report;
      s = stored.ok()
              ? ResolveIntent(*ledger_, *backend_, *record, *stored, &report)
              : stored.status();
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
  if (!cleanup_gate_.WriterTryLock()) {
    spdlog::debug("cleanup: mutations in flight; sweep skipped this time");
    return absl::OkStatus();
  }
  absl::Status s = backend_->Cleanup();
  cleanup_gate_.WriterUnlock();
  return s;
}

}  // namespace snapledger
