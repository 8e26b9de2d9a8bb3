// libFuzzer target: containerd's Snapshots requests, through snapledger's
// request handlers (plugin/server/snapshot_service), the coordinator and a
// real ledger, over an in-memory backend.
//
// Input: one operation per line, fields separated by one space, so that
// seeds are readable and the fuzzer can splice real sequences:
//   prepare KEY [PARENT [LABEL=VALUE...]]     view KEY [PARENT ...]
//   commit NAME KEY [LABEL=VALUE...]          remove KEY
//   stat KEY   mounts KEY   usage KEY   cleanup
//   update KEY PATH [LABEL=VALUE...]          list [FILTER]
// Fields may hold any other byte (including invalid UTF-8). After the whole
// input the ledger and the backend must agree: every visible snapshot's
// object exists, and every object belongs to a record.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "plugin/core/coordinator.h"
#include "plugin/filter/filter.h"
#include "plugin/server/snapshot_service.h"
#include "plugin/testing/fake_backend.h"
#include "spdlog/spdlog.h"
#include "store/ledger.h"

namespace {

namespace v1 = ::snapledger::snapshots_v1;

template <typename Request>
void AddLabels(const std::vector<std::string>& f, size_t from, Request* req) {
  for (size_t i = from; i < f.size(); ++i) {
    const size_t eq = f[i].find('=');
    (*req->mutable_labels())[f[i].substr(0, eq)] =
        eq == std::string::npos ? "" : f[i].substr(eq + 1);
  }
}

std::string Field(const std::vector<std::string>& f, size_t i) {
  return i < f.size() ? f[i] : "";
}

// Runs one line against the service. Returns false to stop the input.
void RunLine(snapledger::SnapshotService& service,
             snapledger::Coordinator& coordinator, const std::string& line) {
  const std::vector<std::string> f = absl::StrSplit(line, ' ');
  const std::string& op = f[0];
  grpc::ServerContext ctx;
  if (op == "prepare" || op == "view") {
    if (op == "prepare") {
      v1::PrepareSnapshotRequest req;
      req.set_key(Field(f, 1));
      req.set_parent(Field(f, 2));
      AddLabels(f, 3, &req);
      v1::PrepareSnapshotResponse resp;
      (void)service.Prepare(&ctx, &req, &resp);
    } else {
      v1::ViewSnapshotRequest req;
      req.set_key(Field(f, 1));
      req.set_parent(Field(f, 2));
      AddLabels(f, 3, &req);
      v1::ViewSnapshotResponse resp;
      (void)service.View(&ctx, &req, &resp);
    }
  } else if (op == "commit") {
    v1::CommitSnapshotRequest req;
    req.set_name(Field(f, 1));
    req.set_key(Field(f, 2));
    AddLabels(f, 3, &req);
    google::protobuf::Empty resp;
    (void)service.Commit(&ctx, &req, &resp);
  } else if (op == "remove") {
    v1::RemoveSnapshotRequest req;
    req.set_key(Field(f, 1));
    google::protobuf::Empty resp;
    (void)service.Remove(&ctx, &req, &resp);
  } else if (op == "stat") {
    v1::StatSnapshotRequest req;
    req.set_key(Field(f, 1));
    v1::StatSnapshotResponse resp;
    (void)service.Stat(&ctx, &req, &resp);
  } else if (op == "mounts") {
    v1::MountsRequest req;
    req.set_key(Field(f, 1));
    v1::MountsResponse resp;
    (void)service.Mounts(&ctx, &req, &resp);
  } else if (op == "usage") {
    v1::UsageRequest req;
    req.set_key(Field(f, 1));
    v1::UsageResponse resp;
    (void)service.Usage(&ctx, &req, &resp);
  } else if (op == "cleanup") {
    v1::CleanupRequest req;
    google::protobuf::Empty resp;
    (void)service.Cleanup(&ctx, &req, &resp);
  } else if (op == "update") {
    v1::UpdateSnapshotRequest req;
    req.mutable_info()->set_name(Field(f, 1));
    if (f.size() > 2 && !f[2].empty())
      req.mutable_update_mask()->add_paths(f[2]);
    AddLabels(f, 3, req.mutable_info());
    v1::UpdateSnapshotResponse resp;
    (void)service.Update(&ctx, &req, &resp);
  } else if (op == "list") {
    // The stream needs a live call; the filter and the walk are the same.
    absl::StatusOr<snapledger::filter::Filter> filter =
        snapledger::filter::Filter::ParseAll({Field(f, 1)});
    if (filter.ok()) {
      (void)coordinator.List(*filter, [](const snapledger::Record& r) {
        v1::Info info;
        snapledger::ToInfo(r, &info);
        return true;
      });
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines = absl::StrSplit(input, '\n');
  if (lines.size() > 64) return 0;  // long inputs only slow the search

  std::string dir = (std::filesystem::temp_directory_path() /
                     ("fuzz-snapshots-" + std::to_string(::getpid())))
                        .string();
  std::filesystem::remove_all(dir);
  {
    snapledger::Ledger::Options options;
    options.path = dir;
    options.sync = false;
    auto ledger = snapledger::Ledger::Open(options);
    if (!ledger.ok()) __builtin_trap();
    snapledger::testing::FakeBackend backend;
    snapledger::CoordinatorOptions coordinator_options;
    coordinator_options.remove_policy = snapledger::RemovePolicy::kDefer;
    snapledger::Coordinator coordinator(ledger->get(), &backend,
                                        coordinator_options);
    snapledger::SnapshotService service(&coordinator);
    for (const std::string& line : lines) {
      RunLine(service, coordinator, line);
    }
    // Ledger and backend agree.
    std::set<uint64_t> recorded;
    absl::Status walked = (*ledger)->ForEach([&](const snapledger::Record& r) {
      recorded.insert(r.backend_id());
      if (snapledger::IsVisible(r)) {
        absl::StatusOr<bool> exists = backend.Exists(r.backend_id());
        if (!exists.ok() || !*exists) __builtin_trap();
      }
      return true;
    });
    if (!walked.ok()) __builtin_trap();
    absl::StatusOr<std::vector<snapledger::BackendObject>> objects =
        backend.List();
    if (!objects.ok()) __builtin_trap();
    for (const snapledger::BackendObject& o : *objects) {
      if (!recorded.contains(o.id)) __builtin_trap();
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
