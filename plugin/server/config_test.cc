#include "plugin/server/config.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
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
  c.backend_timeout = absl::Seconds(-1);
  EXPECT_THAT(std::string(ValidateConfig(c).message()),
              HasSubstr("backend_timeout"));
  c = Config{};
  c.remove_retry.max_backoff = absl::Milliseconds(1);
  EXPECT_THAT(std::string(ValidateConfig(c).message()),
              HasSubstr("remove_queue: "));
}

TEST_F(ConfigTest, RemoteSettings) {
  auto c = LoadConfigFile(Write(R"(
backend = "remote"
[remote]
address = "unix:///run/stargz/stargz.sock"
call_timeout = "5s"
)"),
                          Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->remote_address, "unix:///run/stargz/stargz.sock");
  EXPECT_EQ(c->remote_call_timeout, absl::Seconds(5));
  EXPECT_TRUE(ValidateConfig(*c).ok()) << ValidateConfig(*c);

  Config missing;
  missing.backend = "remote";
  EXPECT_THAT(std::string(ValidateConfig(missing).message()),
              HasSubstr("--remote-address"));
  Config pipe = *c;
  pipe.remote_address = "npipe:////./pipe/stargz";
  EXPECT_THAT(std::string(ValidateConfig(pipe).message()),
              HasSubstr("scheme \"npipe\" is not supported"));
  auto unknown =
      LoadConfigFile(Write("[remote]\nadress = \"/x.sock\"\n"), Config{});
  EXPECT_TRUE(absl::IsInvalidArgument(unknown.status()));
}

TEST_F(ConfigTest, RemovalSettings) {
  Config defaults;
  EXPECT_EQ(defaults.remove_policy, RemovePolicy::kRefuse);
  auto bad = LoadConfigFile(Write("remove_policy = \"ignore\"\n"), Config{});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("remove_policy must be \"refuse\" or \"defer\", "
                        "not \"ignore\""));
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
  EXPECT_EQ(c->remove_policy, RemovePolicy::kDefer);
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

TEST_F(ConfigTest, OwnershipSettings) {
  auto c = LoadConfigFile(Write(R"(
containerd_address = "/run/containerd/containerd.sock"
containerd_snapshotter = "sl"
[containers]
dead_after = "90s"
[reaper]
enabled = true
match = ["obuilder-run-*", "build-?"]
dry_run = true
)"),
                          Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->containerd_address, "/run/containerd/containerd.sock");
  EXPECT_EQ(c->containerd_snapshotter, "sl");
  EXPECT_EQ(c->dead_after, absl::Seconds(90));
  EXPECT_TRUE(c->reaper_enabled);
  EXPECT_TRUE(c->reap_dry_run);
  EXPECT_THAT(c->reap_match,
              ::testing::ElementsAre("obuilder-run-*", "build-?"));
  EXPECT_TRUE(ValidateConfig(*c).ok());
}

TEST_F(ConfigTest, OwnershipDefaultsAreOff) {
  Config c;
  EXPECT_EQ(c.containerd_address, "");
  EXPECT_FALSE(c.reaper_enabled);
  EXPECT_EQ(c.dead_after, absl::Minutes(10));
}

TEST_F(ConfigTest, BadOwnershipSettings) {
  struct Case {
    const char* text;
    const char* error;
  } cases[] = {
      {"[containers]\ndead_after = \"soon\"\n", "is not a duration"},
      {"[containers]\ngrace = \"1m\"\n", "unknown setting `containers.grace`"},
      {"[reaper]\nenabled = \"yes\"\n", "must be true or false"},
      {"[reaper]\nmatch = \"build-*\"\n", "must be an array of strings"},
      {"[reaper]\nmatch = [1]\n", "must be a string"},
      {"[reaper]\nwho = 1\n", "unknown setting `reaper.who`"},
  };
  for (const Case& k : cases) {
    auto c = LoadConfigFile(Write(k.text), Config{});
    ASSERT_FALSE(c.ok()) << k.text;
    EXPECT_THAT(c.status().message(), HasSubstr(k.error)) << k.text;
  }
  Config reaper_without_containerd;
  reaper_without_containerd.reaper_enabled = true;
  reaper_without_containerd.reap_match = {"build-*"};
  EXPECT_THAT(ValidateConfig(reaper_without_containerd).message(),
              HasSubstr("needs containerd_address"));
  Config reaper_without_match;
  reaper_without_match.containerd_address = "/run/containerd/containerd.sock";
  reaper_without_match.reaper_enabled = true;
  EXPECT_THAT(ValidateConfig(reaper_without_match).message(),
              HasSubstr("needs reaper.match"));
  Config relative;
  relative.containerd_address = "containerd.sock";
  EXPECT_THAT(ValidateConfig(relative).message(),
              HasSubstr("containerd_address must be an absolute"));
  Config negative;
  negative.dead_after = absl::Seconds(-1);
  EXPECT_FALSE(ValidateConfig(negative).ok());
}

TEST_F(ConfigTest, ShippedConfigLoadsAndIsValid) {
  auto c =
      LoadConfigFile(SNAPLEDGER_SOURCE_DIR "/install/config.toml", Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(ValidateConfig(*c).ok());
  EXPECT_EQ(c->containerd_address, "");
  EXPECT_FALSE(c->reaper_enabled);
  EXPECT_FALSE(c->prune.enabled);
  EXPECT_EQ(c->dead_after, absl::Minutes(10));
  // The shipped default is the production backend.
  EXPECT_EQ(c->backend, "overlayfs");
}

// config.h's header comment lists every setting with its default: it must
// be a file the loader accepts, and say the defaults truly.
TEST_F(ConfigTest, HeaderExampleLoadsAndStatesTheDefaults) {
  std::ifstream header(SNAPLEDGER_SOURCE_DIR "/plugin/server/config.h");
  std::string line, toml;
  bool in_example = false;
  while (std::getline(header, line)) {
    if (line.starts_with("// Every setting")) {
      in_example = true;
      continue;
    }
    if (!in_example) continue;
    if (!line.starts_with("//")) break;
    toml += line.substr(std::min<size_t>(line.size(), 3)) + "\n";
  }
  ASSERT_THAT(toml, HasSubstr("[reaper]"));
  auto c = LoadConfigFile(Write(toml), Config{});
  ASSERT_TRUE(c.ok()) << c.status() << "\n" << toml;
  const Config defaults;
  EXPECT_EQ(c->root, defaults.root);
  EXPECT_EQ(c->address, defaults.address);
  EXPECT_EQ(c->backend, defaults.backend);
  EXPECT_EQ(c->remove_policy, defaults.remove_policy);
  EXPECT_EQ(c->backend_timeout, defaults.backend_timeout);
  EXPECT_EQ(c->ledger_sync, defaults.ledger_sync);
  EXPECT_EQ(c->native_sync, defaults.native_sync);
  EXPECT_EQ(c->overlay_sync, defaults.overlay_sync);
  EXPECT_EQ(c->overlay_mount_options, defaults.overlay_mount_options);
  EXPECT_EQ(c->remove_retry.max_attempts, defaults.remove_retry.max_attempts);
  EXPECT_EQ(c->containerd_address, defaults.containerd_address);
  EXPECT_EQ(c->containerd_snapshotter, defaults.containerd_snapshotter);
  EXPECT_EQ(c->dead_after, defaults.dead_after);
  EXPECT_EQ(c->reaper_enabled, defaults.reaper_enabled);
  EXPECT_EQ(c->reap_dry_run, defaults.reap_dry_run);
  EXPECT_EQ(c->prune.enabled, defaults.prune.enabled);
  EXPECT_EQ(c->prune.interval, defaults.prune.interval);
  EXPECT_EQ(c->prune.min_free.has_value(), defaults.prune.min_free.has_value());
  EXPECT_EQ(c->prune.max_used, defaults.prune.max_used);
  EXPECT_EQ(c->prune.keep_duration, defaults.prune.keep_duration);
  EXPECT_EQ(c->prune.pressure_dead_after, defaults.prune.pressure_dead_after);
  EXPECT_EQ(c->prune.containers, defaults.prune.containers);
  EXPECT_EQ(c->prune.leases, defaults.prune.leases);
  EXPECT_EQ(c->metrics_address, defaults.metrics_address);
  EXPECT_EQ(c->metrics_allow_non_loopback, defaults.metrics_allow_non_loopback);
  EXPECT_EQ(c->prune.images, defaults.prune.images);
  EXPECT_TRUE(defaults.prune.images.empty());  // opt-in
}

TEST_F(ConfigTest, PruneSettings) {
  auto c = LoadConfigFile(Write(R"(
containerd_address = "/run/containerd/containerd.sock"
[prune]
enabled = true
interval = "30s"
min_free = "15%"
max_used = "100GiB"
keep_duration = "72h"
dry_run = true
dead_after = "2m"
containers = ["obuilder-run-*"]
leases = ["buildkit-*", "ci-*"]
images = ["docker.io/library/*:ci-*", "registry.local/tmp/*"]
)"),
                          Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(ValidateConfig(*c).ok()) << ValidateConfig(*c);
  EXPECT_TRUE(c->prune.enabled);
  EXPECT_EQ(c->prune.interval, absl::Seconds(30));
  ASSERT_TRUE(c->prune.min_free.has_value());
  EXPECT_TRUE(c->prune.min_free->percent);
  EXPECT_EQ(c->prune.min_free->value, 15);
  EXPECT_EQ(c->prune.max_used, int64_t{100} << 30);
  EXPECT_EQ(c->prune.keep_duration, absl::Hours(72));
  EXPECT_TRUE(c->prune.dry_run);
  EXPECT_EQ(c->prune.pressure_dead_after, absl::Minutes(2));
  EXPECT_THAT(c->prune.containers, ElementsAre("obuilder-run-*"));
  EXPECT_THAT(c->prune.leases, ElementsAre("buildkit-*", "ci-*"));
  EXPECT_THAT(c->prune.images,
              ElementsAre("docker.io/library/*:ci-*", "registry.local/tmp/*"));
}

TEST_F(ConfigTest, PruneRefusesBadValuesNamingThem) {
  const std::pair<const char*, const char*> cases[] = {
      {"[prune]\nmin_free = \"150%\"\n", "prune.min_free"},
      {"[prune]\nmin_free = \"lots\"\n", "prune.min_free"},
      {"[prune]\nmax_used = \"12 parsecs\"\n", "prune.max_used"},
      {"[prune]\nkeep_duration = \"3 days\"\n", "prune.keep_duration"},
      {"[prune]\nleases = \"ci-*\"\n", "prune.leases"},
      {"[prune]\nimages = \"ci-*\"\n", "prune.images"},
      {"[prune]\nimages = [\"ci-*\", 3]\n", "prune.images"},
      {"[prune]\nmax_free = \"1G\"\n", "unknown setting `prune.max_free`"},
  };
  for (const auto& [text, want] : cases) {
    auto c = LoadConfigFile(Write(text), Config{});
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(want)) << text;
  }
  Config no_containerd;
  no_containerd.prune.enabled = true;
  no_containerd.prune.keep_duration = absl::Hours(1);
  EXPECT_THAT(ValidateConfig(no_containerd).message(),
              HasSubstr("prune.enabled needs containerd_address"));
  Config no_policy;
  no_policy.containerd_address = "/run/containerd/containerd.sock";
  no_policy.prune.enabled = true;
  EXPECT_THAT(ValidateConfig(no_policy).message(), HasSubstr("needs a policy"));
  Config zero_dead = no_policy;
  zero_dead.prune.keep_duration = absl::Hours(1);
  zero_dead.prune.pressure_dead_after = absl::ZeroDuration();
  EXPECT_THAT(ValidateConfig(zero_dead).message(),
              HasSubstr("prune.dead_after"));
}

TEST_F(ConfigTest, MetricsAddressIsLoopbackUnlessAllowed) {
  EXPECT_EQ(Config{}.metrics_address, "");  // off by default
  auto c =
      LoadConfigFile(Write("metrics_address = \"127.0.0.1:9305\"\n"), Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics_address, "127.0.0.1:9305");
  EXPECT_TRUE(ValidateConfig(*c).ok());
  c = LoadConfigFile(Write("metrics_address = \"0.0.0.0:9305\"\n"), Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  absl::Status refused = ValidateConfig(*c);
  EXPECT_TRUE(absl::IsInvalidArgument(refused));
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("metrics_allow_non_loopback = true"));
  c = LoadConfigFile(Write("metrics_address = \"0.0.0.0:9305\"\n"
                           "metrics_allow_non_loopback = true\n"),
                     Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->metrics_allow_non_loopback);
  EXPECT_TRUE(ValidateConfig(*c).ok());
  auto bad =
      LoadConfigFile(Write("metrics_allow_non_loopback = \"yes\"\n"), Config{});
  EXPECT_FALSE(bad.ok());
}

TEST_F(ConfigTest, OverlayfsSettings) {
  auto c = LoadConfigFile(Write(R"(
backend = "overlayfs"
[overlayfs]
sync = true
mount_options = ["volatile"]
)"),
                          Config{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->backend, "overlayfs");
  EXPECT_TRUE(c->overlay_sync);
  EXPECT_THAT(c->overlay_mount_options, ElementsAre("volatile"));
  EXPECT_TRUE(ValidateConfig(*c).ok());
  auto bad =
      LoadConfigFile(Write("[overlayfs]\nmount_options = \"x\"\n"), Config{});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("`overlayfs.mount_options` must be an array"));
}

}  // namespace
}  // namespace snapledger
