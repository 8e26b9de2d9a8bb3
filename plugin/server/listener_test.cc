#include "plugin/server/listener.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>

#include "absl/synchronization/mutex.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

namespace fs = std::filesystem;
using AnyService = containerd::services::snapshots::v1::Snapshots::Service;

class ListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "listener-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    path_ = dir_ + "/s.sock";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  absl::StatusOr<std::unique_ptr<Listener>> StartListener() {
    return Listener::Start("test", path_, 0117, SyncPollers{},
                           [] { return std::make_unique<AnyService>(); });
  }

  // What gRPC 1.51 leaves after a failed accept4: a socket that is
  // listening (connect succeeds into the backlog) but that nobody accepts
  // from, so no client ever completes a handshake. Renamed over the path.
  int PlantDeafSocket() {
    const std::string temp = dir_ + "/deaf.sock";
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, temp.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd, 16), 0);
    EXPECT_EQ(::rename(temp.c_str(), path_.c_str()), 0);
    return fd;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(ListenerTest, AcceptsRestartsAndShutsDown) {
  auto listener = StartListener();
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_TRUE((*listener)->Accepts(absl::Seconds(10)));
  ASSERT_TRUE((*listener)->Restart(absl::Seconds(1)).ok());
  EXPECT_EQ((*listener)->restarts(), 1);
  EXPECT_TRUE((*listener)->Accepts(absl::Seconds(10)));
  (*listener)->Shutdown(absl::Seconds(1));
  EXPECT_FALSE(fs::exists(path_));
  EXPECT_FALSE((*listener)->Restart(absl::Seconds(1)).ok());
}

TEST_F(ListenerTest, ADeafSocketIsNotAccepting) {
  auto listener = StartListener();
  ASSERT_TRUE(listener.ok()) << listener.status();
  int deaf = PlantDeafSocket();
  EXPECT_FALSE((*listener)->Accepts(absl::Milliseconds(500)));
  ::close(deaf);
}

// The doctor finds the listener deaf on its next probe and serves the path
// anew; afterwards clients get in again.
TEST_F(ListenerTest, DoctorServesADeafSocketAnew) {
  auto listener = StartListener();
  ASSERT_TRUE(listener.ok()) << listener.status();
  int deaf = PlantDeafSocket();
  ListenerDoctorOptions options;
  options.probe_interval = absl::Milliseconds(100);
  options.probe_timeout = absl::Milliseconds(500);
  options.grace = absl::Milliseconds(100);
  ListenerDoctor doctor({listener->get()}, options);
  doctor.Start();
  // Liveness bound only (not a speed goal): probes come every 100 ms.
  for (int i = 0; i < 600 && (*listener)->restarts() == 0; ++i) {
    ::usleep(50 * 1000);
  }
  doctor.Stop();
  EXPECT_GE((*listener)->restarts(), 1);
  EXPECT_TRUE((*listener)->Accepts(absl::Seconds(10)));
  ::close(deaf);
}

// What grpc.health.v1.Health/Check answers on `path` for the whole server:
// "SERVING", "NOT_SERVING", or the call's error. By hand (no generated
// health stub in Debian): the request is empty, the response is field 1
// (status) as a varint.
std::string HealthOf(const std::string& path) {
  grpc::GenericStub stub(
      grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status status = done.get_future().get();
  if (!status.ok()) return "error: " + status.error_message();
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return "error: unreadable response";
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  if (bytes == std::string("\x08\x01", 2)) return "SERVING";
  if (bytes == std::string("\x08\x02", 2)) return "NOT_SERVING";
  return "error: unexpected response";
}

// Honest health (issue 15): the health service follows the daemon's own
// check (the ledger refusing writes), both ways, and a restarted server
// keeps the status.
TEST_F(ListenerTest, HealthServiceSaysNotServingWhileTheHealthCheckFails) {
  grpc::EnableDefaultHealthCheckService(true);
  auto listener = StartListener();
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_EQ(HealthOf(path_), "SERVING");

  absl::Mutex mu;
  absl::Status health = absl::UnavailableError("ledger is not writable");
  ListenerDoctorOptions options;
  options.health_interval = absl::Milliseconds(20);
  options.health = [&] {
    absl::MutexLock lock(&mu);
    return health;
  };
  ListenerDoctor doctor({listener->get()}, options);
  doctor.Start();
  // Liveness bounds only (not speed goals): the doctor asks every 20 ms.
  auto wait_for = [&](const std::string& want) {
    std::string got;
    for (int i = 0; i < 500 && (got = HealthOf(path_)) != want; ++i) {
      ::usleep(20 * 1000);
    }
    return got;
  };
  EXPECT_EQ(wait_for("NOT_SERVING"), "NOT_SERVING");
  ASSERT_TRUE((*listener)->Restart(absl::Milliseconds(100)).ok());
  EXPECT_EQ(HealthOf(path_), "NOT_SERVING");
  {
    absl::MutexLock lock(&mu);
    health = absl::OkStatus();
  }
  EXPECT_EQ(wait_for("SERVING"), "SERVING");
  doctor.Stop();
}

}  // namespace
}  // namespace snapledger
