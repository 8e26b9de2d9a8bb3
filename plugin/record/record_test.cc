#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/record/history.h"
#include "plugin/record/keys.h"
#include "plugin/record/labels.h"
#include "plugin/record/states.h"
#include "plugin/record/transitions.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

TEST(ParseProxyKeyTest, SplitsNamespaceSequenceAndKey) {
  EXPECT_EQ(ParseProxyKey("default/123/key"), (ProxyKey{"default", "key"}));
  // The key keeps its own slashes, spaces and dots.
  EXPECT_EQ(ParseProxyKey("k8s.io/7/sha256:abc/def"),
            (ProxyKey{"k8s.io", "sha256:abc/def"}));
  EXPECT_EQ(ParseProxyKey("ns/1/a b/../c/"), (ProxyKey{"ns", "a b/../c/"}));
  EXPECT_EQ(ParseProxyKey("ns/18446744073709551615/x"), (ProxyKey{"ns", "x"}));
}

TEST(ParseProxyKeyTest, RejectsWhatContainerdDoesNotProduce) {
  for (const char* bad : {"", "ns", "ns/", "ns/12", "ns/12/", "/12/key",
                          "ns//key", "ns/1x/key", "ns/-1/key", "ns/ 1/key",
                          "snapledger.removed/5", "snapledger.adopted/17"}) {
    EXPECT_EQ(ParseProxyKey(bad), std::nullopt) << bad;
  }
}

TEST(KeysTest, ReservedKeysAreSnapledgersOwn) {
  EXPECT_EQ(RemovedKey(42), "snapledger.removed/42");
  EXPECT_EQ(AdoptedKey(7), "snapledger.adopted/7");
  EXPECT_EQ(RemovedKeyOfParent(0), "");
  EXPECT_EQ(RemovedKeyOfParent(3), "snapledger.removed/3");
  EXPECT_TRUE(IsReservedKey(RemovedKey(1)));
  EXPECT_FALSE(IsReservedKey("default/1/snapledger.x"));
  EXPECT_TRUE(IsReservedKey("snapledger.anything"));
  // A containerd namespace may begin with "snapledger." (found by
  // tests/fuzz/fuzz_keys): its keys are the client's.
  EXPECT_FALSE(IsReservedKey("snapledger.ci/4/x"));
}

TEST(KeysTest, SetIdentityParsesTheKeyAndClearsOwnership) {
  Record r;
  r.set_key("k8s.io/12/sha256:abc");
  r.set_owner("default/c1");
  r.add_leases("l1");
  SetIdentity(&r);
  EXPECT_EQ(r.namespace_(), "k8s.io");
  EXPECT_EQ(r.containerd_key(), "sha256:abc");
  EXPECT_EQ(r.owner(), "");
  EXPECT_EQ(r.leases_size(), 0);
  r.set_key("not-a-proxy-key");
  SetIdentity(&r);
  EXPECT_EQ(r.namespace_(), "");
  EXPECT_EQ(r.containerd_key(), "");
}

TEST(StatesTest, PredicatesPartitionTheStates) {
  for (store::v1::State s :
       {store::v1::PREPARING, store::v1::COMMITTING, store::v1::REMOVING}) {
    EXPECT_TRUE(IsIntent(s));
    EXPECT_FALSE(IsQueuedRemoval(s));
  }
  for (store::v1::State s : {store::v1::REMOVE_PENDING, store::v1::STUCK}) {
    EXPECT_FALSE(IsIntent(s));
    EXPECT_TRUE(IsQueuedRemoval(s));
  }
  for (store::v1::State s :
       {store::v1::LIVE, store::v1::MISSING, store::v1::ADOPTED}) {
    EXPECT_FALSE(IsIntent(s));
    EXPECT_FALSE(IsQueuedRemoval(s));
  }
  Record r;
  r.set_state(store::v1::REMOVING);
  r.set_prior_state(store::v1::LIVE);
  EXPECT_FALSE(IsRemovalRecord(r));
  r.set_prior_state(store::v1::STUCK);
  EXPECT_TRUE(IsRemovalRecord(r));
  r.set_state(store::v1::ADOPTED);
  EXPECT_FALSE(HasTrackedOwner(r));
  r.set_state(store::v1::MISSING);
  EXPECT_TRUE(HasTrackedOwner(r));
}

TEST(HistoryTest, EveryOpHasItsOwnName) {
  std::set<std::string> names;
  for (int op = static_cast<int>(HistoryOp::kPrepare);
       op <= static_cast<int>(HistoryOp::kPruned); ++op) {
    const std::string name(HistoryOpName(static_cast<HistoryOp>(op)));
    EXPECT_NE(name, "unknown");
    EXPECT_TRUE(names.insert(name).second) << name;
  }
  EXPECT_EQ(HistoryOpName(HistoryOp::kRemoveDeferred), "remove-deferred");
}

TEST(HistoryTest, EventNamesTheClientKey) {
  Record r;
  r.set_key(RemovedKey(5));
  r.set_removed_key("default/3/x");
  r.set_backend_id(5);
  HistoryEvent e = MakeEvent(HistoryOp::kStuck, r, "why");
  EXPECT_EQ(e.op(), "stuck");
  EXPECT_EQ(e.key(), "default/3/x");
  EXPECT_EQ(e.backend_id(), 5u);
  EXPECT_EQ(e.detail(), "why");
}

TEST(LabelsTest, ValidateNamesTheOversizedKey) {
  EXPECT_TRUE(ValidateLabels({{"a", "b"}}).ok());
  absl::Status s = ValidateLabels({{"big", std::string(kMaxLabelBytes, 'x')}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("key: big"));
}

TEST(LabelsTest, ValidateBoundsTheLabelsTogether) {
  // Each label within its own limit; together exactly at the bound.
  const std::string value(kMaxLabelBytes - 8, 'x');
  Labels labels;
  for (size_t i = 0; labels.size() * kMaxLabelBytes < kMaxLabelsTotalBytes;
       ++i) {
    std::string key = absl::StrCat("k", 1000000 + i);  // 8 bytes
    labels[key] = value;
  }
  EXPECT_TRUE(ValidateLabels(labels).ok());
  labels["one-more"] = "x";
  absl::Status s = ValidateLabels(labels);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("maximum total size"));
}

TEST(LabelsTest, TextMustBeUtf8AndTheErrorNamesTheField) {
  EXPECT_TRUE(
      ValidateText("snapshot key", "caf\xc3\xa9/\xf0\x9f\x90\xb3").ok());
  absl::Status s = ValidateText("snapshot key", "ok\xff");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("snapshot key is not valid UTF-8 (at byte 2 of 3)"));
  // Overlong "/", a surrogate, a truncated sequence, past U+10FFFF.
  for (const char* bad :
       {"\xc0\xaf", "\xed\xa0\x80", "\xe2\x82", "\xf4\x90\x80\x80"}) {
    EXPECT_FALSE(ValidateText("x", bad).ok()) << bad;
  }
  s = ValidateLabels({{"k\xfe", "v"}});
  EXPECT_THAT(std::string(s.message()), HasSubstr("label key is not valid"));
  s = ValidateLabels({{"k", "v\xc3"}});
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("label k value is not valid"));
}

TEST(TransitionsTest, DeferMovesALiveRecordUnderItsRemovedKey) {
  Record live;
  live.set_key("default/1/a");
  live.set_state(store::v1::LIVE);
  live.set_backend_id(9);
  const absl::Time now = absl::FromUnixSeconds(1000);
  Ledger::Batch batch;
  Record pending = DeferRemoval(
      live, {.cause = "busy", .counts = true, .due = now + absl::Seconds(1)},
      now, &batch);
  EXPECT_EQ(pending.key(), RemovedKey(9));
  EXPECT_EQ(pending.removed_key(), "default/1/a");
  EXPECT_EQ(pending.state(), store::v1::REMOVE_PENDING);
  EXPECT_EQ(pending.remove_attempts(), 1);
  EXPECT_EQ(pending.next_attempt_ns(), absl::ToUnixNanos(now) + 1000000000);
  EXPECT_EQ(pending.last_error(), "busy");
  ASSERT_EQ(pending.remove_history_size(), 1);

  // Deferred again (waiting, no due time): same key, attempts kept.
  Ledger::Batch again;
  Record waiting = DeferRemoval(
      pending, {.cause = "children", .held_by = "ns/c"}, now, &again);
  EXPECT_EQ(waiting.key(), RemovedKey(9));
  EXPECT_EQ(waiting.remove_attempts(), 1);
  EXPECT_EQ(waiting.next_attempt_ns(), 0);
  EXPECT_EQ(waiting.held_by(), "ns/c");
  EXPECT_EQ(waiting.remove_history_size(), 2);
}

TEST(TransitionsTest, RemovalHistoryIsBounded) {
  Record r;
  for (int i = 0; i < kMaxRemovalHistory + 5; ++i) {
    RecordRemovalAttempt(&r, absl::FromUnixSeconds(i), "e", /*counts=*/true);
  }
  EXPECT_EQ(r.remove_history_size(), kMaxRemovalHistory);
  EXPECT_EQ(r.remove_attempts(), kMaxRemovalHistory + 5);
  EXPECT_EQ(r.remove_history(0).at_ns(),
            absl::ToUnixNanos(absl::FromUnixSeconds(5)));
}

TEST(TransitionsTest, AdoptAndMissingCarryTheirReason) {
  Ledger::Batch batch;
  Record adopted = AdoptObject(12, 3, "default/2/base", "found", &batch);
  EXPECT_EQ(adopted.key(), AdoptedKey(12));
  EXPECT_EQ(adopted.state(), store::v1::ADOPTED);
  EXPECT_EQ(adopted.parent(), "default/2/base");
  EXPECT_EQ(adopted.last_error(), "found");
  Record live;
  live.set_key("default/1/a");
  live.set_state(store::v1::LIVE);
  Record missing = MarkMissing(live, "gone", absl::Now(), &batch);
  EXPECT_EQ(missing.state(), store::v1::MISSING);
  EXPECT_EQ(missing.last_error(), "gone");
}

}  // namespace
}  // namespace snapledger
