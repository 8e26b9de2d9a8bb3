#include "plugin/server/host_paths.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (fs::temp_directory_path() / "host-paths-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Connects to unix socket `path`; returns errno (0 on success).
int ConnectErrno(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = rc == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

TEST(PrepareRootTest, NewRootIsCreatedPrivateWhateverTheUmask) {
  TempDir tmp;
  const std::string root = tmp.path() + "/a/b/root";
  const mode_t old = ::umask(0);
  absl::Status s = PrepareRoot(root);
  ::umask(old);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(ModeOf(root), 0700);
}

TEST(PrepareRootTest, ExistingEmptyDirectoryKeepsItsMode) {
  TempDir tmp;
  const std::string root = tmp.path() + "/root";
  ASSERT_TRUE(fs::create_directory(root));
  ASSERT_EQ(::chmod(root.c_str(), 0755), 0);
  ASSERT_TRUE(PrepareRoot(root).ok());
  EXPECT_EQ(ModeOf(root), 0755);
}

TEST(PrepareRootTest, NonEmptyDirectoryThatIsNoRootIsRefusedUntouched) {
  TempDir tmp;
  const std::string root = tmp.path() + "/etc";
  ASSERT_TRUE(fs::create_directory(root));
  ASSERT_EQ(::chmod(root.c_str(), 0755), 0);
  std::ofstream(root + "/passwd") << "root:x:0:0\n";
  absl::Status s = PrepareRoot(root);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr(root));
  EXPECT_THAT(s.message(), HasSubstr("not empty"));
  EXPECT_EQ(ModeOf(root), 0755);
  EXPECT_FALSE(fs::exists(root + "/ledger"));
  EXPECT_FALSE(fs::exists(root + "/snapshots"));
}

TEST(PrepareRootTest, ExistingSnapledgerRootIsAccepted) {
  TempDir tmp;
  const std::string root = tmp.path() + "/root";
  ASSERT_TRUE(fs::create_directories(root + "/ledger"));
  std::ofstream(root + "/ledger/CURRENT") << "MANIFEST-000001\n";
  ASSERT_TRUE(fs::create_directory(root + "/snapshots"));
  ASSERT_EQ(::chmod(root.c_str(), 0750), 0);
  ASSERT_TRUE(PrepareRoot(root).ok());
  EXPECT_EQ(ModeOf(root), 0750);
}

TEST(PrepareRootTest, AFileIsRefused) {
  TempDir tmp;
  const std::string root = tmp.path() + "/file";
  std::ofstream(root) << "x";
  absl::Status s = PrepareRoot(root);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("not a directory"));
}

class ServeOnUnixSocketTest : public ::testing::Test {
 protected:
  TempDir tmp_;
  // Every method unimplemented: only the listener matters here.
  using AnyService = containerd::services::snapshots::v1::Snapshots::Service;
  AnyService service_;
};

// The file appears only when connections are accepted: a client that
// connects the moment it sees the path always gets in.
TEST_F(ServeOnUnixSocketTest, SocketAcceptsFromTheMomentItAppears) {
  for (int round = 0; round < 30; ++round) {
    const std::string path = tmp_.path() + "/s" + std::to_string(round);
    std::atomic<bool> stop{false};
    int first_errno = -1;
    std::thread client([&] {
      while (!stop.load()) {
        if (::access(path.c_str(), F_OK) == 0) {
          first_errno = ConnectErrno(path);
          return;
        }
      }
    });
    absl::StatusOr<std::unique_ptr<grpc::Server>> server =
        ServeOnUnixSocket(path, 0117, &service_);
    stop = !server.ok();
    client.join();
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ(first_errno, 0)
        << "round " << round
        << ": connect failed: " << std::strerror(first_errno);
    EXPECT_EQ(ModeOf(path), 0660);
    EXPECT_FALSE(fs::exists(path + ".new"));
    (*server)->Shutdown();
  }
}

TEST_F(ServeOnUnixSocketTest, StaleSocketIsReplacedLiveOneRefused) {
  const std::string path = tmp_.path() + "/s";
  {
    auto first = ServeOnUnixSocket(path, 0117, &service_);
    ASSERT_TRUE(first.ok()) << first.status();
    AnyService other;
    auto second = ServeOnUnixSocket(path, 0117, &other);
    EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
    EXPECT_THAT(second.status().message(), HasSubstr("already serving"));
    (*first)->Shutdown();
  }
  // The first server is gone; whatever socket file it left is stale.
  if (!fs::exists(path)) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);
  }
  AnyService third;
  auto again = ServeOnUnixSocket(path, 0117, &third);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ConnectErrno(path), 0);
  (*again)->Shutdown();
}

TEST_F(ServeOnUnixSocketTest, NonSocketIsNeverReplaced) {
  const std::string path = tmp_.path() + "/file";
  std::ofstream(path) << "keep me";
  auto server = ServeOnUnixSocket(path, 0117, &service_);
  EXPECT_TRUE(absl::IsFailedPrecondition(server.status())) << server.status();
  std::ifstream in(path);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "keep me");
}

TEST_F(ServeOnUnixSocketTest, OverlongPathIsInvalidArgument) {
  const std::string path = tmp_.path() + "/" + std::string(120, 'x');
  auto server = ServeOnUnixSocket(path, 0117, &service_);
  EXPECT_TRUE(absl::IsInvalidArgument(server.status())) << server.status();
  EXPECT_THAT(server.status().message(), HasSubstr("bytes long"));
}

}  // namespace
}  // namespace snapledger
