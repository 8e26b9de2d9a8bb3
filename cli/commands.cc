#include "cli/commands.h"

#include <utility>

#include "cli/render.h"

namespace snapledger::cli {
namespace {

int Fail(const CommandContext& ctx, const absl::Status& status) {
  *ctx.err << "snapledger: " << TerminalSafe(std::string(status.message()))
           << "\n";
  return kExitError;
}

int Usage(const CommandContext& ctx, const std::string& command,
          const std::string& message) {
  *ctx.err << "snapledger " << command << ": " << TerminalSafe(message) << "\n"
           << "Run with --help for more information.\n";
  return kExitError;
}

void PrintJson(const CommandContext& ctx, const Json& json) {
  // Keys are opaque bytes: invalid UTF-8 is shown as U+FFFD rather than
  // failing the whole document.
  *ctx.out << json.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
}

// Asks, then prints the answer as JSON or text; kExitError when the request
// fails.
template <typename Response, typename Ask, typename ToJson, typename ToText>
int Show(const CommandContext& ctx, Ask&& ask, ToJson&& to_json,
         ToText&& to_text) {
  absl::StatusOr<Response> response = ask();
  if (!response.ok()) return Fail(ctx, response.status());
  if (ctx.json) {
    PrintJson(ctx, to_json(*response));
  } else {
    *ctx.out << TerminalSafe(to_text(*response));
  }
  return kExitOk;
}

}  // namespace

int RunLs(const CommandContext& ctx, const LsOptions& options) {
  admin::ListRequest request;
  request.set_all(options.all || !options.states.empty());
  for (const std::string& name : options.states) {
    store::State state;
    if (!ParseState(name, &state)) {
      return Usage(ctx, "ls", "unknown state \"" + name + "\"");
    }
    request.add_states(state);
  }
  for (const std::string& name : options.kinds) {
    store::Kind kind;
    if (!ParseKind(name, &kind)) {
      return Usage(ctx, "ls", "unknown kind \"" + name + "\"");
    }
    request.add_kinds(kind);
  }
  request.set_prefix(options.prefix);
  return Show<admin::ListResponse>(
      ctx, [&] { return ctx.api->List(request); }, ListJson,
      [&](const admin::ListResponse& r) { return RenderList(r, ctx.now); });
}

int RunTree(const CommandContext& ctx, bool all) {
  admin::ListRequest request;
  request.set_all(all);
  return Show<admin::ListResponse>(
      ctx, [&] { return ctx.api->List(request); }, TreeJson, RenderTree);
}

int RunInspect(const CommandContext& ctx, const std::string& key,
               uint32_t history_limit) {
  admin::InspectRequest request;
  request.set_key(key);
  request.set_history_limit(history_limit);
  return Show<admin::InspectResponse>(
      ctx, [&] { return ctx.api->Inspect(request); }, InspectJson,
      [&](const admin::InspectResponse& r) {
        return RenderInspect(r, ctx.now);
      });
}

int RunPending(const CommandContext& ctx) {
  return Show<admin::PendingResponse>(
      ctx, [&] { return ctx.api->Pending(admin::PendingRequest()); },
      PendingJson,
      [&](const admin::PendingResponse& r) {
        return RenderPending(r, ctx.now);
      });
}

int RunOrphans(const CommandContext& ctx) {
  return Show<admin::OrphansResponse>(
      ctx, [&] { return ctx.api->Orphans(admin::OrphansRequest()); },
      OrphansJson, RenderOrphans);
}

int RunHistory(const CommandContext& ctx, const std::string& key,
               uint32_t limit) {
  admin::HistoryRequest request;
  request.set_key(key);
  request.set_limit(limit);
  return Show<admin::HistoryResponse>(
      ctx, [&] { return ctx.api->History(request); }, HistoryJson,
      RenderHistory);
}

int RunStats(const CommandContext& ctx) {
  return Show<admin::StatsResponse>(
      ctx, [&] { return ctx.api->Stats(admin::StatsRequest()); }, StatsJson,
      [&](const admin::StatsResponse& r) { return RenderStats(r, ctx.now); });
}

int RunReconcile(const CommandContext& ctx, bool apply) {
  if (apply && ctx.api->offline()) {
    return Fail(ctx, absl::FailedPreconditionError(
                         "reconcile --apply needs the running daemon: --root "
                         "only reads the ledger"));
  }
  admin::ReconcileRequest request;
  request.set_apply(apply);
  return Show<admin::ReconcileResponse>(
      ctx, [&] { return ctx.api->Reconcile(request); },
      [&](const admin::ReconcileResponse& r) {
        return ReconcileJson(r, apply);
      },
      [&](const admin::ReconcileResponse& r) {
        return RenderReconcile(r, apply);
      });
}

int RunRetry(const CommandContext& ctx, const std::string& key, bool stuck) {
  if (key.empty() == !stuck) {
    return Usage(ctx, "retry",
                 "give either a KEY or --stuck (exactly one of them)");
  }
  if (ctx.api->offline()) {
    return Fail(ctx, absl::FailedPreconditionError(
                         "retry needs the running daemon: --root only reads "
                         "the ledger"));
  }
  admin::RetryRequest request;
  request.set_key(key);
  request.set_stuck(stuck);
  return Show<admin::RetryResponse>(
      ctx, [&] { return ctx.api->Retry(request); }, RetryJson, RenderRetry);
}

int RunCheck(const CommandContext& ctx) {
  absl::StatusOr<admin::CheckResponse> response =
      ctx.api->Check(admin::CheckRequest());
  if (!response.ok()) return Fail(ctx, response.status());
  if (ctx.json) {
    PrintJson(ctx, CheckJson(*response));
  } else {
    *ctx.out << TerminalSafe(RenderCheck(*response));
  }
  return response->problems().empty() ? kExitOk : kExitProblems;
}

int RunDu(const CommandContext& ctx, bool all) {
  admin::ListRequest request;
  request.set_all(all);
  request.set_measure_usage(true);
  return Show<admin::ListResponse>(
      ctx, [&] { return ctx.api->List(request); }, DuJson, RenderDu);
}

int RunDead(const CommandContext& ctx) {
  if (ctx.api->offline()) {
    return Fail(ctx, absl::FailedPreconditionError(
                         "dead needs the running daemon (its containerd "
                         "watcher): --root only reads the ledger"));
  }
  return Show<admin::DeadResponse>(
      ctx, [&] { return ctx.api->Dead(admin::DeadRequest()); },
      [&](const admin::DeadResponse& r) { return DeadJson(r, ctx.now); },
      [&](const admin::DeadResponse& r) { return RenderDead(r, ctx.now); });
}

int RunPrune(const CommandContext& ctx, const PruneOptions& options) {
  if (ctx.api->offline()) {
    return Fail(ctx, absl::FailedPreconditionError(
                         "prune needs the running daemon: it acts only "
                         "through containerd (run without --root)"));
  }
  admin::PruneRequest request;
  request.set_dry_run(options.dry_run);
  request.set_until(options.until);
  request.set_free(options.free);
  return Show<admin::PruneResponse>(
      ctx, [&] { return ctx.api->Prune(request); },
      [&](const admin::PruneResponse& r) { return PruneJson(r, ctx.now); },
      [&](const admin::PruneResponse& r) { return RenderPrune(r, ctx.now); });
}

}  // namespace snapledger::cli
