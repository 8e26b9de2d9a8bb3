// The `snapledger` subcommands, apart from argument parsing
// (cli/snapledger_main.cc): each asks the AdminApi, renders the answer
// (cli/render.h) on `out` and returns the process's exit code. Errors go to
// `err` as one line, "snapledger: <message>".
//
// Exit codes: kExitOk; kExitProblems when `check` found problems; kExitError
// for bad usage, a daemon or ledger that cannot be reached, and any request
// that failed (an unknown key, a change asked of a read-only ledger, ...).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cli/admin_api.h"

namespace snapledger::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitProblems = 1;
inline constexpr int kExitError = 2;

struct CommandContext {
  AdminApi* api = nullptr;  // not owned
  bool json = false;        // one JSON document on `out` instead of text
  absl::Time now;           // for ages ("3m ago") and due times ("in 5s")
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
};

struct LsOptions {
  bool all = false;
  // State / kind names as render.h's ParseState / ParseKind read them. A
  // state filter implies `all` (most states are hidden without it).
  std::vector<std::string> states;
  std::vector<std::string> kinds;
  std::string prefix;
};

int RunLs(const CommandContext& ctx, const LsOptions& options);
int RunTree(const CommandContext& ctx, bool all);
// `history_limit` 0: the server's default (20).
int RunInspect(const CommandContext& ctx, const std::string& key,
               uint32_t history_limit);
int RunPending(const CommandContext& ctx);
int RunOrphans(const CommandContext& ctx);
// `key` empty: every snapshot. `limit` 0: the server's default (50).
int RunHistory(const CommandContext& ctx, const std::string& key,
               uint32_t limit);
int RunStats(const CommandContext& ctx);
// `apply` needs the daemon: refused (kExitError) on an offline API.
int RunReconcile(const CommandContext& ctx, bool apply);
// Exactly one of `key` and `stuck` (else kExitError, naming the usage).
int RunRetry(const CommandContext& ctx, const std::string& key, bool stuck);
// kExitOk when backend and ledger agree, kExitProblems otherwise.
int RunCheck(const CommandContext& ctx);
int RunDu(const CommandContext& ctx, bool all);
// Needs the daemon (its containerd watcher): refused (kExitError) on an
// offline API. kExitOk even when there are dead containers: it is a report
// (`check` is the command that fails on them).
int RunDead(const CommandContext& ctx);

struct PruneOptions {
  bool dry_run = false;
  // A TTL for this pass ("72h") and a free-space target ("30%", "20GiB");
  // empty: the daemon's [prune] settings. Checked by the daemon.
  std::string until;
  std::string free;
};
// One prune pass (docs/prune.md); needs the daemon. kExitOk when the pass
// ran (actions that failed are shown), kExitError when it could not.
int RunPrune(const CommandContext& ctx, const PruneOptions& options);

}  // namespace snapledger::cli
