// snapledgerd: the snapledger daemon. Flags override the config file, which
// overrides the defaults (plugin/config.h). Exits 0 after SIGTERM or SIGINT
// once in-flight calls have finished (a second signal while draining is
// ignored: the drain is bounded by shutdown_timeout); non-zero with a one-line
// reason when it cannot start.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
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

}  // namespace

int main(int argc, char** argv) {
  // Libraries start threads before main() (static initialisers), so a
  // signal mask cannot be relied on: the handler, whichever thread runs it,
  // only writes the signal number to a pipe that main() waits on.
  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
    std::perror("snapledgerd: pipe2");
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  using snapledger::Config;
  CLI::App app{
      "snapledgerd: a containerd proxy snapshotter that records every "
      "snapshot in a durable ledger.\n\n"
      "Register it in containerd's config.toml:\n"
      "  [proxy_plugins.snapledger]\n"
      "    type = \"snapshot\"\n"
      "    address = \"/run/snapledger/snapledger.sock\"\n",
      "snapledgerd"};
  std::string config_path, root, address, admin_address, backend, log_level,
      containerd_address;
  app.add_option("-c,--config", config_path,
                 "TOML config file (flags given here override it)")
      ->check(CLI::ExistingFile);
  app.add_option("--root", root,
                 "State directory: ledger/ and snapshots/ live here "
                 "(default /var/lib/snapledger)");
  app.add_option("--address", address,
                 "Unix socket to serve containerd's Snapshots API on "
                 "(default /run/snapledger/snapledger.sock)");
  app.add_option("--admin-address", admin_address,
                 "Unix socket (mode 0600) of the admin API the `snapledger` "
                 "CLI uses (default: beside --address, e.g. "
                 "/run/snapledger/snapledger-admin.sock)");
  app.add_option("--containerd-address", containerd_address,
                 "containerd's own socket (e.g. "
                 "/run/containerd/containerd.sock): record each snapshot's "
                 "owning container and leases, hold back removals of "
                 "snapshots whose container exists, report dead containers "
                 "(default: off; owners unknown)");
  app.add_option("--backend", backend,
                 "Storage that holds the data: overlayfs (what containerd "
                 "uses on Linux; needs a filesystem with d_type that can "
                 "host overlay mounts) or native (plain copies; any "
                 "filesystem). Default native; a root keeps the backend it "
                 "was created with")
      ->check(CLI::IsMember({"native", "overlayfs"}));
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error or off (default info)")
      ->check(
          CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.set_version_flag("--version", "snapledgerd 0.1.0");
  CLI11_PARSE(app, argc, argv);

  Config config;
  if (!config_path.empty()) {
    auto loaded = snapledger::LoadConfigFile(config_path, config);
    if (!loaded.ok()) {
      std::fprintf(stderr, "snapledgerd: %s\n",
                   std::string(loaded.status().message()).c_str());
      return 2;
    }
    config = *loaded;
  }
  if (!root.empty()) config.root = root;
  if (!address.empty()) config.address = address;
  if (!admin_address.empty()) config.admin_address = admin_address;
  if (!backend.empty()) config.backend = backend;
  if (!containerd_address.empty()) {
    config.containerd_address = containerd_address;
  }
  if (!log_level.empty()) config.log_level = log_level;
  if (absl::Status s = snapledger::ValidateConfig(config); !s.ok()) {
    std::fprintf(stderr, "snapledgerd: %s\n", std::string(s.message()).c_str());
    return 2;
  }

  auto logger = spdlog::stderr_color_mt("snapledgerd");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");

  auto daemon = snapledger::Daemon::Start(config);
  if (!daemon.ok()) {
    spdlog::critical("cannot start: {}", daemon.status().ToString());
    return 1;
  }
  unsigned char sig = 0;
  while (::read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
  }
  spdlog::info("received {}, finishing in-flight calls (up to {})",
               sig == SIGTERM ? "SIGTERM" : "SIGINT",
               absl::FormatDuration(config.shutdown_timeout));
  (*daemon)->Shutdown(config.shutdown_timeout);
  return 0;
}
