// FakeSnapshotter: an in-process snapshotter behind a Snapshots gRPC service
// on a unix socket, for the remote backend's tests. It keeps snapshots in
// memory and answers as containerd 1.6's snapshotters do: AlreadyExists for
// an existing key, NotFound for a missing key or parent, FailedPrecondition
// for Mounts of a committed snapshot, for a parent that is not committed
// and for removing a snapshot with children. Mounts are one bind mount
// naming the key.
//
// Knobs: keys made busy (Remove answers FailedPrecondition, as a mounted
// layer would); "remote snapshots", as stargz answers them: a Prepare
// carrying containerd.io/snapshot.ref commits the key under the label's
// value and answers AlreadyExists; objects can be dropped behind the
// client's back (a snapshotter that loses data); Stop/Start on the same
// socket (a snapshotter that restarts).
//
// Thread-safety: thread-safe. Not for production use.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"

namespace snapledger::testing {

class FakeSnapshotter final
    : public containerd::services::snapshots::v1::Snapshots::Service {
 public:
  using Info = containerd::services::snapshots::v1::Info;

  explicit FakeSnapshotter(std::string socket_path)
      : path_(std::move(socket_path)) {}
  ~FakeSnapshotter() override { Stop(); }

  // Serves on the socket; false if it could not.
  bool Start() {
    grpc::ServerBuilder builder;
    int bound = 0;
    builder.AddListeningPort("unix:" + path_, grpc::InsecureServerCredentials(),
                             &bound);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    return server_ != nullptr && bound != 0;
  }
  void Stop() {
    if (server_ == nullptr) return;
    server_->Shutdown();
    server_->Wait();
    server_.reset();
    ::unlink(path_.c_str());
  }

  void SetBusy(const std::string& key, bool busy) {
    absl::MutexLock l(&mu_);
    if (busy) {
      busy_.insert(key);
    } else {
      busy_.erase(key);
    }
  }
  void SetRemoteSnapshots(bool on) {
    absl::MutexLock l(&mu_);
    remote_ = on;
  }
  // Drops `key` without a trace (lost storage).
  void Lose(const std::string& key) {
    absl::MutexLock l(&mu_);
    snapshots_.erase(key);
  }
  // Adds a committed snapshot the client did not make (someone else's).
  void AddForeign(const std::string& key) {
    absl::MutexLock l(&mu_);
    Info info;
    info.set_name(key);
    info.set_kind(containerd::services::snapshots::v1::COMMITTED);
    snapshots_[key] = info;
  }
  std::map<std::string, Info> Snapshots() const {
    absl::MutexLock l(&mu_);
    return snapshots_;
  }
  // Labels each Prepare/View/Commit carried, by key (commits: by name).
  std::map<std::string, std::map<std::string, std::string>> SeenLabels() const {
    absl::MutexLock l(&mu_);
    return seen_labels_;
  }
  int cleanups() const {
    absl::MutexLock l(&mu_);
    return cleanups_;
  }

  grpc::Status Prepare(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::PrepareSnapshotRequest* req,
      containerd::services::snapshots::v1::PrepareSnapshotResponse* resp)
      override {
    return Create(containerd::services::snapshots::v1::ACTIVE, req->key(),
                  req->parent(), req->labels(), resp->mutable_mounts());
  }
  grpc::Status View(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::ViewSnapshotRequest* req,
      containerd::services::snapshots::v1::ViewSnapshotResponse* resp)
      override {
    return Create(containerd::services::snapshots::v1::VIEW, req->key(),
                  req->parent(), req->labels(), resp->mutable_mounts());
  }
  grpc::Status Mounts(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::MountsRequest* req,
      containerd::services::snapshots::v1::MountsResponse* resp) override {
    absl::MutexLock l(&mu_);
    auto it = snapshots_.find(req->key());
    if (it == snapshots_.end()) return NotFound(req->key());
    if (it->second.kind() == containerd::services::snapshots::v1::COMMITTED) {
      return grpc::Status(grpc::FAILED_PRECONDITION, "committed");
    }
    AddMount(req->key(), resp->mutable_mounts());
    return grpc::Status::OK;
  }
  grpc::Status Commit(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::CommitSnapshotRequest* req,
      google::protobuf::Empty*) override {
    absl::MutexLock l(&mu_);
    return CommitLocked(req->name(), req->key(), req->labels());
  }
  grpc::Status Remove(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::RemoveSnapshotRequest* req,
      google::protobuf::Empty*) override {
    absl::MutexLock l(&mu_);
    if (!snapshots_.contains(req->key())) return NotFound(req->key());
    if (busy_.contains(req->key())) {
      return grpc::Status(grpc::FAILED_PRECONDITION, "in use");
    }
    for (const auto& [k, info] : snapshots_) {
      if (info.parent() == req->key()) {
        return grpc::Status(grpc::FAILED_PRECONDITION, "has children");
      }
    }
    snapshots_.erase(req->key());
    return grpc::Status::OK;
  }
  grpc::Status Stat(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::StatSnapshotRequest* req,
      containerd::services::snapshots::v1::StatSnapshotResponse* resp)
      override {
    absl::MutexLock l(&mu_);
    auto it = snapshots_.find(req->key());
    if (it == snapshots_.end()) return NotFound(req->key());
    *resp->mutable_info() = it->second;
    return grpc::Status::OK;
  }
  grpc::Status List(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::ListSnapshotsRequest*,
      grpc::ServerWriter<
          containerd::services::snapshots::v1::ListSnapshotsResponse>* writer)
      override {
    containerd::services::snapshots::v1::ListSnapshotsResponse resp;
    {
      absl::MutexLock l(&mu_);
      for (const auto& [k, info] : snapshots_) *resp.add_info() = info;
    }
    writer->Write(resp);
    return grpc::Status::OK;
  }
  grpc::Status Usage(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::UsageRequest* req,
      containerd::services::snapshots::v1::UsageResponse* resp) override {
    absl::MutexLock l(&mu_);
    if (!snapshots_.contains(req->key())) return NotFound(req->key());
    resp->set_size(4096);
    resp->set_inodes(1);
    return grpc::Status::OK;
  }
  grpc::Status Cleanup(
      grpc::ServerContext*,
      const containerd::services::snapshots::v1::CleanupRequest*,
      google::protobuf::Empty*) override {
    absl::MutexLock l(&mu_);
    ++cleanups_;
    return grpc::Status::OK;
  }

 private:
  static grpc::Status NotFound(const std::string& key) {
    return grpc::Status(grpc::NOT_FOUND, "snapshot " + key + " not found");
  }
  static void AddMount(
      const std::string& key,
      google::protobuf::RepeatedPtrField<containerd::types::Mount>* out) {
    containerd::types::Mount* m = out->Add();
    m->set_type("bind");
    m->set_source("/fake/" + key);
    m->add_options("rbind");
  }

  grpc::Status CommitLocked(
      const std::string& name, const std::string& key,
      const google::protobuf::Map<std::string, std::string>& labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (snapshots_.contains(name)) {
      return grpc::Status(grpc::ALREADY_EXISTS, name + " exists");
    }
    auto it = snapshots_.find(key);
    if (it == snapshots_.end()) return NotFound(key);
    if (it->second.kind() != containerd::services::snapshots::v1::ACTIVE) {
      return grpc::Status(grpc::FAILED_PRECONDITION, key + " not active");
    }
    Info info = it->second;
    info.set_name(name);
    info.set_kind(containerd::services::snapshots::v1::COMMITTED);
    *info.mutable_labels() = labels;
    seen_labels_[name] = {labels.begin(), labels.end()};
    snapshots_.erase(it);
    snapshots_[name] = info;
    return grpc::Status::OK;
  }

  grpc::Status Create(
      containerd::services::snapshots::v1::Kind kind, const std::string& key,
      const std::string& parent,
      const google::protobuf::Map<std::string, std::string>& labels,
      google::protobuf::RepeatedPtrField<containerd::types::Mount>* mounts) {
    absl::MutexLock l(&mu_);
    seen_labels_[key] = {labels.begin(), labels.end()};
    if (snapshots_.contains(key)) {
      return grpc::Status(grpc::ALREADY_EXISTS, key + " exists");
    }
    if (!parent.empty()) {
      auto p = snapshots_.find(parent);
      if (p == snapshots_.end()) return NotFound(parent);
      if (p->second.kind() != containerd::services::snapshots::v1::COMMITTED) {
        return grpc::Status(grpc::FAILED_PRECONDITION, "parent not committed");
      }
    }
    Info info;
    info.set_name(key);
    info.set_parent(parent);
    info.set_kind(kind);
    *info.mutable_labels() = labels;
    snapshots_[key] = info;
    auto ref = labels.find("containerd.io/snapshot.ref");
    if (remote_ && kind == containerd::services::snapshots::v1::ACTIVE &&
        ref != labels.end()) {
      // As stargz: the layer is available remotely; commit it at once.
      grpc::Status st = CommitLocked(ref->second, key, labels);
      if (st.ok() || st.error_code() == grpc::ALREADY_EXISTS) {
        return grpc::Status(grpc::ALREADY_EXISTS,
                            "target snapshot " + ref->second + " exists");
      }
      return st;
    }
    AddMount(key, mounts);
    return grpc::Status::OK;
  }

  const std::string path_;
  std::unique_ptr<grpc::Server> server_;
  mutable absl::Mutex mu_;
  std::map<std::string, Info> snapshots_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> busy_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::string>> seen_labels_
      ABSL_GUARDED_BY(mu_);
  bool remote_ ABSL_GUARDED_BY(mu_) = false;
  int cleanups_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace snapledger::testing
