// absl::Status <-> grpc::Status, written once for every RPC edge: the
// Snapshots and admin services (server side), and the clients of containerd
// and of the admin API. gRPC's and Abseil's codes are the same canonical
// codes, so the code passes through unchanged.
//
// Thread-safety: pure functions.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace snapledger {

[[nodiscard]] grpc::Status ToGrpcStatus(const absl::Status& status);

// The absl::Status of a finished call; `what` (if not empty) goes before
// the message as "<what>: <message>".
[[nodiscard]] absl::Status FromGrpcStatus(const grpc::Status& status,
                                          std::string_view what = "");

// The canonical code of a finished call.
inline absl::StatusCode CodeOf(const grpc::Status& status) {
  return static_cast<absl::StatusCode>(status.error_code());
}

}  // namespace snapledger
