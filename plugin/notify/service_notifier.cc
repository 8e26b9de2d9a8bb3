#include "plugin/notify/service_notifier.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace snapledger {

bool ServiceNotifier::Listening() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  return socket != nullptr && socket[0] != '\0';
}

bool ServiceNotifier::Send(std::string_view assignments) {
  if (!Listening()) return false;
  const std::string message(assignments);
  // unset_environment = 0: every later message goes to the same socket.
  const int r = sd_notify(0, message.c_str());
  if (r < 0) {
    spdlog::warn("cannot notify the service manager ({}): {}",
                 message.substr(0, message.find('\n')), std::strerror(-r));
    return false;
  }
  return r > 0;
}

bool ServiceNotifier::Ready(std::string_view status) {
  return Send(std::string("READY=1\nSTATUS=").append(status));
}

bool ServiceNotifier::Status(std::string_view status) {
  return Send(std::string("STATUS=").append(status));
}

bool ServiceNotifier::Stopping(std::string_view status) {
  return Send(std::string("STOPPING=1\nSTATUS=").append(status));
}

bool ServiceNotifier::PetWatchdog() { return Send("WATCHDOG=1"); }

std::optional<absl::Duration> WatchdogIntervalFromEnvironment() {
  uint64_t usec = 0;
  // > 0: asked for this process (WATCHDOG_PID absent or ours).
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return absl::Microseconds(static_cast<int64_t>(usec));
}

Watchdog::Watchdog(absl::Duration interval, HealthCheck healthy,
                   std::function<void()> pet)
    : interval_(interval),
      healthy_(std::move(healthy)),
      pet_(pet != nullptr ? std::move(pet)
                          : [] { ServiceNotifier::PetWatchdog(); }) {}

Watchdog::~Watchdog() { Stop(); }

absl::Status Watchdog::Start() {
  return worker_.Start([this] { Run(); });
}

void Watchdog::Stop() { worker_.Stop(); }

void Watchdog::Run() {
  bool was_healthy = true;
  while (true) {
    // Pets are a period apart however long the check takes (a slow but
    // passing check does not push the next pet past the interval).
    const absl::Time next = absl::Now() + period();
    const absl::Status health = healthy_();
    if (health.ok()) {
      pet_();
      if (!was_healthy) {
        spdlog::info("watchdog: healthy again, petting resumes");
        ServiceNotifier::Status("serving");
      }
    } else if (was_healthy) {
      spdlog::error(
          "watchdog: unhealthy, not petting (the service manager restarts "
          "the daemon if this lasts {}): {}",
          absl::FormatDuration(interval_), health.ToString());
      ServiceNotifier::Status(absl::StrCat("unhealthy: ", health.message()));
    }
    was_healthy = health.ok();
    if (!worker_.SleepUntil(next)) return;
  }
}

}  // namespace snapledger
