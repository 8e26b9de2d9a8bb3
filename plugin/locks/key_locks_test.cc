#include "plugin/locks/key_locks.h"

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;

// Generous: these bound a wait for something that must happen, and only
// matter (as a failure instead of a hang) when it does not.
constexpr auto kPatience = std::chrono::seconds(60);

// Polls `done` until it holds or kPatience has passed; returns its last value.
bool Eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST(KeyLocksTest, SameKeyIsExclusive) {
  KeyLocks locks;
  std::atomic<int> inside{0}, max_inside{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        auto g = locks.Lock({"k"});
        int now = ++inside;
        int prev = max_inside.load();
        while (now > prev && !max_inside.compare_exchange_weak(prev, now)) {
        }
        // Stay inside long enough for an overlap to be seen if it happens.
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        --inside;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(max_inside.load(), 1);
  EXPECT_EQ(locks.ActiveKeys(), 0u);  // nothing left behind
}

TEST(KeyLocksTest, DifferentKeysDoNotBlock) {
  KeyLocks locks;
  auto a = locks.Lock({"a"});
  auto got_b =
      std::async(std::launch::async, [&] { auto b = locks.Lock({"b"}); });
  // Fails (rather than hangs) if "b" waited for "a".
  ASSERT_EQ(got_b.wait_for(kPatience), std::future_status::ready);
}

TEST(KeyLocksTest, BlockedUntilReleased) {
  KeyLocks locks;
  std::atomic<bool> acquired{false};
  std::optional<KeyLocks::Guard> held(locks.Lock({"k", "p"}));
  std::thread t([&] {
    auto g = locks.Lock({"p"});
    acquired = true;
  });
  ASSERT_TRUE(Eventually([&] { return locks.Waiting() == 1; }));
  EXPECT_FALSE(acquired.load());
  held.reset();
  t.join();
  EXPECT_TRUE(acquired.load());
  EXPECT_EQ(locks.Waiting(), 0u);
  EXPECT_EQ(locks.ActiveKeys(), 0u);
}

TEST(KeyLocksTest, OpposingOrdersDoNotDeadlock) {
  KeyLocks locks;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        auto g = (t % 2) ? locks.Lock({"x", "y"}) : locks.Lock({"y", "x"});
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(locks.ActiveKeys(), 0u);
}

TEST(KeyLocksTest, EmptyAndDuplicateKeysAreIgnored) {
  KeyLocks locks;
  {
    auto g = locks.Lock({"", "a", "a"});
    EXPECT_EQ(locks.ActiveKeys(), 1u);
  }
  {
    auto g = locks.Lock({}, {"", "b", "b"});
    EXPECT_EQ(locks.ActiveKeys(), 1u);
    // Held once in shared mode: a second shared holder still gets in.
    auto again = locks.Lock({}, {"b"});
  }
  { auto nothing = locks.Lock({""}, {""}); }
  EXPECT_EQ(locks.ActiveKeys(), 0u);
}

TEST(KeyLocksTest, SharedHoldersCoexist) {
  KeyLocks locks;
  constexpr int kHolders = 4;
  // Every holder waits, while holding "p" shared, until all of them hold it:
  // this completes only if they hold it at the same time.
  std::latch all_inside(kHolders);
  std::atomic<int> met{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kHolders; ++t) {
    threads.emplace_back([&, t] {
      auto g = locks.Lock({t % 2 ? "own" + std::to_string(t) : ""}, {"p"});
      all_inside.count_down();
      if (Eventually([&] { return all_inside.try_wait(); })) ++met;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(met.load(), kHolders);
  EXPECT_EQ(locks.ActiveKeys(), 0u);
}

TEST(KeyLocksTest, ExclusiveExcludesShared) {
  KeyLocks locks;
  std::atomic<bool> acquired{false};
  std::optional<KeyLocks::Guard> writer(locks.Lock({"k"}));
  std::thread reader([&] {
    auto g = locks.Lock({}, {"k"});
    acquired = true;
  });
  ASSERT_TRUE(Eventually([&] { return locks.Waiting() == 1; }));
  EXPECT_FALSE(acquired.load());
  writer.reset();
  reader.join();
  EXPECT_TRUE(acquired.load());
  EXPECT_EQ(locks.ActiveKeys(), 0u);
}

TEST(KeyLocksTest, SharedExcludesExclusive) {
  KeyLocks locks;
  std::atomic<bool> acquired{false};
  std::optional<KeyLocks::Guard> first(locks.Lock({}, {"k"}));
  std::optional<KeyLocks::Guard> second(locks.Lock({}, {"k"}));
  std::thread writer([&] {
    auto g = locks.Lock({"k"});
    acquired = true;
  });
  ASSERT_TRUE(Eventually([&] { return locks.Waiting() == 1; }));
  EXPECT_FALSE(acquired.load());
  first.reset();
  // One shared holder left: still excluded.
  ASSERT_TRUE(Eventually([&] { return locks.Waiting() == 1; }));
  EXPECT_FALSE(acquired.load());
  second.reset();
  writer.join();
  EXPECT_TRUE(acquired.load());
  EXPECT_EQ(locks.ActiveKeys(), 0u);
}

TEST(KeyLocksTest, KeyInBothListsIsTakenExclusively) {
  KeyLocks locks;
  std::atomic<bool> acquired{false};
  std::optional<KeyLocks::Guard> held(locks.Lock({"k"}, {"k", "p"}));
  EXPECT_EQ(locks.ActiveKeys(), 2u);
  std::thread reader([&] {
    auto g = locks.Lock({}, {"k"});
    acquired = true;
  });
  ASSERT_TRUE(Eventually([&] { return locks.Waiting() == 1; }));
  EXPECT_FALSE(acquired.load());
  // "p" was taken shared: another shared holder is not held up by it.
  { auto p = locks.Lock({}, {"p"}); }
  held.reset();
  reader.join();
  EXPECT_TRUE(acquired.load());
  EXPECT_EQ(locks.ActiveKeys(), 0u);
}

TEST(KeyLocksTest, WaitingWriterGoesBeforeLaterReaders) {
  KeyLocks locks;
  std::mutex order_mu;
  std::vector<std::string> order;
  auto note = [&](std::string what) {
    std::lock_guard<std::mutex> l(order_mu);
    order.push_back(std::move(what));
  };
  std::optional<KeyLocks::Guard> reader(locks.Lock({}, {"k"}));
  std::thread writer([&] {
    auto g = locks.Lock({"k"});
    note("writer");
  });
  ASSERT_TRUE(Eventually([&] { return locks.Waiting() == 1; }));
  std::atomic<bool> late_reader_in{false};
  std::thread late_reader([&] {
    auto g = locks.Lock({}, {"k"});
    late_reader_in = true;
    note("late reader");
  });
  // Without writer preference the late reader would join the first one.
  ASSERT_TRUE(Eventually(
      [&] { return locks.Waiting() == 2 || late_reader_in.load(); }));
  EXPECT_FALSE(late_reader_in.load());
  EXPECT_EQ(locks.Waiting(), 2u);
  reader.reset();
  writer.join();
  late_reader.join();
  EXPECT_THAT(order, ElementsAre("writer", "late reader"));
  EXPECT_EQ(locks.ActiveKeys(), 0u);
}

// Many threads lock random overlapping key sets in both modes. Checks, while
// each set is held, that an exclusive key has no other holder and a shared
// key no exclusive one; and that every thread finishes.
TEST(KeyLocksTest, RandomizedStressKeepsModesAndNeverDeadlocks) {
  constexpr int kThreads = 8;
  constexpr int kIterations = 400;
  constexpr int kKeys = 6;
  // Shared with the threads, which a failed (deadlocked) run leaves behind.
  struct State {
    KeyLocks locks;
    std::array<std::atomic<int>, kKeys> readers{};
    std::array<std::atomic<int>, kKeys> writers{};
    std::atomic<int> violations{0};
    std::atomic<int> finished{0};
  };
  auto state = std::make_shared<State>();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([state, t] {
      std::mt19937 rng(1234 + t);
      for (int i = 0; i < kIterations; ++i) {
        std::vector<std::string> exclusive, shared;
        std::vector<int> mode(kKeys, 0);  // 0: none, 1: shared, 2: exclusive
        for (int k = 0; k < kKeys; ++k) {
          const int roll = static_cast<int>(rng() % 10);
          if (roll < 4) continue;
          const std::string key = "key" + std::to_string(k);
          if (roll < 7) {
            shared.push_back(key);
            mode[k] = 1;
          } else if (roll < 9) {
            exclusive.push_back(key);
            mode[k] = 2;
          } else {  // named in both lists: exclusive
            shared.push_back(key);
            exclusive.push_back(key);
            mode[k] = 2;
          }
          if (rng() % 8 == 0) shared.push_back(key);  // a duplicate
        }
        if (rng() % 4 == 0) exclusive.push_back("");
        std::shuffle(exclusive.begin(), exclusive.end(), rng);
        std::shuffle(shared.begin(), shared.end(), rng);

        auto g = state->locks.Lock(exclusive, shared);
        for (int k = 0; k < kKeys; ++k) {
          if (mode[k] == 1) ++state->readers[k];
          if (mode[k] == 2) ++state->writers[k];
        }
        for (int round = 0; round < 2; ++round) {
          for (int k = 0; k < kKeys; ++k) {
            const bool ok = mode[k] == 0 ||
                            (mode[k] == 1 && state->writers[k].load() == 0) ||
                            (mode[k] == 2 && state->writers[k].load() == 1 &&
                             state->readers[k].load() == 0);
            if (!ok) ++state->violations;
          }
          std::this_thread::yield();
        }
        for (int k = 0; k < kKeys; ++k) {
          if (mode[k] == 1) --state->readers[k];
          if (mode[k] == 2) --state->writers[k];
        }
      }
      ++state->finished;
    });
  }
  // A deadlock fails the test instead of hanging it (the stuck threads are
  // left behind, holding only `state`).
  const bool all_finished =
      Eventually([&] { return state->finished.load() == kThreads; });
  for (auto& th : threads) {
    if (all_finished) {
      th.join();
    } else {
      th.detach();
    }
  }
  ASSERT_TRUE(all_finished) << state->finished.load() << " of " << kThreads
                            << " threads finished: deadlock?";
  EXPECT_EQ(state->violations.load(), 0);
  EXPECT_EQ(state->locks.ActiveKeys(), 0u);
  EXPECT_EQ(state->locks.Waiting(), 0u);
}

}  // namespace
}  // namespace snapledger
