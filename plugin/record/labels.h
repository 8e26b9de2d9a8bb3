// Snapshot labels, as containerd limits them.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "store/ledger.h"

namespace snapledger {

using Labels = std::map<std::string, std::string>;

// containerd's limit on one label (key and value together), in bytes.
inline constexpr size_t kMaxLabelBytes = 4096;

// snapledger's limit on all of one snapshot's labels together (keys and
// values), in bytes: containerd sets none, but a List message must hold at
// least one snapshot, and gRPC's default limit on a message is 4 MiB (see
// kListBatchBytes in plugin/server/snapshot_service.h). 64 labels of the
// largest size.
inline constexpr size_t kMaxLabelsTotalBytes = 64 * kMaxLabelBytes;

// InvalidArgument naming `field` ("snapshot key", "parent", …) unless
// `value` is valid UTF-8: containerd's API carries text as protobuf strings,
// and a record holding other bytes could never be listed to containerd.
[[nodiscard]] absl::Status ValidateText(std::string_view field,
                                        std::string_view value);

// Checks every label's key and value with ValidateText, every label against
// kMaxLabelBytes (InvalidArgument names the key) and all of them together
// against kMaxLabelsTotalBytes (InvalidArgument).
[[nodiscard]] absl::Status ValidateLabels(const Labels& labels);

// Replaces `to`'s labels with `from`.
void CopyLabels(const Labels& from, Record* to);

}  // namespace snapledger
