// Backends by name: the one place that knows every backend, for the
// daemon (its configured backend) and the offline admin reader (the backend
// a root was created with).
//
// Thread-safety: pure functions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plugin/backend/backend.h"

namespace snapledger {

struct BackendSettings {
  // "native", "overlayfs" or "remote".
  std::string name = "native";
  // Flush data to stable storage (NativeBackendOptions::sync,
  // OverlayBackendOptions::sync).
  bool sync = false;
  // overlayfs: appended to every overlay mount.
  std::vector<std::string> overlay_mount_options;
  // overlayfs: skip the start-up support check (a reader that never mounts).
  bool skip_support_check = false;
  // remote: the Snapshots service behind snapledger, and each call's bound.
  std::string remote_address;
  absl::Duration remote_call_timeout = absl::Seconds(30);
};

// The names OpenBackend accepts, in the order --help lists them.
const std::vector<std::string>& BackendNames();

// Opens backend `settings.name` at `root`. InvalidArgument for an unknown
// name; the backend's own errors otherwise (overlayfs: FailedPrecondition
// when `root` cannot host overlay mounts; remote: InvalidArgument for an
// address no transport handles). `root` is unused by remote.
[[nodiscard]] absl::StatusOr<std::unique_ptr<Backend>> OpenBackend(
    const std::string& root, const BackendSettings& settings);

}  // namespace snapledger
