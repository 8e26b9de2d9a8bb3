#include "plugin/metrics/metrics.h"

#include <arpa/inet.h>

#include <algorithm>
#include <exception>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

// Latencies from 50 µs (a Stat) to a minute (a backend call at its limit).
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,     0.25,   0.5,     1,      2.5,   5,      10,    30,   60};
  return *buckets;
}

// gRPC's code names, as containerd's Go client spells them in its errors.
constexpr std::array<std::string_view, 17> kCodeNames = {"OK",
                                                         "Canceled",
                                                         "Unknown",
                                                         "InvalidArgument",
                                                         "DeadlineExceeded",
                                                         "NotFound",
                                                         "AlreadyExists",
                                                         "PermissionDenied",
                                                         "ResourceExhausted",
                                                         "FailedPrecondition",
                                                         "Aborted",
                                                         "OutOfRange",
                                                         "Unimplemented",
                                                         "Internal",
                                                         "Unavailable",
                                                         "DataLoss",
                                                         "Unauthenticated"};

template <size_t N>
size_t IndexOf(const std::array<std::string_view, N>& names,
               std::string_view name) {
  for (size_t i = 0; i + 1 < N; ++i) {
    if (names[i] == name) return i;
  }
  return N - 1;  // "other"
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

std::string Lower(std::string_view s) {
  return absl::AsciiStrToLower(std::string(s));
}

// A state's or kind's label value: the proto's enum name, lower case.
std::string StateLabel(RecordState state) {
  return Lower(store::v1::State_Name(state));
}
std::string KindLabel(RecordKind kind) {
  return Lower(store::v1::Kind_Name(kind));
}

prometheus::ClientMetric Sample(
    double value, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  m.counter.value = value;
  return m;
}

prometheus::MetricFamily Family(std::string name, std::string help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

}  // namespace

// The scrape-time values: read from the sources at each scrape.
class Metrics::StateCollector final : public prometheus::Collectable {
 public:
  explicit StateCollector(MetricsSources sources)
      : sources_(std::move(sources)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> out;
    const absl::Time now = sources_.clock();
    if (sources_.counts) CollectCounts(&out);
    if (sources_.oldest_pending) {
      auto oldest = sources_.oldest_pending();
      if (!oldest.ok()) {
        Failed("oldest pending removal", oldest.status());
      } else {
        auto f = Family(
            "snapledger_removal_oldest_pending_age_seconds",
            "Time since the oldest pending removal was asked for (0: none).",
            MetricType::Gauge);
        f.metric.push_back(Sample(
            oldest->has_value() ? std::max(0.0, Seconds(now - **oldest)) : 0));
        out.push_back(std::move(f));
      }
    }
    if (sources_.ledger_disk_bytes) {
      auto bytes = sources_.ledger_disk_bytes();
      if (!bytes.ok()) {
        Failed("ledger size", bytes.status());
      } else {
        auto f =
            Family("snapledger_ledger_size_bytes",
                   "Bytes of the ledger's files on disk.", MetricType::Gauge);
        f.metric.push_back(Sample(static_cast<double>(*bytes)));
        out.push_back(std::move(f));
      }
    }
    if (sources_.ledger_degraded) {
      auto f = Family("snapledger_ledger_degraded",
                      "1 while the ledger refuses writes after a failed one "
                      "(disk full, I/O error), else 0.",
                      MetricType::Gauge);
      f.metric.push_back(Sample(sources_.ledger_degraded() ? 1 : 0));
      out.push_back(std::move(f));
    }
    if (sources_.backend_calls_running_late) {
      auto f = Family("snapledger_backend_calls_running_late",
                      "Backend calls past backend_timeout that still run.",
                      MetricType::Gauge);
      f.metric.push_back(
          Sample(static_cast<double>(sources_.backend_calls_running_late())));
      out.push_back(std::move(f));
    }
    if (sources_.drift) CollectDrift(&out);
    if (sources_.owners) CollectOwners(&out);
    auto errors = Family("snapledger_scrape_errors_total",
                         "Scrapes that left metrics out because a source "
                         "failed (the daemon's log says which).",
                         MetricType::Counter);
    errors.metric.push_back(
        Sample(static_cast<double>(errors_.load(std::memory_order_relaxed))));
    out.push_back(std::move(errors));
    return out;
  }

 private:
  void Failed(std::string_view what, const absl::Status& status) const {
    errors_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("metrics: {} left out of a scrape: {}", what,
                 status.ToString());
  }

  void CollectCounts(std::vector<prometheus::MetricFamily>* out) const {
    using prometheus::MetricType;
    absl::StatusOr<Ledger::Counts> counts = sources_.counts();
    if (!counts.ok()) return Failed("ledger counts", counts.status());
    auto snapshots = Family(
        "snapledger_snapshots",
        "Ledger records by kind and state (live: what containerd sees; "
        "remove_pending and stuck: the removal queue; preparing, committing, "
        "removing: operations in flight).",
        MetricType::Gauge);
    for (const auto& [key, n] : counts->by_state_kind) {
      snapshots.metric.push_back(Sample(
          static_cast<double>(n),
          {{"kind", KindLabel(key.second)}, {"state", StateLabel(key.first)}}));
    }
    out->push_back(std::move(snapshots));
    const auto count = [&](RecordState s) -> uint64_t {
      auto it = counts->by_state.find(s);
      return it == counts->by_state.end() ? 0 : it->second;
    };
    const uint64_t pending = count(store::v1::REMOVE_PENDING);
    const uint64_t without_due = std::min(counts->pending_without_due, pending);
    const uint64_t held = std::min(counts->pending_held, without_due);
    auto queue = Family(
        "snapledger_removal_queue",
        "Queued removals by state: scheduled (due at a time), "
        "waiting_for_children (due when the last child goes), held (its "
        "container still exists), stuck (failed max_attempts times; kept for "
        "an operator).",
        MetricType::Gauge);
    for (auto [state, n] :
         {std::pair<const char*, uint64_t>{"scheduled", pending - without_due},
          {"waiting_for_children", without_due - held},
          {"held", held},
          {"stuck", count(store::v1::STUCK)}}) {
      queue.metric.push_back(
          Sample(static_cast<double>(n), {{"state", state}}));
    }
    out->push_back(std::move(queue));
  }

  void CollectDrift(std::vector<prometheus::MetricFamily>* out) const {
    using prometheus::MetricType;
    std::optional<DriftSample> drift = sources_.drift();
    if (!drift.has_value()) return;  // no reconciliation finished yet
    auto f = Family(
        "snapledger_drift",
        "What the latest reconciliation found: backend objects no record "
        "names (unrecorded), records whose object is gone (missing), objects "
        "whose parent differs from the record's (parent_mismatch).",
        MetricType::Gauge);
    for (auto [type, n] :
         {std::pair<const char*, int64_t>{"unrecorded", drift->unrecorded},
          {"missing", drift->missing},
          {"parent_mismatch", drift->parent_mismatch}}) {
      f.metric.push_back(Sample(static_cast<double>(n), {{"type", type}}));
    }
    out->push_back(std::move(f));
    auto at = Family("snapledger_reconcile_last_run_timestamp_seconds",
                     "When the latest reconciliation finished (Unix time).",
                     MetricType::Gauge);
    at.metric.push_back(
        Sample(absl::ToDoubleSeconds(drift->finished - absl::UnixEpoch())));
    out->push_back(std::move(at));
  }

  void CollectOwners(std::vector<prometheus::MetricFamily>* out) const {
    using prometheus::MetricType;
    std::optional<OwnersSample> owners = sources_.owners();
    if (!owners.has_value()) return;
    auto connected = Family(
        "snapledger_watcher_connected",
        "1 while the watcher has listed containerd and follows its events.",
        MetricType::Gauge);
    connected.metric.push_back(Sample(owners->connected ? 1 : 0));
    out->push_back(std::move(connected));
    auto synced = Family(
        "snapledger_watcher_last_sync_timestamp_seconds",
        "End of the watcher's last full listing of containerd (Unix time; 0: "
        "never).",
        MetricType::Gauge);
    synced.metric.push_back(Sample(
        owners->last_sync == absl::InfinitePast()
            ? 0
            : absl::ToDoubleSeconds(owners->last_sync - absl::UnixEpoch())));
    out->push_back(std::move(synced));
    auto dead = Family("snapledger_dead_containers",
                       "Containers whose rootfs is in the ledger and that "
                       "have had no live task for dead_after.",
                       MetricType::Gauge);
    dead.metric.push_back(Sample(static_cast<double>(owners->dead_containers)));
    out->push_back(std::move(dead));
    auto pinned = Family(
        "snapledger_dead_container_pinned_bytes",
        "Bytes of the committed layers dead containers pin (summed over the "
        "containers).",
        MetricType::Gauge);
    pinned.metric.push_back(
        Sample(static_cast<double>(owners->dead_pinned_bytes)));
    out->push_back(std::move(pinned));
    auto reaped = Family("snapledger_reaper_deleted_containers_total",
                         "Dead containers the reaper deleted through "
                         "containerd since the daemon started.",
                         MetricType::Counter);
    reaped.metric.push_back(Sample(static_cast<double>(owners->reaped_total)));
    out->push_back(std::move(reaped));
  }

  const MetricsSources sources_;
  mutable std::atomic<uint64_t> errors_{0};
};

absl::StatusOr<std::string> CheckMetricsAddress(std::string_view address_view,
                                                bool allow_non_loopback) {
  // Abseil's string functions here take absl::string_view, not std's.
  const std::string address(address_view);
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics_address must be HOST:PORT (e.g. \"127.0.0.1:9305\"), not \"",
        address, "\""));
  }
  const std::string host = address.substr(0, colon);
  int port = -1;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_address: \"",
                                                   address.substr(colon + 1),
                                                   "\" is not a TCP port"));
  }
  bool loopback = false;
  std::string listen;
  if (host == "localhost") {
    loopback = true;
    listen = absl::StrCat("127.0.0.1:", port);
  } else if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    const std::string ip(host.substr(1, host.size() - 2));
    in6_addr a6{};
    if (::inet_pton(AF_INET6, ip.c_str(), &a6) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics_address: \"", ip, "\" is not an IPv6 address"));
    }
    loopback = IN6_IS_ADDR_LOOPBACK(&a6);
    listen = absl::StrCat("[", ip, "]:", port);
  } else {
    const std::string& ip = host;
    in_addr a4{};
    if (::inet_pton(AF_INET, ip.c_str(), &a4) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics_address: \"", ip,
          "\" is not an IPv4 address, [IPv6] address or localhost"));
    }
    loopback = (ntohl(a4.s_addr) >> 24) == 127;
    listen = absl::StrCat(ip, ":", port);
  }
  if (!loopback && !allow_non_loopback) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics_address ", address,
        " is not a loopback address: the metrics name containers, images "
        "and sizes and have no authentication; set "
        "metrics_allow_non_loopback = true to serve them there anyway"));
  }
  return listen;
}

Metrics::Metrics(MetricsSources sources)
    : registry_(std::make_shared<prometheus::Registry>()),
      state_(std::make_shared<StateCollector>(std::move(sources))),
      rpc_family_(prometheus::BuildHistogram()
                      .Name("snapledger_rpc_duration_seconds")
                      .Help("Snapshots API calls by method and gRPC code: "
                            "the handler's time (List: reading the matches)")
                      .Register(*registry_)),
      prune_actions_(prometheus::BuildCounter()
                         .Name("snapledger_prune_actions_total")
                         .Help("Prune actions taken, by action")
                         .Register(*registry_)),
      prune_bytes_(prometheus::BuildCounter()
                       .Name("snapledger_prune_freed_bytes_total")
                       .Help("Bytes prune actions freed, by action")
                       .Register(*registry_)) {
  for (auto& row : rpc_) {
    for (auto& h : row) h.store(nullptr, std::memory_order_relaxed);
  }
  auto& backend = prometheus::BuildHistogram()
                      .Name("snapledger_backend_call_duration_seconds")
                      .Help(
                          "Backend calls by operation: how long the caller "
                          "waited (at most backend_timeout)")
                      .Register(*registry_);
  auto& backend_errors = prometheus::BuildCounter()
                             .Name("snapledger_backend_call_errors_total")
                             .Help(
                                 "Backend calls that failed (time-outs "
                                 "included), by operation")
                             .Register(*registry_);
  auto& timeouts = prometheus::BuildCounter()
                       .Name("snapledger_backend_timeouts_total")
                       .Help(
                           "Backend calls that outlived backend_timeout "
                           "(answered DeadlineExceeded), by operation")
                       .Register(*registry_);
  for (size_t i = 0; i < kBackendOps.size(); ++i) {
    const prometheus::Labels labels{{"op", std::string(kBackendOps[i])}};
    backend_duration_[i] = &backend.Add(labels, LatencyBuckets());
    backend_errors_[i] = &backend_errors.Add(labels);
    backend_timeouts_[i] = &timeouts.Add(labels);
  }
  auto& writes = prometheus::BuildHistogram()
                     .Name("snapledger_ledger_write_duration_seconds")
                     .Help(
                         "Ledger writes (one RocksDB batch each), by "
                         "durability: synced ones include their fsync")
                     .Register(*registry_);
  ledger_write_synced_ =
      &writes.Add({{"durability", "synced"}}, LatencyBuckets());
  ledger_write_unsynced_ =
      &writes.Add({{"durability", "unsynced"}}, LatencyBuckets());
  ledger_write_errors_ = &prometheus::BuildCounter()
                              .Name("snapledger_ledger_write_errors_total")
                              .Help(
                                  "Ledger writes that failed (disk full, "
                                  "I/O error)")
                              .Register(*registry_)
                              .Add({});
  auto& attempts = prometheus::BuildCounter()
                       .Name("snapledger_removal_attempts_total")
                       .Help(
                           "What the removal queue did with a due removal, "
                           "by outcome")
                       .Register(*registry_);
  auto& retries = prometheus::BuildCounter()
                      .Name("snapledger_removal_retries_total")
                      .Help(
                          "Removal retries: after a failed attempt "
                          "(backoff), or asked for (operator)")
                      .Register(*registry_);
  for (RemovalEvent e :
       {RemovalEvent::kRemoved, RemovalEvent::kFailed, RemovalEvent::kStuck,
        RemovalEvent::kWaitingForChildren, RemovalEvent::kHeld}) {
    removal_events_[static_cast<size_t>(e)] =
        &attempts.Add({{"outcome", std::string(RemovalEventName(e))}});
  }
  for (RemovalEvent e :
       {RemovalEvent::kBackoffRetry, RemovalEvent::kOperatorRetry}) {
    removal_events_[static_cast<size_t>(e)] =
        &retries.Add({{"trigger", std::string(RemovalEventName(e))}});
  }
}

Metrics::~Metrics() {
  // The server first: no scrape runs while the rest goes.
  exposer_.reset();
}

absl::Status Metrics::Serve(std::string_view address, bool allow_non_loopback) {
  absl::StatusOr<std::string> listen =
      CheckMetricsAddress(address, allow_non_loopback);
  if (!listen.ok()) return listen.status();
  try {
    // One thread: scrapes are rare, and each is cheap.
    exposer_ = std::make_unique<prometheus::Exposer>(*listen, 1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve metrics on ", std::string(address), ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(state_);
  host_ = listen->substr(0, listen->rfind(':'));
  return absl::OkStatus();
}

std::string Metrics::url() const {
  if (exposer_ == nullptr) return "";
  return absl::StrCat("http://", host_, ":", port(), "/metrics");
}

void Metrics::StopServing() { exposer_.reset(); }

int Metrics::port() const {
  if (exposer_ == nullptr) return 0;
  std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

prometheus::Histogram& Metrics::RpcHistogram(size_t method, int code) {
  absl::MutexLock lock(&mu_);
  prometheus::Histogram* h = rpc_[method][code].load(std::memory_order_acquire);
  if (h == nullptr) {
    h = &rpc_family_.Add({{"method", std::string(kMethods[method])},
                          {"code", std::string(kCodeNames[code])}},
                         LatencyBuckets());
    rpc_[method][code].store(h, std::memory_order_release);
  }
  return *h;
}

void Metrics::ObserveRpc(std::string_view method, absl::StatusCode code,
                         absl::Duration took) {
  const size_t m = IndexOf(kMethods, method);
  int c = static_cast<int>(code);
  if (c < 0 || c >= kCodes) c = static_cast<int>(absl::StatusCode::kUnknown);
  prometheus::Histogram* h = rpc_[m][c].load(std::memory_order_acquire);
  if (h == nullptr) h = &RpcHistogram(m, c);
  h->Observe(Seconds(took));
}

void Metrics::ObserveBackendCall(std::string_view op, absl::Duration took,
                                 absl::StatusCode code, bool timed_out) {
  const size_t i = IndexOf(kBackendOps, op);
  backend_duration_[i]->Observe(Seconds(took));
  if (code != absl::StatusCode::kOk) backend_errors_[i]->Increment();
  if (timed_out) backend_timeouts_[i]->Increment();
}

void Metrics::ObserveLedgerWrite(bool synced, absl::Duration took, bool ok) {
  (synced ? ledger_write_synced_ : ledger_write_unsynced_)
      ->Observe(Seconds(took));
  if (!ok) ledger_write_errors_->Increment();
}

void Metrics::CountRemoval(RemovalEvent event) {
  const auto i = static_cast<size_t>(event);
  if (i < removal_events_.size() && removal_events_[i] != nullptr) {
    removal_events_[i]->Increment();
  }
}

void Metrics::CountPruneAction(std::string_view action, uint64_t bytes_freed) {
  // Prune actions are rare (a few per interval): the family's own lookup is
  // cheap enough.
  const prometheus::Labels labels{{"action", std::string(action)}};
  prune_actions_.Add(labels).Increment();
  prune_bytes_.Add(labels).Increment(static_cast<double>(bytes_freed));
}

std::string Metrics::Render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<prometheus::MetricFamily> state = state_->Collect();
  families.insert(families.end(), std::make_move_iterator(state.begin()),
                  std::make_move_iterator(state.end()));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace snapledger
