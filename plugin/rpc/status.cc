#include "plugin/rpc/status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace snapledger {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status, std::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(CodeOf(status),
                      what.empty() ? status.error_message()
                                   : absl::StrCat(std::string(what), ": ",
                                                  status.error_message()));
}

}  // namespace snapledger
