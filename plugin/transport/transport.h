// Where gRPC listens and dials: the one seam between an address a person
// writes ("unix:///run/x.sock", a bare path) and the platform's transports.
// Each transport (unix_transport.cc) handles one scheme; a new one (a
// Windows named pipe, "npipe://") is one new file and one line in
// transport.cc's table. An address whose scheme no transport of this build
// handles is refused with a message naming the supported ones.
//
// Thread-safety: pure functions, except that Listen() changes the file
// system (a stale socket is replaced) and the process umask while it runs.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/channel_arguments.h"

namespace snapledger {

// A parsed address: a scheme and the scheme's own part ("unix": a path).
struct Address {
  std::string scheme;
  std::string path;
  // As written, for messages.
  std::string text;
};

// One way to listen and dial (unix domain sockets, named pipes ...).
class Transport {
 public:
  virtual ~Transport() = default;
  // The scheme it handles ("unix").
  virtual std::string_view Scheme() const = 0;
  // Makes `address` ready to listen on: creates its directory; replaces a
  // stale endpoint no process serves; FailedPrecondition if a live process
  // serves it or something else is in the way.
  [[nodiscard]] virtual absl::Status PrepareListen(
      const Address& address) const = 0;
  // gRPC's target URI for `address` ("unix:/run/x.sock").
  virtual std::string GrpcTarget(const Address& address) const = 0;
};

// Parses `address`: "<scheme>://<rest>", "unix:<path>", or a bare path
// (unix). InvalidArgument for an empty address or a scheme no transport of
// this platform handles (the message names the supported forms).
[[nodiscard]] absl::StatusOr<Address> ParseAddress(std::string_view address);

// The transport for `address`'s scheme; never null for a parsed address.
const Transport& TransportFor(const Address& address);

// A channel to `address` (created lazily: a peer that is down is not an
// error here; calls then fail with Unavailable until it is back).
[[nodiscard]] absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(
    std::string_view address, const grpc::ChannelArguments& args);

// Adds a listening port for `address` to `builder` after PrepareListen.
// `bound` is set by gRPC when the server starts (0: it could not listen).
[[nodiscard]] absl::Status AddListener(const Address& address,
                                       grpc::ServerBuilder* builder,
                                       int* bound);

}  // namespace snapledger
