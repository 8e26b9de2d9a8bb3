// The gRPC edge: containerd's Snapshots service over the Coordinator.
//
// Protobuf messages become coordinator arguments here, and the
// coordinator's absl::Status becomes the call's grpc::Status (through
// plugin/rpc/status.h, shared with every other RPC edge). It holds no state
// of its own.
//
// Thread-safety: gRPC calls the methods concurrently; the coordinator is
// thread-safe.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "plugin/core/coordinator.h"
#include "plugin/rpc/status.h"

namespace snapledger {

namespace snapshots_v1 = ::containerd::services::snapshots::v1;

// A streamed List message holds at most kListBatchSize snapshots, and is
// closed before it would grow beyond kListBatchBytes; a snapshot bigger than
// that alone goes in a message of its own (ValidateLabels bounds a
// snapshot's labels to kMaxLabelsTotalBytes, so that message stays well
// below the 4 MiB gRPC's default limit allows, and far below the 16 MiB
// containerd 1.6's client accepts).
inline constexpr int kListBatchSize = 100;
inline constexpr size_t kListBatchBytes = size_t{1} << 20;

// Hears of every call once its handler is done: the method ("Prepare",
// "List", ...), the gRPC code answered, and the handler's time (for List,
// reading the matches, not streaming them). Called on the handler's thread;
// must be cheap (the daemon's metrics).
using RpcObserver = std::function<void(
    std::string_view method, absl::StatusCode code, absl::Duration took)>;

// List streams open at once, in the whole process (finding 5 of issue 15):
// a stream holds every message of its answer until the client reads them,
// so never-read streams would otherwise grow memory without bound. One
// beyond the limit answers ResourceExhausted at once. containerd lists one
// stream at a time (its garbage collector, `ctr snapshots ls`).
inline constexpr int kMaxOpenListStreams = 64;

// The unary calls are synchronous: each runs on a thread of gRPC's sync
// server (see daemon.cc for its pool). List uses gRPC's callback API: its
// stream holds no thread while the client does not read (see ListReactor in
// the .cc). docs/benchmarks.md (Session 5) has the figures behind the
// split: with gRPC 1.51 the callback API runs every handler on two threads,
// and the unary calls block on fsync and backend I/O.
class SnapshotService final
    : public snapshots_v1::Snapshots::WithCallbackMethod_List<
          snapshots_v1::Snapshots::Service> {
 public:
  // `coordinator` is not owned and must outlive the service. `observer`
  // may be empty.
  explicit SnapshotService(Coordinator* coordinator,
                           RpcObserver observer = nullptr,
                           int max_open_lists = kMaxOpenListStreams);

  grpc::Status Prepare(grpc::ServerContext* ctx,
                       const snapshots_v1::PrepareSnapshotRequest* req,
                       snapshots_v1::PrepareSnapshotResponse* resp) override;
  grpc::Status View(grpc::ServerContext* ctx,
                    const snapshots_v1::ViewSnapshotRequest* req,
                    snapshots_v1::ViewSnapshotResponse* resp) override;
  grpc::Status Mounts(grpc::ServerContext* ctx,
                      const snapshots_v1::MountsRequest* req,
                      snapshots_v1::MountsResponse* resp) override;
  grpc::Status Commit(grpc::ServerContext* ctx,
                      const snapshots_v1::CommitSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Remove(grpc::ServerContext* ctx,
                      const snapshots_v1::RemoveSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Stat(grpc::ServerContext* ctx,
                    const snapshots_v1::StatSnapshotRequest* req,
                    snapshots_v1::StatSnapshotResponse* resp) override;
  grpc::Status Update(grpc::ServerContext* ctx,
                      const snapshots_v1::UpdateSnapshotRequest* req,
                      snapshots_v1::UpdateSnapshotResponse* resp) override;
  grpc::ServerWriteReactor<snapshots_v1::ListSnapshotsResponse>* List(
      grpc::CallbackServerContext* ctx,
      const snapshots_v1::ListSnapshotsRequest* req) override;
  grpc::Status Usage(grpc::ServerContext* ctx,
                     const snapshots_v1::UsageRequest* req,
                     snapshots_v1::UsageResponse* resp) override;
  grpc::Status Cleanup(grpc::ServerContext* ctx,
                       const snapshots_v1::CleanupRequest* req,
                       google::protobuf::Empty* resp) override;

 private:
  Coordinator* const coordinator_;
  const RpcObserver observer_;
  const int max_open_lists_;
};

// List streams open now (started and not yet done), in every
// SnapshotService of the process.
int OpenListStreams();

// Fills a containerd Info from a ledger record.
void ToInfo(const Record& record, snapshots_v1::Info* info);

}  // namespace snapledger
