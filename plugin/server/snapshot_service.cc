#include "plugin/server/snapshot_service.h"

#include <atomic>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "plugin/rpc/status.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

Labels FromProto(const google::protobuf::Map<std::string, std::string>& m) {
  return Labels(m.begin(), m.end());
}

void SetTimestamp(int64_t nanos, google::protobuf::Timestamp* ts) {
  ts->set_seconds(nanos / 1000000000);
  ts->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

void FillMounts(
    const std::vector<Mount>& mounts,
    google::protobuf::RepeatedPtrField<containerd::types::Mount>* out) {
  for (const Mount& m : mounts) {
    containerd::types::Mount* pm = out->Add();
    pm->set_type(m.type);
    pm->set_source(m.source);
    for (const std::string& o : m.options) pm->add_options(o);
  }
}

// Logs one call at debug level (at warn level when it failed with an error
// containerd does not expect in normal operation) and converts its status.
// Tells the service's observer, if any, the call's duration and code.
class CallLog {
 public:
  CallLog(const char* op, const std::string& key, const RpcObserver& observer)
      : op_(op),
        key_(key),
        observer_(observer),
        start_(std::chrono::steady_clock::now()) {}
  grpc::Status Done(const absl::Status& status) {
    const auto elapsed = std::chrono::steady_clock::now() - start_;
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count();
    grpc::Status reply = ToGrpcStatus(status);
    if (observer_) {
      // gRPC's codes and absl's share their numbers.
      observer_(op_, static_cast<absl::StatusCode>(reply.error_code()),
                absl::FromChrono(elapsed));
    }
    switch (status.code()) {
      case absl::StatusCode::kOk:
      case absl::StatusCode::kNotFound:
      case absl::StatusCode::kAlreadyExists:
      case absl::StatusCode::kFailedPrecondition:
      case absl::StatusCode::kInvalidArgument:
        spdlog::debug("{} {:?} -> {} ({} us)", op_, key_, status.ToString(),
                      us);
        break;
      default:
        spdlog::warn("{} {:?} -> {} ({} us)", op_, key_, status.ToString(), us);
    }
    return reply;
  }

 private:
  const char* op_;
  const std::string& key_;
  const RpcObserver& observer_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

void ToInfo(const Record& record, snapshots_v1::Info* info) {
  info->set_name(record.key());
  info->set_parent(record.parent());
  switch (record.kind()) {
    case store::v1::VIEW:
      info->set_kind(snapshots_v1::VIEW);
      break;
    case store::v1::ACTIVE:
      info->set_kind(snapshots_v1::ACTIVE);
      break;
    case store::v1::COMMITTED:
      info->set_kind(snapshots_v1::COMMITTED);
      break;
    default:
      info->set_kind(snapshots_v1::UNKNOWN);
  }
  SetTimestamp(record.created_ns(), info->mutable_created_at());
  SetTimestamp(record.updated_ns(), info->mutable_updated_at());
  info->mutable_labels()->insert(record.labels().begin(),
                                 record.labels().end());
}

SnapshotService::SnapshotService(Coordinator* coordinator, RpcObserver observer,
                                 int max_open_lists)
    : coordinator_(coordinator),
      observer_(std::move(observer)),
      max_open_lists_(max_open_lists) {}

grpc::Status SnapshotService::Prepare(
    grpc::ServerContext*, const snapshots_v1::PrepareSnapshotRequest* req,
    snapshots_v1::PrepareSnapshotResponse* resp) {
  CallLog log("Prepare", req->key(), observer_);
  auto mounts = coordinator_->Prepare(req->key(), req->parent(),
                                      FromProto(req->labels()));
  if (mounts.ok()) FillMounts(*mounts, resp->mutable_mounts());
  return log.Done(mounts.status());
}

grpc::Status SnapshotService::View(grpc::ServerContext*,
                                   const snapshots_v1::ViewSnapshotRequest* req,
                                   snapshots_v1::ViewSnapshotResponse* resp) {
  CallLog log("View", req->key(), observer_);
  auto mounts =
      coordinator_->View(req->key(), req->parent(), FromProto(req->labels()));
  if (mounts.ok()) FillMounts(*mounts, resp->mutable_mounts());
  return log.Done(mounts.status());
}

grpc::Status SnapshotService::Mounts(grpc::ServerContext*,
                                     const snapshots_v1::MountsRequest* req,
                                     snapshots_v1::MountsResponse* resp) {
  CallLog log("Mounts", req->key(), observer_);
  auto mounts = coordinator_->Mounts(req->key());
  if (mounts.ok()) FillMounts(*mounts, resp->mutable_mounts());
  return log.Done(mounts.status());
}

grpc::Status SnapshotService::Commit(
    grpc::ServerContext*, const snapshots_v1::CommitSnapshotRequest* req,
    google::protobuf::Empty*) {
  CallLog log("Commit", req->key(), observer_);
  return log.Done(
      coordinator_->Commit(req->name(), req->key(), FromProto(req->labels())));
}

grpc::Status SnapshotService::Remove(
    grpc::ServerContext*, const snapshots_v1::RemoveSnapshotRequest* req,
    google::protobuf::Empty*) {
  CallLog log("Remove", req->key(), observer_);
  return log.Done(coordinator_->Remove(req->key()));
}

grpc::Status SnapshotService::Stat(grpc::ServerContext*,
                                   const snapshots_v1::StatSnapshotRequest* req,
                                   snapshots_v1::StatSnapshotResponse* resp) {
  CallLog log("Stat", req->key(), observer_);
  auto record = coordinator_->Stat(req->key());
  if (record.ok()) ToInfo(*record, resp->mutable_info());
  return log.Done(record.status());
}

grpc::Status SnapshotService::Update(
    grpc::ServerContext*, const snapshots_v1::UpdateSnapshotRequest* req,
    snapshots_v1::UpdateSnapshotResponse* resp) {
  CallLog log("Update", req->info().name(), observer_);
  std::vector<std::string> paths(req->update_mask().paths().begin(),
                                 req->update_mask().paths().end());
  auto record = coordinator_->Update(req->info().name(),
                                     FromProto(req->info().labels()), paths);
  if (record.ok()) ToInfo(*record, resp->mutable_info());
  return log.Done(record.status());
}

namespace {

// Process-wide: a Listener's restart makes a new service while the old
// one's streams finish.
std::atomic<int> g_open_lists{0};

// One List stream. The matching snapshots are read at once, in one pass of
// the coordinator (as one synchronous pass did before), into the stream's
// messages; these then go out one at a time, each started when the client
// took the previous one. Between writes no thread is held: a client that
// does not read costs its messages' memory, not a thread. Deletes itself
// when gRPC is done with the stream.
class ListReactor final
    : public grpc::ServerWriteReactor<snapshots_v1::ListSnapshotsResponse> {
 public:
  ListReactor(std::vector<snapshots_v1::ListSnapshotsResponse> batches,
              grpc::Status status)
      : batches_(std::move(batches)), status_(std::move(status)) {
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      // The stream broke: the client went away or cancelled.
      Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                          "client went away while listing"));
      return;
    }
    ++next_;
    WriteNext();
  }
  void OnDone() override {
    g_open_lists.fetch_sub(1);
    delete this;
  }

 private:
  void WriteNext() {
    if (next_ < batches_.size()) {
      StartWrite(&batches_[next_]);
    } else {
      Finish(status_);
    }
  }

  std::vector<snapshots_v1::ListSnapshotsResponse> batches_;
  const grpc::Status status_;
  size_t next_ = 0;
};

}  // namespace

int OpenListStreams() { return g_open_lists.load(); }

grpc::ServerWriteReactor<snapshots_v1::ListSnapshotsResponse>*
SnapshotService::List(grpc::CallbackServerContext*,
                      const snapshots_v1::ListSnapshotsRequest* req) {
  static const std::string kNoKey;
  CallLog log("List", kNoKey, observer_);
  // Counted from here to the reactor's OnDone.
  if (g_open_lists.fetch_add(1) >= max_open_lists_) {
    return new ListReactor(
        {}, log.Done(absl::ResourceExhaustedError(absl::StrCat(
                "too many List streams open (", max_open_lists_,
                "): a client is not reading its answers; retry later"))));
  }
  std::vector<std::string> exprs(req->filters().begin(), req->filters().end());
  auto filter = filter::Filter::ParseAll(exprs);
  if (!filter.ok()) return new ListReactor({}, log.Done(filter.status()));

  std::vector<snapshots_v1::ListSnapshotsResponse> batches(1);
  size_t batch_bytes = 0;
  absl::Status s = coordinator_->List(*filter, [&](const Record& record) {
    snapshots_v1::Info info;
    ToInfo(record, &info);
    // The Info's bytes, its field tag and its length prefix (at most 5).
    const size_t bytes = info.ByteSizeLong() + 6;
    snapshots_v1::ListSnapshotsResponse* batch = &batches.back();
    if (batch->info_size() >= kListBatchSize ||
        (batch->info_size() > 0 && batch_bytes + bytes > kListBatchBytes)) {
      batch = &batches.emplace_back();
      batch_bytes = 0;
    }
    *batch->add_info() = std::move(info);
    batch_bytes += bytes;
    return true;
  });
  if (batches.back().info_size() == 0) batches.pop_back();
  return new ListReactor(std::move(batches), log.Done(s));
}

grpc::Status SnapshotService::Usage(grpc::ServerContext*,
                                    const snapshots_v1::UsageRequest* req,
                                    snapshots_v1::UsageResponse* resp) {
  CallLog log("Usage", req->key(), observer_);
  auto usage = coordinator_->GetUsage(req->key());
  if (usage.ok()) {
    resp->set_size(usage->size_bytes);
    resp->set_inodes(usage->inodes);
  }
  return log.Done(usage.status());
}

grpc::Status SnapshotService::Cleanup(grpc::ServerContext*,
                                      const snapshots_v1::CleanupRequest*,
                                      google::protobuf::Empty*) {
  static const std::string kNoKey;
  CallLog log("Cleanup", kNoKey, observer_);
  return log.Done(coordinator_->Cleanup());
}

}  // namespace snapledger
