// snapledger: the admin CLI of snapledgerd. Asks the daemon over its admin
// socket, or with --root reads a ledger directly (read-only, daemon running
// or not). Exit codes: 0 ok, 1 `check` found problems, 2 bad usage or a
// failed request (docs/cli.md).
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
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

}  // namespace

static int Main(int argc, char** argv) {
  namespace cli = snapledger::cli;
  const std::string default_address =
      snapledger::DefaultAdminAddress("/run/snapledger/snapledger.sock");

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

  std::string address = default_address;
  std::string root;
  bool json = false;
  std::string timeout_text = "30s";
  app.add_option("--address", address,
                 "snapledgerd's admin socket (its --admin-address)")
      ->envname("SNAPLEDGER_ADMIN_ADDRESS")
      ->capture_default_str();
  app.add_option("--root", root,
                 "Read DIR/ledger directly, read-only, without the daemon "
                 "(DIR is snapledgerd's --root; wins over --address)");
  app.add_flag("--json", json, "Print one JSON document on stdout");
  app.add_option("--timeout", timeout_text,
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

  const std::string states = absl::StrJoin(cli::StateNames(), "|");
  const std::string kinds = absl::StrJoin(cli::KindNames(), "|");
  auto check_state = CLI::Validator(
      [](std::string& name) -> std::string {
        snapledger::store::v1::State state;
        return cli::ParseState(name, &state) ? "" : "unknown state: " + name;
      },
      states);
  auto check_kind = CLI::Validator(
      [](std::string& name) -> std::string {
        snapledger::store::v1::Kind kind;
        return cli::ParseKind(name, &kind) ? "" : "unknown kind: " + name;
      },
      kinds);

  // ls
  cli::LsOptions ls;
  auto* ls_cmd = app.add_subcommand("ls",
                                    "List snapshots: KEY PARENT KIND "
                                    "STATE SIZE AGE");
  ls_cmd->add_flag("-a,--all", ls.all,
                   "Include hidden records: queued removals (under their "
                   "former key), adopted objects, intents");
  ls_cmd
      ->add_option("-s,--state", ls.states,
                   "Only this state (repeatable; implies --all)")
      ->check(check_state);
  ls_cmd->add_option("-k,--kind", ls.kinds, "Only this kind (repeatable)")
      ->check(check_kind);
  ls_cmd->add_option("-p,--prefix", ls.prefix,
                     "Only keys starting with this prefix");

  // tree
  bool tree_all = false;
  auto* tree_cmd = app.add_subcommand(
      "tree",
      "Show snapshots indented under their parents (like ctr "
      "snapshots tree)");
  tree_cmd->add_flag("-a,--all", tree_all,
                     "Include hidden records (queued removals, adopted "
                     "objects)");

  // inspect
  std::string inspect_key;
  uint32_t inspect_history = 20;
  auto* inspect_cmd = app.add_subcommand(
      "inspect",
      "Show one record in full: fields, children, removal attempts, history");
  inspect_cmd
      ->add_option("KEY", inspect_key,
                   "The snapshot's key, or a ledger key (snapledger.removed/N)")
      ->required();
  inspect_cmd
      ->add_option("-n,--history", inspect_history, "History events to show")
      ->capture_default_str();

  // pending
  auto* pending_cmd = app.add_subcommand(
      "pending", "List queued removals (pending and stuck), oldest first");

  // orphans
  auto* orphans_cmd = app.add_subcommand(
      "orphans",
      "List records nobody should rely on: adopted objects, missing storage, "
      "rootfs snapshots of dead containers");

  // history
  std::string history_key;
  uint32_t history_limit = 50;
  auto* history_cmd = app.add_subcommand(
      "history", "Show what happened to snapshots, newest first");
  history_cmd->add_option("KEY", history_key,
                          "Only this snapshot (its key or ledger key)");
  history_cmd->add_option("-n,--limit", history_limit, "Events to show")
      ->capture_default_str();

  // stats
  auto* stats_cmd = app.add_subcommand(
      "stats",
      "Show counts by state and kind, usage, the removal queue, the "
      "containerd watcher");

  // reconcile
  bool reconcile_apply = false;
  auto* reconcile_cmd = app.add_subcommand(
      "reconcile", "Compare backend and ledger now and list what differs");
  reconcile_cmd->add_flag(
      "--apply", reconcile_apply,
      "Adopt unrecorded objects and mark records of missing ones (needs the "
      "daemon)");

  // retry
  std::string retry_key;
  bool retry_stuck = false;
  auto* retry_cmd = app.add_subcommand(
      "retry", "Make a queued removal due now (needs the daemon)");
  auto* retry_key_opt = retry_cmd->add_option(
      "KEY", retry_key, "The removal's former key or ledger key");
  retry_cmd
      ->add_flag("--stuck", retry_stuck,
                 "Retry every stuck removal instead of one KEY")
      ->excludes(retry_key_opt);

  // check
  auto* check_cmd = app.add_subcommand(
      "check",
      "Exit 0 if backend and ledger agree and nothing needs an operator, "
      "else print each problem and exit 1");

  // du
  bool du_all = false;
  auto* du_cmd = app.add_subcommand(
      "du",
      "Show disk usage per snapshot, largest first, and the total "
      "(measures active snapshots)");
  du_cmd->add_flag("-a,--all", du_all,
                   "Include hidden records (queued removals, adopted "
                   "objects)");

  // dead
  auto* dead_cmd = app.add_subcommand(
      "dead",
      "List dead containers (rootfs in snapledger, no live task for longer "
      "than the grace period) and the snapshots they pin (needs the daemon "
      "and its containerd watcher)");

  for (CLI::App* sub : app.get_subcommands({})) {
    sub->footer(
        "Global options (--address, --root, --json, --timeout) go before or "
        "after the subcommand: see snapledger --help.");
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitError;
  }

  if (app.get_subcommands().empty()) {
    std::cerr << app.help() << "A subcommand is required.\n";
    return kExitError;
  }
  if (retry_cmd->parsed() && retry_key.empty() && !retry_stuck) {
    std::cerr << "snapledger retry: give a KEY or --stuck\n"
                 "Run with --help for more information.\n";
    return kExitError;
  }

  absl::Duration timeout;
  (void)ParseTimeout(timeout_text, &timeout);  // checked by its validator

  std::unique_ptr<cli::AdminApi> api;
  if (!root.empty()) {
    auto local = cli::LocalAdminApi::Open(root);
    if (!local.ok()) {
      std::cerr << "snapledger: " << local.status().message() << "\n";
      return kExitError;
    }
    api = std::move(*local);
  } else {
    auto remote = cli::GrpcAdminApi::Connect(address, timeout);
    if (!remote.ok()) {
      std::cerr << "snapledger: " << remote.status().message() << "\n";
      return kExitError;
    }
    api = std::move(*remote);
  }

  cli::CommandContext ctx;
  ctx.api = api.get();
  ctx.json = json;
  ctx.now = absl::Now();
  ctx.out = &std::cout;
  ctx.err = &std::cerr;

  int code = kExitError;
  if (ls_cmd->parsed()) {
    code = cli::RunLs(ctx, ls);
  } else if (tree_cmd->parsed()) {
    code = cli::RunTree(ctx, tree_all);
  } else if (inspect_cmd->parsed()) {
    code = cli::RunInspect(ctx, inspect_key, inspect_history);
  } else if (pending_cmd->parsed()) {
    code = cli::RunPending(ctx);
  } else if (orphans_cmd->parsed()) {
    code = cli::RunOrphans(ctx);
  } else if (history_cmd->parsed()) {
    code = cli::RunHistory(ctx, history_key, history_limit);
  } else if (stats_cmd->parsed()) {
    code = cli::RunStats(ctx);
  } else if (reconcile_cmd->parsed()) {
    code = cli::RunReconcile(ctx, reconcile_apply);
  } else if (retry_cmd->parsed()) {
    code = cli::RunRetry(ctx, retry_key, retry_stuck);
  } else if (check_cmd->parsed()) {
    code = cli::RunCheck(ctx);
  } else if (du_cmd->parsed()) {
    code = cli::RunDu(ctx, du_all);
  } else if (dead_cmd->parsed()) {
    code = cli::RunDead(ctx);
  }
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
