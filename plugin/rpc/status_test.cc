#include "plugin/rpc/status.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

TEST(StatusTest, RoundTripKeepsCodeAndMessage) {
  const absl::Status in = absl::FailedPreconditionError("busy");
  const grpc::Status wire = ToGrpcStatus(in);
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(wire.error_message(), "busy");
  EXPECT_EQ(FromGrpcStatus(wire), in);
}

TEST(StatusTest, OkIsOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "call").ok());
}

TEST(StatusTest, WhatPrefixesTheMessage) {
  const absl::Status s = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"),
      "containerd Events/Subscribe");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "containerd Events/Subscribe: connection refused");
}

}  // namespace
}  // namespace snapledger
