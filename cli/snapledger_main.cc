// snapledger: the admin CLI of snapledgerd. Asks the daemon over its admin
// socket, or with --root reads a ledger directly (read-only, daemon running
// or not). Exit codes: 0 ok, 1 `check` found problems, 2 bad usage or a
// failed request (docs/cli.md).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/admin_api.h"
#include "cli/commands.h"
#include "cli/render.h"
#include "plugin/admin/admin_service.h"

namespace {

using snapledger::cli::kExitError;
using snapledger::cli::kExitOk;

// "30s", "2m", "1m30s", "500ms", or a number of seconds.
bool ParseTimeout(const std::string& text, absl::Duration* out) {
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    *out = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, out)) {
    return false;
  }
  return *out > absl::ZeroDuration();
}

namespace cli = ::snapledger::cli;

// The options every subcommand takes.
struct GlobalOptions {
  std::string address;
  std::string root;
  bool json = false;
  std::string timeout_text = "30s";
};

// A registered subcommand: how to run it with the options its flags filled
// in (they live in the closure), and an optional usage check CLI11 cannot
// express, run after parsing (a message to print, or empty).
struct Command {
  CLI::App* app = nullptr;
  std::function<int(const cli::CommandContext&)> run;
  std::function<std::string()> usage_error = [] { return std::string(); };
};

void AddGlobalOptions(CLI::App& app, GlobalOptions* global) {
  app.add_option("--address", global->address,
                 "snapledgerd's admin socket (its --admin-address)")
      ->envname("SNAPLEDGER_ADMIN_ADDRESS")
      ->capture_default_str();
  app.add_option("--root", global->root,
                 "Read DIR/ledger directly, read-only, without the daemon "
                 "(DIR is snapledgerd's --root; wins over --address)");
  app.add_flag("--json", global->json, "Print one JSON document on stdout");
  app.add_option("--timeout", global->timeout_text,
                 "Time limit of each call to the daemon (e.g. 30s, 2m)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            absl::Duration d;
            return ParseTimeout(text, &d)
                       ? ""
                       : "not a positive duration (e.g. 30s, 2m, 500ms): " +
                             text;
          },
          "DURATION"));
}

// A subcommand without options of its own.
Command AddPlainCommand(CLI::App& app, const std::string& name,
                        const std::string& description,
                        int (*run)(const cli::CommandContext&)) {
  return {app.add_subcommand(name, description), run};
}

Command AddLs(CLI::App& app) {
  auto check_state = CLI::Validator(
      [](std::string& name) -> std::string {
        snapledger::store::v1::State state;
        return cli::ParseState(name, &state) ? "" : "unknown state: " + name;
      },
      absl::StrJoin(cli::StateNames(), "|"));
  auto check_kind = CLI::Validator(
      [](std::string& name) -> std::string {
        snapledger::store::v1::Kind kind;
        return cli::ParseKind(name, &kind) ? "" : "unknown kind: " + name;
      },
      absl::StrJoin(cli::KindNames(), "|"));
  auto ls = std::make_shared<cli::LsOptions>();
  auto* cmd = app.add_subcommand("ls",
                                 "List snapshots: KEY PARENT KIND "
                                 "STATE SIZE AGE");
  cmd->add_flag("-a,--all", ls->all,
                "Include hidden records: queued removals (under their "
                "former key), adopted objects, intents");
  cmd->add_option("-s,--state", ls->states,
                  "Only this state (repeatable; implies --all)")
      ->check(check_state);
  cmd->add_option("-k,--kind", ls->kinds, "Only this kind (repeatable)")
      ->check(check_kind);
  cmd->add_option("-p,--prefix", ls->prefix,
                  "Only keys starting with this prefix");
  return {cmd, [ls](const cli::CommandContext& ctx) {
            return cli::RunLs(ctx, *ls);
          }};
}

Command AddTree(CLI::App& app) {
  auto all = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand(
      "tree",
      "Show snapshots indented under their parents (like ctr "
      "snapshots tree)");
  cmd->add_flag("-a,--all", *all,
                "Include hidden records (queued removals, adopted "
                "objects)");
  return {cmd, [all](const cli::CommandContext& ctx) {
            return cli::RunTree(ctx, *all);
          }};
}

Command AddInspect(CLI::App& app) {
  struct Options {
    std::string key;
    uint32_t history = 20;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "inspect",
      "Show one record in full: fields, children, removal attempts, history");
  cmd->add_option("KEY", o->key,
                  "The snapshot's key, or a ledger key (snapledger.removed/N)")
      ->required();
  cmd->add_option("-n,--history", o->history, "History events to show")
      ->capture_default_str();
  return {cmd, [o](const cli::CommandContext& ctx) {
            return cli::RunInspect(ctx, o->key, o->history);
          }};
}

Command AddHistory(CLI::App& app) {
  struct Options {
    std::string key;
    uint32_t limit = 50;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "history", "Show what happened to snapshots, newest first");
  cmd->add_option("KEY", o->key, "Only this snapshot (its key or ledger key)");
  cmd->add_option("-n,--limit", o->limit, "Events to show")
      ->capture_default_str();
  return {cmd, [o](const cli::CommandContext& ctx) {
            return cli::RunHistory(ctx, o->key, o->limit);
          }};
}

Command AddReconcile(CLI::App& app) {
  auto apply = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand(
      "reconcile", "Compare backend and ledger now and list what differs");
  cmd->add_flag(
      "--apply", *apply,
      "Adopt unrecorded objects and mark records of missing ones (needs the "
      "daemon)");
  return {cmd, [apply](const cli::CommandContext& ctx) {
            return cli::RunReconcile(ctx, *apply);
          }};
}

Command AddRetry(CLI::App& app) {
  struct Options {
    std::string key;
    bool stuck = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "retry", "Make a queued removal due now (needs the daemon)");
  auto* key_opt =
      cmd->add_option("KEY", o->key, "The removal's former key or ledger key");
  cmd->add_flag("--stuck", o->stuck,
                "Retry every stuck removal instead of one KEY")
      ->excludes(key_opt);
  Command command{cmd, [o](const cli::CommandContext& ctx) {
                    return cli::RunRetry(ctx, o->key, o->stuck);
                  }};
  command.usage_error = [o] {
    return o->key.empty() && !o->stuck
               ? std::string("snapledger retry: give a KEY or --stuck\n")
               : std::string();
  };
  return command;
}

Command AddDu(CLI::App& app) {
  auto all = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand(
      "du",
      "Show disk usage per snapshot, largest first, and the total "
      "(measures active snapshots)");
  cmd->add_flag("-a,--all", *all,
                "Include hidden records (queued removals, adopted "
                "objects)");
  return {cmd, [all](const cli::CommandContext& ctx) {
            return cli::RunDu(ctx, *all);
          }};
}

Command AddPrune(CLI::App& app) {
  auto o = std::make_shared<cli::PruneOptions>();
  auto* cmd = app.add_subcommand(
      "prune",
      "Run one prune pass now (docs/prune.md): delete, through containerd, "
      "dead containers, expired leases and (with [prune] images) unused "
      "images the policies select, and print what went and the bytes freed "
      "(needs the daemon)");
  cmd->add_flag("--dry-run", o->dry_run,
                "Only print what would go and the bytes it would free");
  cmd->add_option("--until", o->until,
                  "TTL for this pass: what has been unused for longer goes "
                  "(e.g. 72h; default: [prune] keep_duration)");
  cmd->add_option("--free", o->free,
                  "Free-space target for this pass (e.g. 30% or 20GiB; "
                  "default: [prune] min_free)");
  return {cmd, [o](const cli::CommandContext& ctx) {
            return cli::RunPrune(ctx, *o);
          }};
}

// Every subcommand, in the order --help lists them.
std::vector<Command> AddCommands(CLI::App& app) {
  std::vector<Command> commands;
  commands.push_back(AddLs(app));
  commands.push_back(AddTree(app));
  commands.push_back(AddInspect(app));
  commands.push_back(AddPlainCommand(
      app, "pending", "List queued removals (pending and stuck), oldest first",
      cli::RunPending));
  commands.push_back(AddPlainCommand(
      app, "orphans",
      "List records nobody should rely on: adopted objects, missing storage, "
      "rootfs snapshots of dead containers",
      cli::RunOrphans));
  commands.push_back(AddHistory(app));
  commands.push_back(AddPlainCommand(
      app, "stats",
      "Show counts by state and kind, usage, the removal queue, the "
      "containerd watcher",
      cli::RunStats));
  commands.push_back(AddReconcile(app));
  commands.push_back(AddRetry(app));
  commands.push_back(AddPlainCommand(
      app, "check",
      "Exit 0 if backend and ledger agree and nothing needs an operator, "
      "else print each problem and exit 1",
      cli::RunCheck));
  commands.push_back(AddDu(app));
  commands.push_back(AddPlainCommand(
      app, "dead",
      "List dead containers (rootfs in snapledger, no live task for longer "
      "than the grace period) and the snapshots they pin (needs the daemon "
      "and its containerd watcher)",
      cli::RunDead));
  commands.push_back(AddPrune(app));
  for (const Command& command : commands) {
    command.app->footer(
        "Global options (--address, --root, --json, --timeout) go before or "
        "after the subcommand: see snapledger --help.");
  }
  return commands;
}

// The ledger through the daemon, or read directly with --root. Prints why
// not and returns null when it cannot be reached.
std::unique_ptr<cli::AdminApi> OpenApi(const GlobalOptions& global) {
  absl::Duration timeout;
  (void)ParseTimeout(global.timeout_text,
                     &timeout);  // checked by its validator
  absl::StatusOr<std::unique_ptr<cli::AdminApi>> api;
  if (!global.root.empty()) {
    api = cli::LocalAdminApi::Open(global.root);
  } else {
    api = cli::GrpcAdminApi::Connect(global.address, timeout);
  }
  if (!api.ok()) {
    std::cerr << "snapledger: " << api.status().message() << "\n";
    return nullptr;
  }
  return *std::move(api);
}

}  // namespace

static int Main(int argc, char** argv) {
  CLI::App app{
      "snapledger: inspect and repair snapledgerd's snapshot ledger.\n\n"
      "Asks the running daemon on its admin socket, or with --root reads the "
      "ledger directly (read-only, safe beside a running daemon).\n"
      "Exit codes: 0 ok, 1 `check` found problems, 2 bad usage or a failed "
      "request.",
      "snapledger"};
  // At most one subcommand; none prints the help (checked after parsing, so
  // that a misspelt one is reported as such rather than as missing).
  app.require_subcommand(0, 1);
  // Global options are accepted after the subcommand too
  // (`snapledger ls --json`).
  app.fallthrough();
  app.set_version_flag("--version", "snapledger 0.1.0");

  GlobalOptions global;
  global.address =
      snapledger::DefaultAdminAddress("/run/snapledger/snapledger.sock");
  AddGlobalOptions(app, &global);
  const std::vector<Command> commands = AddCommands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitError;
  }

  const auto parsed =
      std::find_if(commands.begin(), commands.end(),
                   [](const Command& c) { return c.app->parsed(); });
  if (parsed == commands.end()) {
    std::cerr << app.help() << "A subcommand is required.\n";
    return kExitError;
  }
  if (std::string error = parsed->usage_error(); !error.empty()) {
    std::cerr << error << "Run with --help for more information.\n";
    return kExitError;
  }

  std::unique_ptr<cli::AdminApi> api = OpenApi(global);
  if (api == nullptr) return kExitError;
  cli::CommandContext ctx;
  ctx.api = api.get();
  ctx.json = global.json;
  ctx.now = absl::Now();
  ctx.out = &std::cout;
  ctx.err = &std::cerr;
  const int code = parsed->run(ctx);
  std::cout.flush();
  return code;
}

int main(int argc, char** argv) {
  // Nothing should throw past the commands; if something does, the operator
  // gets one line, not an abort.
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "snapledger: internal error: " << e.what() << "\n";
    return kExitError;
  }
}
