#include "plugin/config.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/config_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& text) {
    std::string path = dir_ + "/config.toml";
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(ConfigTest, DefaultsAreValid) {
  Config c;
  EXPECT_TRUE(ValidateConfig(c).ok());
  EXPECT_TRUE(c.ledger_sync);
  EXPECT_FALSE(c.native_sync);
  EXPECT_EQ(c.backend, "native");
}

TEST_F(ConfigTest, FileOverridesDefaults) {
  auto c = LoadConfigFile(Write(R"(
root = "/srv/sl"
address = "/run/x.sock"
backend = "native"
log_level = "debug"
shutdown_timeout = "5s"
reconcile_interval = "30s"
[ledger]
durability = "async"
[native]
sync = true
)"),
                          Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->root, "/srv/sl");
  EXPECT_EQ(c->address, "/run/x.sock");
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->shutdown_timeout, absl::Seconds(5));
  EXPECT_EQ(c->reconcile_interval, absl::Seconds(30));
  EXPECT_FALSE(c->ledger_sync);
  EXPECT_TRUE(c->native_sync);
}

TEST_F(ConfigTest, ClearErrorsForBadFiles) {
  auto missing = LoadConfigFile(dir_ + "/nope.toml", Config{});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  auto syntax = LoadConfigFile(Write("root = \n"), Config{});
  EXPECT_EQ(syntax.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(syntax.status().message()), HasSubstr(":1:"));

  auto unknown = LoadConfigFile(Write("\n\nroots = \"/x\"\n"), Config{});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr(":3: unknown setting `roots`"));

  auto type = LoadConfigFile(Write("root = 5\n"), Config{});
  EXPECT_THAT(std::string(type.status().message()),
              HasSubstr("`root` must be a string"));

  auto durability =
      LoadConfigFile(Write("[ledger]\ndurability = \"maybe\"\n"), Config{});
  EXPECT_THAT(std::string(durability.status().message()),
              HasSubstr("must be \"sync\" or \"async\""));

  auto native = LoadConfigFile(Write("[native]\nsync = \"yes\"\n"), Config{});
  EXPECT_THAT(std::string(native.status().message()),
              HasSubstr("`native.sync` must be true or false"));

  auto duration =
      LoadConfigFile(Write("shutdown_timeout = \"soon\"\n"), Config{});
  EXPECT_THAT(std::string(duration.status().message()),
              HasSubstr("not a duration"));
}

TEST_F(ConfigTest, ValidationNamesTheProblem) {
  Config c;
  c.root = "relative";
  EXPECT_THAT(std::string(ValidateConfig(c).message()),
              HasSubstr("root must be an absolute"));
  c = Config{};
  c.address = "/" + std::string(200, 'a');
  EXPECT_THAT(std::string(ValidateConfig(c).message()), HasSubstr("too long"));
  c = Config{};
  c.backend = "zfs";
  EXPECT_THAT(std::string(ValidateConfig(c).message()),
              HasSubstr("unknown backend \"zfs\""));
  c = Config{};
  c.log_level = "loud";
  EXPECT_THAT(std::string(ValidateConfig(c).message()),
              HasSubstr("unknown log level"));
  c = Config{};
  c.remove_policy = "ignore";
  EXPECT_THAT(std::string(ValidateConfig(c).message()),
              HasSubstr("remove_policy must be \"refuse\" or \"defer\""));
  c = Config{};
  c.backend_timeout = absl::Seconds(-1);
  EXPECT_THAT(std::string(ValidateConfig(c).message()),
              HasSubstr("backend_timeout"));
  c = Config{};
  c.remove_retry.max_backoff = absl::Milliseconds(1);
  EXPECT_THAT(std::string(ValidateConfig(c).message()),
              HasSubstr("remove_queue: "));
}

TEST_F(ConfigTest, RemovalSettings) {
  Config defaults;
  EXPECT_EQ(defaults.remove_policy, "refuse");
  EXPECT_EQ(defaults.backend_timeout, absl::Seconds(60));

  auto c = LoadConfigFile(Write(R"(
remove_policy = "defer"
backend_timeout = "5s"
[remove_queue]
initial_backoff = "250ms"
max_backoff = "1m"
jitter = 0.5
max_attempts = 3
)"),
                          Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->remove_policy, "defer");
  EXPECT_EQ(c->backend_timeout, absl::Seconds(5));
  EXPECT_EQ(c->remove_retry.initial_backoff, absl::Milliseconds(250));
  EXPECT_EQ(c->remove_retry.max_backoff, absl::Minutes(1));
  EXPECT_DOUBLE_EQ(c->remove_retry.jitter, 0.5);
  EXPECT_EQ(c->remove_retry.max_attempts, 3);
  EXPECT_TRUE(ValidateConfig(*c).ok());

  auto unknown =
      LoadConfigFile(Write("[remove_queue]\nretries = 3\n"), Config{});
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr(":2: unknown setting `remove_queue.retries`"));
  auto attempts =
      LoadConfigFile(Write("[remove_queue]\nmax_attempts = 0\n"), Config{});
  EXPECT_THAT(std::string(attempts.status().message()),
              HasSubstr("max_attempts` must be an integer"));
  auto backoff = LoadConfigFile(
      Write("[remove_queue]\ninitial_backoff = \"later\"\n"), Config{});
  EXPECT_THAT(std::string(backoff.status().message()),
              HasSubstr("`remove_queue.initial_backoff` is not a duration"));
  auto jitter =
      LoadConfigFile(Write("[remove_queue]\njitter = \"some\"\n"), Config{});
  EXPECT_THAT(std::string(jitter.status().message()),
              HasSubstr("`remove_queue.jitter` must be a number"));
}

}  // namespace
}  // namespace snapledger
