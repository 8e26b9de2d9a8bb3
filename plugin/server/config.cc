#include "plugin/server/config.h"

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
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

}  // namespace

absl::StatusOr<Config> LoadConfigFile(const std::string& path, Config base) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("config file ", path, " does not exist"));
  }
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ":", e.source().begin.line, ":", e.source().begin.column, ": ",
        std::string(e.description())));
  }

  for (auto&& [k, node] : table) {
    const std::string key(k.str());
    if (key == "root" || key == "address" || key == "admin_address" ||
        key == "backend" || key == "log_level" || key == "shutdown_timeout" ||
        key == "reconcile_interval" || key == "remove_policy" ||
        key == "backend_timeout" || key == "containerd_address" ||
        key == "containerd_snapshotter") {
      absl::StatusOr<std::string> v = GetString(path, node, key);
      if (!v.ok()) return v.status();
      if (key == "root") base.root = *v;
      if (key == "address") base.address = *v;
      if (key == "admin_address") base.admin_address = *v;
      if (key == "backend") base.backend = *v;
      if (key == "log_level") base.log_level = *v;
      if (key == "remove_policy") {
        std::optional<RemovePolicy> policy = ParseRemovePolicy(*v);
        if (!policy.has_value()) {
          return Bad(path, node,
                     absl::StrCat("remove_policy must be \"refuse\" or "
                                  "\"defer\", not \"",
                                  *v, "\""));
        }
        base.remove_policy = *policy;
      }
      if (key == "containerd_address") base.containerd_address = *v;
      if (key == "containerd_snapshotter") base.containerd_snapshotter = *v;
      absl::Duration* duration =
          key == "shutdown_timeout"     ? &base.shutdown_timeout
          : key == "reconcile_interval" ? &base.reconcile_interval
          : key == "backend_timeout"    ? &base.backend_timeout
                                        : nullptr;
      if (duration != nullptr && !absl::ParseDuration(*v, duration)) {
        return Bad(
            path, node,
            absl::StrCat("`", key, "` is not a duration (e.g. \"30s\"): ", *v));
      }
    } else if (key == "ledger") {
      const toml::table* ledger = node.as_table();
      if (ledger == nullptr) return Bad(path, node, "`ledger` must be a table");
      for (auto&& [lk, lnode] : *ledger) {
        const std::string lkey(lk.str());
        if (lkey != "durability") {
          return Bad(path, lnode,
                     absl::StrCat("unknown setting `ledger.", lkey, "`"));
        }
        absl::StatusOr<std::string> v = GetString(path, lnode, lkey);
        if (!v.ok()) return v.status();
        if (*v != "sync" && *v != "async") {
          return Bad(path, lnode,
                     absl::StrCat("`ledger.durability` must be \"sync\" or "
                                  "\"async\", not \"",
                                  *v, "\""));
        }
        base.ledger_sync = (*v == "sync");
      }
    } else if (key == "native") {
      const toml::table* native = node.as_table();
      if (native == nullptr) return Bad(path, node, "`native` must be a table");
      for (auto&& [nk, nnode] : *native) {
        const std::string nkey(nk.str());
        if (nkey != "sync") {
          return Bad(path, nnode,
                     absl::StrCat("unknown setting `native.", nkey, "`"));
        }
        auto v = nnode.value<bool>();
        if (!v) return Bad(path, nnode, "`native.sync` must be true or false");
        base.native_sync = *v;
      }
    } else if (key == "remove_queue") {
      const toml::table* queue = node.as_table();
      if (queue == nullptr) {
        return Bad(path, node, "`remove_queue` must be a table");
      }
      RetryPolicy& retry = base.remove_retry;
      for (auto&& [qk, qnode] : *queue) {
        const std::string qkey(qk.str());
        const std::string name = absl::StrCat("remove_queue.", qkey);
        if (qkey == "initial_backoff" || qkey == "max_backoff") {
          absl::StatusOr<std::string> v = GetString(path, qnode, name);
          if (!v.ok()) return v.status();
          absl::Duration* d = qkey == "initial_backoff" ? &retry.initial_backoff
                                                        : &retry.max_backoff;
          if (!absl::ParseDuration(*v, d)) {
            return Bad(
                path, qnode,
                absl::StrCat("`", name,
                             "` is not a duration (e.g. \"30s\"): ", *v));
          }
        } else if (qkey == "jitter") {
          auto v = qnode.value<double>();
          if (!v)
            return Bad(path, qnode, "`remove_queue.jitter` must be a number");
          retry.jitter = *v;
        } else if (qkey == "max_attempts") {
          auto v = qnode.value<int64_t>();
          if (!v || *v < 1 || *v > 1000000) {
            return Bad(path, qnode,
                       "`remove_queue.max_attempts` must be an integer from 1 "
                       "to 1000000");
          }
          retry.max_attempts = static_cast<int>(*v);
        } else {
          return Bad(path, qnode, absl::StrCat("unknown setting `", name, "`"));
        }
      }
    } else if (key == "containers") {
      const toml::table* containers = node.as_table();
      if (containers == nullptr) {
        return Bad(path, node, "`containers` must be a table");
      }
      for (auto&& [ck, cnode] : *containers) {
        const std::string ckey(ck.str());
        if (ckey != "dead_after") {
          return Bad(path, cnode,
                     absl::StrCat("unknown setting `containers.", ckey, "`"));
        }
        absl::StatusOr<std::string> v =
            GetString(path, cnode, "containers.dead_after");
        if (!v.ok()) return v.status();
        if (!absl::ParseDuration(*v, &base.dead_after)) {
          return Bad(path, cnode,
                     absl::StrCat("`containers.dead_after` is not a duration "
                                  "(e.g. \"10m\"): ",
                                  *v));
        }
      }
    } else if (key == "reaper") {
      const toml::table* reaper = node.as_table();
      if (reaper == nullptr) return Bad(path, node, "`reaper` must be a table");
      for (auto&& [rk, rnode] : *reaper) {
        const std::string rkey(rk.str());
        if (rkey == "enabled" || rkey == "dry_run") {
          auto v = rnode.value<bool>();
          if (!v) {
            return Bad(
                path, rnode,
                absl::StrCat("`reaper.", rkey, "` must be true or false"));
          }
          (rkey == "enabled" ? base.reaper_enabled : base.reap_dry_run) = *v;
        } else if (rkey == "match") {
          const toml::array* globs = rnode.as_array();
          if (globs == nullptr) {
            return Bad(path, rnode,
                       "`reaper.match` must be an array of strings");
          }
          base.reap_match.clear();
          for (const toml::node& g : *globs) {
            absl::StatusOr<std::string> v = GetString(path, g, "reaper.match");
            if (!v.ok()) return v.status();
            base.reap_match.push_back(*v);
          }
        } else {
          return Bad(path, rnode,
                     absl::StrCat("unknown setting `reaper.", rkey, "`"));
        }
      }
    } else {
      return Bad(path, node, absl::StrCat("unknown setting `", key, "`"));
    }
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
  if (config.backend != "native") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown backend \"", config.backend, "\" (available: native)"));
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
  if (absl::Status s = ValidateRetryPolicy(config.remove_retry); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("remove_queue: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace snapledger
