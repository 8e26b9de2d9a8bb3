// Telling a service manager how the daemon is doing: systemd's notify
// protocol (sd_notify(3), through libsystemd) and its watchdog.
//
// snapledgerd runs under `Type=notify` (install/snapledgerd.service): the
// unit is "started" only when the daemon says READY=1, which it does once
// recovery is done and both sockets accept (Daemon::Start returned). Without
// NOTIFY_SOCKET in the environment (not started by systemd, or by a unit of
// another type) every call here does nothing.
//
// Thread-safety: ServiceNotifier's functions may be called from any thread.
// A Watchdog is started and stopped by one owner.
#pragma once

#include <functional>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "plugin/worker/worker_thread.h"

namespace snapledger {

class ServiceNotifier {
 public:
  // Whether a service manager listens (NOTIFY_SOCKET is set).
  static bool Listening();

  // Sends newline-separated assignments (e.g. "READY=1\nSTATUS=serving").
  // Returns whether a message was sent; false without NOTIFY_SOCKET, and
  // on a failed send (logged once per failure, never fatal: the daemon
  // serves the same with or without a manager).
  static bool Send(std::string_view assignments);

  // READY=1 with a STATUS= line.
  static bool Ready(std::string_view status);
  // STATUS= only (what `systemctl status` shows).
  static bool Status(std::string_view status);
  // STOPPING=1 with a STATUS= line.
  static bool Stopping(std::string_view status);
  // WATCHDOG=1.
  static bool PetWatchdog();
};

// The interval the service manager expects watchdog pets within
// (WATCHDOG_USEC, for this process when WATCHDOG_PID is set); nullopt when
// no watchdog is asked for.
std::optional<absl::Duration> WatchdogIntervalFromEnvironment();

// Pets the service manager's watchdog from a thread of its own, every half
// interval, but only while `healthy` returns OK: a daemon whose serving
// loop hangs (or whose health check itself hangs) stops petting, and the
// manager restarts it after the interval. The health check runs on the
// watchdog's thread, started every half interval (a check that takes longer
// delays the next one); it should take well under half the interval. A failed
// check is logged (once per change between healthy and not) and shown as
// STATUS=.
class Watchdog {
 public:
  using HealthCheck = std::function<absl::Status()>;
  // `pet` sends one WATCHDOG=1 (ServiceNotifier::PetWatchdog by default;
  // tests count instead).
  Watchdog(absl::Duration interval, HealthCheck healthy,
           std::function<void()> pet = nullptr);
  ~Watchdog();  // Stop()
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Starts the thread; Unavailable if it cannot start.
  [[nodiscard]] absl::Status Start();
  // Stops petting and joins the thread. Idempotent.
  void Stop();

  absl::Duration period() const { return interval_ / 2; }

 private:
  void Run();

  const absl::Duration interval_;
  const HealthCheck healthy_;
  const std::function<void()> pet_;
  WorkerThread worker_{"the watchdog thread"};
};

}  // namespace snapledger
