// A test fixture base: a fresh ledger in its own temporary directory, and a
// fake backend, both gone after the test. Tests that need more (a
// coordinator, a reconciler) build it on top in their own SetUp().
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "plugin/testing/fake_backend.h"
#include "store/ledger.h"

namespace snapledger::testing {

class LedgerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "snapledger_test.XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    Ledger::Options options;
    options.path = dir_ + "/ledger";
    auto ledger = Ledger::Open(options);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = *std::move(ledger);
  }
  // Subclasses that own users of the ledger reset them first in their own
  // TearDown(), then call this.
  void TearDown() override {
    ledger_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string dir_;
  std::unique_ptr<Ledger> ledger_;
  FakeBackend backend_;
};

}  // namespace snapledger::testing
