#include "plugin/core/coordinator.h"

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/testing/ledger_fixture.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class CoordinatorTest : public testing::LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_);
  }
  void TearDown() override {
    coord_.reset();
    LedgerFixture::TearDown();
  }

  // Prepares `key` on `parent` and commits it as `name`.
  void Layer(const std::string& name, const std::string& parent) {
    ASSERT_TRUE(coord_->Prepare(name + "-active", parent, {}).ok());
    ASSERT_TRUE(coord_->Commit(name, name + "-active", {}).ok());
  }

  // No record is left in an intermediate state.
  void ExpectNoIntents() {
    ASSERT_TRUE(ledger_
                    ->ForEach([](const Record& r) {
                      EXPECT_TRUE(IsVisible(r)) << r.ShortDebugString();
                      return true;
                    })
                    .ok());
  }

  std::unique_ptr<Coordinator> coord_;
};

// Issue 14's budget: one synced ledger write per mutation. The intent is
// synced before the backend is touched; the completion is deferred (carried
// to disk by the next synced write, redone by recovery if a crash loses it).
TEST_F(CoordinatorTest, EachMutationMakesOneSyncedLedgerWrite) {
  struct Delta {
    uint64_t synced, unsynced;
  };
  auto measure = [&](auto&& op) {
    const Ledger::WriteCounts before = ledger_->write_counts();
    op();
    const Ledger::WriteCounts after = ledger_->write_counts();
    return Delta{after.synced - before.synced,
                 after.unsynced - before.unsynced};
  };
  auto expect = [](Delta d, uint64_t synced, uint64_t unsynced,
                   const char* what) {
    EXPECT_EQ(d.synced, synced) << what;
    EXPECT_EQ(d.unsynced, unsynced) << what;
  };
  expect(measure([&] { ASSERT_TRUE(coord_->Prepare("a", "", {}).ok()); }), 1, 1,
         "prepare");
  expect(measure([&] { ASSERT_TRUE(coord_->Commit("base", "a", {}).ok()); }), 1,
         1, "commit");
  expect(measure([&] { ASSERT_TRUE(coord_->View("v", "base", {}).ok()); }), 1,
         1, "view");
  expect(measure([&] {
           ASSERT_TRUE(coord_->Update("base", {{"x", "y"}}, {}).ok());
         }),
         1, 0, "update");
  expect(measure([&] { ASSERT_TRUE(coord_->Remove("v").ok()); }), 1, 1,
         "remove");
  ExpectNoIntents();
}

TEST_F(CoordinatorTest, PrepareWithoutParentGivesWritableMount) {
  auto mounts = coord_->Prepare("k", "", {{"a", "b"}});
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  ASSERT_EQ(mounts->size(), 1u);
  EXPECT_EQ((*mounts)[0].type, "bind");
  EXPECT_THAT((*mounts)[0].options, ElementsAre("rbind", "rw"));
  auto info = coord_->Stat("k");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kind(), store::v1::ACTIVE);
  EXPECT_EQ(info->state(), store::v1::LIVE);
  EXPECT_EQ(info->labels().at("a"), "b");
  EXPECT_GT(info->created_ns(), 0);
  EXPECT_EQ(backend_.objects().size(), 1u);
  EXPECT_TRUE(backend_.objects().contains(info->backend_id()));
}

TEST_F(CoordinatorTest, ViewOfCommittedParentIsReadOnlyOnParent) {
  Layer("base", "");
  uint64_t base_id = coord_->Stat("base")->backend_id();
  auto mounts = coord_->View("v", "base", {});
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_THAT((*mounts)[0].options, ElementsAre("rbind", "ro"));
  EXPECT_EQ((*mounts)[0].source, "/fake/" + std::to_string(base_id));
  EXPECT_EQ(coord_->Stat("v")->kind(), store::v1::VIEW);
  EXPECT_EQ(coord_->Stat("v")->parent(), "base");
  EXPECT_EQ(backend_.objects().at(coord_->Stat("v")->backend_id()).parent_id,
            base_id);
}

TEST_F(CoordinatorTest, PrepareErrors) {
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("active", "base", {}).ok());

  auto dup = coord_->Prepare("active", "base", {});
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("\"active\""));

  auto missing = coord_->Prepare("x", "nope", {});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("parent snapshot \"nope\" does not exist"));

  auto not_committed = coord_->Prepare("y", "active", {});
  EXPECT_EQ(not_committed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(not_committed.status().message()),
              HasSubstr("not a committed snapshot"));

  EXPECT_EQ(coord_->Prepare("", "", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(coord_->View("", "base", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Failed calls leave nothing behind.
  EXPECT_EQ(backend_.objects().size(), 2u);
  ExpectNoIntents();
}

TEST_F(CoordinatorTest, LabelSizeLimitIs4096BytesForKeyAndValue) {
  std::string key = "k";
  EXPECT_TRUE(coord_->Prepare("ok", "", {{key, std::string(4095, 'v')}}).ok());
  auto big = coord_->Prepare("big", "", {{key, std::string(4096, 'v')}});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.status().message()),
              HasSubstr("greater than maximum size (4096 bytes), key: k"));
  EXPECT_EQ(coord_->Stat("big").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(coord_->Commit("c", "ok", {{key, std::string(5000, 'v')}}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CoordinatorTest, BackendCreateFailureLeavesNoRecord) {
  backend_.FailCreate(absl::ResourceExhaustedError("disk full"));
  auto r = coord_->Prepare("k", "", {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("disk full"));
  EXPECT_EQ(ledger_->Get("k").status().code(), absl::StatusCode::kNotFound);
  backend_.FailCreate(absl::OkStatus());
  EXPECT_TRUE(coord_->Prepare("k", "", {}).ok());
}

TEST_F(CoordinatorTest, CommitRenamesAndFreezesUsageAndReplacesLabels) {
  ASSERT_TRUE(coord_->Prepare("k", "", {{"old", "1"}}).ok());
  uint64_t id = coord_->Stat("k")->backend_id();
  backend_.SetSize(id, 12345);
  ASSERT_TRUE(coord_->Commit("name", "k", {{"new", "2"}}).ok());
  EXPECT_EQ(coord_->Stat("k").status().code(), absl::StatusCode::kNotFound);
  auto info = coord_->Stat("name");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kind(), store::v1::COMMITTED);
  EXPECT_EQ(info->backend_id(), id);
  EXPECT_EQ(info->labels().size(), 1u);
  EXPECT_EQ(info->labels().at("new"), "2");
  backend_.SetSize(id, 1);  // committed usage does not follow the backend
  EXPECT_EQ(coord_->GetUsage("name")->size_bytes, 12345);
  ExpectNoIntents();
}

TEST_F(CoordinatorTest, CommitErrors) {
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("k", "base", {}).ok());
  ASSERT_TRUE(coord_->View("v", "base", {}).ok());

  absl::Status s = coord_->Commit("base", "k", {});
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"base\""));

  s = coord_->Commit("n", "nope", {});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"nope\""));

  s = coord_->Commit("n", "v", {});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("is not active"));

  s = coord_->Commit("n", "base", {});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);

  EXPECT_EQ(coord_->Commit("", "k", {}).code(),
            absl::StatusCode::kInvalidArgument);
  ExpectNoIntents();
}

TEST_F(CoordinatorTest, BackendCommitFailureKeepsActive) {
  ASSERT_TRUE(coord_->Prepare("k", "", {}).ok());
  backend_.FailCommit(absl::UnavailableError("io"));
  EXPECT_EQ(coord_->Commit("n", "k", {}).code(),
            absl::StatusCode::kUnavailable);
  auto info = coord_->Stat("k");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kind(), store::v1::ACTIVE);
  EXPECT_EQ(info->state(), store::v1::LIVE);
  EXPECT_THAT(info->last_error(), HasSubstr("io"));
  EXPECT_EQ(coord_->Stat("n").status().code(), absl::StatusCode::kNotFound);
  backend_.FailCommit(absl::OkStatus());
  EXPECT_TRUE(coord_->Commit("n", "k", {}).ok());
}

TEST_F(CoordinatorTest, RemoveAndKeyReuse) {
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("k", "base", {}).ok());
  ASSERT_TRUE(coord_->Remove("k").ok());
  EXPECT_EQ(coord_->Stat("k").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend_.objects().size(), 1u);
  ASSERT_TRUE(coord_->Prepare("k", "base", {}).ok());  // key reuse
  EXPECT_EQ(coord_->Stat("k")->kind(), store::v1::ACTIVE);
  ExpectNoIntents();
}

TEST_F(CoordinatorTest, RemoveErrors) {
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("child-a", "base", {}).ok());
  ASSERT_TRUE(coord_->View("child-b", "base", {}).ok());

  absl::Status s = coord_->Remove("base");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("cannot remove snapshot with child"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("child-a, child-b"));

  s = coord_->Remove("nope");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"nope\""));

  // Under the default policy (refuse) every reason a removal cannot happen
  // now is FailedPrecondition: containerd's GC aborts its pass on others.
  backend_.FailRemove(absl::PermissionDeniedError("EBUSY"));
  s = coord_->Remove("child-a");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("EBUSY"));
  auto kept = coord_->Stat("child-a");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->state(), store::v1::LIVE);
  EXPECT_THAT(kept->last_error(), HasSubstr("EBUSY"));
  backend_.FailRemove(absl::OkStatus());
  ExpectNoIntents();
}

TEST_F(CoordinatorTest, RemoveOfAlreadyGoneObjectSucceeds) {
  ASSERT_TRUE(coord_->Prepare("k", "", {}).ok());
  backend_.Erase(coord_->Stat("k")->backend_id());
  EXPECT_TRUE(coord_->Remove("k").ok());
  EXPECT_EQ(ledger_->Get("k").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, MountsOfCommittedIsFailedPrecondition) {
  Layer("base", "");
  auto m = coord_->Mounts("base");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("not active or view"));
  EXPECT_EQ(coord_->Mounts("nope").status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(coord_->Prepare("k", "base", {}).ok());
  auto ok = coord_->Mounts("k");
  ASSERT_TRUE(ok.ok());
  EXPECT_THAT((*ok)[0].options, ElementsAre("rbind", "rw"));
}

TEST_F(CoordinatorTest, UpdatePaths) {
  ASSERT_TRUE(coord_->Prepare("k", "", {{"a", "1"}, {"b", "2"}}).ok());
  int64_t before = coord_->Stat("k")->updated_ns();

  // "labels.<k>" sets one label and leaves the others.
  auto r = coord_->Update("k", {{"a", "10"}, {"c", "3"}}, {"labels.a"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->labels().at("a"), "10");
  EXPECT_EQ(r->labels().at("b"), "2");
  EXPECT_FALSE(r->labels().contains("c"));
  EXPECT_GE(r->updated_ns(), before);

  // A "labels.<k>" path whose label is absent from the request deletes it.
  r = coord_->Update("k", {}, {"labels.b"});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->labels().contains("b"));

  // "labels" and an empty mask replace them all.
  r = coord_->Update("k", {{"x", "1"}}, {"labels"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->labels().size(), 1u);
  r = coord_->Update("k", {{"y", "1"}, {"empty", ""}}, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->labels().size(), 1u);
  EXPECT_EQ(r->labels().at("y"), "1");

  auto bad = coord_->Update("k", {}, {"parent"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("cannot update \"parent\" field on snapshot \"k\""));
  EXPECT_EQ(coord_->Update("nope", {}, {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(coord_->Update("k", {{"big", std::string(5000, 'x')}}, {})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Stat sees what Update returned.
  EXPECT_EQ(coord_->Stat("k")->labels().at("y"), "1");
}

TEST_F(CoordinatorTest, UsageByKind) {
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("k", "base", {}).ok());
  ASSERT_TRUE(coord_->View("v", "base", {}).ok());
  backend_.SetSize(coord_->Stat("k")->backend_id(), 777);
  EXPECT_EQ(coord_->GetUsage("k")->size_bytes, 777);
  EXPECT_EQ(coord_->GetUsage("base")->size_bytes, 4096);
  EXPECT_EQ(coord_->GetUsage("v")->size_bytes, 0);
  EXPECT_EQ(coord_->GetUsage("nope").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, CleanupReachesBackend) {
  ASSERT_TRUE(coord_->Cleanup().ok());
  EXPECT_EQ(backend_.cleanups(), 1);
}

// A Cleanup while a Create is in flight neither waits for it nor sweeps
// under it: it returns at once and the next Cleanup sweeps.
TEST_F(CoordinatorTest, CleanupSkipsTheSweepWhileMutationsAreInFlight) {
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  backend_.DuringCreate([&] {
    entered.set_value();
    released.wait();
  });
  std::thread prepare([&] { EXPECT_TRUE(coord_->Prepare("k", "", {}).ok()); });
  entered.get_future().wait();
  backend_.DuringCreate(nullptr);
  auto cleanup =
      std::async(std::launch::async, [&] { return coord_->Cleanup(); });
  ASSERT_EQ(cleanup.wait_for(std::chrono::seconds(5)),
            std::future_status::ready);  // fails rather than hangs
  EXPECT_TRUE(cleanup.get().ok());
  EXPECT_EQ(backend_.cleanups(), 0);
  release.set_value();
  prepare.join();
  ASSERT_TRUE(coord_->Cleanup().ok());
  EXPECT_EQ(backend_.cleanups(), 1);
}

TEST_F(CoordinatorTest, ListFiltersVisibleRecords) {
  Layer("base", "");
  ASSERT_TRUE(coord_->Prepare("k", "base", {{"l", "v"}}).ok());
  auto all = filter::Filter::ParseAll({});
  ASSERT_TRUE(all.ok());
  std::vector<std::string> seen;
  ASSERT_TRUE(coord_
                  ->List(*all,
                         [&](const Record& r) {
                           seen.push_back(r.key());
                           return true;
                         })
                  .ok());
  EXPECT_THAT(seen, ElementsAre("base", "k"));

  auto f = filter::Filter::ParseAll({"kind==active,labels.l==v"});
  ASSERT_TRUE(f.ok()) << f.status();
  seen.clear();
  ASSERT_TRUE(coord_
                  ->List(*f,
                         [&](const Record& r) {
                           seen.push_back(r.key());
                           return true;
                         })
                  .ok());
  EXPECT_THAT(seen, ElementsAre("k"));
}

// Many clients prepare on, commit on, and remove the same parents at once.
// Every call ends in one clean outcome, and the outcomes add up to what the
// ledger and the backend hold afterwards: an acknowledged removal removed
// the record and its object, a refused one removed nothing, no record points
// at a missing parent, and the backend holds exactly the recorded objects.
TEST_F(CoordinatorTest, ConcurrentUseOfSharedParentsStaysConsistent) {
  Layer("p0", "");
  Layer("p1", "");
  // Per parent name: what the clients were told.
  struct Outcomes {
    std::atomic<int> removed{0};         // Remove(parent) OK
    std::atomic<int> refused{0};         // ... FailedPrecondition (children)
    std::atomic<int> missing{0};         // ... NotFound (removed already)
    std::atomic<int> prepared_again{0};  // Prepare(parent + "-a") OK
    std::atomic<int> recreated{0};       // Commit(parent, parent + "-a") OK
  };
  std::map<std::string, Outcomes> outcomes;
  outcomes["p0"];
  outcomes["p1"];
  absl::Mutex mu;
  // Objects of children that were acknowledged removed, and every object a
  // parent name was seen to name (through a child prepared on it).
  std::set<uint64_t> removed_children;
  std::map<std::string, std::set<uint64_t>> parent_objects;

  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        const std::string parent = (i % 2) ? "p1" : "p0";
        Outcomes& out = outcomes.at(parent);
        const std::string key =
            "t" + std::to_string(t) + "-" + std::to_string(i);
        if (coord_->Prepare(key, parent, {}).ok()) {
          // Only this thread uses `key`: its record is stable until removed.
          absl::StatusOr<Record> child = ledger_->Get(key);
          EXPECT_TRUE(child.ok()) << key << ": " << child.status();
          (void)coord_->Mounts(key);
          const absl::Status removed = coord_->Remove(key);
          EXPECT_TRUE(removed.ok()) << key << ": " << removed;
          if (child.ok() && removed.ok()) {
            absl::MutexLock l(&mu);
            removed_children.insert(child->backend_id());
            parent_objects[parent].insert(child->parent_backend_id());
          }
        }
        const absl::Status s = coord_->Remove(parent);
        if (s.ok()) {
          ++out.removed;
          if (coord_->Prepare(parent + "-a", "", {}).ok()) ++out.prepared_again;
          if (coord_->Commit(parent, parent + "-a", {}).ok()) ++out.recreated;
        } else if (s.code() == absl::StatusCode::kFailedPrecondition) {
          ++out.refused;
        } else if (s.code() == absl::StatusCode::kNotFound) {
          ++out.missing;
        } else {
          ADD_FAILURE() << "Remove(" << parent << "): " << s;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ExpectNoIntents();

  std::map<std::string, Record> by_key;
  std::set<uint64_t> recorded;
  ASSERT_TRUE(
      ledger_
          ->ForEach([&](const Record& r) {
            by_key[r.key()] = r;
            recorded.insert(r.backend_id());
            if (!r.parent().empty()) {
              // The very object it was made on, not a namesake
              // re-created after a remove.
              auto p = ledger_->Get(r.parent());
              EXPECT_TRUE(p.ok() && p->backend_id() == r.parent_backend_id())
                  << r.key() << " points at missing " << r.parent();
            }
            return true;
          })
          .ok());
  std::set<uint64_t> stored;
  for (const auto& [id, o] : backend_.objects()) stored.insert(id);
  EXPECT_EQ(recorded, stored);

  absl::MutexLock l(&mu);
  // Every child acknowledged removed is gone from both.
  for (const auto& [key, r] : by_key) {
    EXPECT_FALSE(key.starts_with("t")) << "removed child " << key << " remains";
  }
  for (uint64_t id : removed_children) {
    EXPECT_FALSE(stored.contains(id))
        << "object " << id << " of a removed child";
  }
  for (const auto& [parent, out] : outcomes) {
    SCOPED_TRACE(parent);
    // The name exists at the end iff every acknowledged removal was followed
    // by a re-creation: a refused (or NotFound) Remove that removed anyway,
    // or an OK one that did not, breaks this count.
    auto final_parent = by_key.find(parent);
    const bool exists = final_parent != by_key.end();
    EXPECT_EQ(out.removed - out.recreated, exists ? 0 : 1)
        << "removed " << out.removed << ", re-created " << out.recreated
        << ", refused " << out.refused << ", already gone " << out.missing;
    if (exists) {
      EXPECT_EQ(final_parent->second.kind(), store::v1::COMMITTED);
    }
    // Each "-a" made is consumed by a commit, or is still there.
    EXPECT_EQ(out.prepared_again - out.recreated,
              by_key.contains(parent + "-a") ? 1 : 0);
    // Of all the objects the name has named, only the current one is left.
    for (uint64_t id : parent_objects[parent]) {
      if (exists && id == final_parent->second.backend_id()) continue;
      EXPECT_FALSE(stored.contains(id))
          << "object " << id << " of a removed " << parent << " remains";
    }
  }
}

}  // namespace
}  // namespace snapledger
