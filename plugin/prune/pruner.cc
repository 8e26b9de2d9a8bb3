#include "plugin/prune/pruner.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "plugin/record/history.h"
#include "plugin/record/keys.h"
#include "plugin/text/human_units.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

// containerd's lease label after which its collector drops the lease
// (RFC 3339).
constexpr char kLeaseExpireLabel[] = "containerd.io/gc.expire";

absl::StatusOr<DiskFigures> StatRoot(const std::string& root) {
  struct statvfs st {};
  if (::statvfs(root.c_str(), &st) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "statvfs ", root, ": ", std::generic_category().message(errno)));
  }
  DiskFigures disk;
  disk.total_bytes =
      static_cast<int64_t>(st.f_blocks) * static_cast<int64_t>(st.f_frsize);
  disk.free_bytes =
      static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
  return disk;
}

}  // namespace

Pruner::Pruner(Ledger* ledger, Coordinator* coordinator, ContainerdOps* ops,
               PrunerOptions options)
    : ledger_(ledger),
      coordinator_(coordinator),
      ops_(ops),
      options_(std::move(options)) {}

Pruner::~Pruner() { Stop(); }

absl::Status Pruner::Start() {
  if (!options_.policy.enabled) return absl::OkStatus();
  return worker_.Start([this] { Loop(); });
}

void Pruner::Stop() { worker_.Stop(); }

void Pruner::Loop() {
  while (worker_.SleepFor(options_.policy.interval)) {
    absl::StatusOr<PruneReport> report = Run(PruneRequest{});
    if (!report.ok()) {
      spdlog::warn("prune: pass skipped: {}", report.status().ToString());
    }
  }
}

PruneStats Pruner::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

int64_t Pruner::UsageOf(const Record& record) const {
  if (record.kind() == store::v1::COMMITTED) return record.size_bytes();
  if (record.kind() != store::v1::ACTIVE) return 0;
  absl::StatusOr<Usage> usage =
      IsVisible(record) ? coordinator_->GetUsage(ClientKey(record))
      : options_.object_usage
          ? options_.object_usage(record.backend_id())
          : absl::StatusOr<Usage>(absl::NotFoundError("not measured"));
  return usage.ok() ? usage->size_bytes : 0;
}

absl::StatusOr<int64_t> Pruner::UsedBytes() const {
  std::vector<Record> active;
  int64_t used = 0;
  absl::Status s = ledger_->ForEach([&](const Record& r) {
    if (!IsVisible(r)) return true;
    if (r.kind() == store::v1::ACTIVE) {
      active.push_back(r);
    } else {
      used += UsageOf(r);
    }
    return true;
  });
  if (!s.ok()) return s;
  for (const Record& r : active) used += UsageOf(r);
  return used;
}

absl::StatusOr<DiskFigures> Pruner::MeasureDisk(
    const PrunePolicy& policy) const {
  absl::StatusOr<DiskFigures> disk =
      options_.disk ? options_.disk() : StatRoot(options_.root);
  if (!disk.ok()) return disk.status();
  disk->used_bytes = -1;
  if (policy.max_used.has_value()) {
    absl::StatusOr<int64_t> used = UsedBytes();
    if (!used.ok()) return used.status();
    disk->used_bytes = *used;
  }
  return disk;
}

std::optional<Record> Pruner::Visible(const std::string& ns,
                                      const std::string& key,
                                      const std::string& holder) const {
  absl::StatusOr<std::vector<Record>> records = ledger_->ByName(ns, key);
  if (!records.ok()) return std::nullopt;
  std::optional<Record> held;
  for (Record& r : *records) {
    if (IsVisible(r)) return std::move(r);
    // containerd already dropped it, and its removal waits for the
    // container: it goes when the container does.
    if (!holder.empty() && r.state() == store::v1::REMOVE_PENDING &&
        r.held_by() == holder) {
      held = std::move(r);
    }
  }
  return held;
}

std::vector<Pruner::Held> Pruner::HeldBy(const Ownership& view, PruneKind kind,
                                         const std::string& ns,
                                         const std::string& id) const {
  std::vector<std::string> keys;
  const std::string holder =
      kind == PruneKind::kContainer ? absl::StrCat(ns, "/", id) : "";
  if (kind == PruneKind::kContainer) {
    if (const ContainerInfo* c = view.Container(ns, id)) {
      keys.push_back(c->snapshot_key);
    }
  } else if (auto l = view.leases.find({ns, id}); l != view.leases.end()) {
    keys = l->second.snapshot_keys;
  }
  std::vector<Held> held;
  std::set<std::string> seen;
  for (const std::string& key : keys) {
    std::optional<Record> r = Visible(ns, key, holder);
    // The snapshot and its ancestors, leaf first.
    while (r.has_value() && seen.insert(r->key()).second) {
      const std::string parent = r->parent();
      held.push_back({*r, UsageOf(*r)});
      if (parent.empty()) break;
      absl::StatusOr<Record> p = ledger_->Get(parent);
      r = p.ok() && IsVisible(*p) ? std::optional<Record>(*std::move(p))
                                  : std::nullopt;
    }
  }
  return held;
}

std::vector<Pruner::Held> Pruner::CommittedIn(const std::string& ns) const {
  std::vector<Held> held;
  absl::Status s = ledger_->ForEach([&](const Record& r) {
    if (IsVisible(r) && r.kind() == store::v1::COMMITTED &&
        r.namespace_() == ns) {
      held.push_back({r, UsageOf(r)});
    }
    return true;
  });
  if (!s.ok()) {
    spdlog::warn("prune: cannot read the ledger: {}", s.ToString());
  }
  return held;
}

void Pruner::ImageCandidates(std::vector<PruneCandidate>* out) const {
  const std::vector<std::string>& globs = options_.policy.images;
  if (globs.empty()) return;
  absl::StatusOr<std::vector<std::string>> namespaces = ops_->ListNamespaces();
  if (!namespaces.ok()) {
    spdlog::warn("prune: images left out of this pass: {}",
                 namespaces.status().ToString());
    return;
  }
  for (const std::string& ns : *namespaces) {
    absl::StatusOr<std::vector<ImageInfo>> images = ops_->ListImages(ns);
    if (!images.ok()) {
      spdlog::warn("prune: images of namespace {} left out of this pass: {}",
                   ns, images.status().ToString());
      continue;
    }
    for (const ImageInfo& image : *images) {
      if (!MatchesAny(globs, image.name)) continue;
      // Any container of the namespace, whatever its snapshotter: the
      // watcher's view has only ours.
      absl::StatusOr<std::vector<std::string>> users =
          ops_->ImageUsers(ns, image.name);
      if (!users.ok()) {
        spdlog::warn("prune: image {}/{} left out of this pass: {}", ns,
                     image.name, users.status().ToString());
        continue;
      }
      PruneCandidate candidate;
      candidate.kind = PruneKind::kImage;
      candidate.ns = ns;
      candidate.id = image.name;
      candidate.unused_since = image.updated_at != absl::InfinitePast()
                                   ? image.updated_at
                                   : image.created_at;
      candidate.in_use = !users->empty();
      // Unknown: which snapshots are the image's layers, and which of them
      // another image shares, only containerd's content store tells. The
      // bytes freed are measured after the deletion.
      candidate.estimated_bytes = 0;
      out->push_back(std::move(candidate));
    }
  }
}

std::vector<PruneCandidate> Pruner::Candidates(const Ownership& view) const {
  std::vector<PruneCandidate> out;
  for (const auto& [name, c] : view.containers) {
    if (TaskIsLive(c.task) || c.idle_since == absl::InfiniteFuture()) continue;
    PruneCandidate candidate;
    candidate.kind = PruneKind::kContainer;
    candidate.ns = c.ns;
    candidate.id = c.id;
    candidate.unused_since = c.idle_since;
    // Its own layer: the parents are the image's, which usually stays.
    if (std::optional<Record> r =
            Visible(c.ns, c.snapshot_key, absl::StrCat(c.ns, "/", c.id))) {
      candidate.estimated_bytes = UsageOf(*r);
    }
    out.push_back(std::move(candidate));
  }
  const absl::Time now = options_.clock();
  for (const auto& [name, l] : view.leases) {
    PruneCandidate candidate;
    candidate.kind = PruneKind::kLease;
    candidate.ns = l.ns;
    candidate.id = l.id;
    candidate.unused_since = l.created_at;
    if (auto e = l.labels.find(kLeaseExpireLabel); e != l.labels.end()) {
      absl::Time expire;
      std::string err;
      if (absl::ParseTime(absl::RFC3339_full, e->second, &expire, &err)) {
        candidate.expired_by_label = expire <= now;
      }
    }
    // The snapshots it holds that no container uses.
    for (const std::string& key : l.snapshot_keys) {
      const SnapshotHolders* h = view.Holders(l.ns, key);
      if (h != nullptr && !h->containers.empty()) continue;
      if (std::optional<Record> r = Visible(l.ns, key, "")) {
        candidate.estimated_bytes += UsageOf(*r);
      }
    }
    out.push_back(std::move(candidate));
  }
  ImageCandidates(&out);
  return out;
}

void Pruner::Act(const Ownership& view, const std::string& policy,
                 PruneActionReport* action) {
  const PruneCandidate& c = action->choice.candidate;
  const std::string name = absl::StrCat(c.ns, "/", c.id);
  const std::string kind(PruneKindName(c.kind));
  std::vector<Held> held = c.kind == PruneKind::kImage
                               ? CommittedIn(c.ns)
                               : HeldBy(view, c.kind, c.ns, c.id);

  absl::Status s;
  if (c.kind == PruneKind::kImage) {
    // Judged on a listing: a container made since then that uses the image
    // keeps it (containerd's Images/Delete itself does not ask).
    absl::StatusOr<std::vector<std::string>> users =
        ops_->ImageUsers(c.ns, c.id);
    if (!users.ok()) {
      s = users.status();
    } else if (!users->empty()) {
      s = absl::FailedPreconditionError(absl::StrCat(
          "container ", c.ns, "/", users->front(), " uses it now; left alone"));
    } else {
      s = ops_->DeleteImage(c.ns, c.id);
    }
  } else if (c.kind == PruneKind::kContainer) {
    // The view may be an event behind: a task that runs again is left
    // alone (and DeleteTask itself refuses a live one).
    absl::StatusOr<TaskStatus> task = ops_->GetTask(c.ns, c.id);
    if (!task.ok()) {
      s = task.status();
    } else if (TaskIsLive(*task)) {
      s = absl::FailedPreconditionError(
          absl::StrCat("its task is ", std::string(TaskStatusName(*task)),
                       " again; left alone"));
    } else {
      s = ops_->DeleteTask(c.ns, c.id);
      if (s.ok()) s = ops_->DeleteContainer(c.ns, c.id);
    }
  } else {
    s = ops_->DeleteLease(c.ns, c.id);
  }
  if (!s.ok()) {
    action->error = s.ToString();
    spdlog::warn("prune: {} {}: not deleted: {}", kind, name, action->error);
    return;
  }
  action->done = true;
  // containerd's collector removes, through our Snapshots service, what
  // nothing references any more; queued parents cascade leaf first.
  if (absl::Status gc = ops_->CollectGarbage(c.ns); !gc.ok()) {
    spdlog::warn(
        "prune: cannot run containerd's garbage collector: {} (it runs by "
        "itself later)",
        gc.ToString());
  }
  std::set<std::string> freed_parents;
  for (const Held& h : held) {
    // Gone, or no longer visible; a removal that was held for the container
    // counts once released (else the queue's `removed` event shows it).
    absl::StatusOr<Record> now = ledger_->Get(h.record.key());
    const bool went =
        absl::IsNotFound(now.status()) ||
        (now.ok() &&
         (IsVisible(h.record) ? !IsVisible(*now) : now->held_by().empty()));
    if (went) {
      action->freed_bytes += h.bytes;
      action->freed_snapshots.push_back(h.record.key());
      freed_parents.insert(h.record.parent());
    }
  }
  // The history event goes on the snapshot the container or lease held; for
  // an image, on the topmost layer that went with it.
  const Record* noted = nullptr;
  if (c.kind != PruneKind::kImage) {
    if (!held.empty()) noted = &held.front().record;
  } else {
    for (const Held& h : held) {
      if (std::find(action->freed_snapshots.begin(),
                    action->freed_snapshots.end(),
                    h.record.key()) != action->freed_snapshots.end() &&
          !freed_parents.contains(h.record.key())) {
        noted = &h.record;
        break;
      }
    }
  }
  const std::string detail =
      absl::StrCat(kind, " ", name, " deleted by the prune (",
                   std::string(PruneReasonName(action->choice.reason)), ": ",
                   policy, "): freed ", action->freed_bytes, " bytes (",
                   HumanBytes(action->freed_bytes), ", ",
                   action->freed_snapshots.size(), " snapshots)");
  spdlog::info(
      "prune: {}{}", detail,
      action->freed_snapshots.empty()
          ? std::string()
          : absl::StrCat(": ", absl::StrJoin(action->freed_snapshots, " <- ")));
  if (noted != nullptr) {
    Ledger::Batch batch;
    batch.Note(MakeEvent(HistoryOp::kPruned, *noted, detail));
    if (absl::Status n = ledger_->Write(batch); !n.ok()) {
      spdlog::warn("prune: {}: cannot note it in the history: {}", name,
                   n.ToString());
    }
  }
}

absl::StatusOr<PruneReport> Pruner::Run(const PruneRequest& request) {
  absl::MutexLock pass(&pass_mu_);
  PrunePolicy policy = options_.policy;
  if (request.dry_run.has_value()) policy.dry_run = *request.dry_run;
  if (request.keep_duration.has_value()) {
    policy.keep_duration = *request.keep_duration;
  }
  if (request.min_free.has_value()) policy.min_free = *request.min_free;
  if (policy.keep_duration < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the TTL must not be negative");
  }

  auto failed = [&](absl::Status s) {
    absl::MutexLock lock(&mu_);
    ++stats_.passes;
    ++stats_.failed_passes;
    stats_.last_pass = options_.clock();
    return s;
  };
  std::shared_ptr<const Ownership> view =
      options_.view ? options_.view() : nullptr;
  if (view == nullptr || !view->connected) {
    return failed(absl::FailedPreconditionError(
        "containerd is not connected: the prune judges only a current view "
        "(see `snapledger stats`)"));
  }
  absl::StatusOr<DiskFigures> disk = MeasureDisk(policy);
  if (!disk.ok()) return failed(disk.status());

  PruneReport report;
  report.dry_run = policy.dry_run;
  report.policy = DescribePrunePolicy(policy);
  report.before = *disk;
  report.bytes_needed = BytesNeeded(policy, *disk);
  const absl::Time now = options_.clock();
  int64_t freed = 0;
  DiskFigures current = *disk;
  for (PruneChoice& choice :
       SelectPrune(policy, now, *disk, Candidates(*view))) {
    PruneActionReport action{std::move(choice)};
    if (policy.dry_run) {
      report.bytes_freed += action.choice.candidate.estimated_bytes;
      report.actions.push_back(std::move(action));
      continue;
    }
    if (action.choice.reason == PruneReason::kPressure) {
      // Measured again: the target may hold already (pressure choices come
      // last, so the pass ends). The deleter of a removed layer may lag, so
      // what the ledger says went counts too.
      absl::StatusOr<DiskFigures> d = MeasureDisk(policy);
      if (d.ok()) {
        current = *d;
        current.free_bytes =
            std::max(current.free_bytes, disk->free_bytes + freed);
        if (current.used_bytes >= 0) {
          current.used_bytes =
              std::min(current.used_bytes, disk->used_bytes - freed);
        }
      }
      if (BytesNeeded(policy, current) <= 0) break;
    }
    if (worker_.stopping()) break;
    Act(*view, report.policy, &action);
    freed += action.freed_bytes;
    report.bytes_freed += action.freed_bytes;
    report.actions.push_back(std::move(action));
  }

  absl::StatusOr<DiskFigures> after = MeasureDisk(policy);
  report.after = after.ok() ? *after : current;
  if (policy.dry_run) {
    report.target_met = report.bytes_needed - report.bytes_freed <= 0;
  } else {
    report.after.free_bytes =
        std::max(report.after.free_bytes, disk->free_bytes + freed);
    if (report.after.used_bytes >= 0 && disk->used_bytes >= 0) {
      report.after.used_bytes =
          std::min(report.after.used_bytes, disk->used_bytes - freed);
    }
    report.target_met = BytesNeeded(policy, report.after) <= 0;
  }

  bool deleted = false;
  {
    absl::MutexLock lock(&mu_);
    ++stats_.passes;
    stats_.last_pass = options_.clock();
    for (const PruneActionReport& a : report.actions) {
      if (a.done) {
        ++stats_.actions[std::string(PruneKindName(a.choice.candidate.kind))];
        stats_.bytes_freed += a.freed_bytes;
        deleted = true;
      } else if (!a.error.empty()) {
        ++stats_.failed_actions;
      }
    }
  }
  if (options_.on_action) {
    for (const PruneActionReport& a : report.actions) {
      if (a.done) {
        options_.on_action(PruneKindName(a.choice.candidate.kind),
                           a.freed_bytes);
      }
    }
  }
  if (!report.actions.empty() || report.bytes_needed > 0) {
    spdlog::info("prune{}: {} actions, {} {} ({}); free {} of {}, target {}",
                 policy.dry_run ? " (dry run)" : "", report.actions.size(),
                 HumanBytes(report.bytes_freed),
                 policy.dry_run ? "would be freed" : "freed", report.policy,
                 HumanBytes(report.after.free_bytes),
                 HumanBytes(report.after.total_bytes),
                 report.target_met ? "met" : "not met");
  }
  if (deleted && options_.request_relist) options_.request_relist();
  return report;
}

::snapledger::admin::v1::PruneResponse PruneResponseProto(
    const PruneReport& report) {
  ::snapledger::admin::v1::PruneResponse out;
  out.set_dry_run(report.dry_run);
  out.set_policy(report.policy);
  out.set_total_bytes(report.before.total_bytes);
  out.set_free_bytes_before(report.before.free_bytes);
  out.set_free_bytes_after(report.after.free_bytes);
  out.set_used_bytes_before(report.before.used_bytes);
  out.set_bytes_needed(report.bytes_needed);
  out.set_target_met(report.target_met);
  out.set_bytes_freed(report.bytes_freed);
  for (const PruneActionReport& a : report.actions) {
    ::snapledger::admin::v1::PruneAction* p = out.add_actions();
    const PruneCandidate& c = a.choice.candidate;
    p->set_kind(std::string(PruneKindName(c.kind)));
    p->set_namespace_(c.ns);
    p->set_id(c.id);
    p->set_reason(std::string(PruneReasonName(a.choice.reason)));
    p->set_unused_since_ns(c.unused_since == absl::InfinitePast()
                               ? 0
                               : absl::ToUnixNanos(c.unused_since));
    p->set_estimated_bytes(c.estimated_bytes);
    p->set_freed_bytes(a.freed_bytes);
    p->set_done(a.done);
    p->set_error(a.error);
    for (const std::string& k : a.freed_snapshots) p->add_freed_snapshots(k);
  }
  return out;
}

}  // namespace snapledger
