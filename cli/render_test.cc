#include "cli/render.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// 2026-11-23 12:04:28 UTC.
constexpr int64_t kNowSeconds = 1795435468;
const absl::Time kNow = absl::FromUnixSeconds(kNowSeconds);

int64_t SecondsAgo(int64_t s) { return (kNowSeconds - s) * 1000000000; }
int64_t SecondsAhead(int64_t s) { return (kNowSeconds + s) * 1000000000; }

admin::Snapshot Snap(const std::string& key, uint64_t id,
                     uint64_t parent_id = 0, const std::string& parent = "",
                     store::Kind kind = store::COMMITTED,
                     store::State state = store::LIVE, int64_t size = -1) {
  admin::Snapshot s;
  s.set_key(key);
  s.set_size_bytes(size);
  store::Record& r = *s.mutable_record();
  r.set_key(key);
  r.set_backend_id(id);
  r.set_parent_backend_id(parent_id);
  r.set_parent(parent);
  r.set_kind(kind);
  r.set_state(state);
  r.set_created_ns(SecondsAgo(180));
  r.set_updated_ns(SecondsAgo(60));
  return s;
}

// A queued removal: stored under snapledger.removed/<id>, shown under the key
// it had.
admin::Snapshot Removal(const std::string& former_key, uint64_t id,
                        store::State state, int64_t next_attempt_ns,
                        int attempts, const std::string& last_error = "") {
  admin::Snapshot s =
      Snap(former_key, id, 0, "", store::COMMITTED, state, 4096);
  store::Record& r = *s.mutable_record();
  r.set_key("snapledger.removed/" + std::to_string(id));
  r.set_removed_key(former_key);
  r.set_remove_requested_ns(SecondsAgo(600));
  r.set_next_attempt_ns(next_attempt_ns);
  r.set_remove_attempts(attempts);
  r.set_last_error(last_error);
  return s;
}

// --- Values -----------------------------------------------------------------

TEST(HumanSizeTest, BinaryUnitsWithOneDecimal) {
  EXPECT_EQ(HumanSize(0), "0 B");
  EXPECT_EQ(HumanSize(512), "512 B");
  EXPECT_EQ(HumanSize(1023), "1023 B");
  EXPECT_EQ(HumanSize(1024), "1.0 KiB");
  EXPECT_EQ(HumanSize(4096), "4.0 KiB");
  EXPECT_EQ(HumanSize(1536), "1.5 KiB");
  EXPECT_EQ(HumanSize(12897485), "12.3 MiB");
  EXPECT_EQ(HumanSize(int64_t{5} << 30), "5.0 GiB");
  EXPECT_EQ(HumanSize(int64_t{3} << 40), "3.0 TiB");
}

TEST(HumanSizeTest, RoundsUpIntoTheNextUnitAsPrinted) {
  EXPECT_EQ(HumanSize(1048575), "1.0 MiB");  // not "1024.0 KiB"
  EXPECT_EQ(HumanSize(1023 * 1024), "1023.0 KiB");
}

TEST(HumanSizeTest, UnmeasuredIsADash) { EXPECT_EQ(HumanSize(-1), "-"); }

TEST(TimeTest, FormatsUtcToTheSecond) {
  EXPECT_EQ(FormatTime(int64_t{kNowSeconds} * 1000000000 + 999999999),
            "2026-11-23 12:04:28");
  EXPECT_EQ(FormatTime(0), "-");
}

TEST(TimeTest, Rfc3339IsUtcWithTrimmedFraction) {
  EXPECT_EQ(Rfc3339(int64_t{kNowSeconds} * 1000000000),
            Json("2026-11-23T12:04:28Z"));
  EXPECT_EQ(Rfc3339(int64_t{kNowSeconds} * 1000000000 + 500000000),
            Json("2026-11-23T12:04:28.5Z"));
  EXPECT_TRUE(Rfc3339(0).is_null());
}

TEST(TimeTest, AgesAndDueTimesUseTheLargestWholeUnit) {
  EXPECT_EQ(Ago(SecondsAgo(0), kNow), "just now");
  EXPECT_EQ(Ago(SecondsAgo(42), kNow), "42s ago");
  EXPECT_EQ(Ago(SecondsAgo(180), kNow), "3m ago");
  EXPECT_EQ(Ago(SecondsAgo(5 * 3600 + 59), kNow), "5h ago");
  EXPECT_EQ(Ago(SecondsAgo(12 * 86400), kNow), "12d ago");
  EXPECT_EQ(Ago(0, kNow), "-");
  EXPECT_EQ(Until(SecondsAhead(42), kNow), "in 42s");
  EXPECT_EQ(Until(SecondsAgo(5), kNow), "now");
}

TEST(TimeTest, CompactDurationsKeepTwoUnits) {
  EXPECT_EQ(CompactDuration(absl::Seconds(0)), "0s");
  EXPECT_EQ(CompactDuration(absl::Seconds(42)), "42s");
  EXPECT_EQ(CompactDuration(absl::Seconds(130)), "2m10s");
  EXPECT_EQ(CompactDuration(absl::Minutes(10)), "10m");
  EXPECT_EQ(CompactDuration(absl::Seconds(5 * 3600 + 3 * 60 + 59)), "5h3m");
  EXPECT_EQ(CompactDuration(absl::Hours(76)), "3d4h");
  EXPECT_EQ(CompactDuration(absl::Milliseconds(1999)), "1s");
}

TEST(NamesTest, StatesAndKindsRoundTrip) {
  EXPECT_EQ(StateName(store::REMOVE_PENDING), "remove-pending");
  EXPECT_EQ(StateName(store::LIVE), "live");
  EXPECT_EQ(StateName(store::STUCK), "stuck");
  EXPECT_EQ(KindName(store::ACTIVE), "active");
  EXPECT_EQ(KindName(store::VIEW), "view");
  EXPECT_EQ(KindName(store::COMMITTED), "committed");
  for (const std::string& name : StateNames()) {
    store::State state;
    ASSERT_TRUE(ParseState(name, &state)) << name;
    EXPECT_EQ(StateName(state), name);
  }
  store::State state;
  ASSERT_TRUE(ParseState("REMOVE_PENDING", &state));  // the proto's name
  EXPECT_EQ(state, store::REMOVE_PENDING);
  EXPECT_FALSE(ParseState("gone", &state));
  EXPECT_FALSE(ParseState("unspecified", &state));
  store::Kind kind;
  ASSERT_TRUE(ParseKind("Committed", &kind));
  EXPECT_EQ(kind, store::COMMITTED);
  EXPECT_FALSE(ParseKind("snapshot", &kind));
  EXPECT_THAT(KindNames(), ElementsAre("view", "active", "committed"));
}

// --- Tables -----------------------------------------------------------------

TEST(TableTest, AlignsColumnsAndLeavesTheLastUnpadded) {
  Table t({"A", "LONGER", "Z"});
  t.AlignRight(1);
  t.AddRow({"xyz", "1", "end"});
  t.AddRow({"q", "12345678", ""});
  EXPECT_EQ(t.Render(),
            "A       LONGER   Z\n"
            "xyz          1   end\n"
            "q     12345678\n");
}

TEST(TableTest, CountsCodePointsAndFlattensControlCharacters) {
  Table t({"KEY", "X"});
  t.AddRow({"caf\xc3\xa9", "1"});  // "café": 4 code points, 5 bytes
  t.AddRow({"a\nb\tc", "2"});
  EXPECT_EQ(t.Render(),
            "KEY     X\n"
            "caf\xc3\xa9    1\n"
            "a b c   2\n");
}

TEST(RenderListTest, ShowsOneAlignedRowPerSnapshot) {
  admin::ListResponse list;
  *list.add_snapshots() =
      Snap("base", 1, 0, "", store::COMMITTED, store::LIVE, 4096);
  *list.add_snapshots() =
      Snap("default/3/ctr1", 2, 1, "base", store::ACTIVE, store::LIVE, -1);
  *list.add_snapshots() = Removal("old", 7, store::REMOVE_PENDING, 0, 0);
  EXPECT_EQ(RenderList(list, kNow),
            "KEY              PARENT   KIND        STATE               SIZE  "
            " AGE\n"
            "base             -        committed   live             4.0 KiB  "
            " 3m ago\n"
            "default/3/ctr1   base     active      live                   -  "
            " 3m ago\n"
            "old              -        committed   remove-pending   4.0 KiB  "
            " 3m ago\n");
}

TEST(TerminalSafeTest, EscapesWhatATerminalWouldActOn) {
  // ESC, DEL, C1 CSI (U+009B), RIGHT-TO-LEFT OVERRIDE (U+202E), a stray
  // byte, and a tab; newlines and ordinary UTF-8 stay.
  EXPECT_EQ(TerminalSafe("a\x1b[2Jb"), "a\\x1b[2Jb");
  EXPECT_EQ(TerminalSafe("x\x7fy"), "x\\x7fy");
  EXPECT_EQ(TerminalSafe("k\xc2\x9b"
                         "31m"),
            "k\\u009b31m");
  EXPECT_EQ(TerminalSafe("evil\xe2\x80\xaetxt.exe"), "evil\\u202etxt.exe");
  EXPECT_EQ(TerminalSafe("\xff\xc3"), "\\xff\\xc3");
  EXPECT_EQ(TerminalSafe("tab\there"), "tab\\x09here");
  EXPECT_EQ(TerminalSafe("caf\xc3\xa9\nline 2\n"), "caf\xc3\xa9\nline 2\n");
  // Overlong encodings and surrogates are not UTF-8.
  EXPECT_EQ(TerminalSafe("\xc0\xaf"), "\\xc0\\xaf");
  EXPECT_EQ(TerminalSafe("\xed\xa0\x80"), "\\xed\\xa0\\x80");
  // Idempotent: escaped text is plain ASCII.
  EXPECT_EQ(TerminalSafe(TerminalSafe("k\xc2\x9b")), "k\\u009b");
}

TEST(TableTest, ShowsBidiOverridesAndC1ControlsEscaped) {
  Table t({"KEY"});
  t.AddRow(
      {"a\xe2\x80\xae"
       "b"});
  t.AddRow(
      {"c\xc2\x9b"
       "d"});
  EXPECT_EQ(t.Render(), "KEY\na\\u202eb\nc\\u009bd\n");
}

TEST(RenderListTest, AHugeKeyIsShortenedInTablesButNotInJson) {
  admin::ListResponse list;
  const std::string huge = "ns/1/" + std::string(4 << 20, 'k') + "-tail";
  *list.add_snapshots() =
      Snap(huge, 1, 0, "", store::COMMITTED, store::LIVE, 4096);
  for (int i = 0; i < 13; ++i) {
    *list.add_snapshots() = Snap("small" + std::to_string(i), 2 + i, 0, "",
                                 store::COMMITTED, store::LIVE, 1);
  }
  const std::string text = RenderList(list, kNow);
  // 15 lines of at most ~kMaxCellCodePoints plus the other columns.
  EXPECT_LT(text.size(), 15 * (kMaxCellCodePoints + 80));
  EXPECT_THAT(text, ::testing::HasSubstr("ns/1/kkk"));
  EXPECT_THAT(text, ::testing::HasSubstr("kkk\xe2\x80\xa6kkk"));
  EXPECT_THAT(text, ::testing::HasSubstr("k-tail "));
  EXPECT_EQ(ListJson(list)[0]["key"].get<std::string>(), huge);
}

TEST(RenderListTest, EmptyListIsTheHeaderOnly) {
  EXPECT_EQ(RenderList(admin::ListResponse(), kNow),
            "KEY   PARENT   KIND   STATE   SIZE   AGE\n");
}

// --- Tree -------------------------------------------------------------------

TEST(RenderTreeTest, IndentsChildrenUnderParentsByBackendId) {
  admin::ListResponse list;
  // Out of order on purpose: roots and siblings are sorted by key.
  *list.add_snapshots() =
      Snap("leaf-b", 4, 2, "mid", store::ACTIVE, store::LIVE, -1);
  *list.add_snapshots() =
      Snap("mid", 2, 1, "base", store::COMMITTED, store::LIVE, 1536);
  *list.add_snapshots() =
      Snap("base", 1, 0, "", store::COMMITTED, store::LIVE, 4096);
  *list.add_snapshots() =
      Snap("leaf-a", 3, 2, "mid", store::VIEW, store::LIVE, -1);
  *list.add_snapshots() =
      Snap("another", 5, 0, "", store::COMMITTED, store::MISSING, 0);
  EXPECT_EQ(RenderTree(list),
            "another [committed, missing, 0 B]\n"
            "base [committed, live, 4.0 KiB]\n"
            "  \\_ mid [committed, live, 1.5 KiB]\n"
            "    \\_ leaf-a [view, live]\n"
            "    \\_ leaf-b [active, live]\n");
}

TEST(RenderTreeTest, AReusedKeyKeepsEachObjectsOwnChildren) {
  // "base" (object 1) was removed with the defer policy while "child-old"
  // still stood on it: it is queued as snapledger.removed/1 under its former
  // key, and a new "base" (object 10) now has a child of its own. Linking by
  // key would put both children under both bases.
  admin::ListResponse list;
  *list.add_snapshots() =
      Snap("base", 10, 0, "", store::COMMITTED, store::LIVE, 2048);
  *list.add_snapshots() =
      Snap("child-new", 11, 10, "base", store::ACTIVE, store::LIVE, -1);
  *list.add_snapshots() =
      Snap("child-old", 2, 1, "base", store::ACTIVE, store::LIVE, -1);
  *list.add_snapshots() = Removal("base", 1, store::REMOVE_PENDING, 0, 0);
  EXPECT_EQ(RenderTree(list),
            "base [committed, live, 2.0 KiB]\n"
            "  \\_ child-new [active, live]\n"
            "base [committed, remove-pending, 4.0 KiB] as "
            "snapledger.removed/1\n"
            "  \\_ child-old [active, live]\n");
}

TEST(RenderTreeTest, ASnapshotWhoseParentIsNotListedIsAMarkedRoot) {
  // Without --all the queued parent is hidden.
  admin::ListResponse list;
  *list.add_snapshots() =
      Snap("child-old", 2, 1, "base", store::ACTIVE, store::LIVE, -1);
  EXPECT_EQ(RenderTree(list),
            "child-old [active, live] (parent base [object 1] not listed)\n");
}

TEST(RenderTreeTest, ACycleInADamagedLedgerIsShownOnceAndEnds) {
  admin::ListResponse list;
  *list.add_snapshots() = Snap("x", 1, 2, "y");
  *list.add_snapshots() = Snap("y", 2, 1, "x");
  EXPECT_EQ(RenderTree(list),
            "x [committed, live]\n"
            "  \\_ y [committed, live]\n");
}

TEST(TreeJsonTest, NestsChildrenByBackendId) {
  admin::ListResponse list;
  *list.add_snapshots() =
      Snap("base", 10, 0, "", store::COMMITTED, store::LIVE, 2048);
  *list.add_snapshots() =
      Snap("child-new", 11, 10, "base", store::ACTIVE, store::LIVE, -1);
  *list.add_snapshots() =
      Snap("grandchild", 12, 11, "child-new", store::ACTIVE, store::LIVE, -1);
  *list.add_snapshots() =
      Snap("child-old", 2, 1, "base", store::ACTIVE, store::LIVE, -1);
  *list.add_snapshots() = Removal("base", 1, store::REMOVE_PENDING, 0, 0);
  const Json tree = TreeJson(list);
  ASSERT_TRUE(tree.is_array());
  ASSERT_EQ(tree.size(), 2u);
  EXPECT_EQ(tree[0]["ledger_key"], "base");
  ASSERT_EQ(tree[0]["children"].size(), 1u);
  EXPECT_EQ(tree[0]["children"][0]["key"], "child-new");
  ASSERT_EQ(tree[0]["children"][0]["children"].size(), 1u);
  EXPECT_EQ(tree[0]["children"][0]["children"][0]["key"], "grandchild");
  EXPECT_TRUE(tree[0]["children"][0]["children"][0]["children"].empty());
  EXPECT_EQ(tree[1]["key"], "base");
  EXPECT_EQ(tree[1]["ledger_key"], "snapledger.removed/1");
  ASSERT_EQ(tree[1]["children"].size(), 1u);
  EXPECT_EQ(tree[1]["children"][0]["key"], "child-old");
}

// --- Pending ----------------------------------------------------------------

TEST(RenderPendingTest, SaysWhatEachRemovalWaitsFor) {
  admin::PendingResponse pending;
  *pending.add_removals() = Removal("parent", 3, store::REMOVE_PENDING, 0, 0);
  *pending.add_removals() =
      Removal("busy", 4, store::REMOVE_PENDING, SecondsAhead(42), 2,
              "in use: mounted at /run/x (busy)");
  *pending.add_removals() =
      Removal("bad", 5, store::STUCK, 0, 10, "remove: EIO");
  // No error of its own: the latest attempt's is shown.
  admin::Snapshot due =
      Removal("due", 6, store::REMOVE_PENDING, SecondsAgo(1), 1);
  due.mutable_record()->add_remove_history()->set_error("first");
  due.mutable_record()->add_remove_history()->set_error("latest");
  *pending.add_removals() = due;
  EXPECT_EQ(RenderPending(pending, kNow),
            "KEY      LEDGER_KEY             STATE            ATTEMPTS   "
            "NEXT_ATTEMPT           LAST_ERROR\n"
            "parent   snapledger.removed/3   remove-pending          0   "
            "waiting for children   -\n"
            "busy     snapledger.removed/4   remove-pending          2   "
            "in 42s                 in use: mounted at /run/x (busy)\n"
            "bad      snapledger.removed/5   stuck                  10   "
            "stuck                  remove: EIO\n"
            "due      snapledger.removed/6   remove-pending          1   "
            "now                    latest\n");
}

TEST(RenderPendingTest, ARemovalHeldByItsContainerSaysWhich) {
  admin::PendingResponse pending;
  admin::Snapshot held =
      Removal("default/7/build-3", 8, store::REMOVE_PENDING, 0, 0);
  held.mutable_record()->set_held_by("default/build-3");
  *pending.add_removals() = held;
  EXPECT_EQ(
      RenderPending(pending, kNow),
      "KEY                 LEDGER_KEY             STATE            "
      "ATTEMPTS   NEXT_ATTEMPT                            LAST_ERROR\n"
      "default/7/build-3   snapledger.removed/8   remove-pending          "
      "0   waiting for container default/build-3   -\n");
  const Json j = PendingJson(pending);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["held_by"], "default/build-3");
  // Not waiting for children: the container holds it, not its children.
  EXPECT_EQ(j[0]["waiting_for_children"], false);
  EXPECT_TRUE(j[0]["next_attempt"].is_null());
}

TEST(PendingJsonTest, NextAttemptIsNullWhileWaitingOrStuck) {
  admin::PendingResponse pending;
  *pending.add_removals() = Removal("parent", 3, store::REMOVE_PENDING, 0, 0);
  *pending.add_removals() =
      Removal("busy", 4, store::REMOVE_PENDING, SecondsAhead(42), 2, "busy");
  *pending.add_removals() =
      Removal("bad", 5, store::STUCK, SecondsAhead(9), 10, "EIO");
  const Json j = PendingJson(pending);
  ASSERT_EQ(j.size(), 3u);
  EXPECT_TRUE(j[0]["next_attempt"].is_null());
  EXPECT_EQ(j[0]["waiting_for_children"], true);
  EXPECT_TRUE(j[0]["last_error"].is_null());
  EXPECT_EQ(j[1]["next_attempt"], "2026-11-23T12:05:10Z");
  EXPECT_EQ(j[1]["waiting_for_children"], false);
  EXPECT_EQ(j[1]["attempts"], 2);
  EXPECT_EQ(j[1]["last_error"], "busy");
  EXPECT_EQ(j[2]["state"], "stuck");
  EXPECT_TRUE(j[2]["next_attempt"].is_null());
  EXPECT_EQ(j[2]["waiting_for_children"], false);
  EXPECT_EQ(j[2]["key"], "bad");
  EXPECT_EQ(j[2]["ledger_key"], "snapledger.removed/5");
  EXPECT_EQ(j[2]["removal_requested"], "2026-11-23T11:54:28Z");
  EXPECT_TRUE(j[0]["held_by"].is_null());
}

// --- JSON of a snapshot -----------------------------------------------------

TEST(SnapshotJsonTest, HasTheDocumentedFieldsInOrder) {
  admin::Snapshot s =
      Snap("default/3/ctr1", 2, 1, "base", store::ACTIVE, store::LIVE, -1);
  s.set_namespace_("default");
  s.set_containerd_key("ctr1");
  const Json j = SnapshotJson(s);
  std::vector<std::string> keys;
  for (const auto& [key, value] : j.items()) keys.push_back(key);
  EXPECT_THAT(keys,
              ElementsAre("key", "ledger_key", "backend_id", "parent",
                          "parent_backend_id", "kind", "state", "namespace",
                          "containerd_key", "owner", "leases", "labels",
                          "created", "updated", "size", "inodes", "last_error",
                          "removal_requested", "attempts", "next_attempt",
                          "waiting_for_children", "held_by"));
  EXPECT_EQ(j["key"], "default/3/ctr1");
  EXPECT_EQ(j["ledger_key"], "default/3/ctr1");
  EXPECT_EQ(j["backend_id"], 2);
  EXPECT_EQ(j["parent"], "base");
  EXPECT_EQ(j["parent_backend_id"], 1);
  EXPECT_EQ(j["kind"], "active");
  EXPECT_EQ(j["state"], "live");
  EXPECT_EQ(j["namespace"], "default");
  EXPECT_EQ(j["containerd_key"], "ctr1");
  EXPECT_EQ(j["created"], "2026-11-23T12:01:28Z");
  EXPECT_EQ(j["updated"], "2026-11-23T12:03:28Z");
  EXPECT_EQ(j["attempts"], 0);
}

TEST(SnapshotJsonTest, AbsentValuesAreNullAndListsEmpty) {
  const Json j = SnapshotJson(Snap("base", 1));
  EXPECT_TRUE(j["parent"].is_null());
  EXPECT_TRUE(j["parent_backend_id"].is_null());
  EXPECT_TRUE(j["namespace"].is_null());
  EXPECT_TRUE(j["owner"].is_null());
  EXPECT_TRUE(j["size"].is_null());  // -1: not measured
  EXPECT_TRUE(j["last_error"].is_null());
  EXPECT_TRUE(j["next_attempt"].is_null());
  EXPECT_TRUE(j["removal_requested"].is_null());
  EXPECT_TRUE(j["leases"].is_array());
  EXPECT_TRUE(j["leases"].empty());
  EXPECT_TRUE(j["labels"].is_object());
  EXPECT_TRUE(j["labels"].empty());
}

TEST(SnapshotJsonTest, FilledValuesKeepTheirTypes) {
  admin::Snapshot s = Snap("base", 1, 0, "", store::COMMITTED, store::LIVE,
                           0);  // measured: empty
  s.set_owner("ctr-7");
  s.add_leases("build-42");
  s.mutable_record()->mutable_labels()->insert({"containerd.io/gc.root", "x"});
  s.mutable_record()->set_last_error("EIO");
  const Json j = SnapshotJson(s);
  EXPECT_EQ(j["size"], 0);
  EXPECT_TRUE(j["size"].is_number_integer());
  EXPECT_EQ(j["owner"], "ctr-7");
  EXPECT_EQ(j["leases"], Json::array({"build-42"}));
  EXPECT_EQ(j["labels"]["containerd.io/gc.root"], "x");
  EXPECT_EQ(j["last_error"], "EIO");
  EXPECT_EQ(j.dump().find("\"\""), std::string::npos) << j.dump();
}

TEST(ListJsonTest, IsAnArrayOfSnapshots) {
  admin::ListResponse list;
  EXPECT_EQ(ListJson(list), Json::array());
  *list.add_snapshots() = Snap("a", 1);
  *list.add_snapshots() = Removal("b", 2, store::STUCK, 0, 10);
  const Json j = ListJson(list);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[1]["key"], "b");
  EXPECT_EQ(j[1]["state"], "stuck");
  EXPECT_EQ(j[1]["size"], 4096);
}

// --- Inspect ----------------------------------------------------------------

admin::InspectResponse InspectOfStuckRemoval() {
  admin::InspectResponse response;
  admin::Snapshot s = Removal("sha256:ab", 9, store::STUCK, 0, 10,
                              "in use: mounted at /mnt (busy)");
  s.mutable_record()->set_parent("base");
  s.mutable_record()->set_parent_backend_id(1);
  s.mutable_record()->set_seq(77);
  s.mutable_record()->mutable_labels()->insert({"k", "v"});
  store::RemovalAttempt* a = s.mutable_record()->add_remove_history();
  a->set_at_ns(SecondsAgo(120));
  a->set_error("in use: mounted at /mnt (busy)");
  *response.mutable_snapshot() = s;
  response.add_children("child-1");
  store::HistoryEvent* e = response.add_history();
  e->set_seq(77);
  e->set_at_ns(SecondsAgo(60));
  e->set_op("stuck");
  e->set_key("sha256:ab");
  e->set_backend_id(9);
  e->set_detail("10 attempts");
  return response;
}

TEST(RenderInspectTest, ShowsEveryFieldChildrenAttemptsAndHistory) {
  const std::string out = RenderInspect(InspectOfStuckRemoval(), kNow);
  EXPECT_THAT(out, HasSubstr("key:             sha256:ab\n"));
  EXPECT_THAT(out, HasSubstr("ledger key:      snapledger.removed/9\n"));
  EXPECT_THAT(out, HasSubstr("state:           stuck\n"));
  EXPECT_THAT(out, HasSubstr("parent:          base (object 1)\n"));
  EXPECT_THAT(out, HasSubstr("size:            4.0 KiB (4096 bytes)\n"));
  EXPECT_THAT(out,
              HasSubstr("created:         2026-11-23 12:01:28 (3m ago)\n"));
  EXPECT_THAT(out, HasSubstr("attempts:        10\n"));
  EXPECT_THAT(out, HasSubstr("next attempt:    stuck: only on demand "
                             "(snapledger retry snapledger.removed/9)\n"));
  EXPECT_THAT(out, HasSubstr("labels:\n  k=v\n"));
  EXPECT_THAT(out, HasSubstr("children:\n  child-1\n"));
  EXPECT_THAT(out, HasSubstr("removal attempts (10 failed in all):\n"
                             "  TIME                  ERROR\n"
                             "  2026-11-23 12:02:28   in use: mounted at "
                             "/mnt (busy)\n"));
  EXPECT_THAT(out, HasSubstr("history (newest first):\n"
                             "  TIME                  OP      KEY         "
                             "DETAIL\n"
                             "  2026-11-23 12:03:28   stuck   sha256:ab   "
                             "10 attempts\n"));
}

TEST(RenderInspectTest, ALiveRecordHasNoRemovalFields) {
  admin::InspectResponse response;
  *response.mutable_snapshot() = Snap("base", 1);
  const std::string out = RenderInspect(response, kNow);
  EXPECT_THAT(out, HasSubstr("size:            - (not measured)\n"));
  EXPECT_THAT(out, HasSubstr("children:        -\n"));
  EXPECT_THAT(out, HasSubstr("history:         -\n"));
  EXPECT_THAT(out, Not(HasSubstr("attempts")));
  EXPECT_THAT(out, Not(HasSubstr("next attempt")));
}

admin::InspectResponse InspectOfOwnedRemoval() {
  admin::InspectResponse response;
  admin::Snapshot s =
      Removal("default/7/build-3", 8, store::REMOVE_PENDING, 0, 0);
  s.set_owner("build-3");
  s.add_leases("lease-a");
  s.add_leases("lease-b");
  s.mutable_record()->set_owner("build-3");
  s.mutable_record()->add_leases("lease-a");
  s.mutable_record()->add_leases("lease-b");
  s.mutable_record()->set_held_by("default/build-3");
  *response.mutable_snapshot() = s;
  return response;
}

TEST(RenderInspectTest, ShowsOwnerLeasesAndWhatHoldsTheRemoval) {
  const std::string out = RenderInspect(InspectOfOwnedRemoval(), kNow);
  EXPECT_THAT(out, HasSubstr("owner:           build-3\n"));
  EXPECT_THAT(out, HasSubstr("leases:          lease-a, lease-b\n"));
  EXPECT_THAT(out, HasSubstr("held by:         default/build-3\n"));
  EXPECT_THAT(out, HasSubstr("next attempt:    waiting for container "
                             "default/build-3\n"));
  // Without them: dashes for owner and leases, no "held by" line.
  const std::string plain = RenderInspect(InspectOfStuckRemoval(), kNow);
  EXPECT_THAT(plain, HasSubstr("owner:           -\n"));
  EXPECT_THAT(plain, HasSubstr("leases:          -\n"));
  EXPECT_THAT(plain, Not(HasSubstr("held by")));
}

TEST(InspectJsonTest, HasOwnerLeasesAndHeldBy) {
  const Json j = InspectJson(InspectOfOwnedRemoval());
  EXPECT_EQ(j["owner"], "build-3");
  EXPECT_EQ(j["leases"], Json::array({"lease-a", "lease-b"}));
  EXPECT_EQ(j["held_by"], "default/build-3");
  EXPECT_EQ(j["waiting_for_children"], false);
  const Json plain = InspectJson(InspectOfStuckRemoval());
  EXPECT_TRUE(plain["owner"].is_null());
  EXPECT_EQ(plain["leases"], Json::array());
  EXPECT_TRUE(plain["held_by"].is_null());
}

TEST(InspectJsonTest, AddsChildrenAttemptsAndHistory) {
  const Json j = InspectJson(InspectOfStuckRemoval());
  EXPECT_EQ(j["key"], "sha256:ab");
  EXPECT_EQ(j["children"], Json::array({"child-1"}));
  ASSERT_EQ(j["removal_attempts"].size(), 1u);
  EXPECT_EQ(j["removal_attempts"][0]["time"], "2026-11-23T12:02:28Z");
  EXPECT_EQ(j["removal_attempts"][0]["error"],
            "in use: mounted at /mnt (busy)");
  ASSERT_EQ(j["history"].size(), 1u);
  EXPECT_EQ(j["history"][0]["seq"], 77);
  EXPECT_EQ(j["history"][0]["op"], "stuck");
  EXPECT_EQ(j["history"][0]["time"], "2026-11-23T12:03:28Z");
  EXPECT_EQ(j["history"][0]["backend_id"], 9);
  EXPECT_TRUE(j["history"][0]["parent"].is_null());
  EXPECT_EQ(j["history"][0]["detail"], "10 attempts");
}

// --- Orphans, history -------------------------------------------------------

TEST(RenderOrphansTest, ShowsKeyReasonDetail) {
  admin::OrphansResponse response;
  admin::Orphan* o = response.add_orphans();
  *o->mutable_snapshot() = Snap("snapledger.adopted/12", 12);
  o->set_reason("adopted");
  o->set_detail("found by recovery");
  o = response.add_orphans();
  *o->mutable_snapshot() = Snap("default/4/x", 13);
  o->set_reason("missing");
  EXPECT_EQ(RenderOrphans(response),
            "KEY                     REASON    DETAIL\n"
            "snapledger.adopted/12   adopted   found by recovery\n"
            "default/4/x             missing   -\n");
  const Json j = OrphansJson(response);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["reason"], "adopted");
  EXPECT_EQ(j[0]["detail"], "found by recovery");
  EXPECT_EQ(j[0]["key"], "snapledger.adopted/12");
  EXPECT_TRUE(j[1]["detail"].is_null());
}

TEST(RenderHistoryTest, ShowsTimeOpKeyDetailInOrder) {
  admin::HistoryResponse response;
  store::HistoryEvent* e = response.add_events();
  e->set_seq(5);
  e->set_at_ns(SecondsAgo(10));
  e->set_op("remove-deferred");
  e->set_key("base");
  e->set_detail("queued as snapledger.removed/1");
  e = response.add_events();
  e->set_seq(4);
  e->set_at_ns(SecondsAgo(70));
  e->set_op("commit");
  e->set_key("base");
  EXPECT_EQ(RenderHistory(response),
            "TIME                  OP                KEY    DETAIL\n"
            "2026-11-23 12:04:18   remove-deferred   base   queued as "
            "snapledger.removed/1\n"
            "2026-11-23 12:03:18   commit            base   -\n");
  const Json j = HistoryJson(response);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["seq"], 5);
  EXPECT_EQ(j[1]["op"], "commit");
  EXPECT_TRUE(j[1]["detail"].is_null());
}

TEST(RenderHistoryTest, OwnershipOpsAreShownLikeTheOthers) {
  admin::HistoryResponse response;
  const struct {
    const char* op;
    const char* detail;
  } events[] = {{"reaped", "container default/build-3 deleted by the reaper"},
                {"leases", "lease-a"},
                {"owner", "build-3"}};
  int64_t ago = 10;
  for (const auto& [op, detail] : events) {
    store::HistoryEvent* e = response.add_events();
    e->set_at_ns(SecondsAgo(ago));
    e->set_op(op);
    e->set_key("default/7/build-3");
    e->set_detail(detail);
    ago += 10;
  }
  EXPECT_EQ(RenderHistory(response),
            "TIME                  OP       KEY                 DETAIL\n"
            "2026-11-23 12:04:18   reaped   default/7/build-3   container "
            "default/build-3 deleted by the reaper\n"
            "2026-11-23 12:04:08   leases   default/7/build-3   lease-a\n"
            "2026-11-23 12:03:58   owner    default/7/build-3   build-3\n");
  const Json j = HistoryJson(response);
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["op"], "reaped");
  EXPECT_EQ(j[1]["op"], "leases");
  EXPECT_EQ(j[2]["op"], "owner");
}

// --- Stats ------------------------------------------------------------------

admin::StatsResponse SomeStats() {
  admin::StatsResponse s;
  (*s.mutable_by_state())["REMOVE_PENDING"] = 2;
  (*s.mutable_by_state())["LIVE"] = 40;
  (*s.mutable_by_kind())["COMMITTED"] = 30;
  (*s.mutable_by_kind())["ACTIVE"] = 12;
  s.set_records(42);
  s.set_committed_bytes(uint64_t{3} << 30);
  s.set_removals_scheduled(1);
  s.set_removals_waiting_for_children(1);
  s.set_removals_stuck(0);
  s.set_oldest_pending_seconds(300);
  s.set_ledger_sequence(1234);
  s.set_backend_calls_abandoned(0);
  s.set_last_reconcile_unix(kNowSeconds - 180);
  s.set_last_reconcile_findings(0);
  s.set_live(true);
  s.set_remove_policy("defer");
  admin::WatcherStatus* w = s.mutable_watcher();
  w->set_enabled(true);
  w->set_address("/run/containerd/containerd.sock");
  w->set_connected(true);
  w->set_last_sync_ns(SecondsAgo(60));
  w->set_containers(12);
  w->set_leases(3);
  s.set_dead_containers(2);
  s.set_reaped_containers(1);
  return s;
}

TEST(RenderStatsTest, ShowsNameValueLines) {
  EXPECT_EQ(RenderStats(SomeStats(), kNow),
            "source:                         snapledgerd (live)\n"
            "records:                        42\n"
            "  live:                         40\n"
            "  remove-pending:               2\n"
            "kinds:\n"
            "  active:                       12\n"
            "  committed:                    30\n"
            "committed bytes:                3.0 GiB (3221225472 bytes)\n"
            "removals scheduled:             1\n"
            "removals waiting for children:  1\n"
            "removals stuck:                 0\n"
            "oldest pending removal:         5m old\n"
            "ledger sequence:                1234\n"
            "abandoned backend calls:        0\n"
            "last reconcile:                 2026-11-23 12:01:28 (3m ago), 0 "
            "findings\n"
            "remove policy:                  defer\n"
            "watcher:                        connected to "
            "/run/containerd/containerd.sock, 12 containers, 3 leases\n"
            "watcher last sync:              2026-11-23 12:03:28 (1m ago)\n"
            "dead containers:                2\n"
            "reaped containers:              1\n");
}

TEST(RenderStatsTest, AWatcherThatIsOffOrDisconnectedSaysSo) {
  admin::StatsResponse s = SomeStats();
  s.mutable_watcher()->set_connected(false);
  s.mutable_watcher()->set_last_error("UNAVAILABLE: connection refused");
  std::string out = RenderStats(s, kNow);
  EXPECT_THAT(out, HasSubstr("watcher:                        not connected "
                             "(/run/containerd/containerd.sock): "
                             "UNAVAILABLE: connection refused\n"));
  EXPECT_THAT(out, HasSubstr("dead containers:                2\n"));

  s.clear_watcher();
  s.mutable_watcher()->set_enabled(false);
  s.set_dead_containers(0);
  s.set_reaped_containers(0);
  out = RenderStats(s, kNow);
  EXPECT_THAT(out, HasSubstr("watcher:                        off (no "
                             "containerd_address configured)\n"
                             "dead containers:                - (no "
                             "watcher)\n"
                             "reaped containers:              - (no "
                             "watcher)\n"));
  EXPECT_THAT(out, Not(HasSubstr("last sync")));
}

TEST(RenderStatsTest, OfflineHasNoReconcile) {
  admin::StatsResponse s = SomeStats();
  s.set_live(false);
  s.set_last_reconcile_unix(0);
  s.set_oldest_pending_seconds(0);
  s.clear_watcher();  // the daemon's watcher is out of reach
  const std::string out = RenderStats(s, kNow);
  EXPECT_THAT(out, HasSubstr("source:                         read-only "
                             "ledger (offline)\n"));
  EXPECT_THAT(out, HasSubstr("last reconcile:                 - (offline)\n"));
  EXPECT_THAT(out, HasSubstr("oldest pending removal:         -\n"));
  EXPECT_THAT(out, HasSubstr("watcher:                        - (offline)\n"
                             "dead containers:                - (offline)\n"
                             "reaped containers:              - (offline)\n"));
}

TEST(StatsJsonTest, UsesOurStateNamesAndNulls) {
  Json j = StatsJson(SomeStats());
  EXPECT_EQ(j["by_state"], Json::parse(R"({"live": 40, "remove-pending": 2})"));
  EXPECT_EQ(j["by_kind"], Json::parse(R"({"active": 12, "committed": 30})"));
  EXPECT_EQ(j["committed_bytes"], uint64_t{3} << 30);
  EXPECT_EQ(j["last_reconcile"], "2026-11-23T12:01:28Z");
  EXPECT_EQ(j["live"], true);
  EXPECT_EQ(j["remove_policy"], "defer");
  admin::StatsResponse offline = SomeStats();
  offline.set_last_reconcile_unix(0);
  offline.set_oldest_pending_seconds(0);
  j = StatsJson(offline);
  EXPECT_TRUE(j["last_reconcile"].is_null());
  EXPECT_TRUE(j["last_reconcile_findings"].is_null());
  EXPECT_TRUE(j["oldest_pending_seconds"].is_null());
}

TEST(StatsJsonTest, HasTheWatcherAndTheContainerCounts) {
  Json j = StatsJson(SomeStats());
  EXPECT_EQ(j["watcher"], Json::parse(R"({
    "enabled": true,
    "address": "/run/containerd/containerd.sock",
    "connected": true,
    "last_sync": "2026-11-23T12:03:28Z",
    "last_error": null,
    "containers": 12,
    "leases": 3})"));
  EXPECT_EQ(j["dead_containers"], 2);
  EXPECT_EQ(j["reaped_containers"], 1);

  admin::StatsResponse off = SomeStats();
  off.clear_watcher();
  off.mutable_watcher()->set_enabled(false);
  j = StatsJson(off);
  EXPECT_EQ(j["watcher"]["enabled"], false);
  EXPECT_TRUE(j["watcher"]["address"].is_null());
  EXPECT_TRUE(j["watcher"]["last_sync"].is_null());
  EXPECT_TRUE(j["dead_containers"].is_null());
  EXPECT_TRUE(j["reaped_containers"].is_null());

  admin::StatsResponse offline = SomeStats();
  offline.set_live(false);
  offline.clear_watcher();
  j = StatsJson(offline);
  EXPECT_TRUE(j["watcher"].is_null());
  EXPECT_TRUE(j["dead_containers"].is_null());
}

// --- Reconcile, retry, check ------------------------------------------------

TEST(RenderReconcileTest, ListsFindingsThenASummary) {
  admin::ReconcileResponse r;
  store::Finding* f = r.add_findings();
  f->set_type(store::Finding::UNRECORDED_OBJECT);
  f->set_backend_id(17);
  f->set_detail("no record names it");
  f = r.add_findings();
  f->set_type(store::Finding::MISSING_OBJECT);
  f->set_key("default/3/x");
  f->set_backend_id(4);
  r.set_findings_total(3);
  r.set_records_judged(12);
  r.set_objects_listed(13);
  EXPECT_EQ(RenderReconcile(r, /*applied=*/false),
            "TYPE                KEY           BACKEND_ID   DETAIL\n"
            "unrecorded-object   -                     17   no record names "
            "it\n"
            "missing-object      default/3/x            4   -\n"
            "3 findings (12 records judged, 13 backend objects listed); "
            "showing 2\n"
            "nothing changed: `snapledger reconcile --apply` adopts "
            "unrecorded objects and marks records of missing ones\n");
  r.set_adopted(1);
  r.set_marked_missing(1);
  EXPECT_THAT(RenderReconcile(r, /*applied=*/true),
              HasSubstr("\napplied: 1 adopted, 1 marked missing\n"));
  const Json j = ReconcileJson(r, true);
  EXPECT_EQ(j["applied"], true);
  EXPECT_EQ(j["findings"][0]["type"], "unrecorded-object");
  EXPECT_TRUE(j["findings"][0]["key"].is_null());
  EXPECT_EQ(j["findings"][1]["backend_id"], 4);
  EXPECT_EQ(j["findings_total"], 3);
  EXPECT_EQ(j["adopted"], 1);
}

TEST(RenderReconcileTest, NoFindingsIsOneLine) {
  admin::ReconcileResponse r;
  r.set_records_judged(5);
  r.set_objects_listed(5);
  EXPECT_EQ(RenderReconcile(r, false),
            "ok: no findings (5 records judged, 5 backend objects listed)\n");
}

TEST(RenderRetryTest, NamesWhatWasRetried) {
  admin::RetryResponse r;
  EXPECT_EQ(RenderRetry(r), "nothing to retry\n");
  r.add_retried("snapledger.removed/5");
  r.add_retried("snapledger.removed/6");
  EXPECT_EQ(RenderRetry(r),
            "retrying snapledger.removed/5\nretrying snapledger.removed/6\n");
  EXPECT_EQ(RetryJson(r)["retried"],
            Json::array({"snapledger.removed/5", "snapledger.removed/6"}));
}

TEST(RenderCheckTest, OkOrOneLinePerProblem) {
  admin::CheckResponse r;
  EXPECT_EQ(RenderCheck(r), "ok: backend and ledger agree\n");
  EXPECT_EQ(CheckJson(r), Json::parse(R"({"ok": true, "problems": []})"));
  r.add_problems("1 removal stuck: snapledger.removed/5");
  r.add_problems("object 17 has no record");
  EXPECT_EQ(RenderCheck(r),
            "1 removal stuck: snapledger.removed/5\n"
            "object 17 has no record\n");
  EXPECT_EQ(CheckJson(r)["ok"], false);
  EXPECT_EQ(CheckJson(r)["problems"].size(), 2u);
}

// --- du ---------------------------------------------------------------------

admin::ListResponse Usage() {
  admin::ListResponse list;
  *list.add_snapshots() =
      Snap("small", 1, 0, "", store::COMMITTED, store::LIVE, 1024);
  *list.add_snapshots() =
      Snap("unmeasured", 2, 0, "", store::ACTIVE, store::LIVE, -1);
  *list.add_snapshots() =
      Snap("big", 3, 0, "", store::ACTIVE, store::LIVE, 12897485);
  *list.add_snapshots() =
      Snap("also-small", 4, 0, "", store::COMMITTED, store::LIVE, 1024);
  return list;
}

TEST(RenderDuTest, LargestFirstThenTotal) {
  EXPECT_EQ(RenderDu(Usage()),
            "    SIZE   KEY\n"
            "12.3 MiB   big\n"
            " 1.0 KiB   also-small\n"
            " 1.0 KiB   small\n"
            "       -   unmeasured\n"
            "12.3 MiB   total (4 snapshots, 1 not measured)\n");
}

TEST(DuJsonTest, ListsSizesAndTheTotal) {
  const Json j = DuJson(Usage());
  ASSERT_EQ(j["snapshots"].size(), 4u);
  EXPECT_EQ(j["snapshots"][0]["key"], "big");
  EXPECT_EQ(j["snapshots"][0]["size"], 12897485);
  EXPECT_TRUE(j["snapshots"][3]["size"].is_null());
  EXPECT_EQ(j["total"], 12897485 + 2048);
  EXPECT_EQ(j["unmeasured"], 1);
}

// --- dead -------------------------------------------------------------------

admin::DeadResponse SomeDead() {
  admin::DeadResponse r;
  admin::WatcherStatus* w = r.mutable_watcher();
  w->set_enabled(true);
  w->set_address("/run/containerd/containerd.sock");
  w->set_connected(true);
  w->set_last_sync_ns(SecondsAgo(30));
  w->set_containers(12);
  w->set_leases(3);
  r.set_grace_seconds(600);
  r.set_reaped_total(4);
  admin::DeadContainer* c = r.add_containers();
  c->set_namespace_("default");
  c->set_id("build-3");
  c->set_image("docker.io/library/busybox:latest");
  c->set_task("stopped");
  c->set_idle_since_ns(SecondsAgo(130));
  c->set_snapshot("default/7/build-3");
  c->add_pinned("default/7/build-3");
  c->add_pinned("default/4/sha256:c1d0e7a9");
  c->add_pinned("default/2/sha256:65e3ba4f");
  c->set_pinned_bytes(5347738);
  c->set_reaper("dry-run");
  c = r.add_containers();
  c->set_namespace_("k8s.io");
  c->set_id("ci-job-1842");
  c->set_task("none");
  c->set_idle_since_ns(SecondsAgo(3 * 3600 + 5 * 60));
  c->set_snapshot("k8s.io/31/ci-job-1842");
  c->add_pinned("k8s.io/31/ci-job-1842");
  c->set_pinned_bytes(0);
  return r;
}

TEST(RenderDeadTest, AWatcherLineThenOneRowPerContainer) {
  EXPECT_EQ(
      RenderDead(SomeDead(), kNow),
      "watcher: connected to /run/containerd/containerd.sock, 12 "
      "containers, 3 leases\n"
      "CONTAINER            TASK      IDLE    SNAPSHOT                "
      "PINNED      SIZE   REAPER\n"
      "default/build-3      stopped   2m10s   default/7/build-3            "
      "3   5.1 MiB   dry-run\n"
      "k8s.io/ci-job-1842   none      3h5m    k8s.io/31/ci-job-1842        "
      "1       0 B   -\n");
}

TEST(RenderDeadTest, NoneSaysTheGracePeriod) {
  admin::DeadResponse r = SomeDead();
  r.clear_containers();
  EXPECT_EQ(RenderDead(r, kNow),
            "watcher: connected to /run/containerd/containerd.sock, 12 "
            "containers, 3 leases\n"
            "no dead containers (grace 10m)\n");
}

TEST(RenderDeadTest, SaysWhenTheWatcherIsDownOrOff) {
  admin::DeadResponse r = SomeDead();
  r.clear_containers();
  r.mutable_watcher()->set_connected(false);
  r.mutable_watcher()->set_last_error(
      "UNAVAILABLE: failed to connect to all addresses");
  EXPECT_EQ(RenderDead(r, kNow),
            "watcher: not connected (/run/containerd/containerd.sock): "
            "UNAVAILABLE: failed to connect to all addresses\n"
            "no dead containers (grace 10m)\n");
  admin::DeadResponse off;
  off.mutable_watcher()->set_enabled(false);
  EXPECT_EQ(RenderDead(off, kNow),
            "watcher: off (no containerd_address configured): owners "
            "unknown\n"
            "no dead containers\n");
}

TEST(DeadJsonTest, HasTheDocumentedFields) {
  const Json j = DeadJson(SomeDead(), kNow);
  std::vector<std::string> keys;
  for (const auto& [key, value] : j.items()) keys.push_back(key);
  EXPECT_THAT(keys,
              ElementsAre("watcher", "grace_seconds", "reaped_total", "dead"));
  EXPECT_EQ(j["watcher"]["connected"], true);
  EXPECT_EQ(j["watcher"]["address"], "/run/containerd/containerd.sock");
  EXPECT_EQ(j["watcher"]["last_sync"], "2026-11-23T12:03:58Z");
  EXPECT_EQ(j["watcher"]["containers"], 12);
  EXPECT_EQ(j["grace_seconds"], 600);
  EXPECT_EQ(j["reaped_total"], 4);
  ASSERT_EQ(j["dead"].size(), 2u);
  const Json& d = j["dead"][0];
  keys.clear();
  for (const auto& [key, value] : d.items()) keys.push_back(key);
  EXPECT_THAT(keys,
              ElementsAre("namespace", "id", "image", "task", "idle_since",
                          "idle_seconds", "snapshot", "pinned", "pinned_count",
                          "pinned_bytes", "reaper"));
  EXPECT_EQ(d["namespace"], "default");
  EXPECT_EQ(d["id"], "build-3");
  EXPECT_EQ(d["image"], "docker.io/library/busybox:latest");
  EXPECT_EQ(d["task"], "stopped");
  EXPECT_EQ(d["idle_since"], "2026-11-23T12:02:18Z");
  EXPECT_EQ(d["idle_seconds"], 130);
  EXPECT_EQ(d["snapshot"], "default/7/build-3");
  EXPECT_EQ(d["pinned"],
            Json::array({"default/7/build-3", "default/4/sha256:c1d0e7a9",
                         "default/2/sha256:65e3ba4f"}));
  EXPECT_EQ(d["pinned_count"], 3);
  EXPECT_EQ(d["pinned_bytes"], 5347738);
  EXPECT_EQ(d["reaper"], "dry-run");
  EXPECT_TRUE(j["dead"][1]["image"].is_null());
  EXPECT_TRUE(j["dead"][1]["reaper"].is_null());
  EXPECT_EQ(j["dead"][1]["idle_seconds"], 3 * 3600 + 5 * 60);

  admin::DeadResponse off;
  off.mutable_watcher()->set_enabled(false);
  const Json none = DeadJson(off, kNow);
  EXPECT_EQ(none["watcher"]["enabled"], false);
  EXPECT_TRUE(none["watcher"]["last_sync"].is_null());
  EXPECT_EQ(none["dead"], Json::array());
}

}  // namespace
}  // namespace snapledger::cli
