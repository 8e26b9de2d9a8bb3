#include "plugin/server/owner_reports.h"

#include <string>

#include "absl/time/time.h"

namespace snapledger {

adminpb::WatcherStatus WatcherStatusProto(const WatcherReport& report) {
  adminpb::WatcherStatus status;
  status.set_enabled(true);
  status.set_address(report.address);
  status.set_connected(report.connected);
  if (report.last_sync != absl::InfinitePast()) {
    status.set_last_sync_ns(absl::ToUnixNanos(report.last_sync));
  }
  if (!report.last_error.ok()) {
    status.set_last_error(report.last_error.ToString());
  }
  status.set_containers(report.containers);
  status.set_leases(report.leases);
  return status;
}

adminpb::DeadContainer DeadContainerProto(const DeadContainer& container) {
  adminpb::DeadContainer d;
  d.set_namespace_(container.ns);
  d.set_id(container.id);
  d.set_image(container.image);
  d.set_task(std::string(TaskStatusName(container.task)));
  d.set_idle_since_ns(absl::ToUnixNanos(container.idle_since));
  d.set_snapshot(container.snapshot);
  for (const std::string& key : container.pinned) d.add_pinned(key);
  d.set_pinned_bytes(container.pinned_bytes);
  d.set_reaper(std::string(ReaperWord(container.reaper)));
  return d;
}

adminpb::DeadResponse DeadResponseProto(const DeadReport& report) {
  adminpb::DeadResponse response;
  *response.mutable_watcher() = WatcherStatusProto(report.watcher);
  response.set_grace_seconds(absl::ToInt64Seconds(report.grace));
  for (const DeadContainer& d : report.containers) {
    *response.add_containers() = DeadContainerProto(d);
  }
  response.set_reaped_total(report.reaped_total);
  return response;
}

}  // namespace snapledger
