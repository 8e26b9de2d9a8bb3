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

#include "absl/status/status.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "plugin/core/coordinator.h"
#include "plugin/rpc/status.h"

namespace snapledger {

namespace snapshots_v1 = ::containerd::services::snapshots::v1;

// Number of snapshots per streamed List message.
inline constexpr int kListBatchSize = 100;

class SnapshotService final : public snapshots_v1::Snapshots::Service {
 public:
  // `coordinator` is not owned and must outlive the service.
  explicit SnapshotService(Coordinator* coordinator);

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
  grpc::Status List(
      grpc::ServerContext* ctx, const snapshots_v1::ListSnapshotsRequest* req,
      grpc::ServerWriter<snapshots_v1::ListSnapshotsResponse>* writer) override;
  grpc::Status Usage(grpc::ServerContext* ctx,
                     const snapshots_v1::UsageRequest* req,
                     snapshots_v1::UsageResponse* resp) override;
  grpc::Status Cleanup(grpc::ServerContext* ctx,
                       const snapshots_v1::CleanupRequest* req,
                       google::protobuf::Empty* resp) override;

 private:
  Coordinator* const coordinator_;
};

// Fills a containerd Info from a ledger record.
void ToInfo(const Record& record, snapshots_v1::Info* info);

}  // namespace snapledger
