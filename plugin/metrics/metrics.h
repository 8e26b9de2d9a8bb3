// Metrics: snapledgerd's Prometheus metrics (docs/metrics.md lists them all),
// served over HTTP at /metrics on `metrics_address` when it is set.
//
// Two kinds of values, so that neither a scrape nor a call pays for the
// other:
//   - events (RPCs, backend calls, ledger writes, removal attempts, prune
//     actions) are counted as they happen: the components below tell the
//     daemon through plain callbacks (RpcObserver, TimedBackendOptions::
//     on_call, Ledger::Options::on_write, RemovalQueueOptions::on_event),
//     none of which knows Prometheus, and the daemon calls the Observe* and
//     Count* methods here. Each is an atomic add or one histogram observe;
//     label lookups are made once, not per call.
//   - state (snapshots by kind and state, the removal queue, drift, dead
//     containers, the watcher, the ledger's size) is read at scrape time from
//     MetricsSources: the ledger's counts and indexes (m/n/, q/), the latest
//     reconciliation's report, the owner tracker's latest pass. Nothing reads
//     the records: a scrape costs the same at 100,000 snapshots as at 10.
//
// Adding a metric from another component (the prune's, for instance): keep
// the component free of Prometheus. It exposes a callback or a counter of its
// own; the daemon wires it to a method here (CountPruneAction is the one for
// the prune) or, for a new family, to a family built on registry() in the
// daemon's wiring. Names are `snapledger_<what>_<unit>` (`_total` for
// counters), labels few and bounded; add the metric to docs/metrics.md.
//
// Thread-safety: the event methods and Render are thread-safe; Serve,
// StopServing and port() are not (the daemon calls them from its start and
// shutdown). Sources are called on the HTTP server's thread, one scrape at a
// time, only between Serve and StopServing.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "plugin/removal/removal_queue.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "store/ledger.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace snapledger {

// The latest reconciliation, for the drift metrics.
struct DriftSample {
  absl::Time finished = absl::InfinitePast();
  int64_t unrecorded = 0;       // backend objects no record names
  int64_t missing = 0;          // records whose object is gone
  int64_t parent_mismatch = 0;  // objects whose parent differs
};

// The owner tracker's latest pass and the watcher's status.
struct OwnersSample {
  bool connected = false;
  absl::Time last_sync = absl::InfinitePast();  // InfinitePast: never
  uint64_t dead_containers = 0;
  // Committed bytes the dead containers pin (a layer two of them pin
  // counts twice: each would free it only with the other).
  int64_t dead_pinned_bytes = 0;
  uint64_t reaped_total = 0;
};

// Where scrape-time values come from. Each may be empty: its metrics are then
// left out (the owner metrics without containerd_address, say). A source that
// fails leaves its metrics out of that scrape and counts
// snapledger_scrape_errors_total.
struct MetricsSources {
  std::function<absl::StatusOr<Ledger::Counts>()> counts;
  // When the oldest pending removal was asked for (nullopt: none pending).
  std::function<absl::StatusOr<std::optional<absl::Time>>()> oldest_pending;
  std::function<absl::StatusOr<uint64_t>()> ledger_disk_bytes;
  std::function<bool()> ledger_degraded;
  // Backend calls past their time limit and still running.
  std::function<uint64_t()> backend_calls_running_late;
  std::function<std::optional<DriftSample>()> drift;
  std::function<std::optional<OwnersSample>()> owners;
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

// A TCP address to serve metrics on: "HOST:PORT", HOST an IPv4 address,
// "[IPv6]" or "localhost". InvalidArgument names what is wrong; a host that
// is not loopback is refused unless `allow_non_loopback` (the metrics name
// containers, images and sizes, and the endpoint has no authentication).
// Returns the address civetweb listens on ("127.0.0.1:9305", "[::1]:9305").
[[nodiscard]] absl::StatusOr<std::string> CheckMetricsAddress(
    std::string_view address, bool allow_non_loopback);

class Metrics {
 public:
  // The metrics, not served (tests, benchmarks: see Render).
  explicit Metrics(MetricsSources sources);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Serves /metrics on `address` (checked with CheckMetricsAddress).
  // Unavailable when it cannot listen there (in use, say).
  [[nodiscard]] absl::Status Serve(std::string_view address,
                                   bool allow_non_loopback);
  // Stops serving (waits for a scrape in progress); the sources are not
  // called again. Idempotent.
  void StopServing();
  // The port served on (the one bound, for an address with port 0); 0 when
  // not serving.
  int port() const;
  // "http://HOST:PORT/metrics" with the port bound; empty when not serving.
  std::string url() const;

  // Events. Cheap; any thread.
  void ObserveRpc(std::string_view method, absl::StatusCode code,
                  absl::Duration took);
  void ObserveBackendCall(std::string_view op, absl::Duration took,
                          absl::StatusCode code, bool timed_out);
  void ObserveLedgerWrite(bool synced, absl::Duration took, bool ok);
  void CountRemoval(RemovalEvent event);
  // A prune action (the prune component's) and the bytes it freed.
  void CountPruneAction(std::string_view action, uint64_t bytes_freed);

  // Everything, in Prometheus's text format, as a scrape would get it.
  std::string Render() const;

  // For families this class does not make (see the header comment).
  prometheus::Registry& registry() { return *registry_; }

 private:
  class StateCollector;
  static constexpr int kCodes = 17;  // gRPC's codes, OK to UNAUTHENTICATED
  // The Snapshots API's methods, and "other".
  static constexpr std::array<std::string_view, 11> kMethods = {
      "Prepare", "View", "Mounts", "Commit",  "Remove", "Stat",
      "Update",  "List", "Usage",  "Cleanup", "other"};
  static constexpr std::array<std::string_view, 9> kBackendOps = {
      "create", "commit", "remove",  "mounts", "disk_usage",
      "exists", "list",   "cleanup", "other"};

  prometheus::Histogram& RpcHistogram(size_t method, int code)
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::shared_ptr<prometheus::Registry> registry_;
  const std::shared_ptr<StateCollector> state_;

  prometheus::Family<prometheus::Histogram>& rpc_family_;
  // Made on first use of each (method, code): a scrape shows the pairs that
  // happened, and a call after the first takes no lock here.
  std::array<std::array<std::atomic<prometheus::Histogram*>, kCodes>,
             kMethods.size()>
      rpc_{};
  absl::Mutex mu_;  // serializes making rpc_ entries

  std::array<prometheus::Histogram*, kBackendOps.size()> backend_duration_{};
  std::array<prometheus::Counter*, kBackendOps.size()> backend_errors_{};
  std::array<prometheus::Counter*, kBackendOps.size()> backend_timeouts_{};
  prometheus::Histogram* ledger_write_synced_;
  prometheus::Histogram* ledger_write_unsynced_;
  prometheus::Counter* ledger_write_errors_;
  std::array<prometheus::Counter*, 7> removal_events_{};
  prometheus::Family<prometheus::Counter>& prune_actions_;
  prometheus::Family<prometheus::Counter>& prune_bytes_;

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string host_;  // what Serve listens on, without the port
};

}  // namespace snapledger
