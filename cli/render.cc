#include "cli/render.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "plugin/text/utf8.h"

namespace snapledger::cli {
namespace {

// Code points a terminal acts on or that reorder the text around them:
// C0 and C1 controls (ESC, CSI U+009B…), DEL, and Unicode's bidirectional
// formatting characters (U+202E RIGHT-TO-LEFT OVERRIDE and its kin), which
// can make a key read as something it is not.
bool IsUnsafeForTerminal(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x061C ||
         cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace

std::string TerminalSafe(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    char32_t cp = 0;
    const size_t len = DecodeUtf8(text, i, &cp);
    if (len == 0) {
      absl::StrAppend(
          &out, "\\x",
          absl::Hex(static_cast<unsigned char>(text[i]), absl::kZeroPad2));
      ++i;
      continue;
    }
    if (cp == '\n' || !IsUnsafeForTerminal(cp)) {
      out.append(text.substr(i, len));
    } else if (cp < 0x80) {
      absl::StrAppend(&out, "\\x", absl::Hex(cp, absl::kZeroPad2));
    } else {
      absl::StrAppend(&out, "\\u", absl::Hex(cp, absl::kZeroPad4));
    }
    i += len;
  }
  return out;
}

namespace {

// --- Small helpers ----------------------------------------------------------

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

Json OrNull(const std::string& s) { return s.empty() ? Json() : Json(s); }

// The key the client knows the snapshot by (the server fills it; older or
// partial responses fall back to the record).
std::string ClientKey(const admin::Snapshot& s) {
  if (!s.key().empty()) return s.key();
  if (!s.record().removed_key().empty()) return s.record().removed_key();
  return s.record().key();
}

bool IsQueuedRemoval(const store::Record& r) {
  return r.state() == store::REMOVE_PENDING || r.state() == store::STUCK;
}

// The most useful last error of a record: its own, else that of its latest
// removal attempt.
std::string LastError(const store::Record& r) {
  if (!r.last_error().empty()) return r.last_error();
  for (int i = r.remove_history_size() - 1; i >= 0; --i) {
    if (!r.remove_history(i).error().empty())
      return r.remove_history(i).error();
  }
  return "";
}

// What a queued removal waits for, for people.
std::string NextAttemptText(const store::Record& r, absl::Time now) {
  if (r.state() == store::STUCK) return "stuck";
  if (r.state() != store::REMOVE_PENDING) return "-";
  if (!r.held_by().empty()) {
    return absl::StrCat("waiting for container ", r.held_by());
  }
  if (r.next_attempt_ns() == 0) return "waiting for children";
  return Until(r.next_attempt_ns(), now);
}

size_t CodePoints(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Control characters flattened to spaces, so that a cell or field stays
// one line, and made terminal-safe (TerminalSafe).
std::string OneLine(std::string s) {
  for (char& c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20) c = ' ';
  }
  return TerminalSafe(s);
}

// At most kMaxCellCodePoints code points of `cell` (already OneLine): the
// beginning and the end, joined by an ellipsis, so that both a key's
// namespace and its digest stay visible.
std::string Truncated(const std::string& cell) {
  const size_t n = CodePoints(cell);
  if (n <= kMaxCellCodePoints) return cell;
  const size_t keep_head = (kMaxCellCodePoints - 1) / 2;
  const size_t keep_tail = kMaxCellCodePoints - 1 - keep_head;
  // The byte offset of code point `i` (cells are valid UTF-8 after OneLine).
  auto offset_of = [&cell](size_t i) {
    size_t seen = 0;
    for (size_t b = 0; b < cell.size(); ++b) {
      if ((static_cast<unsigned char>(cell[b]) & 0xC0) == 0x80) continue;
      if (seen++ == i) return b;
    }
    return cell.size();
  };
  return absl::StrCat(cell.substr(0, offset_of(keep_head)),
                      "\xe2\x80\xa6",  // U+2026 HORIZONTAL ELLIPSIS
                      cell.substr(offset_of(n - keep_tail)));
}

// "name: value" lines with the values aligned.
class Fields {
 public:
  void Add(std::string name, std::string value) {
    fields_.emplace_back(std::move(name), OneLine(std::move(value)));
  }
  std::string Render() const {
    size_t width = 0;
    for (const auto& [name, value] : fields_) {
      width = std::max(width, CodePoints(name) + 1);
    }
    std::string out;
    for (const auto& [name, value] : fields_) {
      out += name;
      out += ':';
      if (!value.empty()) {
        out.append(width + 2 - CodePoints(name) - 1, ' ');
        out += value;
      }
      out += '\n';
    }
    return out;
  }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

std::string Indent(const std::string& text, const std::string& prefix) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out += prefix;
    out.append(text, start, end - start);
    out += '\n';
    start = end + 1;
  }
  return out;
}

std::string SizeText(int64_t bytes) {
  if (bytes < 0) return "-";
  return HumanSize(bytes);
}

std::string TimeWithAge(int64_t ns, absl::Time now) {
  if (ns == 0) return "-";
  return absl::StrCat(FormatTime(ns), " (", Ago(ns, now), ")");
}

// --- The tree ---------------------------------------------------------------

// Orders siblings: by the client's key, then (a reused key) by ledger key,
// then by backend id.
bool TreeOrder(const admin::Snapshot* a, const admin::Snapshot* b) {
  const std::string ka = ClientKey(*a), kb = ClientKey(*b);
  if (ka != kb) return ka < kb;
  if (a->record().key() != b->record().key()) {
    return a->record().key() < b->record().key();
  }
  return a->record().backend_id() < b->record().backend_id();
}

// Parent links by backend id (ids are never reused, keys can be).
struct Forest {
  std::vector<const admin::Snapshot*> roots;
  std::map<uint64_t, std::vector<const admin::Snapshot*>> children;
  std::set<uint64_t> listed;

  explicit Forest(const admin::ListResponse& response) {
    for (const auto& s : response.snapshots()) {
      listed.insert(s.record().backend_id());
    }
    for (const auto& s : response.snapshots()) {
      const uint64_t parent = s.record().parent_backend_id();
      if (parent == 0 || parent == s.record().backend_id() ||
          !listed.contains(parent)) {
        roots.push_back(&s);
      } else {
        children[parent].push_back(&s);
      }
    }
    std::sort(roots.begin(), roots.end(), TreeOrder);
    for (auto& [id, kids] : children) {
      std::sort(kids.begin(), kids.end(), TreeOrder);
    }
  }

  bool ParentUnlisted(const admin::Snapshot& s) const {
    const uint64_t parent = s.record().parent_backend_id();
    return parent != 0 && !listed.contains(parent);
  }

  const std::vector<const admin::Snapshot*>& ChildrenOf(uint64_t id) const {
    static const std::vector<const admin::Snapshot*> kNone;
    auto it = children.find(id);
    return it == children.end() ? kNone : it->second;
  }

  // Calls visit(snapshot, depth) depth-first. Records that only a cycle
  // reaches (never written by the daemon, but a renderer must not loop on a
  // damaged ledger) are visited as roots at the end.
  template <typename Visit>
  void Walk(Visit&& visit) const {
    std::set<const admin::Snapshot*> seen;
    auto walk = [&](auto&& self, const admin::Snapshot* s, int depth) -> void {
      if (!seen.insert(s).second) return;
      visit(*s, depth);
      for (const admin::Snapshot* child : ChildrenOf(s->record().backend_id()))
        self(self, child, depth + 1);
    };
    for (const admin::Snapshot* root : roots) walk(walk, root, 0);
    std::vector<const admin::Snapshot*> rest;
    for (const auto& [id, kids] : children) {
      for (const admin::Snapshot* s : kids) {
        if (!seen.contains(s)) rest.push_back(s);
      }
    }
    std::sort(rest.begin(), rest.end(), TreeOrder);
    for (const admin::Snapshot* s : rest) walk(walk, s, 0);
  }
};

const char* const kStateNames[] = {"unspecified", "preparing",      "live",
                                   "committing",  "removing",       "missing",
                                   "adopted",     "remove-pending", "stuck"};
const char* const kKindNames[] = {"unspecified", "view", "active", "committed"};

}  // namespace

// --- Values -----------------------------------------------------------------

std::string StateName(store::State state) {
  const int i = static_cast<int>(state);
  if (i >= 0 && i < static_cast<int>(std::size(kStateNames))) {
    return kStateNames[i];
  }
  return absl::StrCat("state-", i);
}

std::string KindName(store::Kind kind) {
  const int i = static_cast<int>(kind);
  if (i >= 0 && i < static_cast<int>(std::size(kKindNames))) {
    return kKindNames[i];
  }
  return absl::StrCat("kind-", i);
}

bool ParseState(const std::string& name, store::State* state) {
  std::string canonical =
      absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
  for (size_t i = 1; i < std::size(kStateNames); ++i) {
    if (canonical == kStateNames[i]) {
      *state = static_cast<store::State>(i);
      return true;
    }
  }
  return false;
}

bool ParseKind(const std::string& name, store::Kind* kind) {
  const std::string canonical = absl::AsciiStrToLower(name);
  for (size_t i = 1; i < std::size(kKindNames); ++i) {
    if (canonical == kKindNames[i]) {
      *kind = static_cast<store::Kind>(i);
      return true;
    }
  }
  return false;
}

std::vector<std::string> StateNames() {
  return {std::begin(kStateNames) + 1, std::end(kStateNames)};
}

std::vector<std::string> KindNames() {
  return {std::begin(kKindNames) + 1, std::end(kKindNames)};
}

std::string HumanSize(int64_t bytes) {
  return bytes < 0 ? "-" : HumanBytes(bytes);
}

std::string FormatTime(int64_t unix_ns) {
  if (unix_ns == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixNanos(unix_ns),
                          absl::UTCTimeZone());
}

Json Rfc3339(int64_t unix_ns) {
  if (unix_ns == 0) return Json();
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", absl::FromUnixNanos(unix_ns),
                          absl::UTCTimeZone());
}

std::string WatcherText(const admin::WatcherStatus& w) {
  if (!w.enabled()) return "off (no containerd_address configured)";
  if (w.connected()) {
    return absl::StrCat("connected to ", w.address(), ", ", w.containers(),
                        w.containers() == 1 ? " container, " : " containers, ",
                        w.leases(), w.leases() == 1 ? " lease" : " leases");
  }
  std::string text = absl::StrCat("not connected (", w.address(), ")");
  if (!w.last_error().empty()) absl::StrAppend(&text, ": ", w.last_error());
  return text;
}

std::string ShortDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = -d;
  const int64_t s = absl::ToInt64Seconds(d);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 48 * 3600) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

std::string Ago(int64_t unix_ns, absl::Time now) {
  if (unix_ns == 0) return "-";
  const absl::Duration d = now - absl::FromUnixNanos(unix_ns);
  if (d < absl::Seconds(1)) return "just now";
  return absl::StrCat(ShortDuration(d), " ago");
}

std::string Until(int64_t unix_ns, absl::Time now) {
  if (unix_ns == 0) return "-";
  const absl::Duration d = absl::FromUnixNanos(unix_ns) - now;
  if (d < absl::Seconds(1)) return "now";
  return absl::StrCat("in ", ShortDuration(d));
}

// --- Table ------------------------------------------------------------------

Table::Table(std::vector<std::string> header) {
  rows_.push_back(std::move(header));
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(rows_[0].size());
  // Only padded columns are shortened: the last column pads nothing.
  for (size_t c = 0; c < cells.size(); ++c) {
    cells[c] = OneLine(std::move(cells[c]));
    if (c + 1 < cells.size()) cells[c] = Truncated(cells[c]);
  }
  rows_.push_back(std::move(cells));
}

void Table::AlignRight(size_t column) { right_.insert(column); }

std::string Table::Render() const {
  const size_t columns = rows_[0].size();
  std::vector<size_t> width(columns, 0);
  for (const auto& row : rows_) {
    for (size_t c = 0; c < columns; ++c) {
      width[c] = std::max(width[c], CodePoints(row[c]));
    }
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t c = 0; c < columns; ++c) {
      const size_t pad = width[c] - CodePoints(row[c]);
      const bool last = c + 1 == columns;
      if (right_.contains(c)) line.append(pad, ' ');
      line += row[c];
      if (!last) {
        if (!right_.contains(c)) line.append(pad, ' ');
        line.append(3, ' ');
      }
    }
    // An empty last cell would leave the separator behind.
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

// --- Commands: text ---------------------------------------------------------

std::string RenderList(const admin::ListResponse& response, absl::Time now) {
  Table table({"KEY", "PARENT", "KIND", "STATE", "SIZE", "AGE"});
  table.AlignRight(4);
  for (const auto& s : response.snapshots()) {
    const store::Record& r = s.record();
    table.AddRow({ClientKey(s), OrDash(r.parent()), KindName(r.kind()),
                  StateName(r.state()), SizeText(s.size_bytes()),
                  Ago(r.created_ns(), now)});
  }
  return table.Render();
}

std::string RenderTree(const admin::ListResponse& response) {
  const Forest forest(response);
  std::string out;
  forest.Walk([&](const admin::Snapshot& s, int depth) {
    const store::Record& r = s.record();
    if (depth > 0) {
      out.append(2 * depth, ' ');
      out += "\\_ ";
    }
    out += OneLine(ClientKey(s));
    out += absl::StrCat(" [", KindName(r.kind()), ", ", StateName(r.state()));
    if (s.size_bytes() >= 0)
      out += absl::StrCat(", ", HumanSize(s.size_bytes()));
    out += ']';
    if (r.key() != ClientKey(s)) out += absl::StrCat(" as ", OneLine(r.key()));
    if (depth == 0 && forest.ParentUnlisted(s)) {
      out += absl::StrCat(" (parent ", OneLine(OrDash(r.parent())), " [object ",
                          r.parent_backend_id(), "] not listed)");
    }
    out += '\n';
  });
  return out;
}

std::string RenderInspect(const admin::InspectResponse& response,
                          absl::Time now) {
  const admin::Snapshot& s = response.snapshot();
  const store::Record& r = s.record();
  Fields f;
  f.Add("key", ClientKey(s));
  f.Add("ledger key", r.key());
  f.Add("namespace", OrDash(s.namespace_()));
  f.Add("containerd key", OrDash(s.containerd_key()));
  f.Add("kind", KindName(r.kind()));
  f.Add("state", StateName(r.state()));
  f.Add("parent", r.parent().empty()
                      ? "-"
                      : absl::StrCat(r.parent(), " (object ",
                                     r.parent_backend_id(), ")"));
  f.Add("backend id", absl::StrCat(r.backend_id()));
  f.Add("created", TimeWithAge(r.created_ns(), now));
  f.Add("updated", TimeWithAge(r.updated_ns(), now));
  f.Add("size", s.size_bytes() < 0
                    ? "- (not measured)"
                    : absl::StrCat(HumanSize(s.size_bytes()), " (",
                                   s.size_bytes(), " bytes)"));
  if (r.inodes() > 0) f.Add("inodes", absl::StrCat(r.inodes()));
  f.Add("owner", OrDash(s.owner()));
  f.Add("leases", s.leases().empty() ? "-" : absl::StrJoin(s.leases(), ", "));
  f.Add("last error", OrDash(r.last_error()));
  f.Add("ledger seq", absl::StrCat(r.seq()));
  if (!r.commit_name().empty()) f.Add("commit name", r.commit_name());
  if (r.prior_state() != store::STATE_UNSPECIFIED) {
    f.Add("prior state", StateName(r.prior_state()));
  }
  if (IsQueuedRemoval(r)) {
    f.Add("removal asked", TimeWithAge(r.remove_requested_ns(), now));
    f.Add("attempts", absl::StrCat(r.remove_attempts()));
    if (!r.held_by().empty()) f.Add("held by", r.held_by());
    std::string next = NextAttemptText(r, now);
    if (r.state() == store::REMOVE_PENDING && r.held_by().empty() &&
        r.next_attempt_ns() != 0) {
      next = absl::StrCat(FormatTime(r.next_attempt_ns()), " (", next, ")");
    } else if (r.state() == store::STUCK) {
      next = absl::StrCat("stuck: only on demand (snapledger retry ", r.key(),
                          ")");
    }
    f.Add("next attempt", next);
  }
  if (r.labels().empty()) f.Add("labels", "-");
  if (response.children().empty()) f.Add("children", "-");
  if (response.history().empty()) f.Add("history", "-");
  std::string out = f.Render();

  if (!r.labels().empty()) {
    out += "labels:\n";
    std::map<std::string, std::string> sorted(r.labels().begin(),
                                              r.labels().end());
    for (const auto& [k, v] : sorted) {
      out += absl::StrCat("  ", OneLine(k), "=", OneLine(v), "\n");
    }
  }
  if (!response.children().empty()) {
    out += "children:\n";
    for (const auto& child : response.children()) {
      out += absl::StrCat("  ", OneLine(child), "\n");
    }
  }
  if (r.remove_history_size() > 0) {
    out += absl::StrCat("removal attempts (", r.remove_attempts(),
                        " failed in all):\n");
    Table t({"TIME", "ERROR"});
    for (const auto& a : r.remove_history()) {
      t.AddRow({FormatTime(a.at_ns()), a.error().empty() ? "ok" : a.error()});
    }
    out += Indent(t.Render(), "  ");
  }
  if (!response.history().empty()) {
    out += "history (newest first):\n";
    Table t({"TIME", "OP", "KEY", "DETAIL"});
    for (const auto& e : response.history()) {
      t.AddRow(
          {FormatTime(e.at_ns()), e.op(), OrDash(e.key()), OrDash(e.detail())});
    }
    out += Indent(t.Render(), "  ");
  }
  return out;
}

std::string RenderPending(const admin::PendingResponse& response,
                          absl::Time now) {
  Table table(
      {"KEY", "LEDGER_KEY", "STATE", "ATTEMPTS", "NEXT_ATTEMPT", "LAST_ERROR"});
  table.AlignRight(3);
  for (const auto& s : response.removals()) {
    const store::Record& r = s.record();
    table.AddRow({ClientKey(s), r.key(), StateName(r.state()),
                  absl::StrCat(r.remove_attempts()), NextAttemptText(r, now),
                  OrDash(LastError(r))});
  }
  return table.Render();
}

std::string RenderOrphans(const admin::OrphansResponse& response) {
  Table table({"KEY", "REASON", "DETAIL"});
  for (const auto& o : response.orphans()) {
    table.AddRow({ClientKey(o.snapshot()), o.reason(), OrDash(o.detail())});
  }
  return table.Render();
}

std::string RenderHistory(const admin::HistoryResponse& response) {
  Table table({"TIME", "OP", "KEY", "DETAIL"});
  for (const auto& e : response.events()) {
    table.AddRow(
        {FormatTime(e.at_ns()), e.op(), OrDash(e.key()), OrDash(e.detail())});
  }
  return table.Render();
}

namespace {

// Counts keyed by enum names, in enum order, shown by our names.
template <typename Enum>
std::vector<std::pair<std::string, uint64_t>> ByEnum(
    const google::protobuf::Map<std::string, uint64_t>& counts,
    bool (*parse)(const std::string&, Enum*), std::string (*name)(Enum)) {
  std::vector<std::tuple<int, std::string, uint64_t>> rows;
  for (const auto& [key, count] : counts) {
    Enum e{};
    if (parse(key, &e)) {
      rows.emplace_back(static_cast<int>(e), name(e), count);
    } else {
      rows.emplace_back(1 << 30, absl::AsciiStrToLower(key), count);
    }
  }
  std::sort(rows.begin(), rows.end());
  std::vector<std::pair<std::string, uint64_t>> out;
  for (auto& [order, n, count] : rows) out.emplace_back(std::move(n), count);
  return out;
}

std::vector<std::pair<std::string, uint64_t>> StatesOf(
    const admin::StatsResponse& r) {
  return ByEnum<store::State>(r.by_state(), ParseState, StateName);
}
std::vector<std::pair<std::string, uint64_t>> KindsOf(
    const admin::StatsResponse& r) {
  return ByEnum<store::Kind>(r.by_kind(), ParseKind, KindName);
}

}  // namespace

std::string RenderStats(const admin::StatsResponse& response, absl::Time now) {
  Fields f;
  f.Add("source",
        response.live() ? "snapledgerd (live)" : "read-only ledger (offline)");
  f.Add("records", absl::StrCat(response.records()));
  for (const auto& [name, count] : StatesOf(response)) {
    f.Add(absl::StrCat("  ", name), absl::StrCat(count));
  }
  f.Add("kinds", "");
  for (const auto& [name, count] : KindsOf(response)) {
    f.Add(absl::StrCat("  ", name), absl::StrCat(count));
  }
  f.Add(
      "committed bytes",
      absl::StrCat(HumanSize(static_cast<int64_t>(response.committed_bytes())),
                   " (", response.committed_bytes(), " bytes)"));
  f.Add("removals scheduled", absl::StrCat(response.removals_scheduled()));
  f.Add("removals waiting for children",
        absl::StrCat(response.removals_waiting_for_children()));
  f.Add("removals stuck", absl::StrCat(response.removals_stuck()));
  f.Add(
      "oldest pending removal",
      response.oldest_pending_seconds() > 0
          ? absl::StrCat(
                ShortDuration(absl::Seconds(response.oldest_pending_seconds())),
                " old")
          : "-");
  f.Add("ledger sequence", absl::StrCat(response.ledger_sequence()));
  f.Add("abandoned backend calls",
        absl::StrCat(response.backend_calls_abandoned()));
  if (response.last_reconcile_unix() > 0) {
    const int64_t ns = response.last_reconcile_unix() * int64_t{1000000000};
    f.Add("last reconcile",
          absl::StrCat(TimeWithAge(ns, now), ", ",
                       response.last_reconcile_findings(), " findings"));
  } else {
    f.Add("last reconcile", response.live() ? "never" : "- (offline)");
  }
  f.Add("remove policy", OrDash(response.remove_policy()));
  if (!response.has_watcher()) {
    const char* absent = response.live() ? "-" : "- (offline)";
    f.Add("watcher", absent);
    f.Add("dead containers", absent);
    f.Add("reaped containers", absent);
  } else if (!response.watcher().enabled()) {
    f.Add("watcher", WatcherText(response.watcher()));
    f.Add("dead containers", "- (no watcher)");
    f.Add("reaped containers", "- (no watcher)");
  } else {
    const admin::WatcherStatus& w = response.watcher();
    f.Add("watcher", WatcherText(w));
    f.Add("watcher last sync",
          w.last_sync_ns() == 0 ? "never" : TimeWithAge(w.last_sync_ns(), now));
    f.Add("dead containers", absl::StrCat(response.dead_containers()));
    f.Add("reaped containers", absl::StrCat(response.reaped_containers()));
  }
  return f.Render();
}

namespace {

std::string FindingTypeName(store::Finding::Type type) {
  switch (type) {
    case store::Finding::UNRECORDED_OBJECT:
      return "unrecorded-object";
    case store::Finding::MISSING_OBJECT:
      return "missing-object";
    case store::Finding::PARENT_MISMATCH:
      return "parent-mismatch";
    default:
      return absl::StrCat("type-", static_cast<int>(type));
  }
}

}  // namespace

std::string RenderReconcile(const admin::ReconcileResponse& response,
                            bool applied) {
  std::string out;
  const uint64_t total =
      std::max<uint64_t>(response.findings_total(), response.findings_size());
  if (response.findings_size() > 0) {
    Table table({"TYPE", "KEY", "BACKEND_ID", "DETAIL"});
    table.AlignRight(2);
    for (const auto& finding : response.findings()) {
      table.AddRow({FindingTypeName(finding.type()), OrDash(finding.key()),
                    absl::StrCat(finding.backend_id()),
                    OrDash(finding.detail())});
    }
    out += table.Render();
  }
  out += absl::StrCat(
      total == 0 ? "ok: no findings"
                 : absl::StrCat(total, total == 1 ? " finding" : " findings"),
      " (", response.records_judged(), " records judged, ",
      response.objects_listed(), " backend objects listed)");
  if (total > static_cast<uint64_t>(response.findings_size())) {
    out += absl::StrCat("; showing ", response.findings_size());
  }
  out += '\n';
  if (applied) {
    out += absl::StrCat("applied: ", response.adopted(), " adopted, ",
                        response.marked_missing(), " marked missing\n");
  } else if (total > 0) {
    out +=
        "nothing changed: `snapledger reconcile --apply` adopts unrecorded "
        "objects and marks records of missing ones\n";
  }
  return out;
}

std::string RenderRetry(const admin::RetryResponse& response) {
  if (response.retried().empty()) return "nothing to retry\n";
  std::string out;
  for (const auto& key : response.retried()) {
    out += absl::StrCat("retrying ", OneLine(key), "\n");
  }
  return out;
}

std::string RenderCheck(const admin::CheckResponse& response) {
  if (response.problems().empty()) return "ok: backend and ledger agree\n";
  std::string out;
  for (const auto& problem : response.problems()) {
    out += OneLine(problem);
    out += '\n';
  }
  return out;
}

namespace {

// Largest first; unmeasured last; ties by key.
std::vector<const admin::Snapshot*> BySizeDescending(
    const admin::ListResponse& response) {
  std::vector<const admin::Snapshot*> sorted;
  for (const auto& s : response.snapshots()) sorted.push_back(&s);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const admin::Snapshot* a, const admin::Snapshot* b) {
                     if (a->size_bytes() != b->size_bytes()) {
                       return a->size_bytes() > b->size_bytes();
                     }
                     return TreeOrder(a, b);
                   });
  return sorted;
}

}  // namespace

std::string RenderDu(const admin::ListResponse& response) {
  Table table({"SIZE", "KEY"});
  table.AlignRight(0);
  int64_t total = 0;
  size_t unmeasured = 0;
  for (const admin::Snapshot* s : BySizeDescending(response)) {
    table.AddRow({SizeText(s->size_bytes()), ClientKey(*s)});
    if (s->size_bytes() >= 0) {
      total += s->size_bytes();
    } else {
      ++unmeasured;
    }
  }
  std::string summary =
      absl::StrCat("total (", response.snapshots_size(),
                   response.snapshots_size() == 1 ? " snapshot" : " snapshots");
  if (unmeasured > 0)
    absl::StrAppend(&summary, ", ", unmeasured, " not measured");
  summary += ')';
  table.AddRow({HumanSize(total), summary});
  return table.Render();
}

namespace {

std::string ContainerName(const admin::DeadContainer& c) {
  return absl::StrCat(c.namespace_(), "/", c.id());
}

// How long the container has had no live task, as of `now`; nullopt when
// the report does not say since when.
std::optional<absl::Duration> Idle(const admin::DeadContainer& c,
                                   absl::Time now) {
  if (c.idle_since_ns() == 0) return std::nullopt;
  return std::max(absl::ZeroDuration(),
                  now - absl::FromUnixNanos(c.idle_since_ns()));
}

}  // namespace

std::string RenderDead(const admin::DeadResponse& response, absl::Time now) {
  std::string out = absl::StrCat("watcher: ", WatcherText(response.watcher()));
  if (!response.watcher().enabled()) out += ": owners unknown";
  out = OneLine(std::move(out));
  out += '\n';
  if (response.containers().empty()) {
    out += "no dead containers";
    if (response.grace_seconds() > 0) {
      absl::StrAppend(&out, " (grace ",
                      CompactDuration(absl::Seconds(response.grace_seconds())),
                      ")");
    }
    out += '\n';
    return out;
  }
  Table table(
      {"CONTAINER", "TASK", "IDLE", "SNAPSHOT", "PINNED", "SIZE", "REAPER"});
  table.AlignRight(4);
  table.AlignRight(5);
  for (const auto& c : response.containers()) {
    const std::optional<absl::Duration> idle = Idle(c, now);
    table.AddRow({ContainerName(c), OrDash(c.task()),
                  idle.has_value() ? CompactDuration(*idle) : "-",
                  OrDash(c.snapshot()), absl::StrCat(c.pinned_size()),
                  HumanSize(c.pinned_bytes()), OrDash(c.reaper())});
  }
  out += table.Render();
  return out;
}

// --- Commands: JSON ---------------------------------------------------------

Json SnapshotJson(const admin::Snapshot& s) {
  const store::Record& r = s.record();
  Json j = Json::object();
  j["key"] = ClientKey(s);
  j["ledger_key"] = r.key();
  j["backend_id"] = r.backend_id();
  j["parent"] = OrNull(r.parent());
  j["parent_backend_id"] =
      r.parent_backend_id() == 0 ? Json() : Json(r.parent_backend_id());
  j["kind"] = KindName(r.kind());
  j["state"] = StateName(r.state());
  j["namespace"] = OrNull(s.namespace_());
  j["containerd_key"] = OrNull(s.containerd_key());
  j["owner"] = OrNull(s.owner());
  j["leases"] = Json::array();
  for (const auto& lease : s.leases()) j["leases"].push_back(lease);
  j["labels"] = Json::object();
  std::map<std::string, std::string> labels(r.labels().begin(),
                                            r.labels().end());
  for (const auto& [k, v] : labels) j["labels"][k] = v;
  j["created"] = Rfc3339(r.created_ns());
  j["updated"] = Rfc3339(r.updated_ns());
  j["size"] = s.size_bytes() < 0 ? Json() : Json(s.size_bytes());
  j["inodes"] = r.inodes() > 0 ? Json(r.inodes()) : Json();
  j["last_error"] = OrNull(r.last_error());
  j["removal_requested"] = Rfc3339(r.remove_requested_ns());
  j["attempts"] = r.remove_attempts();
  j["next_attempt"] = r.state() == store::REMOVE_PENDING
                          ? Rfc3339(r.next_attempt_ns())
                          : Json();
  j["waiting_for_children"] = r.state() == store::REMOVE_PENDING &&
                              r.next_attempt_ns() == 0 && r.held_by().empty();
  j["held_by"] = OrNull(r.held_by());
  return j;
}

Json HistoryEventJson(const store::HistoryEvent& e) {
  Json j = Json::object();
  j["seq"] = e.seq();
  j["time"] = Rfc3339(e.at_ns());
  j["op"] = e.op();
  j["key"] = OrNull(e.key());
  j["backend_id"] = e.backend_id() == 0 ? Json() : Json(e.backend_id());
  j["parent"] = OrNull(e.parent());
  j["detail"] = OrNull(e.detail());
  return j;
}

Json ListJson(const admin::ListResponse& response) {
  Json j = Json::array();
  for (const auto& s : response.snapshots()) j.push_back(SnapshotJson(s));
  return j;
}

Json TreeJson(const admin::ListResponse& response) {
  const Forest forest(response);
  // Built bottom-up along the walk: a stack of the open nodes by depth.
  Json roots = Json::array();
  std::vector<Json*> open;
  forest.Walk([&](const admin::Snapshot& s, int depth) {
    Json node = SnapshotJson(s);
    node["children"] = Json::array();
    open.resize(depth);
    Json& parent_list = depth == 0 ? roots : (*open.back())["children"];
    parent_list.push_back(std::move(node));
    open.push_back(&parent_list.back());
  });
  return roots;
}

Json InspectJson(const admin::InspectResponse& response) {
  Json j = SnapshotJson(response.snapshot());
  j["children"] = Json::array();
  for (const auto& child : response.children()) j["children"].push_back(child);
  j["removal_attempts"] = Json::array();
  for (const auto& a : response.snapshot().record().remove_history()) {
    j["removal_attempts"].push_back(
        Json{{"time", Rfc3339(a.at_ns())}, {"error", OrNull(a.error())}});
  }
  j["history"] = Json::array();
  for (const auto& e : response.history()) {
    j["history"].push_back(HistoryEventJson(e));
  }
  return j;
}

Json PendingJson(const admin::PendingResponse& response) {
  Json j = Json::array();
  for (const auto& s : response.removals()) {
    Json item = SnapshotJson(s);
    // Pending rows show the error of the latest attempt when the record has
    // none of its own; so does the JSON.
    item["last_error"] = OrNull(LastError(s.record()));
    j.push_back(std::move(item));
  }
  return j;
}

Json OrphansJson(const admin::OrphansResponse& response) {
  Json j = Json::array();
  for (const auto& o : response.orphans()) {
    Json item = SnapshotJson(o.snapshot());
    item["reason"] = o.reason();
    item["detail"] = OrNull(o.detail());
    j.push_back(std::move(item));
  }
  return j;
}

Json HistoryJson(const admin::HistoryResponse& response) {
  Json j = Json::array();
  for (const auto& e : response.events()) j.push_back(HistoryEventJson(e));
  return j;
}

Json StatsJson(const admin::StatsResponse& response) {
  Json j = Json::object();
  j["live"] = response.live();
  j["records"] = response.records();
  j["by_state"] = Json::object();
  for (const auto& [name, count] : StatesOf(response))
    j["by_state"][name] = count;
  j["by_kind"] = Json::object();
  for (const auto& [name, count] : KindsOf(response))
    j["by_kind"][name] = count;
  j["committed_bytes"] = response.committed_bytes();
  j["removals_scheduled"] = response.removals_scheduled();
  j["removals_waiting_for_children"] = response.removals_waiting_for_children();
  j["removals_stuck"] = response.removals_stuck();
  j["oldest_pending_seconds"] = response.oldest_pending_seconds() > 0
                                    ? Json(response.oldest_pending_seconds())
                                    : Json();
  j["ledger_sequence"] = response.ledger_sequence();
  j["backend_calls_abandoned"] = response.backend_calls_abandoned();
  j["last_reconcile"] =
      response.last_reconcile_unix() > 0
          ? Rfc3339(response.last_reconcile_unix() * int64_t{1000000000})
          : Json();
  j["last_reconcile_findings"] = response.last_reconcile_unix() > 0
                                     ? Json(response.last_reconcile_findings())
                                     : Json();
  j["remove_policy"] = OrNull(response.remove_policy());
  // null offline (nothing known) and, for the counts, without a watcher.
  j["watcher"] =
      response.has_watcher() ? WatcherJson(response.watcher()) : Json();
  const bool watching = response.has_watcher() && response.watcher().enabled();
  j["dead_containers"] = watching ? Json(response.dead_containers()) : Json();
  j["reaped_containers"] =
      watching ? Json(response.reaped_containers()) : Json();
  return j;
}

Json ReconcileJson(const admin::ReconcileResponse& response, bool applied) {
  Json j = Json::object();
  j["applied"] = applied;
  j["findings"] = Json::array();
  for (const auto& f : response.findings()) {
    j["findings"].push_back(Json{{"type", FindingTypeName(f.type())},
                                 {"key", OrNull(f.key())},
                                 {"backend_id", f.backend_id()},
                                 {"detail", OrNull(f.detail())}});
  }
  j["findings_total"] =
      std::max<uint64_t>(response.findings_total(), response.findings_size());
  j["records_judged"] = response.records_judged();
  j["objects_listed"] = response.objects_listed();
  j["adopted"] = response.adopted();
  j["marked_missing"] = response.marked_missing();
  return j;
}

Json RetryJson(const admin::RetryResponse& response) {
  Json j = Json::object();
  j["retried"] = Json::array();
  for (const auto& key : response.retried()) j["retried"].push_back(key);
  return j;
}

Json CheckJson(const admin::CheckResponse& response) {
  Json j = Json::object();
  j["ok"] = response.problems().empty();
  j["problems"] = Json::array();
  for (const auto& p : response.problems()) j["problems"].push_back(p);
  return j;
}

Json DuJson(const admin::ListResponse& response) {
  Json j = Json::object();
  j["snapshots"] = Json::array();
  int64_t total = 0;
  uint64_t unmeasured = 0;
  for (const admin::Snapshot* s : BySizeDescending(response)) {
    j["snapshots"].push_back(SnapshotJson(*s));
    if (s->size_bytes() >= 0) {
      total += s->size_bytes();
    } else {
      ++unmeasured;
    }
  }
  j["total"] = total;
  j["unmeasured"] = unmeasured;
  return j;
}

Json WatcherJson(const admin::WatcherStatus& w) {
  Json j = Json::object();
  j["enabled"] = w.enabled();
  j["address"] = OrNull(w.address());
  j["connected"] = w.connected();
  j["last_sync"] = Rfc3339(w.last_sync_ns());
  j["last_error"] = OrNull(w.last_error());
  j["containers"] = w.containers();
  j["leases"] = w.leases();
  return j;
}

Json DeadJson(const admin::DeadResponse& response, absl::Time now) {
  Json j = Json::object();
  j["watcher"] = WatcherJson(response.watcher());
  j["grace_seconds"] = response.grace_seconds();
  j["reaped_total"] = response.reaped_total();
  j["dead"] = Json::array();
  for (const auto& c : response.containers()) {
    Json item = Json::object();
    item["namespace"] = c.namespace_();
    item["id"] = c.id();
    item["image"] = OrNull(c.image());
    item["task"] = OrNull(c.task());
    item["idle_since"] = Rfc3339(c.idle_since_ns());
    const std::optional<absl::Duration> idle = Idle(c, now);
    item["idle_seconds"] =
        idle.has_value() ? Json(absl::ToInt64Seconds(*idle)) : Json();
    item["snapshot"] = OrNull(c.snapshot());
    item["pinned"] = Json::array();
    for (const auto& key : c.pinned()) item["pinned"].push_back(key);
    item["pinned_count"] = c.pinned_size();
    item["pinned_bytes"] = c.pinned_bytes();
    item["reaper"] = OrNull(c.reaper());
    j["dead"].push_back(std::move(item));
  }
  return j;
}

// --- prune -------------------------------------------------------------------

namespace {

std::optional<absl::Duration> Unused(const admin::PruneAction& a,
                                     absl::Time now) {
  if (a.unused_since_ns() == 0) return std::nullopt;
  return now - absl::FromUnixNanos(a.unused_since_ns());
}

}  // namespace

std::string RenderPrune(const admin::PruneResponse& response, absl::Time now) {
  std::string out =
      absl::StrCat("prune", response.dry_run() ? " (dry run)" : "", ": ",
                   response.policy(), "\n");
  absl::StrAppend(&out, "disk: ", HumanSize(response.free_bytes_before()),
                  " free of ", HumanSize(response.total_bytes()));
  if (response.used_bytes_before() >= 0) {
    absl::StrAppend(&out, ", snapledger holds ",
                    HumanSize(response.used_bytes_before()));
  }
  if (response.bytes_needed() > 0) {
    absl::StrAppend(&out, "; ", HumanSize(response.bytes_needed()), " to free");
  }
  out += "\n";
  if (response.actions().empty()) {
    out += "nothing to prune\n";
    return out;
  }
  Table table({"KIND", "NAME", "REASON", "UNUSED", "BYTES", "RESULT"});
  table.AlignRight(4);
  for (const admin::PruneAction& a : response.actions()) {
    const std::optional<absl::Duration> unused = Unused(a, now);
    std::string result = response.dry_run() ? "would go"
                         : a.done()         ? "freed"
                                    : absl::StrCat("failed: ", a.error());
    table.AddRow(
        {a.kind(), absl::StrCat(a.namespace_(), "/", a.id()), a.reason(),
         unused.has_value() ? CompactDuration(*unused) : "-",
         HumanSize(response.dry_run() || !a.done() ? a.estimated_bytes()
                                                   : a.freed_bytes()),
         OneLine(result)});
  }
  out += table.Render();
  absl::StrAppend(&out, response.actions_size(),
                  response.actions_size() == 1 ? " action, " : " actions, ",
                  HumanSize(response.bytes_freed()),
                  response.dry_run() ? " would be freed" : " freed");
  if (response.bytes_needed() > 0) {
    out += response.target_met() ? "; target met" : "; target not met";
  }
  out += "\n";
  return out;
}

Json PruneJson(const admin::PruneResponse& response, absl::Time now) {
  Json j = Json::object();
  j["dry_run"] = response.dry_run();
  j["policy"] = response.policy();
  j["total_bytes"] = response.total_bytes();
  j["free_bytes_before"] = response.free_bytes_before();
  j["free_bytes_after"] = response.free_bytes_after();
  j["used_bytes_before"] = response.used_bytes_before() >= 0
                               ? Json(response.used_bytes_before())
                               : Json();
  j["bytes_needed"] = response.bytes_needed();
  j["target_met"] = response.target_met();
  j["bytes_freed"] = response.bytes_freed();
  j["actions"] = Json::array();
  for (const admin::PruneAction& a : response.actions()) {
    Json item = Json::object();
    item["kind"] = a.kind();
    item["namespace"] = a.namespace_();
    item["id"] = a.id();
    item["reason"] = a.reason();
    item["unused_since"] = Rfc3339(a.unused_since_ns());
    const std::optional<absl::Duration> unused = Unused(a, now);
    item["unused_seconds"] =
        unused.has_value() ? Json(absl::ToInt64Seconds(*unused)) : Json();
    item["estimated_bytes"] = a.estimated_bytes();
    item["freed_bytes"] = a.freed_bytes();
    item["done"] = a.done();
    item["error"] = OrNull(a.error());
    item["freed_snapshots"] = Json::array();
    for (const auto& key : a.freed_snapshots()) {
      item["freed_snapshots"].push_back(key);
    }
    j["actions"].push_back(std::move(item));
  }
  return j;
}

}  // namespace snapledger::cli
