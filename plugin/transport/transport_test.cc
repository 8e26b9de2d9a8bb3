#include "plugin/transport/transport.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

TEST(ParseAddressTest, UnixForms) {
  for (const char* text :
       {"unix:///run/x.sock", "unix:/run/x.sock", "/run/x.sock"}) {
    absl::StatusOr<Address> a = ParseAddress(text);
    ASSERT_TRUE(a.ok()) << text << ": " << a.status();
    EXPECT_EQ(a->scheme, "unix") << text;
    EXPECT_EQ(a->path, "/run/x.sock") << text;
    EXPECT_EQ(a->text, text);
    EXPECT_EQ(TransportFor(*a).GrpcTarget(*a), "unix:/run/x.sock");
  }
  absl::StatusOr<Address> relative = ParseAddress("run/x.sock");
  ASSERT_TRUE(relative.ok());
  EXPECT_EQ(relative->path, "run/x.sock");
}

TEST(ParseAddressTest, UnsupportedSchemesNameWhatIsSupported) {
  for (const char* text :
       {"npipe:////./pipe/snapledger", "tcp://127.0.0.1:1234", "tcp:1.2:3"}) {
    absl::StatusOr<Address> a = ParseAddress(text);
    ASSERT_FALSE(a.ok()) << text;
    EXPECT_TRUE(absl::IsInvalidArgument(a.status()));
    EXPECT_THAT(a.status().message(), HasSubstr("not supported"));
    EXPECT_THAT(a.status().message(), HasSubstr("unix://"));
  }
  EXPECT_TRUE(absl::IsInvalidArgument(ParseAddress("").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseAddress("unix://").status()));
  EXPECT_FALSE(Dial("npipe:////./pipe/x", grpc::ChannelArguments()).ok());
}

class ListenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/transport_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ListenTest, CreatesTheDirectoryAndReplacesOnlyAStaleSocket) {
  const std::string path = dir_ + "/sub/x.sock";
  absl::StatusOr<Address> a = ParseAddress("unix://" + path);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(TransportFor(*a).PrepareListen(*a).ok());
  EXPECT_TRUE(std::filesystem::is_directory(dir_ + "/sub"));

  // A socket nobody serves is stale; one that is served is refused.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  absl::Status served = TransportFor(*a).PrepareListen(*a);
  EXPECT_TRUE(absl::IsFailedPrecondition(served)) << served;
  EXPECT_THAT(served.message(), HasSubstr("already serving"));
  ::close(fd);
  EXPECT_TRUE(TransportFor(*a).PrepareListen(*a).ok());
  EXPECT_FALSE(std::filesystem::exists(path));

  // Anything else in the way is left alone.
  std::ofstream(path) << "data";
  absl::Status file = TransportFor(*a).PrepareListen(*a);
  EXPECT_TRUE(absl::IsFailedPrecondition(file));
  EXPECT_THAT(file.message(), HasSubstr("not a socket"));
  EXPECT_TRUE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace snapledger
