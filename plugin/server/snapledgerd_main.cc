// snapledgerd: the snapledger daemon. Flags override the config file, which
// overrides the defaults (plugin/server/config.h). Exits 0 after SIGTERM or
// SIGINT once in-flight calls have finished (a second signal while draining is
// ignored: the drain is bounded by shutdown_timeout); non-zero with a one-line
// reason when it cannot start.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "plugin/notify/service_notifier.h"
#include "plugin/server/config.h"
#include "plugin/server/daemon.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

int g_signal_pipe[2] = {-1, -1};

extern "C" void OnStopSignal(int sig) {
  const int saved_errno = errno;
  const unsigned char b = static_cast<unsigned char>(sig);
  (void)!::write(g_signal_pipe[1], &b, 1);
  errno = saved_errno;
}

// The flags, each overriding the config file's setting when given.
struct Flags {
  std::string config_path, root, address, admin_address, backend, log_level,
      containerd_address, remote_address;
  std::string metrics_address;
};

void AddFlags(CLI::App& app, Flags& f) {
  app.add_option("-c,--config", f.config_path,
                 "TOML config file (flags given here override it)")
      ->check(CLI::ExistingFile);
  app.add_option("--root", f.root,
                 "State directory: ledger/ and snapshots/ live here "
                 "(default /var/lib/snapledger)");
  app.add_option("--address", f.address,
                 "Unix socket to serve containerd's Snapshots API on "
                 "(default /run/snapledger/snapledger.sock)");
  app.add_option("--admin-address", f.admin_address,
                 "Unix socket (mode 0600) of the admin API the `snapledger` "
                 "CLI uses (default: beside --address, e.g. "
                 "/run/snapledger/snapledger-admin.sock)");
  app.add_option("--containerd-address", f.containerd_address,
                 "containerd's own socket (e.g. "
                 "/run/containerd/containerd.sock): record each snapshot's "
                 "owning container and leases, hold back removals of "
                 "snapshots whose container exists, report dead containers "
                 "(default: off; owners unknown)");
  app.add_option("--backend", f.backend,
                 "Storage that holds the data: overlayfs (what containerd "
                 "uses on Linux; needs a filesystem with d_type that can "
                 "host overlay mounts) or native (plain copies; any "
                 "filesystem) or remote (another snapshotter's Snapshots "
                 "service, --remote-address). Default native; the shipped "
                 "config says overlayfs; a root keeps the backend it was "
                 "created with")
      ->check(CLI::IsMember({"native", "overlayfs", "remote"}));
  app.add_option("--remote-address", f.remote_address,
                 "With --backend remote: the Snapshots service snapledger "
                 "proxies (stargz, nydus, containerd's snapshotters over "
                 "gRPC ...), e.g. unix:///run/x/x.sock");
  app.add_option("--log-level", f.log_level,
                 "trace, debug, info, warn, error or off (default info)")
      ->check(
          CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--metrics-address", f.metrics_address,
                 "Serve Prometheus metrics at http://HOST:PORT/metrics, "
                 "e.g. 127.0.0.1:9305; loopback only unless the config sets "
                 "metrics_allow_non_loopback (default: off; "
                 "docs/metrics.md)");
  app.set_version_flag("--version", "snapledgerd 0.1.0");
}

// Defaults, then the config file, then the flags; checked.
absl::StatusOr<snapledger::Config> ConfigFrom(const Flags& f) {
  snapledger::Config config;
  if (!f.config_path.empty()) {
    auto loaded = snapledger::LoadConfigFile(f.config_path, config);
    if (!loaded.ok()) return loaded.status();
    config = *loaded;
  }
  for (auto [flag, setting] :
       {std::pair{&f.root, &config.root},
        {&f.address, &config.address},
        {&f.admin_address, &config.admin_address},
        {&f.backend, &config.backend},
        {&f.containerd_address, &config.containerd_address},
        {&f.remote_address, &config.remote_address},
        {&f.log_level, &config.log_level},
        {&f.metrics_address, &config.metrics_address}}) {
    if (!flag->empty()) *setting = *flag;
  }
  if (absl::Status s = snapledger::ValidateConfig(config); !s.ok()) return s;
  return config;
}

// Libraries start threads before main() (static initialisers), so a signal
// mask cannot be relied on: the handler, whichever thread runs it, only
// writes the signal number to a pipe that main() waits on.
bool InstallStopSignals() {
  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
    std::perror("snapledgerd: pipe2");
    return false;
  }
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  return true;
}

// Blocks until SIGTERM or SIGINT; returns which.
int WaitForStopSignal() {
  unsigned char sig = 0;
  while (::read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
  }
  return sig;
}

// Raises the soft limit on open files to the hard limit, as containerd does
// for itself: every client connection, RocksDB file and backend directory
// walk takes descriptors, and the distribution's default soft limit (1024)
// is reached by an ordinary burst of clients.
void RaiseOpenFileLimit() {
  struct rlimit lim {};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur >= lim.rlim_max) return;
  const rlim_t was = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    spdlog::warn("cannot raise the open-file limit from {}: {}", was,
                 std::strerror(errno));
    return;
  }
  spdlog::debug("open-file limit raised from {} to {}", was, lim.rlim_cur);
}

// Tells the service manager (systemd, Type=notify) the daemon is ready, and
// pets its watchdog while both sockets serve, when it asks for one
// (WatchdogSec=); without NOTIFY_SOCKET nothing is sent.
std::unique_ptr<snapledger::Watchdog> StartWatchdog(
    const snapledger::Daemon& daemon, const std::string& address) {
  snapledger::ServiceNotifier::Ready(absl::StrCat("serving on ", address));
  const std::optional<absl::Duration> interval =
      snapledger::WatchdogIntervalFromEnvironment();
  if (!interval.has_value() || !snapledger::ServiceNotifier::Listening()) {
    return nullptr;
  }
  // Both sockets' probes together take a quarter of the interval at most,
  // so that a passing check always pets before the next one is due.
  const absl::Duration probe_timeout =
      std::min(*interval / 8, absl::Seconds(5));
  auto watchdog = std::make_unique<snapledger::Watchdog>(
      *interval,
      [&daemon, probe_timeout] { return daemon.CheckServing(probe_timeout); });
  if (absl::Status s = watchdog->Start(); !s.ok()) {
    // Not petting means a restart by the manager once the interval passes.
    spdlog::error("watchdog: {}", s.ToString());
    return nullptr;
  }
  spdlog::info("watchdog: petting every {} while both sockets serve",
               absl::FormatDuration(watchdog->period()));
  return watchdog;
}

}  // namespace

int main(int argc, char** argv) {
  // Two malloc arenas, before any thread starts, unless MALLOC_ARENA_MAX
  // says otherwise. glibc's default (8 per core) gives each of the daemon's
  // threads (gRPC's, RocksDB's, the backend's workers) an arena of its own,
  // and memory freed in one stays there: under a long churn, free bytes
  // held in arenas grew the RSS steadily while the bytes in use stayed
  // flat. Small allocations mostly come from each thread's cache anyway,
  // so two arenas cost no measurable contention (docs/benchmarks.md,
  // Session 7).
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) ::mallopt(M_ARENA_MAX, 2);
#ifdef NDEBUG
  // Debian's Abseil is built with its lock-order checker on: every Mutex
  // acquisition then updates a global graph of lock orders (it showed in the
  // daemon's profile, docs/benchmarks.md Session 5). Release builds turn it
  // off; debug builds and every test binary keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  if (!InstallStopSignals()) return 1;
  CLI::App app{
      "snapledgerd: a containerd proxy snapshotter that records every "
      "snapshot in a durable ledger.\n\n"
      "Register it in containerd's config.toml:\n"
      "  [proxy_plugins.snapledger]\n"
      "    type = \"snapshot\"\n"
      "    address = \"/run/snapledger/snapledger.sock\"\n",
      "snapledgerd"};
  Flags flags;
  AddFlags(app, flags);
  CLI11_PARSE(app, argc, argv);
  absl::StatusOr<snapledger::Config> config = ConfigFrom(flags);
  if (!config.ok()) {
    std::fprintf(stderr, "snapledgerd: %s\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }

  spdlog::set_default_logger(spdlog::stderr_color_mt("snapledgerd"));
  spdlog::set_level(spdlog::level::from_str(config->log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
  RaiseOpenFileLimit();

  using snapledger::ServiceNotifier;
  ServiceNotifier::Status("recovering the ledger");
  auto daemon = snapledger::Daemon::Start(*config);
  if (!daemon.ok()) {
    spdlog::critical("cannot start: {}", daemon.status().ToString());
    ServiceNotifier::Status(
        absl::StrCat("cannot start: ", daemon.status().message()));
    return 1;
  }
  // Daemon::Start returns after recovery, once both sockets accept.
  std::unique_ptr<snapledger::Watchdog> watchdog =
      StartWatchdog(**daemon, config->address);
  const int sig = WaitForStopSignal();
  spdlog::info("received {}, finishing in-flight calls (up to {})",
               sig == SIGTERM ? "SIGTERM" : "SIGINT",
               absl::FormatDuration(config->shutdown_timeout));
  ServiceNotifier::Stopping("finishing in-flight calls");
  // Before Shutdown: a draining daemon does not accept, and is not pet.
  if (watchdog != nullptr) watchdog->Stop();
  (*daemon)->Shutdown(config->shutdown_timeout);
  return 0;
}
