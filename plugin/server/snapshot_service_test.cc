// The Snapshots API end to end over a real unix socket: the daemon started
// in-process with the native backend, called through gRPC as containerd
// calls a proxy. Checks codes and messages as containerd sees them.
#include "plugin/server/snapshot_service.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/admin/admin_service.h"
#include "plugin/core/coordinator.h"
#include "plugin/server/daemon.h"
#include "plugin/server/host_paths.h"
#include "plugin/testing/ledger_fixture.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
namespace v1 = snapshots_v1;

class SnapshotServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/svc_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    config_.root = dir_ + "/root";
    config_.address = dir_ + "/run/snapledger.sock";
    config_.shutdown_timeout = absl::Seconds(5);
    StartDaemon();
  }
  void TearDown() override {
    stub_.reset();
    daemon_.reset();
    std::filesystem::remove_all(dir_);
  }
  void StartDaemon() {
    auto d = Daemon::Start(config_);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    auto channel = grpc::CreateChannel("unix:" + config_.address,
                                       grpc::InsecureChannelCredentials());
    stub_ = v1::Snapshots::NewStub(channel);
  }
  void RestartDaemon() {
    stub_.reset();
    daemon_->Shutdown(absl::Seconds(5));
    daemon_.reset();
    StartDaemon();
  }

  grpc::Status Prepare(const std::string& key, const std::string& parent,
                       v1::PrepareSnapshotResponse* resp = nullptr,
                       std::map<std::string, std::string> labels = {}) {
    grpc::ClientContext ctx;
    v1::PrepareSnapshotRequest req;
    req.set_snapshotter("snapledger");
    req.set_key(key);
    req.set_parent(parent);
    for (auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    v1::PrepareSnapshotResponse local;
    return stub_->Prepare(&ctx, req, resp ? resp : &local);
  }
  grpc::Status View(const std::string& key, const std::string& parent,
                    v1::ViewSnapshotResponse* resp = nullptr) {
    grpc::ClientContext ctx;
    v1::ViewSnapshotRequest req;
    req.set_key(key);
    req.set_parent(parent);
    v1::ViewSnapshotResponse local;
    return stub_->View(&ctx, req, resp ? resp : &local);
  }
  grpc::Status Commit(const std::string& name, const std::string& key,
                      std::map<std::string, std::string> labels = {}) {
    grpc::ClientContext ctx;
    v1::CommitSnapshotRequest req;
    req.set_name(name);
    req.set_key(key);
    for (auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    google::protobuf::Empty resp;
    return stub_->Commit(&ctx, req, &resp);
  }
  grpc::Status Remove(const std::string& key) {
    grpc::ClientContext ctx;
    v1::RemoveSnapshotRequest req;
    req.set_key(key);
    google::protobuf::Empty resp;
    return stub_->Remove(&ctx, req, &resp);
  }
  grpc::Status Stat(const std::string& key, v1::Info* info = nullptr) {
    grpc::ClientContext ctx;
    v1::StatSnapshotRequest req;
    req.set_key(key);
    v1::StatSnapshotResponse resp;
    grpc::Status s = stub_->Stat(&ctx, req, &resp);
    if (info) *info = resp.info();
    return s;
  }
  grpc::Status Mounts(const std::string& key, v1::MountsResponse* resp) {
    grpc::ClientContext ctx;
    v1::MountsRequest req;
    req.set_key(key);
    return stub_->Mounts(&ctx, req, resp);
  }
  grpc::Status Usage(const std::string& key, v1::UsageResponse* resp) {
    grpc::ClientContext ctx;
    v1::UsageRequest req;
    req.set_key(key);
    return stub_->Usage(&ctx, req, resp);
  }
  grpc::Status Update(const std::string& key,
                      std::map<std::string, std::string> labels,
                      std::vector<std::string> paths, v1::Info* out = nullptr) {
    grpc::ClientContext ctx;
    v1::UpdateSnapshotRequest req;
    req.mutable_info()->set_name(key);
    for (auto& [k, v] : labels) (*req.mutable_info()->mutable_labels())[k] = v;
    for (auto& p : paths) req.mutable_update_mask()->add_paths(p);
    v1::UpdateSnapshotResponse resp;
    grpc::Status s = stub_->Update(&ctx, req, &resp);
    if (out) *out = resp.info();
    return s;
  }
  // Names listed for `filters`, and the number of stream messages.
  grpc::Status List(std::vector<std::string> filters,
                    std::vector<std::string>* names, int* messages = nullptr) {
    grpc::ClientContext ctx;
    v1::ListSnapshotsRequest req;
    for (auto& f : filters) req.add_filters(f);
    auto reader = stub_->List(&ctx, req);
    v1::ListSnapshotsResponse resp;
    int n = 0;
    while (reader->Read(&resp)) {
      ++n;
      for (const auto& info : resp.info()) names->push_back(info.name());
    }
    if (messages) *messages = n;
    return reader->Finish();
  }
  grpc::Status Cleanup() {
    grpc::ClientContext ctx;
    v1::CleanupRequest req;
    google::protobuf::Empty resp;
    return stub_->Cleanup(&ctx, req, &resp);
  }
  void Layer(const std::string& name, const std::string& parent) {
    ASSERT_TRUE(Prepare(name + "-tmp", parent).ok());
    ASSERT_TRUE(Commit(name, name + "-tmp").ok());
  }
  std::string FsOf(const v1::PrepareSnapshotResponse& resp) {
    return resp.mounts(0).source();
  }

  std::string dir_;
  Config config_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::Snapshots::Stub> stub_;
};

TEST_F(SnapshotServiceTest, SocketIsCreatedWithMode0660) {
  struct stat st;
  ASSERT_EQ(::stat(config_.address.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660);
}

TEST_F(SnapshotServiceTest, AdminApiIsServedOnItsOwnSocketForRootOnly) {
  const std::string admin_address = dir_ + "/run/snapledger-admin.sock";
  struct stat st;
  ASSERT_EQ(::stat(admin_address.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600);

  ASSERT_TRUE(Prepare("k", "").ok());
  auto admin = adminpb::Admin::NewStub(grpc::CreateChannel(
      "unix:" + admin_address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  adminpb::ListResponse listed;
  ASSERT_TRUE(admin->List(&ctx, adminpb::ListRequest(), &listed).ok());
  ASSERT_EQ(listed.snapshots_size(), 1);
  EXPECT_EQ(listed.snapshots(0).key(), "k");
  grpc::ClientContext ctx2;
  adminpb::StatsResponse stats;
  ASSERT_TRUE(admin->Stats(&ctx2, adminpb::StatsRequest(), &stats).ok());
  EXPECT_TRUE(stats.live());
  EXPECT_EQ(stats.remove_policy(), "refuse");
  // The Snapshots socket does not serve the admin API.
  auto wrong = adminpb::Admin::NewStub(grpc::CreateChannel(
      "unix:" + config_.address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx3;
  EXPECT_EQ(wrong->Stats(&ctx3, adminpb::StatsRequest(), &stats).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);

  daemon_->Shutdown(absl::Seconds(1));
  EXPECT_FALSE(std::filesystem::exists(admin_address));
}

TEST_F(SnapshotServiceTest, SecondDaemonOnTheSameSocketIsRefused) {
  Config other = config_;
  other.root = dir_ + "/other";
  auto d = Daemon::Start(other);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("already serving"));
}

// What the systemd watchdog pets on (snapledgerd_main.cc).
TEST_F(SnapshotServiceTest, CheckServingNamesASocketThatDoesNotAccept) {
  EXPECT_TRUE(daemon_->CheckServing(absl::Seconds(5)).ok());
  // The admin socket's file gone: no client reaches that server any more.
  const std::string admin = DefaultAdminAddress(config_.address);
  ASSERT_TRUE(std::filesystem::remove(admin));
  absl::Status status = daemon_->CheckServing(absl::Seconds(1));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("admin socket " + admin));
  daemon_->Shutdown(absl::Seconds(1));
  EXPECT_EQ(daemon_->CheckServing(absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SnapshotServiceTest, StaleSocketIsReplacedAndShutdownRemovesSocket) {
  daemon_->Shutdown(absl::Seconds(1));
  EXPECT_FALSE(std::filesystem::exists(config_.address));
  daemon_.reset();
  StartDaemon();  // fresh start after a clean stop
  EXPECT_TRUE(Stat("nothing").error_code() == grpc::StatusCode::NOT_FOUND);
}

TEST_F(SnapshotServiceTest, PrepareCommitViewMountsThroughTheWire) {
  v1::PrepareSnapshotResponse prep;
  ASSERT_TRUE(Prepare("default/1/base-active", "", &prep,
                      {{"containerd.io/snapshot.ref", "sha256:abc"}})
                  .ok());
  ASSERT_EQ(prep.mounts_size(), 1);
  EXPECT_EQ(prep.mounts(0).type(), "bind");
  EXPECT_THAT(prep.mounts(0).options(), ElementsAre("rbind", "rw"));
  // Write into the active snapshot's tree, as an unpacker would.
  std::ofstream(FsOf(prep) + "/hello") << "hi";

  ASSERT_TRUE(Commit("default/2/base", "default/1/base-active",
                     {{"containerd.io/snapshot/x", "y"}})
                  .ok());
  v1::Info info;
  ASSERT_TRUE(Stat("default/2/base", &info).ok());
  EXPECT_EQ(info.kind(), v1::COMMITTED);
  EXPECT_EQ(info.labels().at("containerd.io/snapshot/x"), "y");
  EXPECT_FALSE(info.labels().contains("containerd.io/snapshot.ref"));
  EXPECT_GT(info.created_at().seconds(), 1600000000);

  v1::ViewSnapshotResponse view;
  ASSERT_TRUE(View("default/3/view", "default/2/base", &view).ok());
  EXPECT_THAT(view.mounts(0).options(), ElementsAre("rbind", "ro"));
  std::ifstream in(view.mounts(0).source() + "/hello");
  std::string text;
  in >> text;
  EXPECT_EQ(text, "hi");

  // A child active snapshot starts as a copy of the parent's tree.
  v1::PrepareSnapshotResponse child;
  ASSERT_TRUE(Prepare("default/4/ctr", "default/2/base", &child).ok());
  EXPECT_TRUE(std::filesystem::exists(FsOf(child) + "/hello"));
  EXPECT_NE(FsOf(child), FsOf(prep));

  v1::MountsResponse mounts;
  ASSERT_TRUE(Mounts("default/4/ctr", &mounts).ok());
  EXPECT_EQ(mounts.mounts(0).source(), FsOf(child));
  EXPECT_THAT(mounts.mounts(0).options(), ElementsAre("rbind", "rw"));
}

TEST_F(SnapshotServiceTest, ErrorCodesAndMessagesAsContainerdSeesThem) {
  Layer("base", "");
  ASSERT_TRUE(Prepare("active", "base").ok());

  grpc::Status s = Prepare("active", "base");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(s.error_message(), HasSubstr("already exists"));

  s = Prepare("x", "missing-parent");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  s = Prepare("x", "active");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = Prepare("", "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = Prepare("big", "", nullptr, {{"k", std::string(4096, 'v')}});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("4096"));

  s = View("v", "missing-parent");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  s = Commit("base", "active");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  s = Commit("n", "missing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  s = Commit("n", "base");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  s = Remove("base");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(),
              HasSubstr("cannot remove snapshot with child"));
  EXPECT_THAT(s.error_message(), HasSubstr("active"));
  s = Remove("missing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  v1::MountsResponse mounts;
  s = Mounts("base", &mounts);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  s = Mounts("missing", &mounts);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  s = Stat("missing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::UsageResponse usage;
  s = Usage("missing", &usage);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  s = Update("base", {}, {"kind"});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("cannot update \"kind\""));
  s = Update("missing", {}, {});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  std::vector<std::string> names;
  s = List({"name=="}, &names);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(SnapshotServiceTest, RemoveThenReuseKeyAndUsage) {
  Layer("base", "");
  v1::PrepareSnapshotResponse prep;
  ASSERT_TRUE(Prepare("k", "base", &prep).ok());
  std::ofstream(FsOf(prep) + "/data") << std::string(10000, 'x');
  v1::UsageResponse usage;
  ASSERT_TRUE(Usage("k", &usage).ok());
  EXPECT_GE(usage.size(), 10000);
  EXPECT_GE(usage.inodes(), 2);

  ASSERT_TRUE(Commit("layer", "k").ok());
  v1::UsageResponse committed;
  ASSERT_TRUE(Usage("layer", &committed).ok());
  EXPECT_EQ(committed.size(), usage.size());

  ASSERT_TRUE(Remove("layer").ok());
  EXPECT_EQ(Stat("layer").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Prepare("k", "base").ok());  // the key is usable again
  ASSERT_TRUE(Remove("k").ok());
  ASSERT_TRUE(Remove("base").ok());
  std::vector<std::string> names;
  ASSERT_TRUE(List({}, &names).ok());
  EXPECT_TRUE(names.empty());
  // Storage is gone too: Remove answers once the tree is renamed to
  // rm-<id>, and the tree is deleted in the background
  // (plugin/backend/fs/object_dir.h); wait for that, 10 s at most.
  int objects = 0;
  for (int tries = 0; tries < 1000; ++tries) {
    objects = 0;
    for (auto& e :
         std::filesystem::directory_iterator(config_.root + "/snapshots")) {
      (void)e;
      ++objects;
    }
    if (objects == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(objects, 0);
}

TEST_F(SnapshotServiceTest, UpdateLabelsByPath) {
  ASSERT_TRUE(Prepare("k", "", nullptr, {{"a", "1"}, {"b", "2"}}).ok());
  v1::Info info;
  ASSERT_TRUE(Update("k", {{"a", "9"}}, {"labels.a"}, &info).ok());
  EXPECT_EQ(info.labels().at("a"), "9");
  EXPECT_EQ(info.labels().at("b"), "2");
  ASSERT_TRUE(Update("k", {}, {"labels.b"}, &info).ok());
  EXPECT_FALSE(info.labels().contains("b"));
  ASSERT_TRUE(Update("k", {{"z", "1"}}, {}, &info).ok());
  EXPECT_EQ(info.labels().size(), 1u);
  ASSERT_TRUE(Stat("k", &info).ok());
  EXPECT_EQ(info.labels().at("z"), "1");
  EXPECT_GE(info.updated_at().seconds(), info.created_at().seconds());
}

TEST_F(SnapshotServiceTest, ListFiltersAndStreamsInBatches) {
  Layer("base", "");
  ASSERT_TRUE(Prepare("a1", "base", nullptr, {{"role", "x"}}).ok());
  ASSERT_TRUE(Prepare("a2", "", nullptr, {{"role", "y"}}).ok());
  ASSERT_TRUE(View("v1", "base").ok());

  auto list = [&](std::vector<std::string> filters) {
    std::vector<std::string> names;
    grpc::Status s = List(filters, &names);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return names;
  };
  EXPECT_THAT(list({}), ElementsAre("a1", "a2", "base", "v1"));
  EXPECT_THAT(list({"kind==active"}), ElementsAre("a1", "a2"));
  EXPECT_THAT(list({"kind==view"}), ElementsAre("v1"));
  EXPECT_THAT(list({"parent==base"}), ElementsAre("a1", "v1"));
  EXPECT_THAT(list({"name==base"}), ElementsAre("base"));
  EXPECT_THAT(list({"labels.role"}), ElementsAre("a1", "a2"));
  EXPECT_THAT(list({"labels.role!=x"}), ElementsAre("a2", "base", "v1"));
  EXPECT_THAT(list({"labels.role~=^[xy]$,parent==base"}), ElementsAre("a1"));
  EXPECT_THAT(list({"kind==view", "labels.role==y"}),
              UnorderedElementsAre("v1", "a2"));

  for (int i = 0; i < 250; ++i)
    ASSERT_TRUE(Prepare("many/" + std::to_string(i), "").ok());
  std::vector<std::string> names;
  int messages = 0;
  ASSERT_TRUE(List({}, &names, &messages).ok());
  EXPECT_EQ(names.size(), 254u);
  EXPECT_EQ(messages, 3);  // 100 + 100 + 54
}

TEST_F(SnapshotServiceTest, ListClosesAMessageBeforeItGrowsBeyondItsByteBound) {
  // Snapshots whose labels take a quarter of kListBatchBytes each: three
  // fit in a message, a fourth would not.
  std::map<std::string, std::string> labels;
  for (int i = 0; i < 64; ++i) {
    labels[absl::StrCat("k", 1000 + i)] = std::string(4090, 'x');
  }
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(Prepare(absl::StrCat("big", i), "", nullptr, labels).ok());
  }
  std::vector<std::string> names;
  int messages = 0;
  ASSERT_TRUE(List({}, &names, &messages).ok());
  EXPECT_THAT(names, ElementsAre("big0", "big1", "big2", "big3", "big4"));
  EXPECT_EQ(messages, 2);  // 3 + 2
}

TEST_F(SnapshotServiceTest, LabelsBeyondTheirTotalBoundAreInvalidArgument) {
  std::map<std::string, std::string> labels;
  for (int i = 0; i < 65; ++i) {
    labels[absl::StrCat("k", 1000 + i)] = std::string(4090, 'x');
  }
  grpc::Status s = Prepare("too-many-labels", "", nullptr, labels);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("maximum total size"));
  EXPECT_EQ(Prepare("too-many-labels", "").error_code(), grpc::StatusCode::OK);
}

// The request reaches the service (proto2 declarations: no UTF-8 check in
// parsing), which names the field; nothing is stored, and the ledger stays
// listable.
TEST_F(SnapshotServiceTest, InvalidUtf8IsInvalidArgumentNamingTheField) {
  grpc::Status s = Prepare("bad\xff", "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("snapshot key is not valid UTF-8"));
  s = Prepare("good", "", nullptr, {{"l\xc3", "v"}});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("label key is not valid UTF-8"));
  s = Prepare("good", "", nullptr, {{"l", "\xc0\xaf"}});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("label l value is not valid"));
  Layer("base", "");
  ASSERT_TRUE(Prepare("active", "base").ok());
  v1::CommitSnapshotRequest commit;
  commit.set_name("name\xed\xa0\x80");
  commit.set_key("active");
  google::protobuf::Empty empty;
  grpc::ClientContext ctx;
  s = stub_->Commit(&ctx, commit, &empty);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("snapshot name is not valid UTF-8"));
  std::vector<std::string> names;
  ASSERT_TRUE(List({}, &names).ok());
  EXPECT_THAT(names, ElementsAre("active", "base"));
}

TEST_F(SnapshotServiceTest, CleanupSweepsTemporaries) {
  std::filesystem::create_directories(config_.root + "/snapshots/new-abc/fs");
  ASSERT_TRUE(Cleanup().ok());
  EXPECT_FALSE(std::filesystem::exists(config_.root + "/snapshots/new-abc"));
}

TEST_F(SnapshotServiceTest, StateSurvivesRestart) {
  Layer("base", "");
  ASSERT_TRUE(Prepare("k", "base", nullptr, {{"l", "v"}}).ok());
  RestartDaemon();
  v1::Info info;
  ASSERT_TRUE(Stat("k", &info).ok());
  EXPECT_EQ(info.parent(), "base");
  EXPECT_EQ(info.labels().at("l"), "v");
  EXPECT_EQ(daemon_->recovery().intents_resolved(), 0);
  EXPECT_TRUE(daemon_->recovery().missing.empty());
  ASSERT_TRUE(Commit("top", "k").ok());
}

TEST_F(SnapshotServiceTest, ARootKeepsTheBackendItWasCreatedWith) {
  ASSERT_TRUE(Prepare("default/1/a", "").ok());
  stub_.reset();
  daemon_->Shutdown(absl::Seconds(5));
  daemon_.reset();

  Config overlay = config_;
  overlay.backend = "overlayfs";
  auto refused = Daemon::Start(overlay);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("holds snapshots of backend \"native\" and cannot be "
                        "served with backend \"overlayfs\": set backend = "
                        "\"native\""));

  StartDaemon();  // the root's own backend still serves it
  v1::PrepareSnapshotResponse resp;
  EXPECT_EQ(Prepare("default/1/a", "", &resp).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(SnapshotServiceTest, OverlayfsRootServesAndRefusesNative) {
  stub_.reset();
  daemon_.reset();
  config_.root = dir_ + "/overlay-root";
  config_.backend = "overlayfs";
  StartDaemon();
  v1::PrepareSnapshotResponse resp;
  ASSERT_TRUE(Prepare("default/1/base", "", &resp).ok());
  ASSERT_EQ(resp.mounts_size(), 1);
  EXPECT_EQ(resp.mounts(0).type(), "bind");
  EXPECT_EQ(
      resp.mounts(0).source(),
      std::filesystem::canonical(config_.root).string() + "/snapshots/1/fs");
  stub_.reset();
  daemon_->Shutdown(absl::Seconds(5));
  daemon_.reset();

  Config native = config_;
  native.backend = "native";
  auto refused = Daemon::Start(native);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("holds snapshots of backend \"overlayfs\""));
}

TEST_F(SnapshotServiceTest, KeysThatLookLikePathsNeverBecomePaths) {
  ASSERT_TRUE(Prepare("../../etc/evil key", "").ok());
  ASSERT_TRUE(Prepare("/abs/olute", "").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/etc"));
  for (auto& e :
       std::filesystem::directory_iterator(config_.root + "/snapshots")) {
    const std::string name = e.path().filename().string();
    EXPECT_TRUE(std::all_of(name.begin(), name.end(), ::isdigit)) << name;
  }
}

// Finding 5 of issue 15: never-read List streams are bounded. Each answer
// here is ~670 KB, far beyond HTTP/2's flow-control window, so a stream
// whose client does not read stays open on the server; one beyond the
// limit is refused at once, and a cancelled stream frees its place.
class ListStreamLimitTest : public testing::LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    coord_ = std::make_unique<Coordinator>(ledger_.get(), &backend_,
                                           CoordinatorOptions{});
    for (int i = 0; i < 12; ++i) {
      Labels labels;
      for (int j = 0; j < 14; ++j) {  // 4 KiB a label at most
        labels[absl::StrCat("l", j)] = std::string(4000, 'v');
      }
      ASSERT_TRUE(coord_->Prepare(absl::StrCat("k", i), "", labels).ok());
    }
    service_ = std::make_unique<SnapshotService>(coord_.get(), nullptr, 2);
    path_ = dir_ + "/s.sock";
    auto server = ServeOnUnixSocket(path_, 0117, service_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    // A client that does not read takes no more than 1 KiB a stream: no
    // window grown by bandwidth probes.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    stub_ = v1::Snapshots::NewStub(grpc::CreateCustomChannel(
        "unix:" + path_, grpc::InsecureChannelCredentials(), args));
  }
  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now());
      server_->Wait();
    }
    server_.reset();
    service_.reset();
    coord_.reset();
    LedgerFixture::TearDown();
  }
  // Liveness bound only: the count moves as gRPC finishes streams.
  bool OpenListsBecome(int n) {
    for (int i = 0; i < 500 && OpenListStreams() != n; ++i) ::usleep(10000);
    return OpenListStreams() == n;
  }
  grpc::Status ListAll(int* names) {
    grpc::ClientContext ctx;
    auto reader = stub_->List(&ctx, v1::ListSnapshotsRequest());
    v1::ListSnapshotsResponse resp;
    *names = 0;
    while (reader->Read(&resp)) *names += resp.info_size();
    return reader->Finish();
  }

  std::unique_ptr<Coordinator> coord_;
  std::unique_ptr<SnapshotService> service_;
  std::string path_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Snapshots::Stub> stub_;
};

TEST_F(ListStreamLimitTest, NeverReadStreamsAreBoundedAndCancelFreesThem) {
  int names = 0;
  ASSERT_TRUE(ListAll(&names).ok());
  EXPECT_EQ(names, 12);
  ASSERT_TRUE(OpenListsBecome(0));

  grpc::ClientContext never_read[2];
  std::unique_ptr<grpc::ClientReader<v1::ListSnapshotsResponse>> readers[2];
  for (int i = 0; i < 2; ++i) {
    readers[i] = stub_->List(&never_read[i], v1::ListSnapshotsRequest());
  }
  ASSERT_TRUE(OpenListsBecome(2));
  grpc::Status refused = ListAll(&names);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("too many List streams"));
  EXPECT_TRUE(OpenListsBecome(2));  // the refused one is not counted

  for (grpc::ClientContext& ctx : never_read) ctx.TryCancel();
  for (auto& reader : readers) (void)reader->Finish();
  ASSERT_TRUE(OpenListsBecome(0));
  ASSERT_TRUE(ListAll(&names).ok());
  EXPECT_EQ(names, 12);
}

}  // namespace
}  // namespace snapledger
