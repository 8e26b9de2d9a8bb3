// Snapshot labels, as containerd limits them.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "store/ledger.h"

namespace snapledger {

using Labels = std::map<std::string, std::string>;

// containerd's limit on one label (key and value together), in bytes.
inline constexpr size_t kMaxLabelBytes = 4096;

// Checks every label against kMaxLabelBytes; InvalidArgument names the key.
[[nodiscard]] absl::Status ValidateLabels(const Labels& labels);

// Replaces `to`'s labels with `from`.
void CopyLabels(const Labels& from, Record* to);

}  // namespace snapledger
