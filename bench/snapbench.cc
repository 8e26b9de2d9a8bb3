// snapbench: a load generator for a containerd Snapshots gRPC socket.
//
// Each client thread runs build-like chains: `depth` layers of
// prepare(active) -> commit(committed), then a "container" active snapshot on
// top that is stat'ed and mounted (Mounts RPC; nothing is mounted), then
// everything is removed leaf-first. Latencies go into fixed-size log-linear
// histograms (see latency_histogram.h); see bench/README.md.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/latency_histogram.h"
#include "containerd/services/leases/v1/leases.grpc.pb.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"

namespace snapbench {
namespace {

namespace snapshots = containerd::services::snapshots::v1;
namespace leases = containerd::services::leases::v1;
using Clock = std::chrono::steady_clock;

enum Op { kPrepare, kCommit, kStat, kMounts, kRemove, kChain, kNumOps };
constexpr std::array<const char*, kNumOps> kOpNames = {
    "prepare", "commit", "stat", "mounts", "remove", "chain"};

constexpr int kMaxLoggedErrors = 10;

struct Config {
  std::string address;
  bool containerd = false;
  std::string snapshotter;
  std::string ns = "bench";
  bool ns_set = false;
  std::string lease;
  bool lease_created = false;
  bool keep_lease = false;
  int lease_expire_s = 0;
  int clients = 4;
  uint64_t chains = 10;  // per client; 0 = unlimited (only with --duration)
  int depth = 5;
  double duration_s = 0;  // 0 = no time limit
  double timeout_s = 30;
  bool shared_channel = false;
  bool json = false;
  std::string run_id;
};

std::atomic<bool> g_stop{false};
std::atomic<int> g_logged_errors{0};

extern "C" void HandleSignal(int) {
  g_stop.store(true);
  // A second signal kills the process the default way.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "INVALID_CODE";
  }
}

// True when a failed mutation may nevertheless have taken effect on the
// server (timeouts, dropped connections, internal errors).
bool MaybeApplied(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return false;
    default:
      return true;
  }
}

struct ErrorInfo {
  uint64_t count = 0;
  std::string example;
};

struct OpStats {
  uint64_t count = 0;        // completed calls, successful or not
  uint64_t errors = 0;       // calls that returned a non-OK status
  LatencyHistogram latency;  // successful calls only
  std::map<std::string, ErrorInfo> errors_by_code;

  void Merge(const OpStats& o) {
    count += o.count;
    errors += o.errors;
    latency.Merge(o.latency);
    for (const auto& [code, info] : o.errors_by_code) {
      auto& mine = errors_by_code[code];
      mine.count += info.count;
      if (mine.example.empty()) mine.example = info.example;
    }
  }
};

struct WorkerStats {
  std::array<OpStats, kNumOps> ops;
  uint64_t cleanup_removes = 0;  // best-effort removes after a failure
  uint64_t leaked = 0;           // snapshots the tool could not remove
};

std::shared_ptr<grpc::Channel> MakeChannel(const Config& cfg,
                                           bool own_connection) {
  grpc::ChannelArguments args;
  if (own_connection) {
    // A private subchannel pool gives this channel its own connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  return grpc::CreateCustomChannel(cfg.address,
                                   grpc::InsecureChannelCredentials(), args);
}

// Adds the deadline and (in containerd mode) namespace/lease metadata.
// Control calls (lease create/delete, the final List) get at least 60s: a
// sync lease delete waits for garbage collection.
void PrepareContext(const Config& cfg, grpc::ClientContext& ctx,
                    bool with_lease = true, bool control = false) {
  const double timeout_s =
      control ? std::max(cfg.timeout_s, 60.0) : cfg.timeout_s;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::duration<double>(timeout_s)));
  if (cfg.containerd || cfg.ns_set) {
    ctx.AddMetadata("containerd-namespace", cfg.ns);
  }
  if (with_lease && !cfg.lease.empty()) {
    ctx.AddMetadata("containerd-lease", cfg.lease);
  }
}

class Worker {
 public:
  Worker(const Config& cfg, int id, std::shared_ptr<grpc::Channel> channel)
      : cfg_(cfg),
        id_(id),
        stub_(snapshots::Snapshots::NewStub(std::move(channel))) {}

  void Run(Clock::time_point end) {
    for (uint64_t c = 0; cfg_.chains == 0 || c < cfg_.chains; ++c) {
      if (g_stop.load() || (cfg_.duration_s > 0 && Clock::now() >= end)) {
        break;
      }
      RunChain(c);
    }
  }

  const WorkerStats& stats() const { return stats_; }

 private:
  // Runs one call, timing it and recording the outcome under `op`.
  grpc::Status Timed(Op op, const std::string& what,
                     const std::function<grpc::Status()>& call) {
    const auto start = Clock::now();
    grpc::Status st = call();
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        Clock::now() - start)
                        .count();
    OpStats& s = stats_.ops[op];
    ++s.count;
    if (st.ok()) {
      s.latency.Record(static_cast<uint64_t>(ns));
    } else {
      RecordError(s, op, what, st);
    }
    return st;
  }

  void RecordError(OpStats& s, Op op, const std::string& what,
                   const grpc::Status& st) {
    ++s.errors;
    auto& info = s.errors_by_code[CodeName(st.error_code())];
    ++info.count;
    if (info.example.empty()) info.example = what + ": " + st.error_message();
    const int logged = g_logged_errors.fetch_add(1);
    if (logged < kMaxLoggedErrors) {
      std::cerr << "snapbench: " << kOpNames[op] << " " << what << ": "
                << CodeName(st.error_code()) << ": " << st.error_message()
                << "\n";
    }
    if (logged == kMaxLoggedErrors - 1) {
      std::cerr << "snapbench: further errors are only counted\n";
    }
  }

  grpc::Status Prepare(const std::string& key, const std::string& parent) {
    return Timed(kPrepare, key, [&] {
      grpc::ClientContext ctx;
      PrepareContext(cfg_, ctx);
      snapshots::PrepareSnapshotRequest req;
      req.set_snapshotter(cfg_.snapshotter);
      req.set_key(key);
      req.set_parent(parent);
      snapshots::PrepareSnapshotResponse resp;
      return stub_->Prepare(&ctx, req, &resp);
    });
  }

  grpc::Status Commit(const std::string& name, const std::string& key) {
    return Timed(kCommit, key, [&] {
      grpc::ClientContext ctx;
      PrepareContext(cfg_, ctx);
      snapshots::CommitSnapshotRequest req;
      req.set_snapshotter(cfg_.snapshotter);
      req.set_name(name);
      req.set_key(key);
      google::protobuf::Empty resp;
      return stub_->Commit(&ctx, req, &resp);
    });
  }

  grpc::Status Stat(const std::string& key) {
    return Timed(kStat, key, [&] {
      grpc::ClientContext ctx;
      PrepareContext(cfg_, ctx);
      snapshots::StatSnapshotRequest req;
      req.set_snapshotter(cfg_.snapshotter);
      req.set_key(key);
      snapshots::StatSnapshotResponse resp;
      return stub_->Stat(&ctx, req, &resp);
    });
  }

  grpc::Status Mounts(const std::string& key) {
    return Timed(kMounts, key, [&] {
      grpc::ClientContext ctx;
      PrepareContext(cfg_, ctx);
      snapshots::MountsRequest req;
      req.set_snapshotter(cfg_.snapshotter);
      req.set_key(key);
      snapshots::MountsResponse resp;
      return stub_->Mounts(&ctx, req, &resp);
    });
  }

  grpc::Status RawRemove(const std::string& key) {
    grpc::ClientContext ctx;
    PrepareContext(cfg_, ctx);
    snapshots::RemoveSnapshotRequest req;
    req.set_snapshotter(cfg_.snapshotter);
    req.set_key(key);
    google::protobuf::Empty resp;
    return stub_->Remove(&ctx, req, &resp);
  }

  // Counted remove. A snapshot that is already gone (NOT_FOUND) is not
  // leaked; any other failure leaks it and, as its parents then still have a
  // child, stops the removal of the rest of the chain.
  bool Remove(const std::string& key) {
    if (!removable_) {
      ++stats_.leaked;
      return false;
    }
    grpc::Status st = Timed(kRemove, key, [&] { return RawRemove(key); });
    if (!st.ok() && st.error_code() != grpc::StatusCode::NOT_FOUND) {
      ++stats_.leaked;
      removable_ = false;
    }
    return st.ok();
  }

  // After a failure: removes `key` if it may exist, outside the statistics.
  void CleanupRemove(const std::string& key) {
    ++stats_.cleanup_removes;
    grpc::Status st = RawRemove(key);
    if (!st.ok() && st.error_code() != grpc::StatusCode::NOT_FOUND) {
      ++stats_.leaked;
    }
  }

  void RunChain(uint64_t chain) {
    const std::string prefix =
        cfg_.run_id + "/w" + std::to_string(id_) + "/c" + std::to_string(chain);
    const auto start = Clock::now();
    bool ok = true;
    std::vector<std::string> committed;
    std::string parent;
    for (int i = 0; i < cfg_.depth; ++i) {
      const std::string name = prefix + "/l" + std::to_string(i);
      const std::string key = name + "-active";
      grpc::Status st = Prepare(key, parent);
      if (!st.ok()) {
        ok = false;
        if (MaybeApplied(st.error_code())) CleanupRemove(key);
        break;
      }
      st = Commit(name, key);
      if (!st.ok()) {
        ok = false;
        CleanupRemove(key);
        if (MaybeApplied(st.error_code())) CleanupRemove(name);
        break;
      }
      committed.push_back(name);
      parent = name;
    }
    removable_ = true;
    if (ok) {
      const std::string container = prefix + "/container";
      grpc::Status st = Prepare(container, parent);
      if (st.ok()) {
        ok = Stat(container).ok() && ok;
        ok = Mounts(container).ok() && ok;
        if (!Remove(container)) ok = false;
      } else {
        ok = false;
        if (MaybeApplied(st.error_code())) CleanupRemove(container);
      }
    }
    // Committed layers top-down (Remove() stops after a real failure).
    for (auto it = committed.rbegin(); it != committed.rend(); ++it) {
      if (!Remove(*it)) ok = false;
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        Clock::now() - start)
                        .count();
    OpStats& s = stats_.ops[kChain];
    ++s.count;
    if (ok) {
      s.latency.Record(static_cast<uint64_t>(ns));
    } else {
      ++s.errors;
      ++s.errors_by_code["CHAIN_FAILED"].count;
    }
  }

  const Config& cfg_;
  const int id_;
  std::unique_ptr<snapshots::Snapshots::Stub> stub_;
  WorkerStats stats_;
  bool removable_ = true;  // per chain, see Remove()
};

std::string Rfc3339(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

grpc::Status CreateLease(const Config& cfg, const std::string& id,
                         std::shared_ptr<grpc::Channel> channel) {
  auto stub = leases::Leases::NewStub(std::move(channel));
  grpc::ClientContext ctx;
  PrepareContext(cfg, ctx, /*with_lease=*/false, /*control=*/true);
  leases::CreateRequest req;
  req.set_id(id);
  (*req.mutable_labels())["snapbench/run"] = cfg.run_id;
  if (cfg.lease_expire_s > 0) {
    (*req.mutable_labels())["containerd.io/gc.expire"] =
        Rfc3339(std::time(nullptr) + cfg.lease_expire_s);
  }
  leases::CreateResponse resp;
  return stub->Create(&ctx, req, &resp);
}

grpc::Status DeleteLease(const Config& cfg, const std::string& id,
                         std::shared_ptr<grpc::Channel> channel) {
  auto stub = leases::Leases::NewStub(std::move(channel));
  grpc::ClientContext ctx;
  PrepareContext(cfg, ctx, /*with_lease=*/false, /*control=*/true);
  leases::DeleteRequest req;
  req.set_id(id);
  req.set_sync(true);
  google::protobuf::Empty resp;
  return stub->Delete(&ctx, req, &resp);
}

// Counts the snapshots of this run still listed by the server (names start
// with "<run-id>/"). nullopt when List fails.
std::optional<uint64_t> CountRemaining(const Config& cfg,
                                       std::shared_ptr<grpc::Channel> channel) {
  auto stub = snapshots::Snapshots::NewStub(std::move(channel));
  grpc::ClientContext ctx;
  PrepareContext(cfg, ctx, /*with_lease=*/false, /*control=*/true);
  snapshots::ListSnapshotsRequest req;
  req.set_snapshotter(cfg.snapshotter);
  // --run-id is restricted to [A-Za-z0-9_.-]; '.' is the only metacharacter.
  std::string re = "^";
  for (char c : cfg.run_id)
    re += c == '.' ? std::string("[.]") : std::string(1, c);
  req.add_filters("name~=\"" + re + "/\"");
  auto reader = stub->List(&ctx, req);
  const std::string prefix = cfg.run_id + "/";
  uint64_t n = 0;
  snapshots::ListSnapshotsResponse resp;
  while (reader->Read(&resp)) {
    for (const auto& info : resp.info()) {
      if (info.name().starts_with(prefix)) ++n;  // in case filters are ignored
    }
  }
  if (!reader->Finish().ok()) return std::nullopt;
  return n;
}

double Us(uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

struct Report {
  std::array<OpStats, kNumOps> ops;
  uint64_t cleanup_removes = 0;
  uint64_t leaked = 0;
  double wall_s = 0;
  std::optional<double> lease_delete_s;
  std::optional<uint64_t> remaining;  // run's snapshots still listed at exit
  int gc_kicks = 0;
  std::string lease_error;
  bool interrupted = false;

  uint64_t TotalOps() const {
    uint64_t n = 0;
    for (int op = 0; op < kChain; ++op) n += ops[op].count;
    return n;
  }
  uint64_t TotalErrors() const {
    uint64_t n = 0;
    for (int op = 0; op < kChain; ++op) n += ops[op].errors;
    return n;
  }
  double Rate(uint64_t n) const {
    return wall_s > 0 ? static_cast<double>(n) / wall_s : 0.0;
  }
};

std::string Mode(const Config& cfg) {
  return cfg.containerd ? "containerd" : "direct";
}

nlohmann::ordered_json ToJson(const Config& cfg, const Report& r) {
  nlohmann::ordered_json j;
  j["tool"] = "snapbench";
  j["schema_version"] = 1;
  j["config"] = {
      {"address", cfg.address},
      {"mode", Mode(cfg)},
      {"snapshotter", cfg.snapshotter},
      {"namespace", (cfg.containerd || cfg.ns_set) ? cfg.ns : ""},
      {"lease", cfg.lease},
      {"lease_created", cfg.lease_created},
      {"run_id", cfg.run_id},
      {"clients", cfg.clients},
      {"chains", cfg.chains},
      {"depth", cfg.depth},
      {"duration_s", cfg.duration_s},
      {"timeout_s", cfg.timeout_s},
      {"shared_channel", cfg.shared_channel},
  };
  j["histogram"] =
      "log-linear, 64 sub-buckets per power of two of ns (<0.8% error), "
      "successful calls only";
  j["wall_time_s"] = r.wall_s;
  j["interrupted"] = r.interrupted;
  j["total_ops"] = r.TotalOps();
  j["total_errors"] = r.TotalErrors();
  j["total_ops_per_s"] = r.Rate(r.TotalOps());
  j["cleanup_removes"] = r.cleanup_removes;
  j["leaked_snapshots"] = r.leaked;
  if (r.lease_delete_s) {
    j["lease_delete_s"] = *r.lease_delete_s;
  } else {
    j["lease_delete_s"] = nullptr;
  }
  if (!r.lease_error.empty()) j["lease_error"] = r.lease_error;
  if (r.remaining) {
    j["remaining_snapshots"] = *r.remaining;
  } else {
    j["remaining_snapshots"] = nullptr;
  }
  j["gc_kicks"] = r.gc_kicks;
  auto& ops = j["ops"];
  ops = nlohmann::ordered_json::object();
  for (int op = 0; op < kNumOps; ++op) {
    const OpStats& s = r.ops[op];
    nlohmann::ordered_json o;
    o["count"] = s.count;
    o["errors"] = s.errors;
    o["ops_per_s"] = r.Rate(s.count);
    if (s.latency.count() == 0) {
      o["latency_us"] = nullptr;  // no successful call
    } else {
      o["latency_us"] = {
          {"min", Us(s.latency.min())},
          {"mean", s.latency.mean() / 1e3},
          {"p50", Us(s.latency.Percentile(50))},
          {"p90", Us(s.latency.Percentile(90))},
          {"p99", Us(s.latency.Percentile(99))},
          {"max", Us(s.latency.max())},
      };
    }
    auto& codes = o["errors_by_code"];
    codes = nlohmann::ordered_json::object();
    for (const auto& [code, info] : s.errors_by_code) {
      codes[code] = {{"count", info.count}, {"example", info.example}};
    }
    ops[kOpNames[op]] = std::move(o);
  }
  return j;
}

std::string FormatMs(const LatencyHistogram& h, double p) {
  if (h.count() == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f",
                static_cast<double>(h.Percentile(p)) / 1e6);
  return buf;
}

std::string FormatSeconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%gs", s);
  return buf;
}

void PrintTable(const Config& cfg, const Report& r) {
  std::printf("snapbench: address=%s mode=%s snapshotter=%s",
              cfg.address.c_str(), Mode(cfg).c_str(),
              cfg.snapshotter.empty() ? "-" : cfg.snapshotter.c_str());
  if (cfg.containerd || cfg.ns_set)
    std::printf(" namespace=%s", cfg.ns.c_str());
  if (!cfg.lease.empty()) {
    std::printf(" lease=%s%s", cfg.lease.c_str(),
                cfg.lease_created ? " (created)" : " (given)");
  }
  std::printf("\n");
  std::printf(
      "           clients=%d chains=%s depth=%d duration=%s timeout=%gs "
      "channel=%s run_id=%s\n",
      cfg.clients,
      cfg.chains == 0 ? "unlimited"
                      : (std::to_string(cfg.chains) + "/client").c_str(),
      cfg.depth,
      cfg.duration_s > 0 ? FormatSeconds(cfg.duration_s).c_str() : "-",
      cfg.timeout_s, cfg.shared_channel ? "shared" : "per-client",
      cfg.run_id.c_str());
  std::printf("\n%-8s %10s %8s %11s %10s %10s %10s %10s\n", "op", "count",
              "errors", "ops/s", "p50(ms)", "p90(ms)", "p99(ms)", "max(ms)");
  for (int op = 0; op < kNumOps; ++op) {
    const OpStats& s = r.ops[op];
    std::printf(
        "%-8s %10llu %8llu %11.1f %10s %10s %10s %10s\n", kOpNames[op],
        static_cast<unsigned long long>(s.count),
        static_cast<unsigned long long>(s.errors), r.Rate(s.count),
        FormatMs(s.latency, 50).c_str(), FormatMs(s.latency, 90).c_str(),
        FormatMs(s.latency, 99).c_str(), FormatMs(s.latency, 100).c_str());
  }
  std::printf("\ntotal: %llu ops, %llu errors in %.3fs wall = %.1f ops/s%s\n",
              static_cast<unsigned long long>(r.TotalOps()),
              static_cast<unsigned long long>(r.TotalErrors()), r.wall_s,
              r.Rate(r.TotalOps()), r.interrupted ? " (interrupted)" : "");
  if (r.cleanup_removes > 0 || r.leaked > 0) {
    std::printf(
        "cleanup removes after failures: %llu, leaked snapshots: %llu\n",
        static_cast<unsigned long long>(r.cleanup_removes),
        static_cast<unsigned long long>(r.leaked));
  }
  if (r.lease_delete_s) {
    std::printf("lease %s deleted (sync GC) in %.3fs\n", cfg.lease.c_str(),
                *r.lease_delete_s);
  }
  if (!r.lease_error.empty()) {
    std::printf("lease delete FAILED: %s\n", r.lease_error.c_str());
  }
  if (r.remaining) {
    std::printf("snapshots of this run still listed at exit: %llu",
                static_cast<unsigned long long>(*r.remaining));
    if (r.gc_kicks > 0) std::printf(" (after %d extra sync GC)", r.gc_kicks);
    std::printf("\n");
  } else {
    std::printf(
        "snapshots of this run still listed at exit: unknown (List "
        "failed)\n");
  }
  for (int op = 0; op < kNumOps; ++op) {
    for (const auto& [code, info] : r.ops[op].errors_by_code) {
      std::printf("errors: %s %s x%llu%s%s\n", kOpNames[op], code.c_str(),
                  static_cast<unsigned long long>(info.count),
                  info.example.empty() ? "" : " e.g. ", info.example.c_str());
    }
  }
}

constexpr const char* kDescription =
    "snapbench: load generator for a containerd Snapshots gRPC socket.\n"
    "\n"
    "Each of --clients workers runs --chains build-like chains. A chain of\n"
    "depth D does, for i = 0..D-1: Prepare(<p>/l<i>-active, "
    "parent=<p>/l<i-1>)\n"
    "then Commit(<p>/l<i>, <p>/l<i>-active); then Prepare(<p>/container) on\n"
    "the top layer, Stat and Mounts it (nothing is mounted or written), and\n"
    "removes everything leaf-first: the container, then the layers top-down.\n"
    "<p> = <run-id>/w<worker>/c<chain>, so reruns never collide.\n"
    "\n"
    "Modes:\n"
    "  direct (default): talk to a proxy snapshotter socket (e.g. "
    "snapledgerd)\n"
    "    as containerd would. No metadata unless --namespace / --lease given.\n"
    "  --containerd: talk to containerd's own socket. Every request names\n"
    "    --snapshotter and carries gRPC metadata containerd-namespace and\n"
    "    containerd-lease. Unless --lease is given, a lease <run-id> is "
    "created\n"
    "    via the Leases service and deleted at the end with sync=true, so\n"
    "    containerd's GC removes anything left behind.\n"
    "\n"
    "Every RPC has a --timeout deadline. Errors are counted per operation and\n"
    "gRPC code and the run continues; after a failed call the tool removes\n"
    "what may exist (best effort, not counted). Exit status: 0 ok, 1 if any\n"
    "call failed, 2 on usage/setup errors (connection, lease).\n"
    "\n"
    "At exit the tool Lists the run's snapshots (names <run-id>/...) and\n"
    "reports how many remain. In containerd mode, if some remain after the\n"
    "sync lease delete, up to 3 more synchronous GCs are triggered through\n"
    "a throw-away lease <run-id>-gcN.\n"
    "\n"
    "Output: per op (prepare, commit, stat, mounts, remove, chain) count,\n"
    "errors, ops/s (count / wall time) and p50/p90/p99/max latency of\n"
    "successful calls, plus total RPC ops/s and wall time. Latencies are kept\n"
    "in fixed-size log-linear histograms (64 sub-buckets per power of two,\n"
    "<0.8% error), so memory stays bounded for long runs. 'chain' covers a\n"
    "whole chain including removes; it counts as an error if any call failed.";

int Main(int argc, char** argv) {
  Config cfg;
  CLI::App app{kDescription, "snapbench"};
  app.get_formatter()->column_width(34);
  app.add_option("--address", cfg.address,
                 "gRPC address, e.g. unix:///run/snapledger.sock (a bare "
                 "/path is treated as unix://)")
      ->required();
  app.add_flag("--containerd", cfg.containerd,
               "Drive containerd's socket (needs --snapshotter)");
  app.add_option("--snapshotter", cfg.snapshotter,
                 "Snapshotter name put in every request (containerd mode: "
                 "required; direct mode: optional)");
  auto* ns_opt =
      app.add_option("--namespace", cfg.ns,
                     "containerd-namespace metadata (always sent in containerd "
                     "mode; in direct mode only when given)")
          ->capture_default_str();
  app.add_option("--lease", cfg.lease,
                 "Use this existing lease instead of creating one (not "
                 "deleted at the end)");
  app.add_flag("--keep-lease", cfg.keep_lease,
               "Do not delete the lease the tool created (inspect leftovers)");
  app.add_option("--lease-expire", cfg.lease_expire_s,
                 "Label the created lease containerd.io/gc.expire=now+SEC "
                 "as a safety net for crashed runs (0 = none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--clients", cfg.clients, "Concurrent workers")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  auto* chains_opt =
      app.add_option("--chains", cfg.chains,
                     "Chains per client (default 10, or unlimited when "
                     "--duration is given; both: whichever ends first)");
  app.add_option("--depth", cfg.depth, "Committed layers per chain")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
  app.add_option("--duration", cfg.duration_s,
                 "Stop starting new chains after SEC seconds (running chains "
                 "finish and clean up)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--timeout", cfg.timeout_s, "Per-RPC deadline in seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--shared-channel", cfg.shared_channel,
               "All clients share one gRPC connection (default: one each)");
  app.add_option("--run-id", cfg.run_id,
                 "Key prefix and lease id, [A-Za-z0-9_.-] (default "
                 "snapbench-<pid>-<time>)")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            for (char c : v) {
              if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' &&
                  c != '.' && c != '-') {
                return "only [A-Za-z0-9_.-] allowed";
              }
            }
            return v.empty() ? "must not be empty" : "";
          },
          "ID"));
  app.add_flag("--json", cfg.json, "Print machine-readable JSON on stdout");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  cfg.ns_set = ns_opt->count() > 0;
  if (chains_opt->count() == 0 && cfg.duration_s > 0) cfg.chains = 0;
  if (cfg.chains == 0 && cfg.duration_s <= 0) {
    std::cerr << "snapbench: --chains 0 needs --duration\n";
    return 2;
  }
  if (cfg.containerd && cfg.snapshotter.empty()) {
    std::cerr << "snapbench: --containerd needs --snapshotter NAME\n";
    return 2;
  }
  if (cfg.containerd && cfg.ns.empty()) {
    std::cerr << "snapbench: --containerd needs a non-empty --namespace\n";
    return 2;
  }
  if (!cfg.address.empty() && cfg.address[0] == '/') {
    cfg.address = "unix://" + cfg.address;
  }
  if (cfg.run_id.empty()) {
    cfg.run_id = "snapbench-" + std::to_string(getpid()) + "-" +
                 std::to_string(std::time(nullptr));
  }

  signal(SIGINT, HandleSignal);
  signal(SIGTERM, HandleSignal);

  auto control = MakeChannel(cfg, /*own_connection=*/false);
  const auto connect_deadline =
      std::chrono::system_clock::now() +
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::seconds(10));
  if (!control->WaitForConnected(connect_deadline)) {
    std::cerr << "snapbench: cannot connect to " << cfg.address << "\n";
    return 2;
  }
  if (cfg.containerd && cfg.lease.empty()) {
    cfg.lease = cfg.run_id;
    grpc::Status st = CreateLease(cfg, cfg.lease, control);
    if (!st.ok()) {
      std::cerr << "snapbench: creating lease " << cfg.lease << ": "
                << CodeName(st.error_code()) << ": " << st.error_message()
                << "\n";
      return 2;
    }
    cfg.lease_created = true;
  }

  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < cfg.clients; ++i) {
    workers.push_back(std::make_unique<Worker>(
        cfg, i,
        cfg.shared_channel ? control
                           : MakeChannel(cfg, /*own_connection=*/true)));
  }
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(cfg.duration_s));
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&w, end] { w->Run(end); });
  }
  for (auto& t : threads) t.join();

  Report report;
  report.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  report.interrupted = g_stop.load();
  for (const auto& w : workers) {
    for (int op = 0; op < kNumOps; ++op)
      report.ops[op].Merge(w->stats().ops[op]);
    report.cleanup_removes += w->stats().cleanup_removes;
    report.leaked += w->stats().leaked;
  }
  workers.clear();

  bool lease_failed = false;
  if (cfg.lease_created && !cfg.keep_lease) {
    const auto t0 = Clock::now();
    grpc::Status st = DeleteLease(cfg, cfg.lease, control);
    if (st.ok()) {
      report.lease_delete_s =
          std::chrono::duration<double>(Clock::now() - t0).count();
    } else {
      lease_failed = true;
      report.lease_error =
          std::string(CodeName(st.error_code())) + ": " + st.error_message();
    }
  }
  report.remaining = CountRemaining(cfg, control);
  // A sync lease Delete waits for the next GC to finish, which may be one that
  // was already marking when the lease went away; kick fresh ones (through a
  // throw-away lease) until the run's leftovers are gone.
  while (report.lease_delete_s && report.remaining.value_or(0) > 0 &&
         report.gc_kicks < 3) {
    const std::string kick =
        cfg.run_id + "-gc" + std::to_string(++report.gc_kicks);
    if (!CreateLease(cfg, kick, control).ok() ||
        !DeleteLease(cfg, kick, control).ok()) {
      break;
    }
    report.remaining = CountRemaining(cfg, control);
  }

  if (cfg.json) {
    std::cout << ToJson(cfg, report).dump(2) << std::endl;
  } else {
    PrintTable(cfg, report);
  }
  if (lease_failed) return 2;
  return report.TotalErrors() > 0 || report.ops[kChain].errors > 0 ? 1 : 0;
}

}  // namespace
}  // namespace snapbench

int main(int argc, char** argv) { return snapbench::Main(argc, argv); }
