// snapledgerd's configuration: defaults, overridden by a TOML file
// (`--config`), overridden by command-line flags.
//
// Every setting, with its default (config_test loads this very text):
//
//   root = "/var/lib/snapledger"          # ledger/ and snapshots/ live here
//   address = "/run/snapledger/snapledger.sock"
//   admin_address = ""                    # default: beside address
//   backend = "native"                    # native | overlayfs | remote
//   log_level = "info"                    # trace|debug|info|warn|error
//   shutdown_timeout = "30s"              # drain time for in-flight calls
//   reconcile_interval = "10m"            # backend vs ledger check; "0s": off
//   remove_policy = "refuse"              # refuse | defer (docs/removal.md)
//   backend_timeout = "60s"               # bound on every backend call
//   containerd_address = ""               # containerd's socket: owners,
//                                         # dead containers (docs/owners.md)
//   containerd_snapshotter = "snapledger" # our name in [proxy_plugins]
//   metrics_address = ""                  # Prometheus /metrics, HOST:PORT
//                                         # on loopback, e.g. "127.0.0.1:9305"
//                                         # (docs/metrics.md); "": off
//   metrics_allow_non_loopback = false    # serve metrics off loopback too
//   [ledger]
//   durability = "sync"                   # sync | async (see docs)
//   [native]
//   sync = false                          # flush snapshot data (see docs)
//   [overlayfs]
//   sync = false                          # flush layers (as [native])
//   mount_options = []                    # appended to overlay mounts
//   [remote]                              # backend = "remote"
//   address = ""                          # the snapshotter behind us,
//                                         # e.g. "unix:///run/x/x.sock"
//   call_timeout = "30s"                  # bound on each call to it
//   [remove_queue]                        # retries of deferred removals
//   initial_backoff = "1s"
//   max_backoff = "5m"
//   jitter = 0.2                          # delays scaled by [1-jitter, 1]
//   max_attempts = 10                     # then the removal is `stuck`
//   [containers]
//   dead_after = "10m"                    # no live task this long: dead
//   [reaper]                              # deletes dead containers (opt-in)
//   enabled = false
//   match = ["obuilder-run-*"]            # globs on the container id
//   dry_run = false                       # only say what it would delete
//   [prune]                               # ledger-driven prune (docs/prune.md)
//   enabled = false                       # a pass every interval; the CLI's
//                                         # `snapledger prune` works anyway
//   interval = "5m"
//   min_free = ""                         # "15%" or "20GiB" of the root's fs
//   max_used = ""                         # "100GiB" held by our snapshots
//   keep_duration = "0s"                  # TTL since last use; "0s": none
//   dry_run = false                       # only say what would go
//   dead_after = "1m"                     # under pressure: idle this long
//   containers = ["*"]                    # globs on container ids
//   leases = []                           # globs on lease ids (expired only)
//   images = []                           # globs on image names (no container
//                                         # uses them); empty: never
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plugin/core/coordinator.h"
#include "plugin/prune/prune_policy.h"
#include "plugin/removal/removal_schedule.h"

namespace snapledger {

struct Config {
  std::string root = "/var/lib/snapledger";
  std::string address = "/run/snapledger/snapledger.sock";
  // The admin API's socket (mode 0600); empty: DefaultAdminAddress(address)
  // (plugin/admin/admin_service.h).
  std::string admin_address;
  std::string backend = "native";
  std::string log_level = "info";
  absl::Duration shutdown_timeout = absl::Seconds(30);
  // How often to compare the backend with the ledger while serving (report
  // only; plugin/recovery/reconciler.h). Zero disables it.
  absl::Duration reconcile_interval = absl::Minutes(10);
  // true: fsync the ledger before every RPC returns ("sync");
  // false: let the OS write it back ("async").
  bool ledger_sync = true;
  // Native backend: flush copied trees, renames and committed layers, so
  // that they survive a power loss (NativeBackendOptions::sync). Off by
  // default, like containerd's own native snapshotter: the ledger is flushed
  // either way, and an object a power loss takes is reported MISSING.
  bool native_sync = false;
  // Overlayfs backend: flush layers like native_sync; options appended to
  // every overlay mount (containerd 1.7's `mount_options`, e.g. "volatile").
  bool overlay_sync = false;
  std::vector<std::string> overlay_mount_options;
  // Remote backend: the Snapshots service snapledger proxies
  // (plugin/transport addresses: "unix:///path" or a path), and the deadline
  // of each call to it.
  std::string remote_address;
  absl::Duration remote_call_timeout = absl::Seconds(30);
  // What Remove does when it cannot remove now (children remain, the
  // snapshot is mounted, the backend fails): "refuse" answers
  // FailedPrecondition; "defer" answers OK and queues the removal.
  RemovePolicy remove_policy = RemovePolicy::kRefuse;
  // Every backend call is bounded by this; zero disables the bound.
  absl::Duration backend_timeout = absl::Seconds(60);
  RetryPolicy remove_retry;
  // containerd's own socket. Set: a watcher follows containerd's containers,
  // tasks and leases, records owners, holds back removals of snapshots whose
  // container still exists, and reports dead containers. Empty: none of
  // that; owners are unknown.
  std::string containerd_address;
  // The name containerd knows us by ([proxy_plugins.<name>]).
  std::string containerd_snapshotter = "snapledger";
  // A container whose task has not been live for this long is dead.
  absl::Duration dead_after = absl::Minutes(10);
  // The reaper deletes dead containers whose id matches one of `reap_match`
  // (shell globs); with `reap_dry_run` it only reports what it would do.
  bool reaper_enabled = false;
  std::vector<std::string> reap_match;
  bool reap_dry_run = false;
  // [prune] (docs/prune.md). prune.dead_after here is the one of [containers]
  // (set by the daemon); pressure_dead_after is [prune] dead_after.
  PrunePolicy prune;
  // Prometheus metrics over HTTP at /metrics (plugin/metrics/metrics.h):
  // "HOST:PORT", loopback only unless metrics_allow_non_loopback. Empty: off.
  std::string metrics_address;
  bool metrics_allow_non_loopback = false;
};

// Applies the settings in TOML file `path` on top of `base`. InvalidArgument
// (naming the file, and the line where known) for syntax errors, unknown
// keys and bad values; NotFound if the file does not exist.
[[nodiscard]] absl::StatusOr<Config> LoadConfigFile(const std::string& path,
                                                    Config base);

// LoadConfigFile on TOML text already read; `path` names it in errors.
[[nodiscard]] absl::StatusOr<Config> LoadConfigText(std::string_view text,
                                                    const std::string& path,
                                                    Config base);

// Checks a finished configuration; InvalidArgument says what is wrong.
[[nodiscard]] absl::Status ValidateConfig(const Config& config);

}  // namespace snapledger
