#include "plugin/key_locks.h"

#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace snapledger {
namespace {

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
  ASSERT_EQ(got_b.wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

TEST(KeyLocksTest, BlockedUntilReleased) {
  KeyLocks locks;
  std::atomic<bool> acquired{false};
  std::optional<KeyLocks::Guard> held(locks.Lock({"k", "p"}));
  std::thread t([&] {
    auto g = locks.Lock({"p"});
    acquired = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(acquired.load());
  held.reset();
  t.join();
  EXPECT_TRUE(acquired.load());
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
  auto g = locks.Lock({"", "a", "a"});
  EXPECT_EQ(locks.ActiveKeys(), 1u);
}

}  // namespace
}  // namespace snapledger
