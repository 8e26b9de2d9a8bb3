#include "plugin/server/config.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "plugin/metrics/metrics.h"
#include "plugin/transport/transport.h"
#include "toml++/toml.h"

namespace snapledger {
namespace {

absl::Status Bad(const std::string& path, const toml::node& node,
                 const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ":", node.source().begin.line, ": ", what));
}

absl::StatusOr<std::string> GetString(const std::string& path,
                                      const toml::node& node,
                                      const std::string& key) {
  if (auto v = node.value<std::string>()) return *v;
  return Bad(path, node, absl::StrCat("`", key, "` must be a string"));
}

// "`<what>` is not a duration (e.g. "<example>"): <text>"
absl::Status ParseDurationOr(const std::string& path, const toml::node& node,
                             const std::string& what, const std::string& text,
                             const char* example, absl::Duration* out) {
  if (absl::ParseDuration(text, out)) return absl::OkStatus();
  return Bad(path, node,
             absl::StrCat("`", what, "` is not a duration (e.g. \"", example,
                          "\"): ", text));
}

absl::StatusOr<bool> GetBool(const std::string& path, const toml::node& node,
                             const std::string& what) {
  if (auto v = node.value<bool>()) return *v;
  return Bad(path, node, absl::StrCat("`", what, "` must be true or false"));
}

absl::StatusOr<std::vector<std::string>> GetStrings(const std::string& path,
                                                    const toml::node& node,
                                                    const std::string& what) {
  const toml::array* array = node.as_array();
  if (array == nullptr) {
    return Bad(path, node,
               absl::StrCat("`", what, "` must be an array of strings"));
  }
  std::vector<std::string> out;
  for (const toml::node& item : *array) {
    absl::StatusOr<std::string> v = GetString(path, item, what);
    if (!v.ok()) return v.status();
    out.push_back(*std::move(v));
  }
  return out;
}

// Calls `setting(key, node)` for each key of table `name`; `name` must be a
// table.
absl::Status ForEachSetting(
    const std::string& path, const std::string& name, const toml::node& node,
    const std::function<absl::Status(const std::string&, const toml::node&)>&
        setting) {
  const toml::table* table = node.as_table();
  if (table == nullptr) {
    return Bad(path, node, absl::StrCat("`", name, "` must be a table"));
  }
  for (auto&& [k, n] : *table) {
    if (absl::Status s = setting(std::string(k.str()), n); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Unknown(const std::string& path, const toml::node& node,
                     const std::string& table, const std::string& key) {
  return Bad(
      path, node,
      absl::StrCat("unknown setting `",
                   table.empty() ? key : absl::StrCat(table, ".", key), "`"));
}

// The top-level string settings. NotFound: `key` is not one of them.
absl::Status LoadTopLevel(const std::string& path, const std::string& key,
                          const toml::node& node, Config* c) {
  std::string* text = key == "root"                 ? &c->root
                      : key == "address"            ? &c->address
                      : key == "admin_address"      ? &c->admin_address
                      : key == "backend"            ? &c->backend
                      : key == "log_level"          ? &c->log_level
                      : key == "containerd_address" ? &c->containerd_address
                      : key == "containerd_snapshotter"
                          ? &c->containerd_snapshotter
                          : nullptr;
  absl::Duration* duration = key == "shutdown_timeout" ? &c->shutdown_timeout
                             : key == "reconcile_interval"
                                 ? &c->reconcile_interval
                             : key == "backend_timeout" ? &c->backend_timeout
                                                        : nullptr;
  if (text == nullptr && duration == nullptr && key != "remove_policy") {
    return absl::NotFoundError(key);
  }
  absl::StatusOr<std::string> v = GetString(path, node, key);
  if (!v.ok()) return v.status();
  if (text != nullptr) *text = *v;
  if (duration != nullptr) {
    return ParseDurationOr(path, node, key, *v, "30s", duration);
  }
  if (key == "remove_policy") {
    std::optional<RemovePolicy> policy = ParseRemovePolicy(*v);
    if (!policy.has_value()) {
      return Bad(path, node,
                 absl::StrCat("remove_policy must be \"refuse\" or \"defer\", "
                              "not \"",
                              *v, "\""));
    }
    c->remove_policy = *policy;
  }
  return absl::OkStatus();
}

absl::Status LoadLedger(const std::string& path, const toml::node& node,
                        Config* c) {
  return ForEachSetting(
      path, "ledger", node, [&](const std::string& key, const toml::node& n) {
        if (key != "durability") return Unknown(path, n, "ledger", key);
        absl::StatusOr<std::string> v = GetString(path, n, "ledger.durability");
        if (!v.ok()) return v.status();
        if (*v != "sync" && *v != "async") {
          return Bad(path, n,
                     absl::StrCat("`ledger.durability` must be \"sync\" or "
                                  "\"async\", not \"",
                                  *v, "\""));
        }
        c->ledger_sync = (*v == "sync");
        return absl::OkStatus();
      });
}

absl::Status LoadNative(const std::string& path, const toml::node& node,
                        Config* c) {
  return ForEachSetting(
      path, "native", node, [&](const std::string& key, const toml::node& n) {
        if (key != "sync") return Unknown(path, n, "native", key);
        absl::StatusOr<bool> v = GetBool(path, n, "native.sync");
        if (!v.ok()) return v.status();
        c->native_sync = *v;
        return absl::OkStatus();
      });
}

absl::Status LoadOverlay(const std::string& path, const toml::node& node,
                         Config* c) {
  return ForEachSetting(
      path, "overlayfs", node,
      [&](const std::string& key, const toml::node& n) -> absl::Status {
        if (key == "sync") {
          absl::StatusOr<bool> v = GetBool(path, n, "overlayfs.sync");
          if (!v.ok()) return v.status();
          c->overlay_sync = *v;
          return absl::OkStatus();
        }
        if (key == "mount_options") {
          absl::StatusOr<std::vector<std::string>> v =
              GetStrings(path, n, "overlayfs.mount_options");
          if (!v.ok()) return v.status();
          c->overlay_mount_options = *std::move(v);
          return absl::OkStatus();
        }
        return Unknown(path, n, "overlayfs", key);
      });
}

absl::Status LoadRemote(const std::string& path, const toml::node& node,
                        Config* c) {
  return ForEachSetting(
      path, "remote", node,
      [&](const std::string& key, const toml::node& n) -> absl::Status {
        if (key == "address") {
          absl::StatusOr<std::string> v = GetString(path, n, "remote.address");
          if (!v.ok()) return v.status();
          c->remote_address = *std::move(v);
          return absl::OkStatus();
        }
        if (key == "call_timeout") {
          absl::StatusOr<std::string> v =
              GetString(path, n, "remote.call_timeout");
          if (!v.ok()) return v.status();
          return ParseDurationOr(path, n, "remote.call_timeout", *v, "30s",
                                 &c->remote_call_timeout);
        }
        return Unknown(path, n, "remote", key);
      });
}

absl::Status LoadRemoveQueue(const std::string& path, const toml::node& node,
                             Config* c) {
  RetryPolicy& retry = c->remove_retry;
  return ForEachSetting(
      path, "remove_queue", node,
      [&](const std::string& key, const toml::node& n) -> absl::Status {
        const std::string name = absl::StrCat("remove_queue.", key);
        if (key == "initial_backoff" || key == "max_backoff") {
          absl::StatusOr<std::string> v = GetString(path, n, name);
          if (!v.ok()) return v.status();
          return ParseDurationOr(path, n, name, *v, "30s",
                                 key == "initial_backoff"
                                     ? &retry.initial_backoff
                                     : &retry.max_backoff);
        }
        if (key == "jitter") {
          auto v = n.value<double>();
          if (!v) return Bad(path, n, "`remove_queue.jitter` must be a number");
          retry.jitter = *v;
          return absl::OkStatus();
        }
        if (key == "max_attempts") {
          auto v = n.value<int64_t>();
          if (!v || *v < 1 || *v > 1000000) {
            return Bad(path, n,
                       "`remove_queue.max_attempts` must be an integer from 1 "
                       "to 1000000");
          }
          retry.max_attempts = static_cast<int>(*v);
          return absl::OkStatus();
        }
        return Unknown(path, n, "remove_queue", key);
      });
}

absl::Status LoadContainers(const std::string& path, const toml::node& node,
                            Config* c) {
  return ForEachSetting(path, "containers", node,
                        [&](const std::string& key, const toml::node& n) {
                          if (key != "dead_after")
                            return Unknown(path, n, "containers", key);
                          absl::StatusOr<std::string> v =
                              GetString(path, n, "containers.dead_after");
                          if (!v.ok()) return v.status();
                          return ParseDurationOr(path, n,
                                                 "containers.dead_after", *v,
                                                 "10m", &c->dead_after);
                        });
}

absl::Status LoadReaper(const std::string& path, const toml::node& node,
                        Config* c) {
  return ForEachSetting(
      path, "reaper", node,
      [&](const std::string& key, const toml::node& n) -> absl::Status {
        if (key == "enabled" || key == "dry_run") {
          absl::StatusOr<bool> v =
              GetBool(path, n, absl::StrCat("reaper.", key));
          if (!v.ok()) return v.status();
          (key == "enabled" ? c->reaper_enabled : c->reap_dry_run) = *v;
          return absl::OkStatus();
        }
        if (key == "match") {
          absl::StatusOr<std::vector<std::string>> v =
              GetStrings(path, n, "reaper.match");
          if (!v.ok()) return v.status();
          c->reap_match = *std::move(v);
          return absl::OkStatus();
        }
        return Unknown(path, n, "reaper", key);
      });
}

// [prune] (docs/prune.md).
absl::Status LoadPrune(const std::string& path, const toml::node& node,
                       Config* c) {
  PrunePolicy& p = c->prune;
  return ForEachSetting(
      path, "prune", node,
      [&](const std::string& key, const toml::node& n) -> absl::Status {
        const std::string what = absl::StrCat("prune.", key);
        if (key == "enabled" || key == "dry_run") {
          absl::StatusOr<bool> v = GetBool(path, n, what);
          if (!v.ok()) return v.status();
          (key == "enabled" ? p.enabled : p.dry_run) = *v;
          return absl::OkStatus();
        }
        if (key == "containers" || key == "leases") {
          absl::StatusOr<std::vector<std::string>> v =
              GetStrings(path, n, what);
          if (!v.ok()) return v.status();
          (key == "containers" ? p.containers : p.leases) = *std::move(v);
          return absl::OkStatus();
        }
        if (key == "images") {  // opt-in image removal
          absl::StatusOr<std::vector<std::string>> v =
              GetStrings(path, n, what);
          if (!v.ok()) return v.status();
          p.images = *std::move(v);
          return absl::OkStatus();
        }
        absl::Duration* duration = key == "interval"        ? &p.interval
                                   : key == "keep_duration" ? &p.keep_duration
                                   : key == "dead_after"
                                       ? &p.pressure_dead_after
                                       : nullptr;
        if (duration == nullptr && key != "min_free" && key != "max_used") {
          return Unknown(path, n, "prune", key);
        }
        absl::StatusOr<std::string> v = GetString(path, n, what);
        if (!v.ok()) return v.status();
        if (duration != nullptr) {
          return ParseDurationOr(path, n, what, *v, "72h", duration);
        }
        if (v->empty()) {  // "": the policy is off
          if (key == "min_free") p.min_free.reset();
          if (key == "max_used") p.max_used.reset();
          return absl::OkStatus();
        }
        if (key == "min_free") {
          absl::StatusOr<FreeTarget> t = ParseFreeTarget(*v);
          if (!t.ok())
            return Bad(path, n, absl::StrCat(what, ": ", t.status().message()));
          p.min_free = *t;
          return absl::OkStatus();
        }
        absl::StatusOr<int64_t> bytes = ParseByteSize(*v);
        if (!bytes.ok())
          return Bad(path, n,
                     absl::StrCat(what, ": ", bytes.status().message()));
        p.max_used = *bytes;
        return absl::OkStatus();
      });
}

// The metrics settings (top level, like stargz's and soci's
// `metrics_address`). NotFound: `key` is not one of them.
absl::Status LoadMetricsSetting(const std::string& path, const std::string& key,
                                const toml::node& node, Config* c) {
  if (key == "metrics_address") {
    absl::StatusOr<std::string> v = GetString(path, node, key);
    if (!v.ok()) return v.status();
    c->metrics_address = *v;
    return absl::OkStatus();
  }
  if (key == "metrics_allow_non_loopback") {
    absl::StatusOr<bool> v = GetBool(path, node, key);
    if (!v.ok()) return v.status();
    c->metrics_allow_non_loopback = *v;
    return absl::OkStatus();
  }
  return absl::NotFoundError(key);
}

}  // namespace

absl::StatusOr<Config> LoadConfigFile(const std::string& path, Config base) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("config file ", path, " does not exist"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read config file ", path));
  }
  return LoadConfigText(text.str(), path, std::move(base));
}

absl::StatusOr<Config> LoadConfigText(std::string_view text,
                                      const std::string& path, Config base) {
  toml::table table;
  try {
    table = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ":", e.source().begin.line, ":", e.source().begin.column, ": ",
        std::string(e.description())));
  }
  using TableLoader =
      absl::Status (*)(const std::string&, const toml::node&, Config*);
  const std::map<std::string, TableLoader> tables = {
      {"ledger", &LoadLedger},
      {"native", &LoadNative},
      {"overlayfs", &LoadOverlay},
      {"remote", &LoadRemote},
      {"remove_queue", &LoadRemoveQueue},
      {"containers", &LoadContainers},
      {"reaper", &LoadReaper},
      {"prune", &LoadPrune},
  };
  for (auto&& [k, node] : table) {
    const std::string key(k.str());
    absl::Status s;
    if (auto loader = tables.find(key); loader != tables.end()) {
      s = loader->second(path, node, &base);
    } else {
      s = LoadTopLevel(path, key, node, &base);
      if (absl::IsNotFound(s)) s = LoadMetricsSetting(path, key, node, &base);
      if (absl::IsNotFound(s)) s = Unknown(path, node, "", key);
    }
    if (!s.ok()) return s;
  }
  return base;
}

absl::Status ValidateConfig(const Config& config) {
  if (config.root.empty() || config.root[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "root must be an absolute directory path, not \"", config.root, "\""));
  }
  if (config.address.empty() || config.address[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("address must be an absolute unix socket path, not \"",
                     config.address, "\""));
  }
  if (config.address.size() >= 108) {
    return absl::InvalidArgumentError(
        absl::StrCat("address is too long for a unix socket (max 107 bytes): ",
                     config.address));
  }
  if (!config.admin_address.empty() &&
      (config.admin_address[0] != '/' || config.admin_address.size() >= 108 ||
       config.admin_address == config.address)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "admin_address must be an absolute unix socket path (max 107 bytes) "
        "other than address, not \"",
        config.admin_address, "\""));
  }
  if (config.admin_address.empty() && config.address.size() >= 108 - 6) {
    return absl::InvalidArgumentError(absl::StrCat(
        "address is too long for the admin socket beside it (max 101 bytes "
        "unless admin_address is set): ",
        config.address));
  }
  if (config.backend != "native" && config.backend != "overlayfs" &&
      config.backend != "remote") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown backend \"", config.backend,
                     "\" (available: overlayfs, native, remote)"));
  }
  if (config.backend == "remote") {
    if (config.remote_address.empty()) {
      return absl::InvalidArgumentError(
          "backend \"remote\" needs the snapshotter's address: [remote] "
          "address or --remote-address (e.g. unix:///run/x/x.sock)");
    }
    absl::StatusOr<Address> remote = ParseAddress(config.remote_address);
    if (!remote.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("remote.address: ", remote.status().message()));
    }
    if (config.remote_call_timeout <= absl::ZeroDuration() ||
        config.remote_call_timeout > absl::Hours(1)) {
      return absl::InvalidArgumentError(
          "remote.call_timeout must be between 0s (excluded) and 1h");
    }
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info",
                                                "warn",  "error", "off"};
  if (!kLevels.contains(config.log_level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown log level \"", config.log_level,
                     "\" (trace, debug, info, warn, error, off)"));
  }
  if (config.shutdown_timeout < absl::ZeroDuration() ||
      config.shutdown_timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        "shutdown_timeout must be between 0s and 1h");
  }
  if (config.reconcile_interval < absl::ZeroDuration() ||
      config.reconcile_interval > absl::Hours(24 * 7)) {
    return absl::InvalidArgumentError(
        "reconcile_interval must be between 0s (off) and 168h");
  }
  if (config.backend_timeout < absl::ZeroDuration() ||
      config.backend_timeout > absl::Hours(24)) {
    return absl::InvalidArgumentError(
        "backend_timeout must be between 0s (unbounded) and 24h");
  }
  if (!config.containerd_address.empty() &&
      config.containerd_address[0] != '/' &&
      !config.containerd_address.starts_with("unix:")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "containerd_address must be an absolute unix socket path (or "
        "unix:PATH), not \"",
        config.containerd_address, "\""));
  }
  if (config.containerd_snapshotter.empty()) {
    return absl::InvalidArgumentError(
        "containerd_snapshotter must name the proxy plugin (e.g. "
        "\"snapledger\")");
  }
  if (config.dead_after < absl::ZeroDuration() ||
      config.dead_after > absl::Hours(24 * 30)) {
    return absl::InvalidArgumentError(
        "containers.dead_after must be between 0s and 720h");
  }
  if (config.reaper_enabled) {
    if (config.containerd_address.empty()) {
      return absl::InvalidArgumentError(
          "reaper.enabled needs containerd_address: the reaper deletes "
          "containers through containerd's API");
    }
    if (config.reap_match.empty()) {
      return absl::InvalidArgumentError(
          "reaper.enabled needs reaper.match: the container ids it may "
          "delete (e.g. [\"obuilder-run-*\"])");
    }
  }
  for (const std::string& glob : config.reap_match) {
    if (glob.empty()) {
      return absl::InvalidArgumentError(
          "reaper.match: an empty pattern matches no container id");
    }
  }
  if (absl::Status s = ValidatePrunePolicy(config.prune); !s.ok()) return s;
  if (config.prune.enabled && config.containerd_address.empty()) {
    return absl::InvalidArgumentError(
        "prune.enabled needs containerd_address: the prune acts only "
        "through containerd's API");
  }
  if (!config.metrics_address.empty()) {
    absl::StatusOr<std::string> metrics = CheckMetricsAddress(
        config.metrics_address, config.metrics_allow_non_loopback);
    if (!metrics.ok()) return metrics.status();
  }
  if (absl::Status s = ValidateRetryPolicy(config.remove_retry); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("remove_queue: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace snapledger
