#include "cli/commands.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/admin_api.h"
#include "cli/render.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// Canned answers; remembers the last request of each kind.
class FakeAdminApi : public AdminApi {
 public:
  absl::StatusOr<admin::ListResponse> List(
      const admin::ListRequest& request) override {
    list_request = request;
    ++calls;
    return list;
  }
  absl::StatusOr<admin::InspectResponse> Inspect(
      const admin::InspectRequest& request) override {
    inspect_request = request;
    ++calls;
    return inspect;
  }
  absl::StatusOr<admin::PendingResponse> Pending(
      const admin::PendingRequest&) override {
    ++calls;
    return pending;
  }
  absl::StatusOr<admin::OrphansResponse> Orphans(
      const admin::OrphansRequest&) override {
    ++calls;
    return admin::OrphansResponse();
  }
  absl::StatusOr<admin::HistoryResponse> History(
      const admin::HistoryRequest& request) override {
    history_request = request;
    ++calls;
    return admin::HistoryResponse();
  }
  absl::StatusOr<admin::StatsResponse> Stats(
      const admin::StatsRequest&) override {
    ++calls;
    return stats;
  }
  absl::StatusOr<admin::ReconcileResponse> Reconcile(
      const admin::ReconcileRequest& request) override {
    reconcile_request = request;
    ++calls;
    return admin::ReconcileResponse();
  }
  absl::StatusOr<admin::RetryResponse> Retry(
      const admin::RetryRequest& request) override {
    retry_request = request;
    ++calls;
    return retry;
  }
  absl::StatusOr<admin::CheckResponse> Check(
      const admin::CheckRequest&) override {
    ++calls;
    return check;
  }
  absl::StatusOr<admin::DeadResponse> Dead(const admin::DeadRequest&) override {
    ++calls;
    return dead;
  }
  absl::StatusOr<admin::PruneResponse> Prune(
      const admin::PruneRequest& request) override {
    prune_request = request;
    ++calls;
    return prune;
  }
  bool offline() const override { return is_offline; }

  bool is_offline = false;
  int calls = 0;
  absl::StatusOr<admin::ListResponse> list = admin::ListResponse();
  absl::StatusOr<admin::InspectResponse> inspect = admin::InspectResponse();
  absl::StatusOr<admin::PendingResponse> pending = admin::PendingResponse();
  absl::StatusOr<admin::RetryResponse> retry = admin::RetryResponse();
  absl::StatusOr<admin::CheckResponse> check = admin::CheckResponse();
  absl::StatusOr<admin::StatsResponse> stats = admin::StatsResponse();
  absl::StatusOr<admin::DeadResponse> dead = admin::DeadResponse();
  absl::StatusOr<admin::PruneResponse> prune = admin::PruneResponse();
  admin::PruneRequest prune_request;
  admin::ListRequest list_request;
  admin::InspectRequest inspect_request;
  admin::HistoryRequest history_request;
  admin::ReconcileRequest reconcile_request;
  admin::RetryRequest retry_request;
};

class CommandsTest : public ::testing::Test {
 protected:
  CommandContext Context(bool json = false) {
    CommandContext ctx;
    ctx.api = &api_;
    ctx.json = json;
    ctx.now = absl::FromUnixSeconds(1795435468);
    ctx.out = &out_;
    ctx.err = &err_;
    return ctx;
  }

  FakeAdminApi api_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(CommandsTest, CheckExitsZeroWhenAllAgree) {
  EXPECT_EQ(RunCheck(Context()), kExitOk);
  EXPECT_EQ(out_.str(), "ok: backend and ledger agree\n");
  EXPECT_THAT(err_.str(), IsEmpty());
}

TEST_F(CommandsTest, CheckExitsOneWithAProblemPerLine) {
  admin::CheckResponse check;
  check.add_problems("object 17 has no record");
  check.add_problems("1 removal stuck");
  api_.check = check;
  EXPECT_EQ(RunCheck(Context()), kExitProblems);
  EXPECT_EQ(out_.str(), "object 17 has no record\n1 removal stuck\n");
}

TEST_F(CommandsTest, CheckInJsonKeepsTheExitCode) {
  admin::CheckResponse check;
  check.add_problems("x");
  api_.check = check;
  EXPECT_EQ(RunCheck(Context(/*json=*/true)), kExitProblems);
  const Json j = Json::parse(out_.str());
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["problems"], Json::array({"x"}));
}

TEST_F(CommandsTest, CheckThatCannotAskExitsTwo) {
  api_.check = absl::UnavailableError("snapledgerd is not running");
  EXPECT_EQ(RunCheck(Context()), kExitError);
  EXPECT_EQ(err_.str(), "snapledger: snapledgerd is not running\n");
  EXPECT_THAT(out_.str(), IsEmpty());
}

TEST_F(CommandsTest, ServerErrorsArePrintedAsTheyAre) {
  api_.inspect = absl::NotFoundError("no snapshot \"nope\"");
  EXPECT_EQ(RunInspect(Context(), "nope", 0), kExitError);
  EXPECT_EQ(api_.inspect_request.key(), "nope");
  EXPECT_EQ(err_.str(), "snapledger: no snapshot \"nope\"\n");
  EXPECT_THAT(out_.str(), IsEmpty());
}

TEST_F(CommandsTest, InspectPassesTheHistoryLimit) {
  admin::InspectResponse inspect;
  inspect.mutable_snapshot()->set_key("base");
  inspect.mutable_snapshot()->mutable_record()->set_key("base");
  api_.inspect = inspect;
  EXPECT_EQ(RunInspect(Context(), "base", 5), kExitOk);
  EXPECT_EQ(api_.inspect_request.history_limit(), 5u);
  EXPECT_THAT(out_.str(), StartsWith("key:"));
}

TEST_F(CommandsTest, LsParsesFiltersAndAStateFilterImpliesAll) {
  EXPECT_EQ(RunLs(Context(), {.all = false,
                              .states = {"stuck", "REMOVE_PENDING"},
                              .kinds = {"committed"},
                              .prefix = "default/"}),
            kExitOk);
  EXPECT_TRUE(api_.list_request.all());
  ASSERT_EQ(api_.list_request.states_size(), 2);
  EXPECT_EQ(api_.list_request.states(0), store::STUCK);
  EXPECT_EQ(api_.list_request.states(1), store::REMOVE_PENDING);
  ASSERT_EQ(api_.list_request.kinds_size(), 1);
  EXPECT_EQ(api_.list_request.kinds(0), store::COMMITTED);
  EXPECT_EQ(api_.list_request.prefix(), "default/");
  EXPECT_FALSE(api_.list_request.measure_usage());
}

TEST_F(CommandsTest, LsWithAnUnknownStateIsAUsageError) {
  LsOptions options;
  options.states = {"gone"};
  EXPECT_EQ(RunLs(Context(), options), kExitError);
  EXPECT_EQ(api_.calls, 0);
  EXPECT_THAT(err_.str(), HasSubstr("unknown state \"gone\""));
}

TEST_F(CommandsTest, JsonOutputIsOneDocument) {
  admin::ListResponse list;
  admin::Snapshot* s = list.add_snapshots();
  s->set_key("a");
  s->set_size_bytes(-1);
  s->mutable_record()->set_key("a");
  api_.list = list;
  EXPECT_EQ(RunLs(Context(/*json=*/true), {}), kExitOk);
  const Json j = Json::parse(out_.str());  // throws on a second document
  ASSERT_TRUE(j.is_array());
  EXPECT_EQ(j[0]["key"], "a");
}

TEST_F(CommandsTest, JsonOfAKeyThatIsNotUtf8IsStillADocument) {
  admin::ListResponse list;
  admin::Snapshot* s = list.add_snapshots();
  s->set_key("bad\xff");
  s->mutable_record()->set_key("bad\xff");
  api_.list = list;
  EXPECT_EQ(RunLs(Context(/*json=*/true), {}), kExitOk);
  const Json j = Json::parse(out_.str());
  EXPECT_EQ(j[0]["key"], "bad\xef\xbf\xbd");  // U+FFFD
}

TEST_F(CommandsTest, DuMeasuresUsage) {
  EXPECT_EQ(RunDu(Context(), /*all=*/true), kExitOk);
  EXPECT_TRUE(api_.list_request.measure_usage());
  EXPECT_TRUE(api_.list_request.all());
  EXPECT_EQ(out_.str(), "SIZE   KEY\n 0 B   total (0 snapshots)\n");
}

TEST_F(CommandsTest, HistoryPassesKeyAndLimit) {
  EXPECT_EQ(RunHistory(Context(), "base", 7), kExitOk);
  EXPECT_EQ(api_.history_request.key(), "base");
  EXPECT_EQ(api_.history_request.limit(), 7u);
}

TEST_F(CommandsTest, RetryNeedsExactlyOneOfKeyAndStuck) {
  EXPECT_EQ(RunRetry(Context(), "", false), kExitError);
  EXPECT_EQ(RunRetry(Context(), "base", true), kExitError);
  EXPECT_EQ(api_.calls, 0);
  EXPECT_THAT(err_.str(), HasSubstr("snapledger retry: give either a KEY or "
                                    "--stuck"));
}

TEST_F(CommandsTest, RetryPrintsWhatWasRetried) {
  admin::RetryResponse retry;
  retry.add_retried("snapledger.removed/4");
  api_.retry = retry;
  EXPECT_EQ(RunRetry(Context(), "", true), kExitOk);
  EXPECT_TRUE(api_.retry_request.stuck());
  EXPECT_EQ(out_.str(), "retrying snapledger.removed/4\n");
}

TEST_F(CommandsTest, RetryOfAnUnknownKeyExitsTwo) {
  api_.retry = absl::NotFoundError("no queued removal \"x\"");
  EXPECT_EQ(RunRetry(Context(), "x", false), kExitError);
  EXPECT_EQ(api_.retry_request.key(), "x");
  EXPECT_EQ(err_.str(), "snapledger: no queued removal \"x\"\n");
}

TEST_F(CommandsTest, ChangesAreRefusedOfflineWithoutAsking) {
  api_.is_offline = true;
  EXPECT_EQ(RunRetry(Context(), "x", false), kExitError);
  EXPECT_EQ(RunReconcile(Context(), /*apply=*/true), kExitError);
  EXPECT_EQ(api_.calls, 0);
  EXPECT_THAT(err_.str(), HasSubstr("needs the running daemon"));
  // A dry run only reads: it works offline.
  EXPECT_EQ(RunReconcile(Context(), /*apply=*/false), kExitOk);
  EXPECT_FALSE(api_.reconcile_request.apply());
}

// --- dead -------------------------------------------------------------------

// Container default/build-3, stopped 2m10s before the tests' "now".
admin::DeadResponse OneDead() {
  admin::DeadResponse r;
  r.mutable_watcher()->set_enabled(true);
  r.mutable_watcher()->set_address("/run/containerd/containerd.sock");
  r.mutable_watcher()->set_connected(true);
  r.mutable_watcher()->set_containers(2);
  r.mutable_watcher()->set_leases(1);
  r.set_grace_seconds(600);
  admin::DeadContainer* c = r.add_containers();
  c->set_namespace_("default");
  c->set_id("build-3");
  c->set_task("stopped");
  c->set_idle_since_ns((int64_t{1795435468} - 130) * 1000000000);
  c->set_snapshot("default/7/build-3");
  c->add_pinned("default/7/build-3");
  c->set_pinned_bytes(4096);
  c->set_reaper("reap");
  return r;
}

TEST_F(CommandsTest, DeadIsAReportThatExitsZeroEvenWithDeadContainers) {
  api_.dead = OneDead();
  EXPECT_EQ(RunDead(Context()), kExitOk);
  EXPECT_EQ(
      out_.str(),
      "watcher: connected to /run/containerd/containerd.sock, 2 "
      "containers, 1 lease\n"
      "CONTAINER         TASK      IDLE    SNAPSHOT            PINNED     "
      " SIZE   REAPER\n"
      "default/build-3   stopped   2m10s   default/7/build-3        1   "
      "4.0 KiB   reap\n");
  EXPECT_THAT(err_.str(), IsEmpty());
}

TEST_F(CommandsTest, DeadWithoutAWatcherSaysOwnersAreUnknown) {
  admin::DeadResponse off;
  off.mutable_watcher()->set_enabled(false);
  api_.dead = off;
  EXPECT_EQ(RunDead(Context()), kExitOk);
  EXPECT_EQ(out_.str(),
            "watcher: off (no containerd_address configured): owners "
            "unknown\n"
            "no dead containers\n");
}

TEST_F(CommandsTest, DeadInJsonIsOneDocument) {
  api_.dead = OneDead();
  EXPECT_EQ(RunDead(Context(/*json=*/true)), kExitOk);
  const Json j = Json::parse(out_.str());
  EXPECT_EQ(j["watcher"]["connected"], true);
  EXPECT_EQ(j["grace_seconds"], 600);
  ASSERT_EQ(j["dead"].size(), 1u);
  EXPECT_EQ(j["dead"][0]["id"], "build-3");
  EXPECT_EQ(j["dead"][0]["idle_seconds"], 130);
  EXPECT_EQ(j["dead"][0]["idle_since"], "2026-11-23T12:02:18Z");
  EXPECT_EQ(j["dead"][0]["reaper"], "reap");
}

TEST_F(CommandsTest, DeadOfflineNeedsTheDaemonWithoutAsking) {
  api_.is_offline = true;
  EXPECT_EQ(RunDead(Context()), kExitError);
  EXPECT_EQ(api_.calls, 0);
  EXPECT_THAT(out_.str(), IsEmpty());
  EXPECT_EQ(err_.str(),
            "snapledger: dead needs the running daemon (its containerd "
            "watcher): --root only reads the ledger\n");
}

TEST_F(CommandsTest, DeadThatCannotAskExitsTwo) {
  api_.dead = absl::UnavailableError("snapledgerd is not running");
  EXPECT_EQ(RunDead(Context()), kExitError);
  EXPECT_EQ(err_.str(), "snapledger: snapledgerd is not running\n");
  EXPECT_THAT(out_.str(), IsEmpty());
}

TEST_F(CommandsTest, StatsShowsTheWatcherAndTheCounts) {
  admin::StatsResponse stats;
  stats.set_live(true);
  stats.mutable_watcher()->set_enabled(true);
  stats.mutable_watcher()->set_address("/run/containerd/containerd.sock");
  stats.mutable_watcher()->set_last_error("EOF");
  stats.set_dead_containers(3);
  stats.set_reaped_containers(1);
  api_.stats = stats;
  EXPECT_EQ(RunStats(Context()), kExitOk);
  EXPECT_THAT(out_.str(),
              HasSubstr("watcher:                        not connected "
                        "(/run/containerd/containerd.sock): EOF\n"
                        "watcher last sync:              never\n"
                        "dead containers:                3\n"
                        "reaped containers:              1\n"));
  out_.str("");
  EXPECT_EQ(RunStats(Context(/*json=*/true)), kExitOk);
  const Json j = Json::parse(out_.str());
  EXPECT_EQ(j["watcher"]["connected"], false);
  EXPECT_EQ(j["watcher"]["last_error"], "EOF");
  EXPECT_EQ(j["dead_containers"], 3);
  EXPECT_EQ(j["reaped_containers"], 1);
}

TEST_F(CommandsTest, PendingShowsTheContainerThatHoldsARemoval) {
  admin::PendingResponse pending;
  admin::Snapshot* s = pending.add_removals();
  s->set_key("default/7/build-3");
  s->mutable_record()->set_key("snapledger.removed/8");
  s->mutable_record()->set_removed_key("default/7/build-3");
  s->mutable_record()->set_state(store::REMOVE_PENDING);
  s->mutable_record()->set_held_by("default/build-3");
  api_.pending = pending;
  EXPECT_EQ(RunPending(Context()), kExitOk);
  EXPECT_THAT(out_.str(),
              HasSubstr("   waiting for container default/build-3   -\n"));
  out_.str("");
  EXPECT_EQ(RunPending(Context(/*json=*/true)), kExitOk);
  EXPECT_EQ(Json::parse(out_.str())[0]["held_by"], "default/build-3");
}

// --- Reaching the daemon ----------------------------------------------------

class SocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/snapledger-cli-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
    std::system(absl::StrCat("rm -rf '", dir_, "'").c_str());
  }
  // A unix socket file that nobody accepts on (bound, never listened).
  std::string DeadSocket() {
    const std::string path = dir_ + "/dead.sock";
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return path;
  }

  std::string dir_;
  int fd_ = -1;
};

TEST_F(SocketTest, NoSocketMeansTheDaemonIsNotRunning) {
  const std::string path = dir_ + "/missing.sock";
  auto api = GrpcAdminApi::Connect(path, absl::Seconds(5));
  ASSERT_FALSE(api.ok());
  EXPECT_EQ(api.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(api.status().message(),
            absl::StrCat("snapledgerd is not running (no socket at ", path,
                         "); use --root DIR to read the ledger directly"));
  // The "unix:" form names the same path.
  api = GrpcAdminApi::Connect("unix:" + path, absl::Seconds(5));
  EXPECT_THAT(std::string(api.status().message()),
              HasSubstr("no socket at " + path + ")"));
}

TEST_F(SocketTest, AFileThatIsNotASocketIsNamed) {
  const std::string path = dir_ + "/file";
  std::ofstream(path) << "x";
  auto api = GrpcAdminApi::Connect(path, absl::Seconds(5));
  ASSERT_FALSE(api.ok());
  EXPECT_EQ(api.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(api.status().message()),
              HasSubstr(path + " is not a socket"));
}

TEST_F(SocketTest, ASocketThatRefusesIsUnreachable) {
  const std::string path = DeadSocket();
  auto api = GrpcAdminApi::Connect(path, absl::Seconds(5));
  ASSERT_TRUE(api.ok()) << api.status();
  auto list = (*api)->List(admin::ListRequest());
  ASSERT_FALSE(list.ok());
  EXPECT_EQ(list.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(list.status().message()),
              StartsWith("cannot reach snapledgerd at " + path + ": "));
}

TEST_F(SocketTest, ASocketThisUserMayNotOpenIsPermissionDenied) {
  if (::geteuid() == 0) GTEST_SKIP() << "root may open any socket";
  const std::string path = DeadSocket();
  ASSERT_EQ(::chmod(path.c_str(), 0600 & ~0200), 0);
  EXPECT_EQ(ProbeSocket(path),
            absl::PermissionDeniedError(
                absl::StrCat("permission denied on ", path,
                             " (the admin socket is 0600: run as root)")));
}

TEST(DescribeRpcErrorTest, KeepsServerAnswersAndExplainsTheRest) {
  EXPECT_EQ(DescribeRpcError(absl::StatusCode::kNotFound, "no snapshot \"x\"",
                             "/nowhere.sock", absl::Seconds(30)),
            absl::NotFoundError("no snapshot \"x\""));
  EXPECT_EQ(DescribeRpcError(absl::StatusCode::kDeadlineExceeded, "Deadline",
                             "/run/a.sock", absl::Seconds(30)),
            absl::DeadlineExceededError(
                "snapledgerd at /run/a.sock did not answer within 30s (see "
                "--timeout)"));
  // The daemon went away between the probe and the call.
  EXPECT_THAT(
      std::string(DescribeRpcError(absl::StatusCode::kUnavailable, "refused",
                                   "/nowhere/a.sock", absl::Seconds(30))
                      .message()),
      StartsWith("snapledgerd is not running (no socket at "
                 "/nowhere/a.sock)"));
  EXPECT_THAT(std::string(DescribeRpcError(absl::StatusCode::kUnimplemented, "",
                                           "/run/snapledger/snapledger.sock",
                                           absl::Seconds(30))
                              .message()),
              HasSubstr("does not serve snapledger's admin API"));
}

admin::PruneResponse OnePrune(bool dry_run) {
  admin::PruneResponse r;
  r.set_dry_run(dry_run);
  r.set_policy("min_free 30%");
  r.set_total_bytes(int64_t{10} << 30);
  r.set_free_bytes_before(int64_t{2} << 30);
  r.set_free_bytes_after(int64_t{3} << 30);
  r.set_used_bytes_before(-1);
  r.set_bytes_needed(int64_t{1} << 30);
  r.set_target_met(true);
  r.set_bytes_freed(int64_t{1} << 30);
  admin::PruneAction* a = r.add_actions();
  a->set_kind("container");
  a->set_namespace_("default");
  a->set_id("build-3");
  a->set_reason("pressure");
  a->set_unused_since_ns(
      absl::ToUnixNanos(absl::FromUnixSeconds(1795435468) - absl::Minutes(5)));
  a->set_estimated_bytes(int64_t{1} << 30);
  a->set_freed_bytes(dry_run ? 0 : int64_t{1} << 30);
  a->set_done(!dry_run);
  if (!dry_run) a->add_freed_snapshots("default/7/build-3");
  return r;
}

TEST_F(CommandsTest, PruneSendsTheFlagsAndPrintsWhatWouldGo) {
  api_.prune = OnePrune(/*dry_run=*/true);
  PruneOptions options;
  options.dry_run = true;
  options.until = "72h";
  options.free = "30%";
  EXPECT_EQ(RunPrune(Context(), options), kExitOk);
  EXPECT_TRUE(api_.prune_request.dry_run());
  EXPECT_EQ(api_.prune_request.until(), "72h");
  EXPECT_EQ(api_.prune_request.free(), "30%");
  EXPECT_EQ(out_.str(),
            "prune (dry run): min_free 30%\n"
            "disk: 2.0 GiB free of 10.0 GiB; 1.0 GiB to free\n"
            "KIND        NAME              REASON     UNUSED     BYTES   "
            "RESULT\n"
            "container   default/build-3   pressure   5m       1.0 GiB   "
            "would go\n"
            "1 action, 1.0 GiB would be freed; target met\n");
  EXPECT_THAT(err_.str(), IsEmpty());
}

TEST_F(CommandsTest, PruneInJsonGivesTheBytesFreed) {
  api_.prune = OnePrune(/*dry_run=*/false);
  EXPECT_EQ(RunPrune(Context(/*json=*/true), PruneOptions{}), kExitOk);
  const Json j = Json::parse(out_.str());
  EXPECT_EQ(j["dry_run"], false);
  EXPECT_EQ(j["bytes_freed"], int64_t{1} << 30);
  EXPECT_EQ(j["used_bytes_before"], nullptr);
  ASSERT_EQ(j["actions"].size(), 1u);
  EXPECT_EQ(j["actions"][0]["kind"], "container");
  EXPECT_EQ(j["actions"][0]["id"], "build-3");
  EXPECT_EQ(j["actions"][0]["unused_seconds"], 300);
  EXPECT_EQ(j["actions"][0]["done"], true);
  EXPECT_EQ(j["actions"][0]["error"], nullptr);
  EXPECT_EQ(j["actions"][0]["freed_snapshots"][0], "default/7/build-3");
}

TEST_F(CommandsTest, PruneShowsImagesByNameInTextAndJson) {
  admin::PruneResponse r = OnePrune(/*dry_run=*/false);
  admin::PruneAction* a = r.add_actions();
  a->set_kind("image");
  a->set_namespace_("default");
  a->set_id("registry.local/ci/tool:1");
  a->set_reason("pressure");
  a->set_unused_since_ns(
      absl::ToUnixNanos(absl::FromUnixSeconds(1795435468) - absl::Hours(3)));
  a->set_freed_bytes(int64_t{5} << 20);
  a->set_done(true);
  a->add_freed_snapshots("default/9/sha256:0123");
  api_.prune = r;
  EXPECT_EQ(RunPrune(Context(), PruneOptions{}), kExitOk);
  EXPECT_THAT(out_.str(),
              HasSubstr("image       default/registry.local/ci/tool:1   "
                        "pressure   3h       5.0 MiB   freed\n"));
  out_.str("");
  EXPECT_EQ(RunPrune(Context(/*json=*/true), PruneOptions{}), kExitOk);
  const Json j = Json::parse(out_.str());
  ASSERT_EQ(j["actions"].size(), 2u);
  EXPECT_EQ(j["actions"][1]["kind"], "image");
  EXPECT_EQ(j["actions"][1]["id"], "registry.local/ci/tool:1");
  EXPECT_EQ(j["actions"][1]["freed_bytes"], int64_t{5} << 20);
  EXPECT_EQ(j["actions"][1]["freed_snapshots"][0], "default/9/sha256:0123");
}

TEST_F(CommandsTest, PruneNeedsTheDaemon) {
  api_.is_offline = true;
  EXPECT_EQ(RunPrune(Context(), PruneOptions{}), kExitError);
  EXPECT_EQ(api_.calls, 0);
  EXPECT_THAT(err_.str(), HasSubstr("prune needs the running daemon"));
}

TEST_F(CommandsTest, APruneTheDaemonRefusesFails) {
  api_.prune = absl::InvalidArgumentError(
      "--free: \"lots\" is neither a percentage (\"30%\") nor a size");
  PruneOptions options;
  options.free = "lots";
  EXPECT_EQ(RunPrune(Context(), options), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("--free"));
}

}  // namespace
}  // namespace snapledger::cli
