#include "plugin/notify/service_notifier.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

// A service manager's end: an AF_UNIX datagram socket in a temporary
// directory, named in NOTIFY_SOCKET for the test's duration.
class NotifySocket {
 public:
  NotifySocket() {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("notify-test-", ::getpid(), "-", counter_++);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "notify.sock").string();
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifySocket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd_);
    std::filesystem::remove_all(dir_);
  }
  bool bound() const { return bound_; }

  // The next datagram, or "" after `timeout_ms`.
  std::string Receive(int timeout_ms = 2000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return "";
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, n) : "";
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

TEST(ServiceNotifierTest, WithoutNotifySocketNothingIsSent) {
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_FALSE(ServiceNotifier::Listening());
  EXPECT_FALSE(ServiceNotifier::Ready("serving"));
  EXPECT_FALSE(ServiceNotifier::PetWatchdog());
}

TEST(ServiceNotifierTest, SendsReadyStatusStoppingAndWatchdog) {
  NotifySocket manager;
  ASSERT_TRUE(manager.bound());
  EXPECT_TRUE(ServiceNotifier::Listening());
  EXPECT_TRUE(ServiceNotifier::Ready("serving on /run/x.sock"));
  EXPECT_EQ(manager.Receive(), "READY=1\nSTATUS=serving on /run/x.sock");
  EXPECT_TRUE(ServiceNotifier::Status("recovering"));
  EXPECT_EQ(manager.Receive(), "STATUS=recovering");
  EXPECT_TRUE(ServiceNotifier::PetWatchdog());
  EXPECT_EQ(manager.Receive(), "WATCHDOG=1");
  EXPECT_TRUE(ServiceNotifier::Stopping("draining"));
  EXPECT_EQ(manager.Receive(), "STOPPING=1\nSTATUS=draining");
}

TEST(ServiceNotifierTest, ASocketNobodyListensOnIsNotFatal) {
  ::setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock", 1);
  EXPECT_FALSE(ServiceNotifier::Ready("serving"));
  ::unsetenv("NOTIFY_SOCKET");
}

TEST(WatchdogIntervalTest, FromWatchdogUsecForThisProcessOnly) {
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  EXPECT_EQ(WatchdogIntervalFromEnvironment(), std::nullopt);
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  EXPECT_EQ(WatchdogIntervalFromEnvironment(), absl::Seconds(3));
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_EQ(WatchdogIntervalFromEnvironment(), absl::Seconds(3));
  // Meant for another process (a parent that did not unset it).
  ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);
  EXPECT_EQ(WatchdogIntervalFromEnvironment(), std::nullopt);
  ::unsetenv("WATCHDOG_PID");
  ::setenv("WATCHDOG_USEC", "0", 1);
  EXPECT_EQ(WatchdogIntervalFromEnvironment(), std::nullopt);
  ::unsetenv("WATCHDOG_USEC");
}

TEST(WatchdogTest, PetsTheManagerEveryHalfIntervalWhileHealthy) {
  NotifySocket manager;
  ASSERT_TRUE(manager.bound());
  std::atomic<int> checks{0};
  Watchdog watchdog(absl::Milliseconds(200), [&] {
    ++checks;
    return absl::OkStatus();
  });
  EXPECT_EQ(watchdog.period(), absl::Milliseconds(100));
  ASSERT_TRUE(watchdog.Start().ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(manager.Receive(), "WATCHDOG=1");
  watchdog.Stop();
  EXPECT_GE(checks.load(), 3);
  // Stopped: no more pets.
  while (!manager.Receive(50).empty()) {
  }
  EXPECT_EQ(manager.Receive(300), "");
}

TEST(WatchdogTest, StopsPettingWhileUnhealthyAndResumes) {
  NotifySocket manager;
  ASSERT_TRUE(manager.bound());
  std::atomic<bool> healthy{false};
  std::atomic<int> pets{0};
  std::atomic<int> checks{0};
  Watchdog watchdog(
      absl::Milliseconds(100),
      [&] {
        ++checks;
        return healthy ? absl::OkStatus()
                       : absl::UnavailableError("Snapshots socket: no answer");
      },
      [&] { ++pets; });
  ASSERT_TRUE(watchdog.Start().ok());
  // Unhealthy: checked, never petted; the manager is told why.
  EXPECT_THAT(manager.Receive(), HasSubstr("STATUS=unhealthy: Snapshots"));
  while (checks < 4) ::usleep(10'000);
  EXPECT_EQ(pets.load(), 0);
  healthy = true;
  EXPECT_EQ(manager.Receive(), "STATUS=serving");
  while (pets < 2) ::usleep(10'000);
  watchdog.Stop();
  EXPECT_GE(pets.load(), 2);
}

}  // namespace
}  // namespace snapledger
