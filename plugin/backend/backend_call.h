// The Backend calls as decorators tell them apart: one op table for the
// names in metrics and messages, and what a call works on.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace snapledger {

// The calls a decorator runs on its inner backend (MountsOfNew, which does
// no I/O, aside; CreateWithLabels counts as kCreate, CommitWithLabels as
// kCommit, ListIds as kList). The values are part of FaultyBackend's seeded
// draws (a soak's faults replay for a seed): add new ops at the end only.
enum class BackendOp {
  kCreate,
  kCommit,
  kRemove,
  kMounts,
  kDiskUsage,
  kExists,
  kList,
  kCleanup,
  kIsCommitted,
};

// What a call works on, for conflict checks and messages.
struct BackendCall {
  BackendOp op;
  uint64_t id = 0;         // the object; 0 for List and Cleanup
  uint64_t parent_id = 0;  // Create's parent (0: none); 0 for the others
};

// The op table: each op's name in metrics (BackendCallSample::op:
// "create", "commit", "remove", "mounts", "disk_usage", "exists",
// "is_committed", "list", "cleanup") and, for messages, the call with its
// article ("busy with a remove").
struct BackendOpText {
  std::string_view name;
  const char* noun;
};

inline BackendOpText BackendOpTextOf(BackendOp op) {
  switch (op) {
    case BackendOp::kCreate:
      return {"create", "a create"};
    case BackendOp::kCommit:
      return {"commit", "a commit"};
    case BackendOp::kRemove:
      return {"remove", "a remove"};
    case BackendOp::kMounts:
      return {"mounts", "a mounts query"};
    case BackendOp::kDiskUsage:
      return {"disk_usage", "a disk usage query"};
    case BackendOp::kExists:
      return {"exists", "an exists check"};
    case BackendOp::kIsCommitted:
      return {"is_committed", "a committed check"};
    case BackendOp::kList:
      return {"list", "a list"};
    case BackendOp::kCleanup:
      return {"cleanup", "a cleanup"};
  }
  return {"call", "a call"};
}

inline std::string_view BackendOpName(BackendOp op) {
  return BackendOpTextOf(op).name;
}
inline const char* BackendOpNoun(BackendOp op) {
  return BackendOpTextOf(op).noun;
}

// "remove of object 42", "create of object 8 on object 7", "cleanup".
inline std::string DescribeBackendCall(const BackendCall& call) {
  std::string noun = BackendOpNoun(call.op);
  noun.erase(0, noun.find(' ') + 1);
  if (call.op == BackendOp::kList || call.op == BackendOp::kCleanup) {
    return noun;
  }
  std::string out = absl::StrCat(noun, " of object ", call.id);
  if (call.op == BackendOp::kCreate && call.parent_id != 0) {
    absl::StrAppend(&out, " on object ", call.parent_id);
  }
  return out;
}

}  // namespace snapledger
