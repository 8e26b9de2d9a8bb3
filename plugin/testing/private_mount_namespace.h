// Tests that mount run in a private mount namespace of the test process, so
// that no mount they make (or fail to unmake) leaks out and no mount made
// elsewhere shows up in theirs. Registered as a gtest environment: set up
// once, before any test starts a thread (unshare(CLONE_NEWNS) fails in a
// multithreaded process). Include it in one test file per binary; tests
// that mount skip when PrivateMountNamespace::Unavailable() is not empty.
#pragma once

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace snapledger::testing {

class PrivateMountNamespace : public ::testing::Environment {
 public:
  void SetUp() override {
    if (::geteuid() != 0) {
      Unavailable() = "mount(2) needs root";
    } else if (::unshare(CLONE_NEWNS) != 0) {
      Unavailable() = absl::StrCat("unshare(CLONE_NEWNS): ", strerror(errno));
    } else if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) !=
               0) {
      // Mounts could still propagate out: make none.
      Unavailable() = absl::StrCat(
          "making / private in the new mount namespace: ", strerror(errno));
    }
  }
  // Why mount tests cannot run; empty if they can.
  static std::string& Unavailable() {
    static std::string* reason = new std::string;
    return *reason;
  }
};

[[maybe_unused]] inline ::testing::Environment* const kPrivateMountNamespace =
    ::testing::AddGlobalTestEnvironment(new PrivateMountNamespace);

// `Fixture` for tests that mount: skipped, before Fixture's own set-up, when
// the private mount namespace is unavailable.
template <typename Fixture>
class MountingTest : public Fixture {
 protected:
  using Fixture::Fixture;
  void SetUp() override {
    if (!PrivateMountNamespace::Unavailable().empty()) {
      GTEST_SKIP() << PrivateMountNamespace::Unavailable();
    }
    Fixture::SetUp();
  }
};

}  // namespace snapledger::testing
