#include "plugin/backend/factory/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "plugin/backend/native/native_backend.h"
#include "plugin/backend/overlayfs/overlay_backend.h"
#include "plugin/backend/remote/remote_backend.h"

namespace snapledger {

const std::vector<std::string>& BackendNames() {
  static const std::vector<std::string> kNames = {"overlayfs", "native",
                                                  "remote"};
  return kNames;
}

absl::StatusOr<std::unique_ptr<Backend>> OpenBackend(
    const std::string& root, const BackendSettings& settings) {
  if (settings.name == "native") {
    return NewNativeBackend(root, NativeBackendOptions{.sync = settings.sync});
  }
  if (settings.name == "overlayfs") {
    OverlayBackendOptions options;
    options.sync = settings.sync;
    options.mount_options = settings.overlay_mount_options;
    options.skip_support_check = settings.skip_support_check;
    return NewOverlayBackend(root, options);
  }
  if (settings.name == "remote") {
    RemoteBackendOptions options;
    options.address = settings.remote_address;
    options.call_timeout = settings.remote_call_timeout;
    return NewRemoteBackend(options);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown backend \"", settings.name,
      "\" (available: ", absl::StrJoin(BackendNames(), ", "), ")"));
}

}  // namespace snapledger
