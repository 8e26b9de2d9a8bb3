// snapscale: the scale benchmark's helper (see bench/README.md, "scale").
//
//   snapscale fill --root R --count N [--depth D] [--actives A] ...
//       fills a snapledger root to N snapshots through the daemon's own
//       Coordinator, Ledger and backend, in-process (no gRPC, ledger writes
//       unsynced, one fsync at the end): the records, history and backend
//       objects are exactly what snapledgerd writes for the same calls, at a
//       fraction of the time a socket would take. Keys and labels are what
//       containerd sends: "<ns>/<seq>/<name>", committed layers named by
//       chain id with containerd.io/snapshot.ref.
//   snapscale containers --containerd SOCK --count C --leases L ...
//       creates C containers (rootfs = the first C active snapshots of the
//       fill) and L leases holding committed layers in a containerd, so the
//       watcher has owners and leases to track.
//   snapscale wait --address SOCK [--timeout S]
//       polls the Snapshots socket until a Stat answers; prints the ms.
//   snapscale list --address SOCK
//       one full List from a client; prints the count and the seconds.
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/impl/rpc_method.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "containerd/services/containers/v1/containers.grpc.pb.h"
#include "containerd/services/leases/v1/leases.grpc.pb.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "google/protobuf/empty.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "plugin/backend/factory/backend_factory.h"
#include "plugin/core/coordinator.h"
#include "store/ledger.h"

namespace snapscale {
namespace {

namespace snapshots = containerd::services::snapshots::v1;
namespace containers = containerd::services::containers::v1;
namespace leases = containerd::services::leases::v1;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// The naming of a fill, shared by `fill` and `containers`: image i's layer j
// is committed as "<ns>/<seq>/sha256:img<i>-l<j>"; its actives are
// "<ns>/<seq>/ctr-<i>-<k>", container id "ctr-<i>-<k>".
std::string LayerName(int image, int layer) {
  return absl::StrFormat("sha256:%064x", (static_cast<uint64_t>(image) << 16) |
                                             static_cast<uint64_t>(layer));
}
std::string ContainerId(int image, int active) {
  return absl::StrCat("ctr-", image, "-", active);
}

struct FillConfig {
  std::string root;
  std::string backend = "native";
  std::string ns = "default";
  int count = 100000;
  int depth = 8;
  int actives = 2;
};

int Fill(const FillConfig& cfg) {
  snapledger::Ledger::Options lo;
  lo.path = cfg.root + "/ledger";
  lo.sync = false;  // one SyncWAL when the ledger closes
  auto ledger = snapledger::Ledger::Open(lo);
  if (!ledger.ok()) {
    std::fprintf(stderr, "%s\n", ledger.status().ToString().c_str());
    return 2;
  }
  if (absl::Status s = (*ledger)->PutSetting("backend", cfg.backend); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 2;
  }
  snapledger::BackendSettings bs;
  bs.name = cfg.backend;
  auto backend = snapledger::OpenBackend(cfg.root, bs);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 2;
  }
  snapledger::Coordinator coordinator(ledger->get(), backend->get());
  const int per_image = cfg.depth + cfg.actives;
  const int images = (cfg.count + per_image - 1) / per_image;
  uint64_t seq = 1;
  int made = 0;
  const auto start = Clock::now();
  auto check = [](const absl::Status& s, const std::string& what) {
    if (s.ok()) return true;
    std::fprintf(stderr, "%s: %s\n", what.c_str(), s.ToString().c_str());
    return false;
  };
  for (int i = 0; i < images && made < cfg.count; ++i) {
    std::string parent;
    for (int j = 0; j < cfg.depth && made < cfg.count; ++j) {
      // As containerd's unpacker: prepare an extraction key, commit it under
      // the layer's chain id with containerd.io/snapshot.ref.
      const std::string chain = LayerName(i, j);
      snapledger::Labels labels = {{"containerd.io/snapshot.ref", chain}};
      const std::string key =
          absl::StrCat(cfg.ns, "/", seq++, "/extract-", i, "-", j, " ", chain);
      const std::string name = absl::StrCat(cfg.ns, "/", seq++, "/", chain);
      if (!check(coordinator.Prepare(key, parent, labels).status(), key) ||
          !check(coordinator.Commit(name, key, labels), name)) {
        return 1;
      }
      parent = name;
      ++made;
    }
    for (int k = 0; k < cfg.actives && made < cfg.count; ++k) {
      const std::string key =
          absl::StrCat(cfg.ns, "/", seq++, "/", ContainerId(i, k));
      if (!check(coordinator.Prepare(key, parent, {}).status(), key)) return 1;
      ++made;
    }
    if (made % 10000 < per_image) {
      std::fprintf(stderr, "fill: %d snapshots, %.1f s\n", made,
                   Seconds(Clock::now() - start));
    }
  }
  std::printf("{\"filled\": %d, \"images\": %d, \"seconds\": %.2f}\n", made,
              images, Seconds(Clock::now() - start));
  return 0;
}

struct ContainersConfig {
  std::string containerd;
  std::string ns = "default";
  std::string snapshotter = "snapledger";
  int count = 1000;
  int leases = 100;
  int depth = 8;
  int actives = 2;
};

// Containers/Create is not in the project's trimmed containers.proto (the
// daemon never creates containers): the request is built with the runtime
// (field 4) and spec (field 5) as unknown fields and sent as bytes.
grpc::Status CreateContainer(grpc::Channel* channel, const std::string& ns,
                             containers::Container c) {
  google::protobuf::UnknownFieldSet* unknown =
      c.GetReflection()->MutableUnknownFields(&c);
  google::protobuf::UnknownFieldSet runtime;
  runtime.AddLengthDelimited(1, "io.containerd.runc.v2");
  std::string runtime_bytes;
  runtime.SerializeToString(&runtime_bytes);
  unknown->AddLengthDelimited(4, runtime_bytes);
  google::protobuf::UnknownFieldSet spec;
  spec.AddLengthDelimited(
      1, "types.containerd.io/opencontainers/runtime-spec/1/Spec");
  spec.AddLengthDelimited(2, "{}");
  std::string spec_bytes;
  spec.SerializeToString(&spec_bytes);
  unknown->AddLengthDelimited(5, spec_bytes);
  containers::GetContainerResponse request;  // {Container container = 1;}
  *request.mutable_container() = std::move(c);
  grpc::ClientContext ctx;
  ctx.AddMetadata("containerd-namespace", ns);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  containers::GetContainerResponse response;
  static const grpc::internal::RpcMethod method(
      "/containerd.services.containers.v1.Containers/Create",
      grpc::internal::RpcMethod::NORMAL_RPC);
  return grpc::internal::BlockingUnaryCall(channel, method, &ctx, request,
                                           &response);
}

int Containers(const ContainersConfig& cfg) {
  auto channel = grpc::CreateChannel(absl::StrCat("unix://", cfg.containerd),
                                     grpc::InsecureChannelCredentials());
  int made = 0;
  for (int i = 0; made < cfg.count; ++i) {
    for (int k = 0; k < cfg.actives && made < cfg.count; ++k) {
      containers::Container c;
      c.set_id(ContainerId(i, k));
      c.set_image("docker.io/library/scale:latest");
      c.set_snapshotter(cfg.snapshotter);
      c.set_snapshot_key(ContainerId(i, k));
      grpc::Status s = CreateContainer(channel.get(), cfg.ns, std::move(c));
      if (!s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
        std::fprintf(stderr, "create container %s: %s\n",
                     ContainerId(i, k).c_str(), s.error_message().c_str());
        return 1;
      }
      ++made;
    }
  }
  auto stub = leases::Leases::NewStub(channel);
  for (int l = 0; l < cfg.leases; ++l) {
    const std::string id = absl::StrCat("scale-lease-", l);
    {
      grpc::ClientContext ctx;
      ctx.AddMetadata("containerd-namespace", cfg.ns);
      leases::CreateRequest req;
      req.set_id(id);
      leases::CreateResponse resp;
      grpc::Status s = stub->Create(&ctx, req, &resp);
      if (!s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
        std::fprintf(stderr, "create lease %s: %s\n", id.c_str(),
                     s.error_message().c_str());
        return 1;
      }
    }
    // Each lease holds image l's top layer, as a pull's lease does.
    grpc::ClientContext ctx;
    ctx.AddMetadata("containerd-namespace", cfg.ns);
    leases::AddResourceRequest req;
    req.set_id(id);
    req.mutable_resource()->set_id(LayerName(l, cfg.depth - 1));
    req.mutable_resource()->set_type(
        absl::StrCat("snapshots/", cfg.snapshotter));
    google::protobuf::Empty empty;
    grpc::Status s = stub->AddResource(&ctx, req, &empty);
    if (!s.ok()) {
      std::fprintf(stderr, "lease %s add resource: %s\n", id.c_str(),
                   s.error_message().c_str());
      return 1;
    }
  }
  std::printf("{\"containers\": %d, \"leases\": %d}\n", made, cfg.leases);
  return 0;
}

std::shared_ptr<grpc::Channel> SnapshotsChannel(const std::string& address) {
  // Reconnect at once: the default back-off (1 s and growing) would be
  // counted as the daemon's start-up time. The minimum is gRPC's connect
  // time-out too (a connection that has not had the server's SETTINGS by
  // then fails the call): 1 s, so that a loaded machine does not fail a
  // List; a daemon not yet listening refuses at once whatever it is.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 5);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 20);
  return grpc::CreateCustomChannel(
      address.starts_with("unix:") ? address : absl::StrCat("unix://", address),
      grpc::InsecureChannelCredentials(), args);
}

int Wait(const std::string& address, double timeout_s) {
  const auto start = Clock::now();
  auto stub = snapshots::Snapshots::NewStub(SnapshotsChannel(address));
  while (Seconds(Clock::now() - start) < timeout_s) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(500));
    ctx.set_wait_for_ready(true);
    snapshots::StatSnapshotRequest req;
    req.set_key("snapscale-probe");
    snapshots::StatSnapshotResponse resp;
    grpc::Status s = stub->Stat(&ctx, req, &resp);
    // Any answer from the service (NotFound here) means it is serving.
    if (s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND) {
      std::printf("%.0f\n", Seconds(Clock::now() - start) * 1000);
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::fprintf(stderr, "no answer from %s within %.0f s\n", address.c_str(),
               timeout_s);
  return 1;
}

int List(const std::string& address) {
  auto stub = snapshots::Snapshots::NewStub(SnapshotsChannel(address));
  const auto start = Clock::now();
  grpc::ClientContext ctx;
  snapshots::ListSnapshotsRequest req;
  auto reader = stub->List(&ctx, req);
  snapshots::ListSnapshotsResponse resp;
  uint64_t n = 0;
  while (reader->Read(&resp)) n += resp.info_size();
  grpc::Status s = reader->Finish();
  const double secs = Seconds(Clock::now() - start);
  if (!s.ok()) {
    std::fprintf(stderr, "List: %s\n", s.error_message().c_str());
    return 1;
  }
  std::printf("{\"listed\": %lu, \"seconds\": %.3f}\n",
              static_cast<unsigned long>(n), secs);
  return 0;
}

}  // namespace
}  // namespace snapscale

int main(int argc, char** argv) {
  CLI::App app{"snapscale: fill and probe a snapledger root at scale"};
  app.require_subcommand(1);
  snapscale::FillConfig fill;
  CLI::App* fill_cmd = app.add_subcommand("fill", "fill a root (in-process)");
  fill_cmd->add_option("--root", fill.root, "snapledger root")->required();
  fill_cmd->add_option("--backend", fill.backend, "native or overlayfs");
  fill_cmd->add_option("--namespace", fill.ns, "containerd namespace");
  fill_cmd->add_option("--count", fill.count, "snapshots to make");
  fill_cmd->add_option("--depth", fill.depth, "committed layers per image");
  fill_cmd->add_option("--actives", fill.actives,
                       "active snapshots (containers) per image");
  snapscale::ContainersConfig ctrs;
  CLI::App* ctr_cmd =
      app.add_subcommand("containers", "containers and leases in containerd");
  ctr_cmd->add_option("--containerd", ctrs.containerd, "containerd socket")
      ->required();
  ctr_cmd->add_option("--namespace", ctrs.ns, "containerd namespace");
  ctr_cmd->add_option("--snapshotter", ctrs.snapshotter, "proxy name");
  ctr_cmd->add_option("--count", ctrs.count, "containers");
  ctr_cmd->add_option("--leases", ctrs.leases, "leases");
  ctr_cmd->add_option("--depth", ctrs.depth, "as given to fill");
  ctr_cmd->add_option("--actives", ctrs.actives, "as given to fill");
  std::string address;
  double timeout_s = 120;
  CLI::App* wait_cmd = app.add_subcommand("wait", "wait until Stat answers");
  wait_cmd->add_option("--address", address, "Snapshots socket")->required();
  wait_cmd->add_option("--timeout", timeout_s, "seconds");
  CLI::App* list_cmd = app.add_subcommand("list", "time one full List");
  list_cmd->add_option("--address", address, "Snapshots socket")->required();
  CLI11_PARSE(app, argc, argv);
  if (*fill_cmd) return snapscale::Fill(fill);
  if (*ctr_cmd) return snapscale::Containers(ctrs);
  if (*wait_cmd) return snapscale::Wait(address, timeout_s);
  return snapscale::List(address);
}
