#include "plugin/backend/remote/remote_backend.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "plugin/backend/fs/mount_table.h"
#include "plugin/rpc/status.h"
#include "plugin/transport/transport.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

namespace pb = ::containerd::services::snapshots::v1;

constexpr char kPrefix[] = "snapledger/";
constexpr char kActivePrefix[] = "snapledger/a/";
constexpr char kCommittedPrefix[] = "snapledger/c/";
// A short-lived view on a committed object, made only to learn where its
// tree is (CheckNotMounted); removed at once, swept by List if a crash left
// one.
constexpr char kProbePrefix[] = "snapledger/probe/";

// "<prefix><id>" → id; nullopt for anything else.
std::optional<uint64_t> IdOf(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  uint64_t id = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
  if (ec != std::errc() || end != name.data() + name.size() || id == 0) {
    return std::nullopt;
  }
  return id;
}

std::vector<Mount> MountsOf(
    const google::protobuf::RepeatedPtrField<containerd::types::Mount>& in) {
  std::vector<Mount> out;
  out.reserve(in.size());
  for (const containerd::types::Mount& m : in) {
    out.push_back(Mount{.type = m.type(),
                        .source = m.source(),
                        .options = {m.options().begin(), m.options().end()}});
  }
  return out;
}

// containerd 1.6's snapshotters fail a Walk of a store that has never held
// a snapshot ("bucket does not exist: not found"), and its snapshotservice
// passes that error on unconverted (code Unknown): an empty listing.
bool IsEmptyStore(const grpc::Status& st) {
  const absl::StatusCode code = CodeOf(st);
  return code == absl::StatusCode::kNotFound ||
         (code == absl::StatusCode::kUnknown &&
          absl::EndsWith(st.error_message(), "not found"));
}

class RemoteBackend final : public Backend {
 public:
  RemoteBackend(RemoteBackendOptions options,
                std::shared_ptr<grpc::Channel> channel)
      : options_(std::move(options)),
        stub_(pb::Snapshots::NewStub(channel)),
        channel_(std::move(channel)) {}

  std::string_view Name() const override { return "remote"; }

  absl::Status Create(uint64_t id, uint64_t parent_id,
                      SnapshotKind kind) override {
    return CreateWithLabels(id, parent_id, kind, {});
  }

  absl::Status CreateWithLabels(uint64_t id, uint64_t parent_id,
                                SnapshotKind kind,
                                const BackendLabels& labels) override {
    const std::string key = RemoteActiveName(id);
    const std::string parent =
        parent_id == 0 ? "" : RemoteCommittedName(parent_id);
    bool asks_remote = false;
    google::protobuf::Map<std::string, std::string> forwarded;
    for (const auto& [k, v] : labels) {
      if (k == kSnapshotRefLabel) {
        // The downstream commits under our name for the object, never a
        // client's name.
        if (kind == SnapshotKind::kActive && !v.empty()) {
          forwarded[k] = RemoteCommittedName(id);
          asks_remote = true;
        }
      } else if (absl::StartsWith(k, kForwardedLabelPrefix)) {
        forwarded[k] = v;
      }
    }
    std::vector<Mount> mounts;
    const grpc::Status st =
        MakeSnapshot(kind, key, parent, std::move(forwarded), &mounts);
    if (st.ok()) {
      std::string tree =
          kind == SnapshotKind::kActive ? OwnTree(mounts) : std::string();
      absl::MutexLock lock(&mu_);
      if (!tree.empty()) trees_[id] = Tree{.path = std::move(tree)};
      new_mounts_[id] = std::move(mounts);
      return absl::OkStatus();
    }
    if (asks_remote && CodeOf(st) == absl::StatusCode::kAlreadyExists) {
      // A remote snapshotter found the layer available and committed it
      // under the name we gave: confirm before telling the coordinator.
      absl::StatusOr<pb::Info> info = Stat(RemoteCommittedName(id));
      if (info.ok() && info->kind() == pb::COMMITTED) {
        return MarkCommittedByBackend(absl::AlreadyExistsError(
            absl::StrCat("downstream committed object ", id, " as ",
                         RemoteCommittedName(id), " (remote snapshot)")));
      }
    }
    return Failed(
        st,
        absl::StrCat(kind == SnapshotKind::kView ? "view " : "prepare ", key));
  }

  absl::StatusOr<Usage> Commit(uint64_t id) override {
    return CommitWithLabels(id, {});
  }

  absl::StatusOr<Usage> CommitWithLabels(uint64_t id,
                                         const BackendLabels& labels) override {
    pb::CommitSnapshotRequest req;
    req.set_snapshotter(options_.snapshotter_name);
    req.set_name(RemoteCommittedName(id));
    req.set_key(RemoteActiveName(id));
    for (const auto& [k, v] : labels) {
      // snapshot.ref names a client's snapshot; it has no meaning below.
      if (absl::StartsWith(k, kForwardedLabelPrefix)) {
        (*req.mutable_labels())[k] = v;
      }
    }
    google::protobuf::Empty resp;
    auto ctx = Context();
    grpc::Status st = stub_->Commit(ctx.get(), req, &resp);
    if (!st.ok()) {
      // Idempotent: an earlier Commit whose answer was lost already did it
      // (the committed name exists and the active one is gone).
      const absl::StatusCode code = CodeOf(st);
      if (code != absl::StatusCode::kNotFound &&
          code != absl::StatusCode::kAlreadyExists) {
        return Failed(st, absl::StrCat("commit ", RemoteActiveName(id)));
      }
      absl::StatusOr<pb::Info> committed = Stat(RemoteCommittedName(id));
      absl::StatusOr<pb::Info> active = Stat(RemoteActiveName(id));
      if (!committed.ok() || !absl::IsNotFound(active.status())) {
        return Failed(st, absl::StrCat("commit ", RemoteActiveName(id)));
      }
    }
    {
      absl::MutexLock lock(&mu_);
      new_mounts_.erase(id);
      if (auto it = trees_.find(id); it != trees_.end()) {
        it->second.committed = true;
      }
    }
    return UsageOf(RemoteCommittedName(id));
  }

  absl::Status Remove(uint64_t id) override {
    {
      absl::MutexLock lock(&mu_);
      new_mounts_.erase(id);
    }
    // Busy here before busy below: many snapshotters (containerd's overlayfs
    // and native among them) delete a mounted tree without a word.
    bool committed = false;
    if (absl::Status busy = CheckNotMounted(id, &committed); !busy.ok()) {
      return busy;
    }
    // Forgotten once gone; kept while the removal is refused.
    auto forget = [this, id] {
      absl::MutexLock lock(&mu_);
      trees_.erase(id);
    };
    // Either name, whichever exists, the one the check found first.
    std::vector<std::string> names = {RemoteActiveName(id),
                                      RemoteCommittedName(id)};
    if (committed) std::swap(names[0], names[1]);
    for (const std::string& name : names) {
      pb::RemoveSnapshotRequest req;
      req.set_snapshotter(options_.snapshotter_name);
      req.set_key(name);
      google::protobuf::Empty resp;
      auto ctx = Context();
      grpc::Status st = stub_->Remove(ctx.get(), req, &resp);
      if (st.ok()) {
        forget();
        return absl::OkStatus();
      }
      if (CodeOf(st) == absl::StatusCode::kFailedPrecondition) {
        // Busy below (mounted, in use, children it knows of): retried.
        return absl::FailedPreconditionError(absl::StrCat(
            "busy: the snapshotter at ", options_.address,
            " refused to remove ", name, ": ", st.error_message()));
      }
      if (CodeOf(st) != absl::StatusCode::kNotFound) {
        return Failed(st, absl::StrCat("remove ", name));
      }
    }
    forget();
    return absl::NotFoundError(absl::StrCat("object ", id, " does not exist"));
  }

  absl::StatusOr<std::vector<Mount>> Mounts(uint64_t id, uint64_t parent_id,
                                            SnapshotKind kind) override {
    (void)parent_id;
    (void)kind;
    pb::MountsRequest req;
    req.set_snapshotter(options_.snapshotter_name);
    req.set_key(RemoteActiveName(id));
    pb::MountsResponse resp;
    auto ctx = Context();
    grpc::Status st = stub_->Mounts(ctx.get(), req, &resp);
    if (!st.ok()) return Failed(st, absl::StrCat("mounts of ", req.key()));
    return MountsOf(resp.mounts());
  }

  // The mounts the Prepare or View returned: no call to the downstream.
  absl::StatusOr<std::vector<Mount>> MountsOfNew(uint64_t id,
                                                 uint64_t parent_id,
                                                 SnapshotKind kind) override {
    {
      absl::MutexLock lock(&mu_);
      auto it = new_mounts_.find(id);
      if (it != new_mounts_.end()) {
        std::vector<Mount> mounts = std::move(it->second);
        new_mounts_.erase(it);
        return mounts;
      }
    }
    return Mounts(id, parent_id, kind);  // bounded by the call's deadline
  }

  absl::StatusOr<Usage> DiskUsage(uint64_t id) override {
    absl::StatusOr<Usage> usage = UsageOf(RemoteActiveName(id));
    if (absl::IsNotFound(usage.status())) {
      usage = UsageOf(RemoteCommittedName(id));
    }
    return usage;
  }

  absl::StatusOr<bool> Exists(uint64_t id) override {
    for (const std::string& name :
         {RemoteActiveName(id), RemoteCommittedName(id)}) {
      absl::StatusOr<pb::Info> info = Stat(name);
      if (info.ok()) return true;
      if (!absl::IsNotFound(info.status())) return info.status();
    }
    return false;
  }

  absl::StatusOr<bool> IsCommitted(uint64_t id) override {
    absl::StatusOr<pb::Info> info = Stat(RemoteCommittedName(id));
    if (absl::IsNotFound(info.status())) return false;
    if (!info.ok()) return info.status();
    return info->kind() == pb::COMMITTED;
  }

  absl::StatusOr<std::vector<BackendObject>> List() override {
    pb::ListSnapshotsRequest req;
    req.set_snapshotter(options_.snapshotter_name);
    auto ctx = Context();
    std::unique_ptr<grpc::ClientReader<pb::ListSnapshotsResponse>> reader =
        stub_->List(ctx.get(), req);
    std::map<uint64_t, uint64_t> objects;  // id → parent id
    std::vector<std::string> probes;
    pb::ListSnapshotsResponse resp;
    while (reader->Read(&resp)) {
      for (const pb::Info& info : resp.info()) {
        if (!absl::StartsWith(info.name(), kPrefix)) continue;  // not ours
        if (absl::StartsWith(info.name(), kProbePrefix)) {
          probes.push_back(info.name());
          continue;
        }
        std::optional<uint64_t> id = IdOf(info.name(), kActivePrefix);
        if (!id.has_value()) id = IdOf(info.name(), kCommittedPrefix);
        if (!id.has_value()) {
          spdlog::warn(
              "remote backend: ignoring {} (not a name snapledger "
              "makes)",
              info.name());
          continue;
        }
        uint64_t parent_id = 0;
        if (!info.parent().empty()) {
          std::optional<uint64_t> p = IdOf(info.parent(), kCommittedPrefix);
          if (!p.has_value()) {
            spdlog::warn("remote backend: {} has parent {}, not one of ours",
                         info.name(), info.parent());
            continue;
          }
          parent_id = *p;
        }
        objects[*id] = parent_id;
      }
    }
    grpc::Status st = reader->Finish();
    if (!st.ok() && !(objects.empty() && IsEmptyStore(st))) {
      return Failed(st, "list");
    }
    for (const std::string& probe : probes) RemoveName(probe);
    std::vector<BackendObject> out;
    out.reserve(objects.size());
    for (const auto& [id, parent_id] : objects) {
      out.push_back(BackendObject{.id = id, .parent_id = parent_id});
    }
    return out;
  }

  absl::Status Cleanup() override {
    pb::CleanupRequest req;
    req.set_snapshotter(options_.snapshotter_name);
    google::protobuf::Empty resp;
    auto ctx = Context();
    grpc::Status st = stub_->Cleanup(ctx.get(), req, &resp);
    // A snapshotter without Cleanup, or with an empty store, has nothing to
    // sweep.
    if (st.ok() || CodeOf(st) == absl::StatusCode::kUnimplemented ||
        IsEmptyStore(st)) {
      return absl::OkStatus();
    }
    return Failed(st, "cleanup");
  }

 private:
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout));
    // Fail fast while the downstream is down (Unavailable), never wait for
    // it to come back inside a call.
    ctx->set_wait_for_ready(false);
    return ctx;
  }

  // FailedPrecondition (busy) if the tree that active object or view `id`
  // writes to, as its mounts name it (a bind mount's source, an overlay's
  // upperdir), is in use by a mount in this mount namespace: a container's
  // rootfs, or anything mounted on or from it. Nothing to check for a
  // committed object (the ledger keeps its children), for a snapshotter
  // whose trees this process cannot see, or whose mounts name no local tree.
  // Sets `*committed` when `id` has no active name (committed, or gone).
  absl::Status CheckNotMounted(uint64_t id, bool* committed_out) {
    std::optional<Tree> known;
    {
      absl::MutexLock lock(&mu_);
      if (auto it = trees_.find(id); it != trees_.end()) known = it->second;
    }
    if (known.has_value()) {
      *committed_out = known->committed;
      return CheckTreesNotMounted(id, {known->path});
    }
    absl::StatusOr<std::vector<Mount>> mounts =
        Mounts(id, 0, SnapshotKind::kActive);
    bool committed = false;
    if (absl::IsNotFound(mounts.status())) {
      // Committed (or gone): a view on it names its tree as the view's
      // source or topmost lower layer.
      committed = true;
      *committed_out = true;
      mounts = ProbeMounts(id);
      if (absl::IsNotFound(mounts.status())) return absl::OkStatus();
    }
    // Anything else fails the removal, to be retried: never remove
    // unchecked.
    if (!mounts.ok()) return mounts.status();
    std::vector<std::string> trees;
    for (const Mount& m : *mounts) {
      if (m.type == "bind" || m.type == "rbind") {
        trees.push_back(m.source);
      } else if (m.type == "overlay") {
        for (const std::string& o : m.options) {
          if (!committed && o.starts_with("upperdir=")) {
            trees.push_back(o.substr(9));
          }
          if (committed && o.starts_with("lowerdir=")) {
            trees.push_back(o.substr(9, o.find(':') == std::string::npos
                                            ? std::string::npos
                                            : o.find(':') - 9));
          }
        }
      }
    }
    return CheckTreesNotMounted(id, trees);
  }

  // The tree an active object writes to, as its mounts name it: the source
  // of a bind mount (no parent), an overlay's upperdir. Empty if none.
  static std::string OwnTree(const std::vector<Mount>& mounts) {
    if (mounts.size() != 1) return "";
    const Mount& m = mounts.front();
    if (m.type == "bind" || m.type == "rbind") return m.source;
    for (const std::string& o : m.options) {
      if (o.starts_with("upperdir=")) return o.substr(9);
    }
    return "";
  }

  // FailedPrecondition (busy) if a mount uses any of `trees`.
  absl::Status CheckTreesNotMounted(uint64_t id,
                                    const std::vector<std::string>& trees) {
    std::shared_ptr<const std::vector<MountEntry>> table;
    for (const std::string& tree : trees) {
      if (tree.empty() || tree.front() != '/') continue;
      std::error_code ec;
      const std::filesystem::path dir = std::filesystem::canonical(tree, ec);
      struct stat parent;
      if (ec || dir == "/" || ::stat(dir.parent_path().c_str(), &parent) != 0) {
        continue;  // not visible from here
      }
      if (table == nullptr) {
        absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>> t =
            mount_table_.Get();
        if (!t.ok()) return t.status();
        table = *std::move(t);
      }
      std::vector<MountEntry> users = MountsUsing(*table, dir, parent.st_dev);
      std::vector<MountEntry> layers = OverlayMountsUsing(*table, dir, "");
      users.insert(users.end(), layers.begin(), layers.end());
      if (!users.empty()) {
        // The local backends' wording (ObjectDir), so that one reading of
        // "busy" fits every backend.
        std::string at = users.front().mount_point;
        if (users.size() > 1) {
          absl::StrAppend(&at, " and ", users.size() - 1, " more");
        }
        return absl::FailedPreconditionError(absl::StrCat(
            "snapshot object ", id, " (", RemoteActiveName(id), ", ",
            dir.string(), ") is in use: mounted at ", at, " (busy)"));
      }
    }
    return absl::OkStatus();
  }

  // A View (kind kView) or else a Prepare of downstream snapshot `key` on
  // `parent` (empty: none) with `labels`; the mounts it answers go to
  // *mounts. containerd's two calls take the same request and answer the
  // same.
  grpc::Status MakeSnapshot(
      SnapshotKind kind, const std::string& key, const std::string& parent,
      google::protobuf::Map<std::string, std::string> labels,
      std::vector<Mount>* mounts) {
    const auto call = [&](auto req, auto resp, auto rpc) {
      req.set_snapshotter(options_.snapshotter_name);
      req.set_key(key);
      req.set_parent(parent);
      *req.mutable_labels() = std::move(labels);
      auto ctx = Context();
      grpc::Status st = (stub_.get()->*rpc)(ctx.get(), req, &resp);
      if (st.ok()) *mounts = MountsOf(resp.mounts());
      return st;
    };
    using Stub = pb::Snapshots::Stub;
    if (kind == SnapshotKind::kView) {
      return call(pb::ViewSnapshotRequest(), pb::ViewSnapshotResponse(),
                  &Stub::View);
    }
    return call(pb::PrepareSnapshotRequest(), pb::PrepareSnapshotResponse(),
                &Stub::Prepare);
  }

  // The mounts of a view on committed object `id`, made and removed at
  // once. NotFound if the object does not exist.
  absl::StatusOr<std::vector<Mount>> ProbeMounts(uint64_t id) {
    const std::string probe = absl::StrCat(kProbePrefix, id);
    std::vector<Mount> mounts;
    grpc::Status st;
    for (int attempt = 0; attempt < 2; ++attempt) {
      st = MakeSnapshot(SnapshotKind::kView, probe, RemoteCommittedName(id), {},
                        &mounts);
      if (CodeOf(st) != absl::StatusCode::kAlreadyExists) break;
      RemoveName(probe);  // a leftover of a crash
    }
    if (!st.ok()) return Failed(st, absl::StrCat("view ", probe));
    RemoveName(probe);
    return mounts;
  }

  // Removes downstream snapshot `name`, whatever the outcome.
  void RemoveName(const std::string& name) {
    pb::RemoveSnapshotRequest req;
    req.set_snapshotter(options_.snapshotter_name);
    req.set_key(name);
    google::protobuf::Empty resp;
    auto ctx = Context();
    grpc::Status st = stub_->Remove(ctx.get(), req, &resp);
    if (!st.ok() && CodeOf(st) != absl::StatusCode::kNotFound) {
      spdlog::warn("remote backend: remove {}: {}", name, st.error_message());
    }
  }

  absl::StatusOr<pb::Info> Stat(const std::string& name) {
    pb::StatSnapshotRequest req;
    req.set_snapshotter(options_.snapshotter_name);
    req.set_key(name);
    pb::StatSnapshotResponse resp;
    auto ctx = Context();
    grpc::Status st = stub_->Stat(ctx.get(), req, &resp);
    if (!st.ok()) return Failed(st, absl::StrCat("stat ", name));
    return resp.info();
  }

  absl::StatusOr<Usage> UsageOf(const std::string& name) {
    pb::UsageRequest req;
    req.set_snapshotter(options_.snapshotter_name);
    req.set_key(name);
    pb::UsageResponse resp;
    auto ctx = Context();
    grpc::Status st = stub_->Usage(ctx.get(), req, &resp);
    if (!st.ok()) return Failed(st, absl::StrCat("usage of ", name));
    return Usage{.size_bytes = resp.size(), .inodes = resp.inodes()};
  }

  // The downstream's status, naming it and the call. An unreachable
  // downstream is Unavailable whatever gRPC reports for it.
  absl::Status Failed(const grpc::Status& st, const std::string& what) const {
    absl::Status s = FromGrpcStatus(
        st, absl::StrCat("snapshotter at ", options_.address, ": ", what));
    if (CodeOf(st) == absl::StatusCode::kUnavailable) {
      return absl::UnavailableError(
          absl::StrCat(s.message(), " (unreachable; reconnecting)"));
    }
    return s;
  }

  const RemoteBackendOptions options_;
  const std::unique_ptr<pb::Snapshots::Stub> stub_;
  const std::shared_ptr<grpc::Channel> channel_;
  MountTableCache mount_table_;
  absl::Mutex mu_;
  // The tree of each active object made since start (and whether it is now
  // committed): Remove's busy check needs no downstream call for them. One
  // small entry per object; objects made before a restart are looked up.
  struct Tree {
    std::string path;
    bool committed = false;
  };
  absl::flat_hash_map<uint64_t, Tree> trees_ ABSL_GUARDED_BY(mu_);
  // Mounts returned by Prepare/View, until MountsOfNew takes them.
  absl::flat_hash_map<uint64_t, std::vector<Mount>> new_mounts_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::string RemoteActiveName(uint64_t id) {
  return absl::StrCat(kActivePrefix, id);
}

std::string RemoteCommittedName(uint64_t id) {
  return absl::StrCat(kCommittedPrefix, id);
}

absl::StatusOr<std::unique_ptr<Backend>> NewRemoteBackend(
    const RemoteBackendOptions& options) {
  grpc::ChannelArguments args;
  // Reconnect quickly once the downstream is back (gRPC's default backoff
  // grows to 120 s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(64 << 20);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      Dial(options.address, args);
  if (!channel.ok()) return channel.status();
  return std::make_unique<RemoteBackend>(options, *std::move(channel));
}

}  // namespace snapledger
