#include "store/ledger.h"

#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/merge_operator.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ledger_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    Reopen();
  }
  void TearDown() override {
    ledger_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen(bool read_only = false, uint64_t history_limit = 100000) {
    ledger_.reset();
    Ledger::Options options;
    options.path = dir_ + "/ledger";
    options.read_only = read_only;
    options.history_limit = history_limit;
    auto ledger = Ledger::Open(options);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = *std::move(ledger);
  }
  // `parent` is given by key; its backend id is looked up when it exists.
  Record Make(std::string key, std::string parent, uint64_t id) {
    Record r;
    if (!parent.empty()) {
      auto p = ledger_->Get(parent);
      if (p.ok()) r.set_parent_backend_id(p->backend_id());
    }
    r.set_key(std::move(key));
    r.set_parent(std::move(parent));
    r.set_backend_id(id);
    r.set_kind(store::v1::COMMITTED);
    r.set_state(store::v1::LIVE);
    return r;
  }
  void Put(const Record& r) {
    Ledger::Batch b;
    b.Put(r);
    ASSERT_TRUE(ledger_->Write(b).ok());
  }

  std::string dir_;
  std::unique_ptr<Ledger> ledger_;
};

HistoryEvent Event(std::string op, std::string key) {
  HistoryEvent e;
  e.set_op(std::move(op));
  e.set_key(std::move(key));
  return e;
}

TEST_F(LedgerTest, HistoryIsWrittenWithTheChangeNewestFirst) {
  Ledger::Batch b;
  b.Put(Make("a", "", 1));
  b.Note(Event("prepare", "a"));
  ASSERT_TRUE(ledger_->Write(b).ok());
  const uint64_t first = ledger_->LastSequence();
  Ledger::Batch c;
  c.Put(Make("b", "", 2));
  c.Note(Event("prepare", "b"));
  c.Note(Event("labels", "a"));
  ASSERT_TRUE(ledger_->Write(c).ok());

  auto all = ledger_->History("", 10);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].op(), "labels");  // newest first, later index first
  EXPECT_EQ((*all)[1].key(), "b");
  EXPECT_EQ((*all)[2].key(), "a");
  EXPECT_EQ((*all)[2].seq(), first);
  EXPECT_EQ((*all)[0].seq(), first + 1);
  EXPECT_GT((*all)[0].at_ns(), 0);

  auto of_a = ledger_->History("a", 10);
  ASSERT_TRUE(of_a.ok());
  ASSERT_EQ(of_a->size(), 2u);
  EXPECT_EQ((*of_a)[0].op(), "labels");
  EXPECT_EQ((*of_a)[1].op(), "prepare");

  auto limited = ledger_->History("", 1);
  ASSERT_EQ(limited->size(), 1u);
  auto older = ledger_->History("", 10, first + 1);
  ASSERT_TRUE(older.ok());
  ASSERT_EQ(older->size(), 1u);
  EXPECT_EQ((*older)[0].key(), "a");

  // A failed write records no history.
  Reopen(/*read_only=*/true);
  Ledger::Batch d;
  d.Note(Event("x", "x"));
  EXPECT_FALSE(ledger_->Write(d).ok());
  EXPECT_EQ(ledger_->History("x", 10)->size(), 0u);
}

TEST_F(LedgerTest, HistoryIsBoundedByItsLimit) {
  Reopen(false, /*history_limit=*/300);
  for (int i = 0; i < 1100; ++i) {
    Ledger::Batch b;
    b.Note(Event("labels", absl::StrCat("k", i)));
    ASSERT_TRUE(ledger_->Write(b).ok());
  }
  auto all = ledger_->History("", 100000);
  ASSERT_TRUE(all.ok());
  // Trimmed every 256 writes to the last 300: between 300 and 556 remain.
  EXPECT_GE(all->size(), 300u);
  EXPECT_LE(all->size(), 556u);
  EXPECT_EQ(all->front().key(), "k1099");
}

TEST_F(LedgerTest, GetMissingIsNotFound) {
  auto r = ledger_->Get("nope");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("nope"));
}

TEST_F(LedgerTest, PutGetRoundTripAndSequenceStamp) {
  Record r = Make("default/1/layer", "", 7);
  (*r.mutable_labels())["a"] = "b";
  Put(r);
  auto got = ledger_->Get("default/1/layer");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->backend_id(), 7u);
  EXPECT_EQ(got->labels().at("a"), "b");
  EXPECT_EQ(got->seq(), ledger_->LastSequence());
  EXPECT_GT(got->seq(), 0u);
}

TEST_F(LedgerTest, SequenceGrowsWithEveryWriteAndSurvivesReopen) {
  Put(Make("a", "", 1));
  uint64_t first = ledger_->LastSequence();
  Put(Make("b", "", 2));
  EXPECT_EQ(ledger_->LastSequence(), first + 1);
  uint64_t before = ledger_->LastSequence();
  Reopen();
  EXPECT_EQ(ledger_->LastSequence(), before);
  Put(Make("c", "", 3));
  EXPECT_EQ(ledger_->Get("c")->seq(), before + 1);
}

TEST_F(LedgerTest, ChildrenIndexFollowsPutsAndDeletes) {
  Put(Make("p", "", 1));
  Put(Make("p/child b", "p", 3));
  Put(Make("p/child a", "p", 2));
  Put(Make("pp", "", 4));
  Put(Make("x", "pp", 5));
  EXPECT_THAT(*ledger_->Children(1), ElementsAre("p/child a", "p/child b"));
  EXPECT_THAT(*ledger_->Children(1, 1), ElementsAre("p/child a"));
  EXPECT_THAT(*ledger_->Children(4), ElementsAre("x"));
  EXPECT_THAT(*ledger_->Children(5), IsEmpty());

  Ledger::Batch b;
  b.Delete(*ledger_->Get("p/child a"));
  ASSERT_TRUE(ledger_->Write(b).ok());
  EXPECT_THAT(*ledger_->Children(1), ElementsAre("p/child b"));
  EXPECT_EQ(ledger_->Get("p/child a").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(LedgerTest, BatchIsAtomicRename) {
  Put(Make("p", "", 1));
  Record active = Make("k", "p", 2);
  active.set_kind(store::v1::ACTIVE);
  Put(active);
  Ledger::Batch b;
  b.Delete(active);
  Record committed = Make("name", "p", 2);
  b.Put(committed);
  ASSERT_TRUE(ledger_->Write(b).ok());
  EXPECT_THAT(*ledger_->Children(1), ElementsAre("name"));
  EXPECT_FALSE(ledger_->Get("k").ok());
  EXPECT_EQ(ledger_->Get("name")->backend_id(), 2u);
}

TEST_F(LedgerTest, ForEachVisitsInKeyOrderAndStops) {
  for (std::string k : {"c", "a", "b"}) Put(Make(k, "", 1));
  std::vector<std::string> seen;
  ASSERT_TRUE(ledger_
                  ->ForEach([&](const Record& r) {
                    seen.push_back(r.key());
                    return true;
                  })
                  .ok());
  EXPECT_THAT(seen, ElementsAre("a", "b", "c"));
  seen.clear();
  ASSERT_TRUE(ledger_
                  ->ForEach([&](const Record& r) {
                    seen.push_back(r.key());
                    return false;
                  })
                  .ok());
  EXPECT_THAT(seen, ElementsAre("a"));
}

TEST_F(LedgerTest, KeysWithOddBytesAreOpaque) {
  const std::string odd = std::string("ns/1/a b/../c\xc3\xa9", 15);
  Put(Make(odd, "", 1));
  Put(Make("child", odd, 2));
  EXPECT_TRUE(ledger_->Get(odd).ok());
  EXPECT_THAT(*ledger_->Children(1), ElementsAre("child"));
}

TEST_F(LedgerTest, AReusedKeyDoesNotInheritChildren) {
  Put(Make("k", "", 1));
  Put(Make("child", "k", 2));
  Put(Make("k", "", 3));  // same key, a new object
  EXPECT_THAT(*ledger_->Children(3), IsEmpty());
  EXPECT_THAT(*ledger_->Children(1), ElementsAre("child"));
}

TEST_F(LedgerTest, AllocatedIdsAreUniqueAcrossThreadsAndRestarts) {
  std::vector<std::thread> threads;
  std::vector<std::vector<uint64_t>> got(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) got[t].push_back(ledger_->AllocateId());
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint64_t> all;
  for (auto& v : got) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 4000u);
  EXPECT_EQ(all.count(0), 0u);

  // An id that reached storage is never handed out again after a restart.
  uint64_t id = ledger_->AllocateId();
  Put(Make("x", "", id));
  Reopen();
  EXPECT_GT(ledger_->AllocateId(), id);
  ledger_->ReserveIdsUpTo(id + 100);
  EXPECT_GT(ledger_->AllocateId(), id + 100);
}

TEST_F(LedgerTest, ConcurrentWritersAllLand) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        Ledger::Batch b;
        b.Put(Make("k" + std::to_string(t) + "/" + std::to_string(i), "", 1));
        EXPECT_TRUE(ledger_->Write(b).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  int n = 0;
  ASSERT_TRUE(ledger_->ForEach([&](const Record&) { return ++n; }).ok());
  EXPECT_EQ(n, 200);
  EXPECT_EQ(ledger_->LastSequence(), 200u);
}

TEST_F(LedgerTest, ReadOnlyOpenReadsButRefusesWrites) {
  Put(Make("a", "", 1));
  Reopen(/*read_only=*/true);
  EXPECT_TRUE(ledger_->Get("a").ok());
  Ledger::Batch b;
  b.Put(Make("b", "", 2));
  EXPECT_EQ(ledger_->Write(b).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(LedgerTest, ReadOnlyOpenWorksBesideAWriter) {
  Put(Make("a", "", 1));
  Ledger::Options options;
  options.path = dir_ + "/ledger";
  options.read_only = true;
  auto reader = Ledger::Open(options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->Get("a").ok());
}

TEST_F(LedgerTest, SettingsSurviveAReopenAndAreNotRecords) {
  EXPECT_EQ(ledger_->GetSetting("backend").status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(ledger_->PutSetting("backend", "overlayfs").ok());
  Reopen();
  absl::StatusOr<std::string> backend = ledger_->GetSetting("backend");
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ(*backend, "overlayfs");
  int records = 0;
  ASSERT_TRUE(ledger_
                  ->ForEach([&](const Record&) {
                    ++records;
                    return true;
                  })
                  .ok());
  EXPECT_EQ(records, 0);
  Reopen(/*read_only=*/true);
  EXPECT_EQ(ledger_->PutSetting("backend", "native").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*ledger_->GetSetting("backend"), "overlayfs");
}

TEST_F(LedgerTest, OpenOfUnusablePathIsUnavailable) {
  ledger_.reset();
  Ledger::Options options;
  options.path = "/proc/self/snapledger-cannot-create";
  auto r = Ledger::Open(options);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.status().message()),
              ::testing::HasSubstr("/proc/self/snapledger-cannot-create"));
  options.path = "";
  EXPECT_EQ(Ledger::Open(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LedgerTest, WritesAreCountedByHowTheyWereMade) {
  Put(Make("a", "", 1));
  Ledger::Batch deferred(Ledger::Durability::kDeferred);
  deferred.Put(Make("b", "", 2));
  ASSERT_TRUE(ledger_->Write(deferred).ok());
  EXPECT_EQ(ledger_->write_counts().synced, 1u);
  EXPECT_EQ(ledger_->write_counts().unsynced, 1u);
  // Readers of this ledger see a deferred write at once.
  EXPECT_TRUE(ledger_->Get("b").ok());
  // A clean close makes it durable.
  Reopen();
  EXPECT_TRUE(ledger_->Get("b").ok());
}

// Durability across a killed process. The writes run in a child process that
// dies without closing the ledger (_exit, as after kill -9): gtest's
// "threadsafe" death tests run the child as a fresh run of this test, which
// finds the ledger's directory in the environment.
class LedgerDurabilityTest : public ::testing::Test {
 protected:
  static constexpr char kDirVariable[] = "SNAPLEDGER_LEDGER_TEST_DIR";

  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    if (const char* inherited = getenv(kDirVariable)) {
      dir_ = inherited;  // the child
      return;
    }
    char tmpl[] = "/tmp/ledger_durability_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    owner_ = true;
    ASSERT_EQ(setenv(kDirVariable, dir_.c_str(), 1), 0);
  }
  void TearDown() override {
    if (!owner_) return;
    unsetenv(kDirVariable);
    std::filesystem::remove_all(dir_);
  }

  absl::StatusOr<std::unique_ptr<Ledger>> Open(bool sync) {
    Ledger::Options options;
    options.path = dir_ + "/ledger";
    options.sync = sync;
    // Nothing hands deferred writes to the OS within the test.
    options.deferred_flush_delay = absl::Hours(1);
    return Ledger::Open(options);
  }

  static Record Live(std::string key, uint64_t id) {
    Record r;
    r.set_key(std::move(key));
    r.set_backend_id(id);
    r.set_kind(store::v1::COMMITTED);
    r.set_state(store::v1::LIVE);
    return r;
  }

  // In the child: opens the ledger, makes the writes (key, deferred?) in
  // order, and dies without closing it.
  void WriteAndDie(bool sync,
                   const std::vector<std::pair<std::string, bool>>& writes) {
    auto ledger = Open(sync);
    if (!ledger.ok()) _exit(2);
    uint64_t id = 1;
    for (const auto& [key, deferred] : writes) {
      Ledger::Batch b(deferred ? Ledger::Durability::kDeferred
                               : Ledger::Durability::kSynced);
      b.Put(Live(key, id++));
      if (!(*ledger)->Write(b).ok()) _exit(3);
    }
    _exit(0);
  }

  // After the child died: which of `keys` the reopened ledger holds.
  std::vector<std::string> Surviving(const std::vector<std::string>& keys) {
    auto ledger = Open(/*sync=*/true);
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    std::vector<std::string> found;
    if (!ledger.ok()) return found;
    for (const std::string& key : keys) {
      if ((*ledger)->Get(key).ok()) found.push_back(key);
    }
    return found;
  }

  std::string dir_;
  bool owner_ = false;
};

TEST_F(LedgerDurabilityTest, AKilledProcessLosesADeferredWriteNotASyncedOne) {
  EXPECT_EXIT(WriteAndDie(/*sync=*/true, {{"synced", false}, {"lost", true}}),
              ::testing::ExitedWithCode(0), "");
  EXPECT_THAT(Surviving({"synced", "lost"}), ElementsAre("synced"));
}

TEST_F(LedgerDurabilityTest, ASyncedWriteCarriesTheDeferredOnesBeforeIt) {
  EXPECT_EXIT(WriteAndDie(/*sync=*/true, {{"deferred-1", true},
                                          {"deferred-2", true},
                                          {"synced", false},
                                          {"after", true}}),
              ::testing::ExitedWithCode(0), "");
  EXPECT_THAT(Surviving({"deferred-1", "deferred-2", "synced", "after"}),
              ElementsAre("deferred-1", "deferred-2", "synced"));
}

TEST_F(LedgerDurabilityTest, WithoutSyncEveryWriteReachesTheOSAtOnce) {
  // durability = "async": nothing is synced, and nothing waits in the
  // process either, so a killed process loses nothing.
  EXPECT_EXIT(WriteAndDie(/*sync=*/false, {{"a", false}, {"b", true}}),
              ::testing::ExitedWithCode(0), "");
  EXPECT_THAT(Surviving({"a", "b"}), ElementsAre("a", "b"));
}

TEST_F(LedgerDurabilityTest, TheFlusherHandsDeferredWritesToTheOSWhenIdle) {
  {
    Ledger::Options options;
    options.path = dir_ + "/ledger";
    options.deferred_flush_delay = absl::Milliseconds(1);
    auto ledger = Ledger::Open(options);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    Ledger::Batch b(Ledger::Durability::kDeferred);
    b.Put(Live("a", 1));
    ASSERT_TRUE((*ledger)->Write(b).ok());
    // A reader in another process sees it once the flusher ran.
    Ledger::Options ro = options;
    ro.read_only = true;
    bool seen = false;
    for (int i = 0; i < 500 && !seen; ++i) {
      auto reader = Ledger::Open(ro);
      ASSERT_TRUE(reader.ok()) << reader.status();
      seen = (*reader)->Get("a").ok();
      if (!seen) absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_TRUE(seen);
  }
}

// A stand-in for the ledger's merge operator, for a raw open in a test (the
// values merged there do not matter to it).
class KeepLast : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice*,
             const rocksdb::Slice& value, std::string* new_value,
             rocksdb::Logger*) const override {
    *new_value = value.ToString();
    return true;
  }
  const char* Name() const override { return "snapledger.MaxU64"; }
};

// The keys `fn` visits, in order.
template <typename Fn>
std::vector<std::string> Keys(Fn fn) {
  std::vector<std::string> keys;
  absl::Status s = fn([&](const Record& r) {
    keys.push_back(r.key());
    return true;
  });
  EXPECT_TRUE(s.ok()) << s;
  return keys;
}

TEST_F(LedgerTest, StateOwnedAndNameIndexesFollowTheRecords) {
  Record a = Make("default/1/a", "", 1);
  a.set_namespace_("default");
  a.set_containerd_key("a");
  Put(a);
  Record b = Make("default/2/a", "", 2);  // same containerd key, new seq
  b.set_namespace_("default");
  b.set_containerd_key("a");
  b.set_state(store::v1::PREPARING);
  b.set_owner("c1");
  Put(b);
  const auto preparing = [&](auto fn) {
    return ledger_->ForEachInState(store::v1::PREPARING, fn);
  };
  const auto owned = [&](auto fn) { return ledger_->ForEachOwned(fn); };
  EXPECT_THAT(Keys(preparing), ElementsAre("default/2/a"));
  EXPECT_THAT(Keys(owned), ElementsAre("default/2/a"));
  auto named = ledger_->ByName("default", "a");
  ASSERT_TRUE(named.ok());
  ASSERT_EQ(named->size(), 2u);
  EXPECT_EQ((*named)[0].key(), "default/1/a");
  EXPECT_TRUE(ledger_->ByName("default", "b")->empty());
  EXPECT_FALSE(
      ledger_
          ->ForEachInState(store::v1::LIVE, [](const Record&) { return true; })
          .ok());

  // A state change and a cleared owner move the entries.
  b.set_state(store::v1::LIVE);
  b.clear_owner();
  b.add_leases("l1");
  Put(b);
  EXPECT_THAT(Keys(preparing), IsEmpty());
  EXPECT_THAT(Keys(owned), ElementsAre("default/2/a"));
  b.clear_leases();
  Put(b);
  EXPECT_THAT(Keys(owned), IsEmpty());

  // A rename in one batch (as a deferred removal moves its record).
  Record pending = b;
  pending.set_key("snapledger.removed/2");
  pending.set_state(store::v1::REMOVE_PENDING);
  pending.set_held_by("default/c1");
  Ledger::Batch batch;
  batch.Delete(b);
  batch.Put(pending);
  ASSERT_TRUE(ledger_->Write(batch).ok());
  EXPECT_THAT(Keys([&](auto fn) {
                return ledger_->ForEachInState(store::v1::REMOVE_PENDING, fn);
              }),
              ElementsAre("snapledger.removed/2"));
  EXPECT_THAT(Keys(owned), ElementsAre("snapledger.removed/2"));
  named = ledger_->ByName("default", "a");
  ASSERT_TRUE(named.ok());
  ASSERT_EQ(named->size(), 2u);
  EXPECT_EQ((*named)[1].key(), "snapledger.removed/2");
}

TEST_F(LedgerTest, CountsAreKeptByEveryWrite) {
  Put(Make("a", "", 1));
  Put(Make("b", "", 2));
  Record c = Make("c", "", 3);
  c.set_state(store::v1::REMOVE_PENDING);  // no due time: waiting
  Put(c);
  Record d = Make("d", "", 4);
  d.set_state(store::v1::REMOVE_PENDING);
  d.set_next_attempt_ns(1);
  Put(d);
  auto counts = ledger_->CountRecords();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->by_state[store::v1::LIVE], 2u);
  EXPECT_EQ(counts->by_state[store::v1::REMOVE_PENDING], 2u);
  EXPECT_EQ(counts->pending_without_due, 1u);
  EXPECT_EQ(counts->total(), 4u);

  c.set_next_attempt_ns(5);  // now scheduled
  Put(c);
  Ledger::Batch batch;
  batch.Delete(Make("a", "", 1));
  batch.Delete(d);
  ASSERT_TRUE(ledger_->Write(batch).ok());
  Reopen();
  counts = ledger_->CountRecords();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->by_state[store::v1::LIVE], 1u);
  EXPECT_EQ(counts->by_state[store::v1::REMOVE_PENDING], 1u);
  EXPECT_EQ(counts->pending_without_due, 0u);
  EXPECT_EQ(counts->total(), 2u);
}

TEST_F(LedgerTest, CountsByKindAndHeldRemovalsAreKept) {
  Record view = Make("v", "", 1);
  view.set_kind(store::v1::VIEW);
  Put(view);
  Record active = Make("a", "", 2);
  active.set_kind(store::v1::ACTIVE);
  Put(active);
  Put(Make("c", "", 3));
  Record held = Make("snapledger.removed/4", "", 4);
  held.set_kind(store::v1::ACTIVE);
  held.set_state(store::v1::REMOVE_PENDING);
  held.set_held_by("default/ctr");
  Put(held);
  Record waiting = Make("snapledger.removed/5", "", 5);
  waiting.set_state(store::v1::REMOVE_PENDING);
  Put(waiting);
  auto counts = ledger_->CountRecords();
  ASSERT_TRUE(counts.ok());
  using Key = std::pair<RecordState, RecordKind>;
  EXPECT_EQ((counts->by_state_kind[Key{store::v1::LIVE, store::v1::VIEW}]), 1u);
  EXPECT_EQ((counts->by_state_kind[Key{store::v1::LIVE, store::v1::ACTIVE}]),
            1u);
  EXPECT_EQ((counts->by_state_kind[Key{store::v1::LIVE, store::v1::COMMITTED}]),
            1u);
  EXPECT_EQ(
      (counts
           ->by_state_kind[Key{store::v1::REMOVE_PENDING, store::v1::ACTIVE}]),
      1u);
  EXPECT_EQ(counts->pending_without_due, 2u);
  EXPECT_EQ(counts->pending_held, 1u);

  // The container went: the held removal is due, no longer held.
  held.clear_held_by();
  held.set_next_attempt_ns(7);
  Put(held);
  counts = ledger_->CountRecords();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->pending_without_due, 1u);
  EXPECT_EQ(counts->pending_held, 0u);
  EXPECT_EQ(counts->by_state[store::v1::REMOVE_PENDING], 2u);
}

TEST_F(LedgerTest, OldestRemovalRequestComesFromTheRequestIndex) {
  auto none = ledger_->OldestRemovalRequest(store::v1::REMOVE_PENDING);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_TRUE(absl::IsInvalidArgument(
      ledger_->OldestRemovalRequest(store::v1::LIVE).status()));
  Record later = Make("snapledger.removed/1", "", 1);
  later.set_state(store::v1::REMOVE_PENDING);
  later.set_remove_requested_ns(2000);
  Put(later);
  Record older = Make("snapledger.removed/2", "", 2);
  older.set_state(store::v1::REMOVE_PENDING);
  older.set_remove_requested_ns(1000);
  Put(older);
  auto oldest = ledger_->OldestRemovalRequest(store::v1::REMOVE_PENDING);
  ASSERT_TRUE(oldest.ok());
  EXPECT_EQ(*oldest, absl::FromUnixNanos(1000));

  // Stuck now: it leaves the pending index for the stuck one.
  older.set_state(store::v1::STUCK);
  Put(older);
  oldest = ledger_->OldestRemovalRequest(store::v1::REMOVE_PENDING);
  ASSERT_TRUE(oldest.ok());
  EXPECT_EQ(*oldest, absl::FromUnixNanos(2000));
  auto stuck = ledger_->OldestRemovalRequest(store::v1::STUCK);
  ASSERT_TRUE(stuck.ok());
  EXPECT_EQ(*stuck, absl::FromUnixNanos(1000));

  Ledger::Batch batch;
  batch.Delete(later);
  ASSERT_TRUE(ledger_->Write(batch).ok());
  Reopen();
  oldest = ledger_->OldestRemovalRequest(store::v1::REMOVE_PENDING);
  ASSERT_TRUE(oldest.ok());
  EXPECT_FALSE(oldest->has_value());
}

TEST_F(LedgerTest, WritesAreReportedToTheObserverAndDiskBytesAreCounted) {
  ledger_.reset();
  std::vector<Ledger::WriteSample> samples;
  Ledger::Options options;
  options.path = dir_ + "/ledger";
  options.on_write = [&](const Ledger::WriteSample& s) {
    samples.push_back(s);
  };
  auto opened = Ledger::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ledger_ = *std::move(opened);
  Put(Make("a", "", 1));
  Ledger::Batch deferred(Ledger::Durability::kDeferred);
  deferred.Put(Make("b", "", 2));
  ASSERT_TRUE(ledger_->Write(deferred).ok());
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_TRUE(samples[0].synced);
  EXPECT_TRUE(samples[0].ok);
  EXPECT_GE(samples[0].took, absl::ZeroDuration());
  EXPECT_FALSE(samples[1].synced);
  absl::StatusOr<uint64_t> bytes = ledger_->DiskBytes();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_GT(*bytes, 0u);
}

TEST_F(LedgerTest, IndexesMissingFromAnOlderLedgerAreRebuiltOnOpen) {
  Record a = Make("default/1/a", "", 1);
  a.set_namespace_("default");
  a.set_containerd_key("a");
  a.set_owner("c1");
  Put(a);
  Record child = Make("default/2/b", "default/1/a", 2);
  child.set_state(store::v1::STUCK);
  Put(child);
  EXPECT_THAT(Keys([&](auto fn) { return ledger_->ForEach(fn); }),
              ElementsAre("default/1/a", "default/2/b"));
  ledger_.reset();
  {
    // What an earlier version left: records and children, nothing else.
    rocksdb::Options options;
    options.merge_operator = std::make_shared<KeepLast>();
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, dir_ + "/ledger", &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    for (const char* range : {"o/", "n/", "t/", "m/n/"}) {
      std::string end(range);
      ++end.back();
      ASSERT_TRUE(
          db->DeleteRange({}, db->DefaultColumnFamily(), range, end).ok());
    }
    ASSERT_TRUE(db->Delete({}, "m/index_version").ok());
  }
  Reopen(/*read_only=*/true);
  EXPECT_THAT(Keys([&](auto fn) { return ledger_->ForEach(fn); }),
              ElementsAre("default/1/a", "default/2/b"));
  EXPECT_TRUE(absl::IsFailedPrecondition(ledger_->CountRecords().status()));
  Reopen();
  EXPECT_THAT(Keys([&](auto fn) { return ledger_->ForEach(fn); }),
              ElementsAre("default/1/a", "default/2/b"));
  EXPECT_THAT(Keys([&](auto fn) { return ledger_->ForEachOwned(fn); }),
              ElementsAre("default/1/a"));
  EXPECT_THAT(Keys([&](auto fn) {
                return ledger_->ForEachInState(store::v1::STUCK, fn);
              }),
              ElementsAre("default/2/b"));
  EXPECT_EQ(ledger_->ByName("default", "a")->size(), 1u);
  EXPECT_THAT(*ledger_->Children(1), ElementsAre("default/2/b"));
  auto counts = ledger_->CountRecords();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->total(), 2u);
  EXPECT_EQ(counts->by_state[store::v1::STUCK], 1u);
}

TEST(LedgerVisibility, OnlyLiveAndMissingAreVisible) {
  Record r;
  for (auto [state, visible] :
       std::vector<std::pair<RecordState, bool>>{{store::v1::PREPARING, false},
                                                 {store::v1::LIVE, true},
                                                 {store::v1::COMMITTING, false},
                                                 {store::v1::REMOVING, false},
                                                 {store::v1::MISSING, true}}) {
    r.set_state(state);
    EXPECT_EQ(IsVisible(r), visible) << state;
  }
}

// Finding 2 of issue 15: out of descriptors when RocksDB switches to a new
// WAL, the write fails and RocksDB stops with a fatal error that Resume()
// cannot clear (it answers the same EMFILE forever). The ledger reopens the
// database instead: writes work again once descriptors are free, and every
// acknowledged write — deferred ones too — is still there.
TEST_F(LedgerTest, HealsFromRunningOutOfDescriptors) {
  ledger_.reset();
  Ledger::Options options;
  options.path = dir_ + "/ledger";
  options.write_buffer_bytes = 64 << 10;  // a new WAL every few writes
  auto opened = Ledger::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ledger_ = *std::move(opened);
  // Also runs, before the descriptors go, each kind of call made while they
  // are gone: under UBSan the first check of a dynamic type asks the kernel
  // whether memory is readable through a pipe, which EMFILE breaks.
  ASSERT_TRUE(ledger_->CheckWritable().ok());

  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  struct rlimit low = saved;
  low.rlim_cur = std::min<rlim_t>(saved.rlim_cur, 512);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  absl::Cleanup restore = [&] { ::setrlimit(RLIMIT_NOFILE, &saved); };
  // Every free descriptor taken: a file RocksDB opens now fails with EMFILE.
  std::vector<int> hogs;
  for (int fd; (fd = ::dup(0)) >= 0;) hogs.push_back(fd);
  ASSERT_EQ(errno, EMFILE);
  absl::Cleanup release = [&] {
    for (int fd : hogs) ::close(fd);
    hogs.clear();
  };

  const std::string big(16 << 10, 'x');
  std::vector<std::string> acknowledged;
  uint64_t id = 1;
  absl::Status failed;
  for (int i = 0; i < 200 && failed.ok(); ++i) {
    // Alternately deferred: they sit in the WAL buffer when the error comes.
    Ledger::Batch batch(i % 2 == 0 ? Ledger::Durability::kSynced
                                   : Ledger::Durability::kDeferred);
    Record r = Make(absl::StrCat("k", i), "", id++);
    (*r.mutable_labels())["big"] = big;
    batch.Put(r);
    failed = ledger_->Write(batch);
    if (failed.ok()) acknowledged.push_back(r.key());
  }
  ASSERT_TRUE(absl::IsUnavailable(failed)) << failed;
  // No gtest matcher while out of descriptors (see above).
  EXPECT_TRUE(absl::StrContains(failed.message(), "Too many open files"))
      << failed;
  EXPECT_TRUE(ledger_->degraded());
  ASSERT_FALSE(acknowledged.empty());

  // Still out of descriptors: writes keep refusing (reads may fail too: a
  // table file not yet open needs a descriptor).
  absl::SleepFor(absl::Milliseconds(600));
  Ledger::Batch refused;
  refused.Put(Make("refused", "", id++));
  EXPECT_TRUE(absl::IsUnavailable(ledger_->Write(refused)));
  absl::SleepFor(absl::Milliseconds(600));
  EXPECT_TRUE(absl::IsUnavailable(ledger_->CheckWritable()));

  std::move(release).Invoke();
  absl::Status healed;
  for (int i = 0; i < 50; ++i) {  // a resume is tried at most every 500 ms
    Ledger::Batch batch;
    batch.Put(Make("after", "", id));
    healed = ledger_->Write(batch);
    if (healed.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(healed.ok()) << healed;
  EXPECT_FALSE(ledger_->degraded());
  EXPECT_TRUE(ledger_->CheckWritable().ok());
  for (const std::string& key : acknowledged) {
    EXPECT_TRUE(ledger_->Get(key).ok()) << key;
  }
  EXPECT_TRUE(ledger_->Get("after").ok());
  // And on disk: a reopen finds them all.
  Reopen();
  for (const std::string& key : acknowledged) {
    EXPECT_TRUE(ledger_->Get(key).ok()) << key;
  }
  EXPECT_TRUE(ledger_->Get("after").ok());
  EXPECT_TRUE(absl::IsNotFound(ledger_->Get("refused").status()));
}

}  // namespace
}  // namespace snapledger
