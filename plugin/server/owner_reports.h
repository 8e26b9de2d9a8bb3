// The owner tracker's reports (plugin/containerd/ownership.h) as the admin
// API's messages: the one place they become admin.proto's wire types, so
// that the containerd component need not know them.
#pragma once

#include "plugin/containerd/ownership.h"
#include "snapledger/admin/v1/admin.pb.h"

namespace snapledger {

namespace adminpb = ::snapledger::admin::v1;

// enabled is always set: a report exists only when a containerd address is
// configured. last_sync_ns stays 0 for a listing never made, last_error
// empty for none.
adminpb::WatcherStatus WatcherStatusProto(const WatcherReport& report);
// task and reaper become their words (TaskStatusName, ReaperWord).
adminpb::DeadContainer DeadContainerProto(const DeadContainer& container);
// grace_seconds: the grace truncated to whole seconds.
adminpb::DeadResponse DeadResponseProto(const DeadReport& report);

}  // namespace snapledger
