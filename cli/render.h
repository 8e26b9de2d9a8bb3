// Rendering of admin API responses for the `snapledger` CLI: aligned text
// tables for people and JSON documents for scripts. Pure functions of their
// inputs (the current time is a parameter), so they are unit-tested on
// hand-made responses (cli/render_test.cc).
//
// JSON field names are a stable interface (docs/cli.md lists them): new
// fields may be added, existing ones are never renamed or retyped. Absent
// values are null, never "" or -1.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "plugin/text/human_units.h"
#include "snapledger/admin/v1/admin.pb.h"
#include "snapledger/store/v1/record.pb.h"

namespace snapledger::cli {

namespace admin = ::snapledger::admin::v1;
namespace store = ::snapledger::store::v1;
using Json = nlohmann::ordered_json;

// --- Values -----------------------------------------------------------------

// "live", "remove-pending", "stuck", ...; "unspecified" for 0.
std::string StateName(store::State state);
// "active", "view", "committed"; "unspecified" for 0.
std::string KindName(store::Kind kind);
// The inverse of StateName / KindName (also accepts the proto enum names,
// e.g. "REMOVE_PENDING"). False when `name` is none of them.
bool ParseState(const std::string& name, store::State* state);
bool ParseKind(const std::string& name, store::Kind* kind);
// Every name ParseState / ParseKind accept in their canonical form, for
// --help and argument checks.
std::vector<std::string> StateNames();
std::vector<std::string> KindNames();

// Binary units with one decimal: "512 B", "4.0 KiB", "12.3 MiB"; "-" for a
// negative (unmeasured) size.
std::string HumanSize(int64_t bytes);
// UTC, to the second: "2026-11-23 12:04:28"; "-" for 0.
std::string FormatTime(int64_t unix_ns);
// RFC 3339 UTC with as many fractional digits as needed
// ("2026-11-23T12:04:28.5Z"); null for 0.
Json Rfc3339(int64_t unix_ns);
// "just now", "42s ago", "3m ago", "5h ago", "12d ago"; "-" for 0.
std::string Ago(int64_t unix_ns, absl::Time now);
// "in 42s", "in 3m", ...; "now" when due; "-" for 0.
std::string Until(int64_t unix_ns, absl::Time now);
// "42s", "3m", "5h", "12d": the largest whole unit.
std::string ShortDuration(absl::Duration d);
// The containerd watcher for people: "connected to ADDRESS, 12 containers,
// 3 leases", "not connected (ADDRESS): ERROR", or "off (no
// containerd_address configured)".
std::string WatcherText(const admin::WatcherStatus& watcher);

// `text` with everything a terminal would act on made visible: C0 controls
// other than newline, DEL and C1 controls as \xNN / \u00NN, Unicode's
// bidirectional formatting characters (U+202E…) as \uNNNN, bytes that are
// not UTF-8 as \xNN. Keys and labels may hold any bytes; every text the CLI
// prints passes through this (JSON output is escaped by its encoder).
std::string TerminalSafe(std::string_view text);

// --- Tables -----------------------------------------------------------------

// A table cell longer than this (in code points) is shortened to its
// beginning and end around an ellipsis, except in the last column (which is
// not padded): one huge key must not pad every row of `ls` to megabytes.
// --json output is never shortened.
inline constexpr size_t kMaxCellCodePoints = 120;

// Columns padded to their widest cell (in code points), separated by three
// spaces, like `ctr snapshots ls`. The last column is not padded. Control
// characters in cells (a key may hold anything) are shown as spaces so that
// every row stays one line, then made terminal-safe (TerminalSafe); long
// cells are shortened (kMaxCellCodePoints).
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  // Missing cells are empty; extra ones are dropped.
  void AddRow(std::vector<std::string> cells);
  // Pads `column` on the left (numbers, sizes).
  void AlignRight(size_t column);
  size_t rows() const { return rows_.size(); }
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;  // rows_[0] is the header
  std::set<size_t> right_;
};

// --- Commands: text ---------------------------------------------------------
// Each returns the whole output, ending with a newline.

// KEY PARENT KIND STATE SIZE AGE.
std::string RenderList(const admin::ListResponse& response, absl::Time now);
// Snapshots indented under their parent, linked by backend id (keys can be
// reused); each line "key [kind, state, size]"; roots and siblings sorted by
// key. A snapshot whose parent is not in the response is a root marked
// "(parent <key> not listed)".
std::string RenderTree(const admin::ListResponse& response);
// Every field, then children, removal attempts and history.
std::string RenderInspect(const admin::InspectResponse& response,
                          absl::Time now);
// KEY LEDGER_KEY STATE ATTEMPTS NEXT_ATTEMPT LAST_ERROR. NEXT_ATTEMPT of a
// removal held back by its container is "waiting for container NS/ID".
std::string RenderPending(const admin::PendingResponse& response,
                          absl::Time now);
// KEY REASON DETAIL.
std::string RenderOrphans(const admin::OrphansResponse& response);
// TIME OP KEY DETAIL, in the response's order (newest first).
std::string RenderHistory(const admin::HistoryResponse& response);
// "name: value" lines.
std::string RenderStats(const admin::StatsResponse& response, absl::Time now);
// TYPE KEY BACKEND_ID DETAIL, then a summary line.
std::string RenderReconcile(const admin::ReconcileResponse& response,
                            bool applied);
std::string RenderRetry(const admin::RetryResponse& response);
// "ok: backend and ledger agree", or one line per problem.
std::string RenderCheck(const admin::CheckResponse& response);
// SIZE KEY, largest first (unmeasured last), then a total line.
std::string RenderDu(const admin::ListResponse& response);
// A "watcher: ..." line, then CONTAINER TASK IDLE SNAPSHOT PINNED SIZE
// REAPER, or "no dead containers (grace 10m)".
std::string RenderDead(const admin::DeadResponse& response, absl::Time now);

// --- Commands: JSON ---------------------------------------------------------

// One snapshot: key, ledger_key, backend_id, parent, parent_backend_id,
// kind, state, namespace, containerd_key, owner, leases, labels, created,
// updated, size, inodes, last_error, removal_requested, attempts,
// next_attempt, waiting_for_children, held_by.
Json SnapshotJson(const admin::Snapshot& snapshot);
// seq, time, op, key, backend_id, parent, detail.
Json HistoryEventJson(const store::HistoryEvent& event);

Json ListJson(const admin::ListResponse& response);
// Array of root snapshots, each with "children": [snapshots...].
Json TreeJson(const admin::ListResponse& response);
// The snapshot's fields plus children (ledger keys), removal_attempts and
// history.
Json InspectJson(const admin::InspectResponse& response);
Json PendingJson(const admin::PendingResponse& response);
// Snapshots with reason and detail added.
Json OrphansJson(const admin::OrphansResponse& response);
Json HistoryJson(const admin::HistoryResponse& response);
Json StatsJson(const admin::StatsResponse& response);
Json ReconcileJson(const admin::ReconcileResponse& response, bool applied);
Json RetryJson(const admin::RetryResponse& response);
// {"ok": bool, "problems": [...]}.
Json CheckJson(const admin::CheckResponse& response);
// {"snapshots": [...largest first], "total": bytes, "unmeasured": n}.
Json DuJson(const admin::ListResponse& response);
// enabled, address, connected, last_sync, last_error, containers, leases.
Json WatcherJson(const admin::WatcherStatus& watcher);
// {"watcher", "grace_seconds", "reaped_total", "dead": [{namespace, id,
// image, task, idle_since, idle_seconds, snapshot, pinned, pinned_count,
// pinned_bytes, reaper}]}; idle_seconds as of `now`.
Json DeadJson(const admin::DeadResponse& response, absl::Time now);

// `snapledger prune`: the policy and the disk, then KIND, NAME, REASON,
// UNUSED, BYTES, RESULT per action ("would go", "freed", "failed: …"), then
// the total and whether the target holds.
std::string RenderPrune(const admin::PruneResponse& response, absl::Time now);
// {"dry_run", "policy", "total_bytes", "free_bytes_before",
// "free_bytes_after", "used_bytes_before", "bytes_needed", "target_met",
// "bytes_freed", "actions": [{kind, namespace, id, reason, unused_since,
// unused_seconds, estimated_bytes, freed_bytes, done, error,
// freed_snapshots}]}.
Json PruneJson(const admin::PruneResponse& response, absl::Time now);

}  // namespace snapledger::cli
