#include "plugin/containerd/ownership.h"

#include <fnmatch.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "plugin/record/history.h"
#include "plugin/record/keys.h"
#include "plugin/record/states.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

std::string Idle(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Seconds(1)));
}

// "<ns>/<id>" -> (ns, id); nullopt without a '/'.
std::optional<Ownership::NsName> SplitHolder(const std::string& holder) {
  const size_t slash = holder.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == holder.size()) {
    return std::nullopt;
  }
  return Ownership::NsName{holder.substr(0, slash), holder.substr(slash + 1)};
}

// Whether container ns/id, as the view knows it, was created after the
// removal of `record` was asked for: a container id used again. containerd
// had dropped the snapshot before it asked us to remove it, so such a
// container cannot be using it.
bool CreatedAfterRemoval(const Ownership& view, const std::string& ns,
                         const std::string& id, const Record& record) {
  if (record.remove_requested_ns() == 0) return false;
  const ContainerInfo* c = view.Container(ns, id);
  return c != nullptr && c->created_at != absl::InfinitePast() &&
         c->created_at > absl::FromUnixNanos(record.remove_requested_ns());
}

}  // namespace

std::string_view ReaperWord(ReaperAction action) {
  switch (action) {
    case ReaperAction::kNone:
      return "";
    case ReaperAction::kReap:
      return "reap";
    case ReaperAction::kDryRun:
      return "dry-run";
  }
  return "";
}

std::optional<ProxyKey> RecordIdentity(const Record& record) {
  if (!record.namespace_().empty() && !record.containerd_key().empty()) {
    return ProxyKey{record.namespace_(), record.containerd_key()};
  }
  return ParseProxyKey(ClientKey(record));
}

OwnerTracker::OwnerTracker(Ledger* ledger, Coordinator* coordinator,
                           ContainerdOps* ops, OwnerTrackerOptions options)
    : ledger_(ledger),
      coordinator_(coordinator),
      ops_(ops),
      options_(std::move(options)),
      view_(std::make_shared<const Ownership>()) {}

OwnerTracker::~OwnerTracker() { Stop(); }

void OwnerTracker::OnView(std::shared_ptr<const Ownership> view) {
  absl::MutexLock lock(&mu_);
  view_ = std::move(view);
  worker_.Wake();
}

std::shared_ptr<const Ownership> OwnerTracker::View() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

absl::Status OwnerTracker::Start() {
  return worker_.Start([this] { Loop(); });
}

void OwnerTracker::Loop() {
  uint64_t seen = 0;
  // A pass per new view, or per tick.
  while (worker_.WaitFor(options_.tick, seen)) {
    seen = worker_.wakes();
    RunOnce();
    // Bursts of events (a build starts and ends in a handful) share a pass.
    if (!worker_.SleepFor(kMinPassInterval)) return;
  }
}

void OwnerTracker::Stop() { worker_.Stop(); }

bool OwnerTracker::Matches(const std::string& id) const {
  for (const std::string& glob : options_.reaper.match) {
    if (::fnmatch(glob.c_str(), id.c_str(), 0) == 0) return true;
  }
  return false;
}

std::optional<std::string> OwnerTracker::Holder(const Record& record) {
  std::optional<ProxyKey> identity = RecordIdentity(record);
  if (!identity.has_value()) return std::nullopt;
  const std::string& ns = identity->ns;
  std::shared_ptr<const Ownership> view = View();
  const bool listed = view->last_sync != absl::InfinitePast();

  std::set<std::string> candidates;
  if (listed) {
    if (const SnapshotHolders* h = view->Holders(ns, identity->key)) {
      candidates.insert(h->containers.begin(), h->containers.end());
    }
  }
  // What the ledger remembers counts when the view cannot say "gone": no
  // listing yet, or disconnected (a deletion may have been missed either way
  // — but so may a container's continued existence).
  std::vector<std::string> remembered;
  for (absl::string_view owner :
       absl::StrSplit(record.owner(), ',', absl::SkipEmpty())) {
    remembered.emplace_back(owner);
  }
  if (std::optional<Ownership::NsName> held = SplitHolder(record.held_by());
      held.has_value() && held->first == ns) {
    remembered.push_back(held->second);
  }
  for (const std::string& id : remembered) {
    if (!listed || !view->connected || view->Container(ns, id) != nullptr) {
      candidates.insert(id);
    }
  }

  for (const std::string& id : candidates) {
    if (CreatedAfterRemoval(*view, ns, id, record)) continue;
    const std::string holder = absl::StrCat(ns, "/", id);
    if (ops_ == nullptr) return holder;
    absl::StatusOr<bool> exists = ops_->ContainerExists(ns, id);
    if (!exists.ok()) {
      spdlog::warn(
          "cannot ask containerd whether container {} still exists ({}); "
          "assuming it does",
          holder, exists.status().ToString());
      return holder;
    }
    if (*exists) return holder;
  }
  return std::nullopt;
}

void OwnerTracker::RunOnce() {
  absl::MutexLock pass(&pass_mu_);
  std::shared_ptr<const Ownership> view = View();
  const absl::Time now = options_.clock();

  // The records are read again only when the view or the ledger changed
  // since the last pass: an idle daemon's passes read nothing.
  const uint64_t seq = ledger_->LastSequence();
  if (tracked_ == nullptr || tracked_view_ != view || tracked_seq_ != seq) {
    auto tracked = std::make_unique<TrackedRecords>();
    if (absl::Status read = ReadTrackedRecords(*view, tracked.get());
        !read.ok()) {
      spdlog::warn("owners: cannot read the ledger: {}", read.ToString());
      tracked_ = nullptr;
      return;
    }
    tracked_ = std::move(tracked);
    tracked_view_ = view;
    tracked_seq_ = seq;
    if (view->connected) {
      RecordOwners(*view, *tracked_);
      ReleaseHeldRemovals(*view, tracked_->records);
    }
  }
  std::vector<DeadContainer> dead = FindDead(*view, *tracked_, now);
  LogDeadChanges(*view, dead, now);
  std::vector<Ownership::NsName> reaped;
  if (view->connected && options_.reaper.enabled && !options_.reaper.dry_run &&
      ops_ != nullptr) {
    reaped = Reap(*view, &dead);
  }
  Publish(*view, std::move(dead), reaped.size());
}

absl::Status OwnerTracker::ReadTrackedRecords(const Ownership& view,
                                              TrackedRecords* out) const {
  // Through the ledger's indexes, never a scan: the records that have an
  // owner, leases or a hold now (their ownership may have to be cleared),
  // and those of every name the view knows (held by a container or a lease,
  // or a container's rootfs) — with every record of the same names, so that
  // by_name picks among them as it would among all.
  std::map<std::string, Record> by_key;
  std::set<Ownership::NsName> names;
  absl::Status owned = ledger_->ForEachOwned([&](const Record& r) {
    if (!HasTrackedOwner(r)) return true;
    if (std::optional<ProxyKey> id = RecordIdentity(r)) {
      names.insert({id->ns, id->key});
    }
    by_key.emplace(r.key(), r);
    return true;
  });
  if (!owned.ok()) return owned;
  for (const auto& [name, holders] : view.snapshots) names.insert(name);
  for (const auto& [name, c] : view.containers) {
    names.insert({c.ns, c.snapshot_key});
  }
  for (const auto& [ns, key] : names) {
    absl::StatusOr<std::vector<Record>> named = ledger_->ByName(ns, key);
    if (!named.ok()) return named.status();
    for (Record& r : *named) {
      if (HasTrackedOwner(r)) by_key.emplace(r.key(), std::move(r));
    }
  }
  out->records.reserve(by_key.size());
  for (auto& [key, r] : by_key) out->records.push_back(std::move(r));
  // Indexed only now: the maps point into `records`, which no longer grows.
  for (const Record& r : out->records) {
    out->by_id[r.backend_id()] = &r;
    std::optional<ProxyKey> id = RecordIdentity(r);
    if (!id.has_value()) continue;
    const Record*& slot = out->by_name[{id->ns, id->key}];
    if (slot == nullptr || (IsQueuedRemoval(*slot) && !IsQueuedRemoval(r))) {
      slot = &r;
    }
  }
  return absl::OkStatus();
}

void OwnerTracker::RecordOwners(const Ownership& view,
                                const TrackedRecords& tracked) {
  for (const Record& r : tracked.records) {
    std::optional<ProxyKey> id = RecordIdentity(r);
    if (!id.has_value()) continue;
    std::string owner;
    std::vector<std::string> leases;
    auto named = tracked.by_name.find({id->ns, id->key});
    if (named != tracked.by_name.end() && named->second == &r) {
      if (const SnapshotHolders* h = view.Holders(id->ns, id->key)) {
        owner = absl::StrJoin(h->containers, ",");
        leases = h->leases;
      }
    }
    if (r.owner() == owner && std::equal(r.leases().begin(), r.leases().end(),
                                         leases.begin(), leases.end())) {
      continue;
    }
    if (absl::StatusOr<bool> changed =
            coordinator_->SetOwnership(r.key(), owner, leases);
        !changed.ok() && !absl::IsNotFound(changed.status())) {
      spdlog::warn("owners: cannot record the owner of {}: {}", ClientKey(r),
                   changed.status().ToString());
    }
  }
}

void OwnerTracker::ReleaseHeldRemovals(const Ownership& view,
                                       const std::vector<Record>& records) {
  for (const Record& r : records) {
    if (r.state() != store::v1::REMOVE_PENDING || r.held_by().empty()) {
      continue;
    }
    std::optional<Ownership::NsName> held = SplitHolder(r.held_by());
    if (!held.has_value() ||
        view.Container(held->first, held->second) == nullptr ||
        CreatedAfterRemoval(view, held->first, held->second, r)) {
      coordinator_->removal_queue().ReleaseHold(r.backend_id());
    }
  }
}

ReaperAction OwnerTracker::ReaperActionFor(const std::string& id) const {
  if (!options_.reaper.enabled || !Matches(id)) return ReaperAction::kNone;
  return options_.reaper.dry_run ? ReaperAction::kDryRun : ReaperAction::kReap;
}

std::vector<DeadContainer> OwnerTracker::FindDead(const Ownership& view,
                                                  const TrackedRecords& tracked,
                                                  absl::Time now) const {
  std::vector<DeadContainer> dead;
  // Ancestors read from the ledger for this pass (the nodes stay put).
  std::map<uint64_t, Record> ancestors;
  for (const auto& [name, c] : view.containers) {
    if (TaskIsLive(c.task) || c.idle_since == absl::InfiniteFuture() ||
        now - c.idle_since < options_.dead_after) {
      continue;
    }
    auto rootfs = tracked.by_name.find({c.ns, c.snapshot_key});
    if (rootfs == tracked.by_name.end() || rootfs->second == nullptr) continue;
    DeadContainer d;
    d.ns = c.ns;
    d.id = c.id;
    d.image = c.image;
    d.task = c.task;
    d.idle_since = c.idle_since;
    d.snapshot = rootfs->second->key();
    // The rootfs and its ancestors, each once (a loop in bad records ends).
    int64_t bytes = 0;
    std::set<uint64_t> seen;
    for (const Record* r = rootfs->second;
         r != nullptr && seen.insert(r->backend_id()).second;
         r = ParentOf(*r, tracked, &ancestors)) {
      d.pinned.push_back(r->key());
      if (r->kind() == store::v1::COMMITTED) bytes += r->size_bytes();
    }
    d.pinned_bytes = bytes;
    d.reaper = ReaperActionFor(c.id);
    dead.push_back(std::move(d));
  }
  return dead;
}

const Record* OwnerTracker::ParentOf(const Record& r,
                                     const TrackedRecords& tracked,
                                     std::map<uint64_t, Record>* read) const {
  const uint64_t id = r.parent_backend_id();
  if (id == 0) return nullptr;
  if (auto it = tracked.by_id.find(id); it != tracked.by_id.end()) {
    return it->second;
  }
  if (auto it = read->find(id); it != read->end()) return &it->second;
  // The parent under its key, or queued for removal under its id's key.
  for (const std::string& key : {r.parent(), RemovedKey(id)}) {
    if (key.empty()) continue;
    absl::StatusOr<Record> parent = ledger_->Get(key);
    if (parent.ok() && parent->backend_id() == id && HasTrackedOwner(*parent)) {
      return &read->emplace(id, *std::move(parent)).first->second;
    }
  }
  return nullptr;
}

void OwnerTracker::LogDeadChanges(const Ownership& view,
                                  const std::vector<DeadContainer>& dead,
                                  absl::Time now) {
  // Each dead container once (again if it comes back after reviving).
  std::map<Ownership::NsName, absl::Time> still_dead;
  for (const DeadContainer& d : dead) {
    Ownership::NsName name{d.ns, d.id};
    const absl::Time since = d.idle_since;
    still_dead[name] = since;
    if (logged_dead_.contains(name)) continue;
    std::string_view reaper_note;
    switch (d.reaper) {
      case ReaperAction::kReap:
        reaper_note = "; the reaper will delete it";
        break;
      case ReaperAction::kDryRun:
        reaper_note = "; the reaper would delete it (dry run)";
        break;
      case ReaperAction::kNone:
        break;
    }
    spdlog::warn(
        "dead container {}/{} (task {}, idle {}): pins {} snapshots ({} "
        "bytes committed): {}{}",
        d.ns, d.id, TaskStatusName(d.task), Idle(now - since), d.pinned.size(),
        d.pinned_bytes, absl::StrJoin(d.pinned, " <- "), reaper_note);
  }
  for (const auto& [name, since] : logged_dead_) {
    if (still_dead.contains(name)) continue;
    const ContainerInfo* c = view.Container(name.first, name.second);
    spdlog::info("container {}/{} is no longer dead ({})", name.first,
                 name.second,
                 c == nullptr ? "deleted" : "its task is live again");
  }
  logged_dead_ = std::move(still_dead);
  std::erase_if(reap_failures_,
                [&](const auto& f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pass_mu_) {
                  return !logged_dead_.contains(f.first);
                });
}

void OwnerTracker::Publish(const Ownership& view,
                           std::vector<DeadContainer> dead, size_t reaped) {
  {
    absl::MutexLock lock(&mu_);
    dead_ = std::move(dead);
    reaped_total_ += reaped;
  }
  if (!first_pass_done_ && view.last_sync != absl::InfinitePast()) {
    first_pass_done_ = true;
    if (options_.after_first_pass) options_.after_first_pass();
  }
}

std::vector<Ownership::NsName> OwnerTracker::Reap(
    const Ownership& view, std::vector<DeadContainer>* dead) {
  std::vector<Ownership::NsName> reaped;
  std::set<std::string> namespaces;
  const absl::Time now = options_.clock();
  for (auto it = dead->begin(); it != dead->end();) {
    if (it->reaper != ReaperAction::kReap) {
      ++it;
      continue;
    }
    if (worker_.stopping()) break;  // the rest waits for the next start
    if (!ReapOne(view, *it, now)) {
      ++it;
      continue;
    }
    const DeadContainer& d = *it;
    namespaces.insert(d.ns);
    reaped.push_back({d.ns, d.id});
    logged_dead_.erase({d.ns, d.id});
    it = dead->erase(it);
  }
  // containerd's collector (one for all namespaces) now removes the
  // snapshots nothing references; the removal queue takes it from there.
  if (!namespaces.empty()) {
    if (absl::Status s = ops_->CollectGarbage(*namespaces.begin()); !s.ok()) {
      spdlog::warn(
          "reaper: cannot run containerd's garbage collector: {} (it "
          "runs by itself later)",
          s.ToString());
    }
  }
  if (!reaped.empty() && options_.request_relist) options_.request_relist();
  return reaped;
}

bool OwnerTracker::ReapOne(const Ownership& view, const DeadContainer& d,
                           absl::Time now) {
  const Ownership::NsName key{d.ns, d.id};
  if (auto f = reap_failures_.find(key);
      f != reap_failures_.end() && now < f->second.next_try) {
    return false;
  }
  const std::string name = absl::StrCat(d.ns, "/", d.id);
  // Failures are retried with back-off, and logged once per new cause.
  auto failed =
      [&](const std::string& what,
          const absl::Status& cause) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pass_mu_) {
        ReapFailure& f = reap_failures_[key];
        const std::string text = cause.ToString();
        if (text != f.last_error) {
          spdlog::warn("reaper: {}: {}: {} (retrying with back-off)", name,
                       what, text);
        }
        f.last_error = text;
        f.delay = std::clamp(f.delay * 2, absl::Seconds(10), absl::Minutes(5));
        f.next_try = now + f.delay;
        return false;
      };
  // The view may be an event behind: ask once more before deleting.
  absl::StatusOr<TaskStatus> task = ops_->GetTask(d.ns, d.id);
  if (!task.ok()) return failed("cannot read its task", task.status());
  if (TaskIsLive(*task)) {
    spdlog::info("reaper: {}: its task is {} again; left alone", name,
                 TaskStatusName(*task));
    return false;
  }
  absl::Status s = ops_->DeleteTask(d.ns, d.id);
  if (s.ok()) s = ops_->DeleteContainer(d.ns, d.id);
  if (!s.ok()) return failed("cannot delete the dead container", s);
  reap_failures_.erase(key);
  const ContainerInfo* c = view.Container(d.ns, d.id);
  const std::string detail = absl::StrCat(
      "container ", name, " deleted by the reaper (task ",
      std::string(TaskStatusName(d.task)),
      c != nullptr
          ? absl::StrCat(", idle since ", absl::FormatTime(c->idle_since))
          : std::string(),
      ")");
  if (absl::Status n =
          coordinator_->NoteEvent(d.snapshot, HistoryOp::kReaped, detail);
      !n.ok()) {
    spdlog::warn("reaper: {}: cannot note it in the history: {}", name,
                 n.ToString());
  }
  spdlog::info(
      "reaper: deleted dead container {} (task {}); it pinned {} "
      "snapshots: {}",
      name, TaskStatusName(d.task), d.pinned.size(),
      absl::StrJoin(d.pinned, " <- "));
  return true;
}

std::vector<DeadContainer> OwnerTracker::DeadContainers() const {
  absl::MutexLock lock(&mu_);
  return dead_;
}

uint64_t OwnerTracker::reaped_total() const {
  absl::MutexLock lock(&mu_);
  return reaped_total_;
}

WatcherReport OwnerTracker::Status() const {
  std::shared_ptr<const Ownership> view = View();
  WatcherReport status;
  status.address = options_.containerd_address;
  status.connected = view->connected;
  status.last_sync = view->last_sync;
  status.last_error = view->last_error;
  status.containers = view->containers.size();
  status.leases = view->leases.size();
  return status;
}

DeadReport OwnerTracker::Dead() const {
  DeadReport report;
  report.watcher = Status();
  report.grace = options_.dead_after;
  absl::MutexLock lock(&mu_);
  report.containers = dead_;
  report.reaped_total = reaped_total_;
  return report;
}

}  // namespace snapledger
