// The metrics component: events counted as they happen, state read from the
// sources at scrape time, the address check, and a real scrape over HTTP.
#include "plugin/metrics/metrics.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

MetricsSources FixedSources() {
  MetricsSources s;
  s.counts = [] {
    Ledger::Counts c;
    c.by_state[store::v1::LIVE] = 5;
    c.by_state_kind[{store::v1::LIVE, store::v1::COMMITTED}] = 3;
    c.by_state_kind[{store::v1::LIVE, store::v1::ACTIVE}] = 2;
    c.by_state[store::v1::REMOVE_PENDING] = 4;
    c.by_state_kind[{store::v1::REMOVE_PENDING, store::v1::COMMITTED}] = 4;
    c.pending_without_due = 3;
    c.pending_held = 1;
    c.by_state[store::v1::STUCK] = 1;
    c.by_state_kind[{store::v1::STUCK, store::v1::ACTIVE}] = 1;
    return absl::StatusOr<Ledger::Counts>(c);
  };
  s.clock = [] { return absl::FromUnixSeconds(10000); };
  s.oldest_pending = [] {
    return absl::StatusOr<std::optional<absl::Time>>(
        absl::FromUnixSeconds(10000 - 3600 * 2));
  };
  s.ledger_disk_bytes = [] { return absl::StatusOr<uint64_t>(123456); };
  s.ledger_degraded = [] { return false; };
  s.backend_calls_running_late = [] { return uint64_t{2}; };
  s.drift = [] {
    DriftSample d;
    d.finished = absl::FromUnixSeconds(9000);
    d.unrecorded = 7;
    d.missing = 1;
    return std::optional<DriftSample>(d);
  };
  s.owners = [] {
    OwnersSample o;
    o.connected = true;
    o.last_sync = absl::FromUnixSeconds(9990);
    o.dead_containers = 2;
    o.dead_pinned_bytes = 4096;
    o.reaped_total = 3;
    return std::optional<OwnersSample>(o);
  };
  return s;
}

TEST(MetricsTest, StateComesFromTheSourcesAtScrapeTime) {
  Metrics metrics(FixedSources());
  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("# TYPE snapledger_snapshots gauge"));
  EXPECT_THAT(text, HasSubstr("snapledger_snapshots{kind=\"committed\","
                              "state=\"live\"} 3"));
  EXPECT_THAT(text, HasSubstr("snapledger_snapshots{kind=\"active\","
                              "state=\"stuck\"} 1"));
  // 4 pending: 1 scheduled, 3 without a due time of which 1 held.
  EXPECT_THAT(text,
              HasSubstr("snapledger_removal_queue{state=\"scheduled\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_removal_queue{state=\"waiting_for_"
                              "children\"} 2"));
  EXPECT_THAT(text, HasSubstr("snapledger_removal_queue{state=\"held\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_removal_queue{state=\"stuck\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("snapledger_removal_oldest_pending_age_seconds 7200"));
  EXPECT_THAT(text, HasSubstr("snapledger_ledger_size_bytes 123456"));
  EXPECT_THAT(text, HasSubstr("snapledger_ledger_degraded 0"));
  EXPECT_THAT(text, HasSubstr("snapledger_backend_calls_running_late 2"));
  EXPECT_THAT(text, HasSubstr("snapledger_drift{type=\"unrecorded\"} 7"));
  EXPECT_THAT(text, HasSubstr("snapledger_drift{type=\"missing\"} 1"));
  EXPECT_THAT(
      text, HasSubstr("snapledger_reconcile_last_run_timestamp_seconds 9000"));
  EXPECT_THAT(text, HasSubstr("snapledger_watcher_connected 1"));
  EXPECT_THAT(text,
              HasSubstr("snapledger_watcher_last_sync_timestamp_seconds 9990"));
  EXPECT_THAT(text, HasSubstr("snapledger_dead_containers 2"));
  EXPECT_THAT(text, HasSubstr("snapledger_dead_container_pinned_bytes 4096"));
  EXPECT_THAT(text, HasSubstr("snapledger_reaper_deleted_containers_total 3"));
  EXPECT_THAT(text, HasSubstr("snapledger_scrape_errors_total 0"));
}

TEST(MetricsTest, MissingOrFailingSourcesLeaveTheirMetricsOut) {
  MetricsSources sources;
  sources.counts = [] {
    return absl::StatusOr<Ledger::Counts>(absl::UnavailableError("gone"));
  };
  Metrics metrics(sources);
  const std::string text = metrics.Render();
  EXPECT_THAT(text, Not(HasSubstr("snapledger_snapshots")));
  EXPECT_THAT(text, Not(HasSubstr("snapledger_watcher_connected")));
  EXPECT_THAT(text, Not(HasSubstr("snapledger_drift")));
  EXPECT_THAT(text, HasSubstr("snapledger_scrape_errors_total 1"));
}

TEST(MetricsTest, EventsAreCountedWithTheirLabels) {
  Metrics metrics(MetricsSources{});
  metrics.ObserveRpc("Prepare", absl::StatusCode::kOk, absl::Milliseconds(2));
  metrics.ObserveRpc("Prepare", absl::StatusCode::kOk, absl::Milliseconds(3));
  metrics.ObserveRpc("Remove", absl::StatusCode::kFailedPrecondition,
                     absl::Microseconds(80));
  metrics.ObserveRpc("Bogus", absl::StatusCode::kUnimplemented,
                     absl::Microseconds(1));
  metrics.ObserveBackendCall("remove", absl::Seconds(60),
                             absl::StatusCode::kDeadlineExceeded, true);
  metrics.ObserveBackendCall("create", absl::Milliseconds(1),
                             absl::StatusCode::kOk, false);
  metrics.ObserveLedgerWrite(true, absl::Milliseconds(4), true);
  metrics.ObserveLedgerWrite(false, absl::Microseconds(20), false);
  metrics.CountRemoval(RemovalEvent::kRemoved);
  metrics.CountRemoval(RemovalEvent::kStuck);
  metrics.CountRemoval(RemovalEvent::kOperatorRetry);
  metrics.CountPruneAction("reap_container", 1000);
  metrics.CountPruneAction("reap_container", 24);
  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("snapledger_rpc_duration_seconds_count{code=\"OK"
                              "\",method=\"Prepare\"} 2"));
  EXPECT_THAT(text, HasSubstr("snapledger_rpc_duration_seconds_sum{code=\"OK\","
                              "method=\"Prepare\"} 0.005"));
  EXPECT_THAT(text, HasSubstr("snapledger_rpc_duration_seconds_count{code="
                              "\"FailedPrecondition\",method=\"Remove\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_rpc_duration_seconds_count{code="
                              "\"Unimplemented\",method=\"other\"} 1"));
  // Pairs that never happened are not shown.
  EXPECT_THAT(text, Not(HasSubstr("method=\"Stat\"")));
  EXPECT_THAT(text,
              HasSubstr("snapledger_backend_timeouts_total{op=\"remove\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("snapledger_backend_timeouts_total{op=\"create\"} 0"));
  EXPECT_THAT(
      text, HasSubstr("snapledger_backend_call_errors_total{op=\"remove\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_backend_call_duration_seconds_count{"
                              "op=\"create\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_ledger_write_duration_seconds_count{"
                              "durability=\"synced\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_ledger_write_errors_total 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_removal_attempts_total{outcome="
                              "\"removed\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_removal_attempts_total{outcome="
                              "\"stuck\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_removal_attempts_total{outcome="
                              "\"failed\"} 0"));
  EXPECT_THAT(text, HasSubstr("snapledger_removal_retries_total{trigger="
                              "\"operator\"} 1"));
  EXPECT_THAT(text, HasSubstr("snapledger_prune_actions_total{action="
                              "\"reap_container\"} 2"));
  EXPECT_THAT(text, HasSubstr("snapledger_prune_freed_bytes_total{action="
                              "\"reap_container\"} 1024"));
}

TEST(MetricsAddressTest, LoopbackOnlyUnlessAllowed) {
  EXPECT_EQ(*CheckMetricsAddress("127.0.0.1:9305", false), "127.0.0.1:9305");
  EXPECT_EQ(*CheckMetricsAddress("127.1.2.3:1", false), "127.1.2.3:1");
  EXPECT_EQ(*CheckMetricsAddress("localhost:9305", false), "127.0.0.1:9305");
  EXPECT_EQ(*CheckMetricsAddress("[::1]:9305", false), "[::1]:9305");
  absl::StatusOr<std::string> open = CheckMetricsAddress("0.0.0.0:9305", false);
  EXPECT_TRUE(absl::IsInvalidArgument(open.status()));
  EXPECT_THAT(std::string(open.status().message()),
              HasSubstr("metrics_allow_non_loopback"));
  EXPECT_FALSE(CheckMetricsAddress("[::]:9305", false).ok());
  EXPECT_FALSE(CheckMetricsAddress("10.0.0.1:9305", false).ok());
  EXPECT_EQ(*CheckMetricsAddress("0.0.0.0:9305", true), "0.0.0.0:9305");
  for (const char* bad : {"", "9305", ":9305", "127.0.0.1", "127.0.0.1:x",
                          "127.0.0.1:70000", "host.example:80", "[zz]:1"}) {
    EXPECT_TRUE(
        absl::IsInvalidArgument(CheckMetricsAddress(bad, true).status()))
        << bad;
  }
}

// GET /metrics over TCP; the whole response.
std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    const std::string req = "GET " + path +
                            " HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                            "Connection: close\r\n\r\n";
    if (::write(fd, req.data(), req.size()) ==
        static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
    }
  }
  ::close(fd);
  return out;
}

TEST(MetricsServeTest, ServesTheScrapeOverHttpOnLoopback) {
  Metrics metrics(FixedSources());
  ASSERT_TRUE(metrics.Serve("127.0.0.1:0", false).ok());
  ASSERT_GT(metrics.port(), 0);
  EXPECT_EQ(metrics.url(),
            "http://127.0.0.1:" + std::to_string(metrics.port()) + "/metrics");
  metrics.ObserveRpc("Stat", absl::StatusCode::kNotFound,
                     absl::Microseconds(60));
  const std::string response = HttpGet(metrics.port(), "/metrics");
  EXPECT_THAT(response, HasSubstr("200 OK"));
  EXPECT_THAT(response,
              HasSubstr("snapledger_removal_queue{state=\"held\"} 1"));
  EXPECT_THAT(response, HasSubstr("snapledger_rpc_duration_seconds_count{code="
                                  "\"NotFound\",method=\"Stat\"} 1"));
  EXPECT_FALSE(metrics.Serve("10.1.2.3:0", false).ok());
}

TEST(MetricsServeTest, AnAddressInUseIsUnavailable) {
  Metrics first(MetricsSources{});
  ASSERT_TRUE(first.Serve("127.0.0.1:0", false).ok());
  Metrics second(MetricsSources{});
  absl::Status s =
      second.Serve("127.0.0.1:" + std::to_string(first.port()), false);
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
}

}  // namespace
}  // namespace snapledger
