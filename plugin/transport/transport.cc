#include "plugin/transport/transport.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "plugin/transport/unix_transport.h"

namespace snapledger {
namespace {

// The transports of this platform. A named-pipe transport for Windows adds
// its line here.
const std::vector<const Transport*>& Transports() {
  static const std::vector<const Transport*> kTransports = {&UnixTransport()};
  return kTransports;
}

const Transport* Find(std::string_view scheme) {
  for (const Transport* t : Transports()) {
    if (t->Scheme() == scheme) return t;
  }
  return nullptr;
}

std::string Supported() {
  std::vector<std::string> forms;
  for (const Transport* t : Transports()) {
    forms.push_back(absl::StrCat(std::string(t->Scheme()), "://"));
  }
  forms.push_back("a bare path (unix)");
  return absl::StrJoin(forms, ", ");
}

}  // namespace

absl::StatusOr<Address> ParseAddress(std::string_view address) {
  if (address.empty()) return absl::InvalidArgumentError("empty address");
  Address parsed;
  parsed.text = std::string(address);
  const size_t sep = address.find("://");
  if (sep != std::string_view::npos) {
    parsed.scheme = std::string(address.substr(0, sep));
    parsed.path = std::string(address.substr(sep + 3));
  } else if (address.starts_with("unix:")) {
    parsed.scheme = "unix";
    parsed.path = std::string(address.substr(5));
  } else if (address.find(':') != std::string_view::npos &&
             address.front() != '/' && address.front() != '.') {
    // "tcp:host:port", "npipe:..." without slashes: a scheme, not a path.
    parsed.scheme = std::string(address.substr(0, address.find(':')));
    parsed.path = std::string(address.substr(address.find(':') + 1));
  } else {
    parsed.scheme = "unix";
    parsed.path = std::string(address);
  }
  if (Find(parsed.scheme) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "address ", parsed.text, ": scheme \"", parsed.scheme,
        "\" is not supported on this platform (supported: ", Supported(), ")"));
  }
  if (parsed.path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("address ", parsed.text, " names no endpoint"));
  }
  return parsed;
}

const Transport& TransportFor(const Address& address) {
  return *Find(address.scheme);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(
    std::string_view address, const grpc::ChannelArguments& args) {
  absl::StatusOr<Address> parsed = ParseAddress(address);
  if (!parsed.ok()) return parsed.status();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(TransportFor(*parsed).GrpcTarget(*parsed),
                                grpc::InsecureChannelCredentials(), args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot make a channel to ", parsed->text));
  }
  return channel;
}

absl::Status AddListener(const Address& address, grpc::ServerBuilder* builder,
                         int* bound) {
  const Transport& transport = TransportFor(address);
  if (absl::Status s = transport.PrepareListen(address); !s.ok()) return s;
  builder->AddListeningPort(transport.GrpcTarget(address),
                            grpc::InsecureServerCredentials(), bound);
  return absl::OkStatus();
}

}  // namespace snapledger
